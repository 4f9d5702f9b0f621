"""Peak memory of the LM-head loss path: chunked frozen-head cross-entropy (ctxcomp.model.loss) against
materialised logits, on CPU at the real vocabulary (128,256) and a tiny width, forward + backward.

    python -m ctxcomp.bench.loss_bench [--out FILE] [--positions N] [--width D]

Each variant runs in a fresh child process and reports its peak resident memory above the memory it held once its
inputs existed (ru_maxrss, which counts every allocation torch's CPU allocator makes): the extra memory the loss
path needs. Positions default to 2 tasks x micro-batch 4 x 330 target positions (the config's micro-batch is 8;
half keeps the materialised baseline within a laptop's memory). Values are checked equal between the variants.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
VOCAB = 128_256


def _child(variant: str, positions: int, width: int) -> dict:
    import time

    import torch
    import torch.nn.functional as F

    from ..model.loss import frozen_head_nll

    torch.manual_seed(0)
    head = torch.nn.Linear(width, VOCAB, bias=False).requires_grad_(False)
    h = torch.randn(positions, width, requires_grad=True)
    t = torch.randint(0, VOCAB, (positions,))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # warm the allocator and kernels on a few rows so one-off buffers do not count
    frozen_head_nll(head, h[:2], t[:2]).sum().backward()
    F.cross_entropy(head(h[:2]).float(), t[:2]).backward()
    h.grad = None
    base = max(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    t0 = time.perf_counter()
    if variant == "materialised":
        nll = F.cross_entropy(head(h).float(), t, reduction="none")
    else:
        nll = frozen_head_nll(head, h, t)
    nll.mean().backward()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "extra_mib": (peak - base) / 1024, "wall_s": wall, "loss": float(nll.mean()),
            "grad_norm": float(h.grad.norm())}


def run(positions: int, width: int) -> list[dict]:
    out = []
    for variant in ("materialised", "chunked"):
        code = (f"import json; from ctxcomp.bench.loss_bench import _child; "
                f"print(json.dumps(_child({variant!r}, {positions}, {width})))")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=ROOT / "workflow")
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-loss-cpu.md")))
    ap.add_argument("--positions", type=int, default=2 * 4 * 330)
    ap.add_argument("--width", type=int, default=64)
    ns = ap.parse_args(argv)
    rows = run(ns.positions, ns.width)
    mat, chk = rows
    ratio = mat["extra_mib"] / max(chk["extra_mib"], 1e-9)
    same = abs(mat["loss"] - chk["loss"]) < 1e-5 and abs(mat["grad_norm"] - chk["grad_norm"]) < 1e-5 * max(
        1.0, mat["grad_norm"])
    lines = [f"# LM-head loss memory benchmark ({dt.date.today().isoformat()})", "",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
             f"torch {torch.__version__}.",
             f"Vocabulary {VOCAB:,}, width {ns.width}, {ns.positions:,} target positions, frozen head, forward + "
             "backward w.r.t. the hidden states. `python -m ctxcomp.bench.loss_bench`.", "",
             "| loss path | extra peak memory (MiB) | wall (s) | mean NLL | grad norm |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['extra_mib']:.0f} | {r['wall_s']:.2f} | {r['loss']:.6f} | "
                     f"{r['grad_norm']:.6e} |")
    lines += ["", f"Peak memory {ratio:.1f}x lower (goal: at least 4x); values equal: {'yes' if same else 'NO'}.",
              "Materialised: fp32 logits, their softmax and gradient ((N x V) each). Chunked: one block of "
              "~260 positions of logits at a time, the (N x d) gradient kept for backward, no recomputation."]
    Path(ns.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
