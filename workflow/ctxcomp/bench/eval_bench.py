"""Evaluation benchmark: shared-prefix scoring and drift generation against one row at a time, batched greedy
reconstruction, and the QR against the SVD (and the former Gram) route of the effective rank.

    python -m ctxcomp.bench.eval_bench [--out FILE]

Uses random tiny models (the shapes of the tiny preset's medium compressor and its decoder, L=64, rho=4: M=16
memory vectors per segment) on the shipped FaithEval and C4 data, so it needs no pipeline outputs. "One at a time"
is what a naive loop does: one (memory, prompt, candidate) row per forward pass, one question per greedy decode.
"Batched rows" is the former evaluation (every (question, candidate) row of a batch through the whole
[Z; question; candidate] sequence). "Shared prefix" is the current one (evaluate/decoding.py): [Z; question] runs
once per question and its candidates continue from the key/value cache; a context's memory prefix runs once for
its ~20 drift questions. Every route's numbers are compared with the one-at-a-time ones.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ..evaluate import decoding
from ..evaluate.prompts import answer_prompt_ids, ko_prompt_ids
from ..evaluate.tasks import score_questions
from ..metrics.erank import erank_from_singular_values, singular_values
from ..model.collate import Collator
from ..model.compressor import ContextCompressor
from ..tiny.build import build_model
from ..tiny.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parents[3]
L, RATIO, MAX_SEGMENTS = 64, 4, 3


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _models(texts: list[str]) -> tuple[ContextCompressor, Collator]:
    comp_tok, dec_tok = build_tokenizer(texts, 2048, "qwen3"), build_tokenizer(texts, 1536, "llama")
    comp = build_model({"arch": "qwen3", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128}, comp_tok, 0)
    dec = build_model({"arch": "llama", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "intermediate_size": 256}, dec_tok, 1)
    model = ContextCompressor(comp, dec, num_memory=L // RATIO, decoder_bos_id=dec_tok.bos_token_id).eval()
    return model, Collator(comp_tok, dec_tok, L, 32)


def _gram_singular_values(z: torch.Tensor) -> torch.Tensor:
    """The former route: square roots of the eigenvalues of X X^T (kept here only to show its error)."""
    x = z.detach().to(torch.float64).reshape(z.shape[0], -1)
    return torch.sqrt(torch.linalg.eigvalsh(x @ x.T).clamp_min(0.0)).flip(0)


@torch.no_grad()
def _scoring(model: ContextCompressor, zs: list, prompts: list, cands: list, batch: int) -> dict:
    """Candidate scoring three ways: one row per forward, batched rows, shared prefix; timings, differences and
    the decoder token positions each route processes (the bound on the speed-up from sharing)."""
    pairs = [(i, j) for i in range(len(prompts)) for j in range(len(cands[i]))]
    got: dict[str, list[float]] = {}

    def single():
        got["single"] = [decoding.score_continuations(model, [zs[i]], [prompts[i]], [cands[i][j]])[0][0]
                         for i, j in pairs]

    def rows():
        out = []
        for b in decoding.batches(len(pairs), batch):
            chunk = [pairs[k] for k in b]
            out += decoding.score_continuations(model, [zs[i] for i, _ in chunk], [prompts[i] for i, _ in chunk],
                                                [cands[i][j] for i, j in chunk])[0]
        got["rows"] = out

    def shared():  # what the evaluation runs: questions batched by prefix length, candidates from the cache
        got["shared"] = [s for row in score_questions(model, zs, prompts, cands, batch, "bench") for s, _ in row]

    r: dict = {"questions": len(prompts), "rows": len(pairs),
               "memory": float(np.mean([z.shape[0] for z in zs])), "prompt": float(np.mean([len(p) for p in prompts])),
               "candidate": float(np.mean([len(c) for cs in cands for c in cs]))}
    r["single_s"], r["rows_s"], r["shared_s"] = _best(single), _best(rows), _best(shared)
    r["rows_speedup"], r["shared_speedup"] = r["single_s"] / r["rows_s"], r["single_s"] / r["shared_s"]
    for k in ("rows", "shared"):
        diff = np.abs(np.subtract(got[k], got["single"]))
        r[f"{k}_max_abs_diff"] = float(diff.max())
        r[f"{k}_max_rel_diff"] = float((diff / np.abs(got["single"])).max())
    pre = [zs[i].shape[0] + 4 + len(prompts[i]) for i in range(len(prompts))]
    r["tokens_single"] = sum(pre[i] + len(cands[i][j]) for i, j in pairs)
    r["tokens_shared"] = sum(pre) + sum(len(c) for cs in cands for c in cs)
    return r


@torch.no_grad()
def run(n_questions: int = 32, n_contexts: int = 4, per_context: int = 20, answer_tokens: int = 8,
        new_tokens: int = 64, batch: int = 16) -> dict:
    torch.manual_seed(0)
    with open(ROOT / "workflow/data/c4/c4_sample.jsonl") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(300), fh)]
    with open(ROOT / "workflow/data/faitheval/test.jsonl") as fh:
        faith = [json.loads(line) for _, line in zip(range(n_questions), fh)]
    model, collate = _models(texts)
    tok = collate.dec_tok
    res: dict = {"threads": torch.get_num_threads(), "batch": batch, "M": model.num_memory,
                 "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}

    # ---- knowledge-overwriting candidate scoring (4 candidates per question)
    zs = decoding.compress_texts(model, collate, [r["context"] for r in faith], MAX_SEGMENTS, batch)
    prompts = [ko_prompt_ids(tok, r["question"]) for r in faith]
    cands = [[tok(" " + c, add_special_tokens=False)["input_ids"] for c in r["choices"]["text"]] for r in faith]
    res["score"] = _scoring(model, zs, prompts, cands, batch)
    # the earlier benchmark's rows (4 memory vectors, "Question: which one?", short candidates), 4 per question
    short_p = tok("Question: which one?\nAnswer:", add_special_tokens=False)["input_ids"]
    short_c = [[tok(f" candidate answer {4 * i + j}", add_special_tokens=False)["input_ids"] for j in range(4)]
               for i in range(len(faith))]
    res["score_short"] = _scoring(model, [z[:4] for z in zs], [short_p] * len(faith), short_c, batch)

    # ---- semantic-drift answers (20 questions per context, greedy)
    ctx_z = decoding.compress_texts(model, collate, texts[:n_contexts], MAX_SEGMENTS, batch)
    owner = [c for c in range(n_contexts) for _ in range(per_context)]
    qprompts = [answer_prompt_ids(tok, f"What does the passage say about item {k}?") for k in range(len(owner))]
    gen: dict[str, list] = {}

    def single_gen():
        gen["single"] = [decoding.greedy_generate(model, [ctx_z[o]], [p], answer_tokens, None, "continue")[0]
                         for o, p in zip(owner, qprompts)]

    def rows_gen():
        out = []
        for b in decoding.batches(len(owner), batch):
            out += decoding.greedy_generate(model, [ctx_z[owner[k]] for k in b], [qprompts[k] for k in b],
                                            answer_tokens, None, "continue")
        gen["rows"] = out

    def shared_gen():
        gen["shared"] = decoding.generate_shared(model, ctx_z, qprompts, owner, answer_tokens, [], "continue",
                                                 batch)

    res.update(drift_questions=len(owner), drift_contexts=n_contexts, answer_tokens=answer_tokens,
               drift_prompt_tokens_mean=float(np.mean([len(p) for p in qprompts])))
    res["drift_single_s"], res["drift_rows_s"] = _best(single_gen, 2), _best(rows_gen, 2)
    res["drift_shared_s"] = _best(shared_gen, 2)
    res["drift_rows_speedup"] = res["drift_single_s"] / res["drift_rows_s"]
    res["drift_shared_speedup"] = res["drift_single_s"] / res["drift_shared_s"]
    res["drift_same_tokens"] = gen["rows"] == gen["single"] and gen["shared"] == gen["single"]
    mem = [ctx_z[o].shape[0] + 4 for o in owner]
    res["drift_tokens_single"] = sum(m + len(p) + answer_tokens for m, p in zip(mem, qprompts))
    shared_len = {c: decoding._common_prefix([qprompts[k] for k in range(len(owner)) if owner[k] == c])
                  for c in set(owner)}
    res["drift_tokens_shared"] = sum(ctx_z[c].shape[0] + 4 + n for c, n in shared_len.items()) + sum(
        len(p) - shared_len[o] + answer_tokens for o, p in zip(owner, qprompts))

    # ---- batched greedy reconstruction
    rz = decoding.compress_texts(model, collate, texts[:64], 1, batch)

    def batched_rec():
        for r in decoding.batches(len(rz), batch):
            decoding.greedy_generate(model, [rz[i] for i in r], [[] for _ in r], new_tokens, None, "reconstruct")

    def single_rec():
        for z in rz:
            decoding.greedy_generate(model, [z], [[]], new_tokens, None, "reconstruct")

    res["recon_samples"], res["new_tokens"] = len(rz), new_tokens
    res["recon_batched_s"], res["recon_single_s"] = _best(batched_rec, 2), _best(single_rec, 2)
    res["recon_speedup"] = res["recon_single_s"] / res["recon_batched_s"]

    # ---- effective rank: speed on a full-rank batch, accuracy on a rank-5 one (D >> B)
    z = torch.randn(64, 32, 4096)  # B=64 memories of M·d = 131,072 values
    res["erank_D"] = z[0].numel()
    res["erank_qr_s"] = _best(lambda: singular_values(z, "qr"))
    res["erank_svd_s"] = _best(lambda: singular_values(z, "svd"))
    res["erank_gram_s"] = _best(lambda: _gram_singular_values(z))
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(64, 5, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(131_072, 5, generator=g, dtype=torch.float64))
    spectrum = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    low = (u * spectrum) @ v.T
    exact = erank_from_singular_values(spectrum)
    ref = float(erank_from_singular_values(np.linalg.svd(low.numpy(), compute_uv=False)))
    res["erank_rank5_exact"] = exact
    res["erank_rank5_rel_err"] = {
        "numpy_svd": abs(ref - exact) / exact,
        "qr": abs(erank_from_singular_values(singular_values(low, "qr")) - exact) / exact,
        "svd": abs(erank_from_singular_values(singular_values(low, "svd")) - exact) / exact,
        "gram": abs(erank_from_singular_values(_gram_singular_values(low)) - exact) / exact,
    }
    return res


def _score_line(name: str, r: dict) -> str:
    return (f"| candidate scoring, {name} | {r['single_s']:.3f} | {r['rows_s']:.3f} | {r['shared_s']:.3f} | "
            f"{r['rows_speedup']:.1f}x | {r['shared_speedup']:.1f}x | {r['tokens_single'] / r['tokens_shared']:.1f}x |")


def render(res: dict) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    e = res["erank_rank5_rel_err"]
    sc, ss = res["score"], res["score_short"]
    return "\n".join([
        f"# Evaluation benchmark ({dt.date.today().isoformat()})",
        "",
        f"Machine: {cpu}, {res['threads']} torch thread(s); torch {torch.__version__}; machine load average "
        f"{res['load']:.1f} while measuring (shared machine: timings are the best of 2-3 runs).",
        f"Tiny models (compressor d=64, decoder d=128), L={L}, M={res['M']} memory vectors per segment, up to "
        f"{MAX_SEGMENTS} segments per context, batch {res['batch']}.",
        "",
        f"Candidate scoring, FaithEval rows: {sc['questions']} questions, {sc['rows']} candidates (memory "
        f"{sc['memory']:.0f} vectors, prompt {sc['prompt']:.0f} tokens, candidate {sc['candidate']:.1f} tokens on "
        f"average); short rows: the earlier benchmark's (memory {ss['memory']:.0f} vectors, prompt "
        f"{ss['prompt']:.0f} tokens, candidate {ss['candidate']:.1f} tokens), 4 candidates per question. Semantic "
        f"drift: {res['drift_contexts']} contexts x {res['drift_questions'] // res['drift_contexts']} questions, "
        f"{res['answer_tokens']} greedy tokens each (answer prompt {res['drift_prompt_tokens_mean']:.0f} tokens, "
        "its instruction shared per context).",
        "",
        "| what | one at a time (s) | batched rows (s) | shared prefix (s) | speed-up rows | speed-up shared | "
        "fewer token positions |",
        "|---|---|---|---|---|---|---|",
        _score_line("FaithEval rows", sc),
        _score_line("short rows", ss),
        f"| drift answers | {res['drift_single_s']:.3f} | {res['drift_rows_s']:.3f} | {res['drift_shared_s']:.3f} | "
        f"{res['drift_rows_speedup']:.1f}x | {res['drift_shared_speedup']:.1f}x | "
        f"{res['drift_tokens_single'] / res['drift_tokens_shared']:.1f}x |",
        "",
        f"Same numbers: largest score difference to one at a time {sc['shared_max_abs_diff']:.1e} absolute, "
        f"{sc['shared_max_rel_diff']:.1e} relative (shared prefix; batched rows {sc['rows_max_abs_diff']:.1e}, "
        f"{sc['rows_max_rel_diff']:.1e}) on summed log-likelihoods of about -100 in float32 (short rows: "
        f"{ss['shared_max_abs_diff']:.1e}); drift answers token-identical: {res['drift_same_tokens']}.",
        "",
        "Goal: at least 5x over one at a time. The last column is the ratio of decoder token positions (one row per "
        "forward against the shared prefix): on a CPU these tiny models are compute-bound, so it bounds the "
        "speed-up from sharing. With FaithEval's long questions the prefix dominates and 4 candidates can save at "
        "most ~3x there; the goal is met where rows are short (per-forward cost dominates) and for the drift "
        "answers (one memory and instruction for ~20 questions). A batch-1 forward of a multi-billion-parameter "
        "decoder on a GPU is bound by reading its weights, which batching amortises on top of the sharing.",
        "",
        f"Greedy reconstruction, {res['recon_samples']} segments x {res['new_tokens']} new tokens: batched "
        f"{res['recon_batched_s']:.3f} s, one at a time {res['recon_single_s']:.3f} s ({res['recon_speedup']:.1f}x).",
        "",
        f"Effective rank of B=64 memories, D={res['erank_D']:,}: QR route {res['erank_qr_s']:.3f} s, SVD route "
        f"{res['erank_svd_s']:.3f} s, former Gram route {res['erank_gram_s']:.3f} s. On a rank-5 batch of the same "
        f"shape (exact erank {res['erank_rank5_exact']:.9f}) the relative errors are: QR {e['qr']:.1e}, SVD "
        f"{e['svd']:.1e}, numpy SVD {e['numpy_svd']:.1e}, Gram {e['gram']:.1e} (squaring the matrix turns its "
        "exact zeros into directions of size ~1e-8).",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", help="also write the Markdown report here")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16, help="the evaluate.batch_size to measure")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text = render(run(n_questions=args.questions, batch=args.batch))
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
