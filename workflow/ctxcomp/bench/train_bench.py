"""Training benchmark: tokens/s, achieved FLOP/s against a measured matmul peak, and the Trainer's overhead.

    python -m ctxcomp.bench.train_bench [--out FILE] [--repeats N]          # tiny preset models, this machine

Tiny mode builds the tiny preset's models (random init: speed does not depend on the weights) with tokenizers
trained on the shipped C4 sample, and for each compressor size compares, on the same batch:
  - the Trainer's full step (`Trainer.train_step`: collate, to device, forward, backward, clip, AdamW), and
  - a bare forward + backward of the same two models on the same, already collated tensors.
FLOPs are counted by torch.utils.flop_counter.FlopCounterMode over one bare forward+backward (matmuls and
attention; the frozen decoder's backward counts only the input-gradient half, as it should: its weights need no
gradient). The peak is the best fp32 (CPU) or bf16 (GPU) square matmul of this process, measured in the same run.
Trainer and bare timings alternate, so both see the same machine load; medians are reported.

Step time, tokens/s and MFU at the paper's shapes on a GPU node are measured by ctxcomp.bench.acceptance.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[3]
C4 = ROOT / "workflow" / "data" / "c4" / "c4_sample.jsonl"
DEFAULT_OUT = Path(__file__).with_name("RESULTS-train-cpu.md")
TINY_COMPRESSORS = ("tiny-qwen-s", "tiny-qwen-m", "tiny-qwen-l")
TINY_DECODER = "tiny-llama-dec"


# --------------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """Best achieved FLOP/s of an n×n @ n×n matmul (2n³ FLOPs) over `repeats` timed runs per size."""
    best = {"flops_per_s": 0.0, "n": None}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            _sync(device)
            rate = 2 * n**3 / (time.perf_counter() - t0)
            if rate > best["flops_per_s"]:
                best = {"flops_per_s": rate, "n": n}
    best["dtype"] = str(dtype).replace("torch.", "")
    return best


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ tiny mode
def _texts(n: int) -> list[str]:
    out = []
    with open(C4, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    return out


def build_tiny(cfg: dict, root: Path, global_batch: int) -> dict[str, str]:
    """Tokenizers as in the preset (trained on the C4 sample) and randomly initialised models, saved under root."""
    from ..tiny.build import build_model
    from ..tiny.tokenizer import build_tokenizer

    texts = _texts(800)
    toks = {name: build_tokenizer(texts, spec["vocab_size"], spec["style"])
            for name, spec in cfg["tiny"]["tokenizers"].items()}
    sources = {}
    for i, name in enumerate((*TINY_COMPRESSORS, TINY_DECODER)):
        spec = cfg["models"][name]["build"]
        tok = toks[spec["tokenizer"]]
        model = build_model(spec, tok, seed=i)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        sources[name] = str(root / name)
    # chunks as the pipeline cuts them (ctxcomp.data.fineweb): L chunk-tokenizer (decoder) tokens of text, then C
    seg = cfg["segment"]
    L, C = seg["segment_tokens"], seg["continuation_tokens"]
    chunk_tok = toks[cfg["models"][cfg["data"]["fineweb"]["chunk_tokenizer"]]["build"]["tokenizer"]]
    recs = []
    for i, t in enumerate(texts):
        ids = chunk_tok(t, add_special_tokens=False)["input_ids"]
        if len(ids) >= L + C:
            recs.append({"id": f"c4-{i}", "text": chunk_tok.decode(ids[:L]),
                         "continuation": chunk_tok.decode(ids[L : L + C])})
    with open(root / "train.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in recs[:global_batch])
    with open(root / "probe.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in recs[global_batch : global_batch + 16])
    return sources


class _StepTimer:
    """Seconds per step of a Trainer's steps and of a bare forward/backward on the same micro-batch (the cell's
    train.jsonl holds exactly one global batch of one micro-batch, so every step does the same work)."""

    def __init__(self, tr: Any, weights: dict, block: int):
        from ..model.collate import to_device

        self.tr, self.weights, self.block = tr, weights, block
        assert len(tr.micro_batches(0)) == 1, "benchmark expects one micro-batch per step"
        self.batch = to_device(tr.micro_batches(0)[0], tr.device)
        self.params = [p for p in tr.model.parameters() if p.requires_grad]
        self.counter = iter(range(10**6))

    def bare(self) -> None:
        for p in self.params:
            p.grad = None
        out = self.tr.model(self.batch, weights=self.weights)
        out["loss"].backward()

    def trainer_block(self, prefetch: bool) -> float:
        """Seconds per step over `block` consecutive Trainer steps (as in Trainer.run)."""
        ctx = self.tr.prefetching() if prefetch else contextlib.nullcontext()
        with ctx:
            self.tr.train_step(next(self.counter), self.weights)  # untimed: starts the pipeline
            _sync(self.tr.device)
            t0 = time.perf_counter()
            for _ in range(self.block):
                self.tr.train_step(next(self.counter), self.weights)
            _sync(self.tr.device)
            return (time.perf_counter() - t0) / self.block

    def bare_block(self) -> float:
        _sync(self.tr.device)
        t0 = time.perf_counter()
        for _ in range(self.block):
            self.bare()
        _sync(self.tr.device)
        return (time.perf_counter() - t0) / self.block

    def measure(self, repeats: int, grad_clip: float) -> dict[str, list[float]]:
        """Per kind (loop, bare, sync = no prefetch, collate, opt), one time per repeat, interleaved."""
        device = self.tr.device
        t: dict[str, list[float]] = {"loop": [], "bare": [], "sync": [], "collate": [], "opt": []}
        for _ in range(repeats):
            t["loop"].append(self.trainer_block(True))
            t["bare"].append(self.bare_block())
            t["sync"].append(self.trainer_block(False))
            t["collate"].append(timed(lambda: self.tr.micro_batches(0), device))
            self.bare()  # gradients for the optimizer to use
            t["opt"].append(timed(lambda: self.tr.engine.step(1e-6, grad_clip), device))
        return t


def _cell_row(compressor: str, finetune: str, model: Any, batch: dict, tokens: int, flops: int,
              t: dict[str, list[float]], peak: float) -> dict[str, Any]:
    """The benchmark's row of one cell. Interference from other processes only ever adds time: the fastest block of
    each kind is the cleanest estimate (medians are kept in the JSON next to the report)."""
    from ..model.compressor import count_parameters

    med = statistics.median
    loop, plain, sync = min(t["loop"]), min(t["bare"]), min(t["sync"])
    return {
        "compressor": compressor,
        "finetune": finetune,
        "compressor_params": count_parameters(model.compressor),
        "trainable_params": count_parameters(model, trainable_only=True),
        "decoder_params": count_parameters(model.decoder),
        "batch": int(batch["comp_ids"].shape[0]),
        "tokens_per_step": tokens,
        "flops_per_step": flops,
        "trainer_step_s": loop,
        "trainer_step_no_prefetch_s": sync,
        "bare_fwd_bwd_s": plain,
        "collate_s": min(t["collate"]),
        "optimizer_s": min(t["opt"]),
        "overhead": loop / plain - 1.0,
        "overhead_no_prefetch": sync / plain - 1.0,
        "overhead_median": med(t["loop"]) / med(t["bare"]) - 1.0,
        "trainer_step_median_s": med(t["loop"]),
        "bare_fwd_bwd_median_s": med(t["bare"]),
        "tokens_per_s": tokens / loop,
        "flops_per_s": flops / loop,
        "flops_per_s_bare": flops / plain,
        "of_peak": flops / loop / peak,
        "spread_trainer": (min(t["loop"]), max(t["loop"])),
        "spread_bare": (min(t["bare"]), max(t["bare"])),
    }


def bench_cell(cfg: dict, compressor: str, sources: dict[str, str], root: Path, repeats: int, block: int,
               peak: float) -> dict[str, Any]:
    from ..config import Cell
    from ..settings import CellTrainSettings
    from ..train.loop import Trainer

    s = CellTrainSettings.for_cell(cfg, Cell(TINY_DECODER, compressor, 16))
    s = s.replace(compressor=s.compressor.replace(source=sources[compressor]),
                  decoder=s.decoder.replace(source=sources[TINY_DECODER]), train=s.train.replace(max_steps=10**6))
    # train.jsonl holds exactly one global batch: every step draws a permutation of the same records, so all steps
    # (and the bare pass on step 0's tensors) do the same work
    tr = Trainer(s, str(root / "train.jsonl"), str(root / "probe.jsonl"), str(root / f"run-{compressor}"),
                 engine="torch")
    weights = s.train.loss_weights.as_weights()
    tr.model.train()
    timer = _StepTimer(tr, weights, block)
    timer.trainer_block(True)  # warm-up (allocator, thread pools, lazy inits)
    timer.bare_block()
    flops = count_flops(timer.bare)
    tokens = int(tr.model(timer.batch, weights=weights)["tokens"])
    t = timer.measure(repeats, s.train.grad_clip)
    return _cell_row(compressor, s.compressor.finetune, tr.model, timer.batch, tokens, flops, t, peak)


def run_tiny(repeats: int, block: int) -> dict[str, Any]:
    from ..config import load_config

    torch.manual_seed(0)
    cfg = load_config(ROOT / "config.yaml", ROOT / "workflow" / "presets" / "tiny.yaml")
    info = machine_info()
    peak = matmul_peak(torch.device("cpu"), torch.float32, (1024, 2048), repeats=5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        sources = build_tiny(cfg, Path(tmp), cfg["train"]["global_batch_size"])
        for name in TINY_COMPRESSORS:
            rows.append(bench_cell(cfg, name, sources, Path(tmp), repeats, block, peak["flops_per_s"]))
    peak_after = matmul_peak(torch.device("cpu"), torch.float32, (1024, 2048), repeats=5)
    best = max(peak["flops_per_s"], peak_after["flops_per_s"])
    for r in rows:  # the same run's best matmul: measured before and after the cells
        r["of_peak"] = r["flops_per_s"] / best
    return {"machine": info, "peak": peak, "peak_after": peak_after, "peak_best": best, "rows": rows,
            "repeats": repeats, "block": block}


def report_tiny(res: dict[str, Any]) -> str:
    m, pk = res["machine"], res["peak"]
    lines = [
        "# Training benchmark (CPU, tiny preset models)",
        "",
        "Produced by `python -m ctxcomp.bench.train_bench` (do not edit by hand; rerun to refresh).",
        "",
        f"- date: {m['date']}",
        f"- machine: {m['nproc']} CPU(s) available, {m['cpu']}; torch {m['torch']} "
        f"({m['torch_threads']} threads), Python {m['python']}",
        f"- fp32 matmul peak, measured in this run: {res['peak_best'] / 1e9:.1f} GFLOP/s (best n×n matmul, "
        f"n ∈ {{1024, 2048}}, 5 tries each before the cells: {pk['flops_per_s'] / 1e9:.1f}, after: "
        f"{res['peak_after']['flops_per_s'] / 1e9:.1f})",
        f"- each cell: decoder {TINY_DECODER} (frozen), ratio 16, L=64, continuation 32, one micro-batch = the "
        f"preset's global batch; {res['repeats']} alternating blocks of {res['block']} steps, fastest block "
        f"of each kind (other processes can only add time; medians are in the .json beside this file)",
        "",
        "| compressor | tune | trainable / decoder params | tokens/step | FLOP/step | Trainer step | bare fwd+bwd "
        "| overhead | (median) | (no prefetch) | collate | optimizer | tokens/s | GFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['compressor']} | {r['finetune']} | {r['trainable_params']:,} / {r['decoder_params']:,} "
            f"| {r['tokens_per_step']} | {r['flops_per_step'] / 1e9:.2f} G | {r['trainer_step_s'] * 1e3:.1f} ms "
            f"| {r['bare_fwd_bwd_s'] * 1e3:.1f} ms | {r['overhead'] * 100:+.1f} % "
            f"| {r['overhead_median'] * 100:+.1f} % | {r['overhead_no_prefetch'] * 100:+.1f} % "
            f"| {r['collate_s'] * 1e3:.1f} ms "
            f"| {r['optimizer_s'] * 1e3:.1f} ms | {r['tokens_per_s']:,.0f} | {r['flops_per_s'] / 1e9:.1f} "
            f"| {r['of_peak'] * 100:.1f} % |")
    worst = max(r["overhead"] for r in res["rows"])
    lines += [
        "",
        "Columns: *Trainer step* is `Trainer.train_step` as `Trainer.run` calls it (collate from JSONL records — "
        "prefetched for the next step by a background thread —, forward, backward, grad-norm clip, AdamW), per step "
        f"over blocks of {res['block']} consecutive steps; *bare fwd+bwd* runs the same two models on the same "
        "collated tensors, no optimizer, same blocks; *overhead* = Trainer / bare − 1 (fastest blocks; *(median)*: "
        "from the median blocks); *(no prefetch)* is the overhead with collation inside the step; *collate* and "
        "*optimizer* time those parts alone. FLOPs are counted "
        "by FlopCounterMode on the bare pass (the frozen decoder's backward computes input gradients only). "
        "*GFLOP/s* and *of peak* use the Trainer step time.",
        "",
        f"Overhead goal ≤ 10 %: {'met' if worst <= 0.10 else 'NOT met'} (worst {worst * 100:+.1f} %). "
        "The machine is shared (2 cores, other jobs running): single figures move by several percent between runs.",
        "",
        "What limits these numbers: with widths of 48 … 128 the matmuls are small, so per-op dispatch and memory "
        "traffic take a large share of the step and the achieved rate stays well below the large-matmul peak. "
        "Collating the next step in a background thread hides most of the collation time (compare *(no prefetch)*), "
        "but on 2 cores it still competes with torch's intra-op threads; on a GPU node it is off the critical "
        "path. The figures are a regression baseline for the training "
        "code on CPU, not a forecast for GPU runs — see `python -m ctxcomp.bench.acceptance` for those.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"markdown report (default: {DEFAULT_OUT})")
    ap.add_argument("--repeats", type=int, default=15, help="timed blocks (default 15)")
    ap.add_argument("--block", type=int, default=6, help="consecutive steps per timed block")
    ns = ap.parse_args(argv)
    res = run_tiny(ns.repeats, ns.block)
    text = report_tiny(res)
    print(text)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(text)
    Path(ns.out).with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
