"""Evaluation benchmark: batched decoding/scoring vs one sample at a time, and Gram vs SVD effective rank.

    python -m ctxcomp.bench.eval_bench [--out FILE]

Uses random tiny models (the shapes of the tiny preset's medium compressor and decoder), so it needs no pipeline
outputs. The one-at-a-time baseline is what a naive loop over `model.generate` does: batch size 1, same KV cache.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import torch

from ..evaluate import decoding
from ..metrics.erank import effective_rank
from ..model.collate import Collator
from ..model.compressor import ContextCompressor
from ..tiny.build import build_model
from ..tiny.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parents[3]


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
    model = ContextCompressor(comp, dec, num_memory=4, decoder_bos_id=dec_tok.bos_token_id).eval()
    return model, Collator(comp_tok, dec_tok, 64, 32)


@torch.no_grad()
def run(n: int = 32, new_tokens: int = 64, batch: int = 16) -> dict:
    torch.manual_seed(0)
    with open(ROOT / "workflow/data/c4/c4_sample.jsonl") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(300), fh)]
    model, collate = _models(texts)
    zs = decoding.compress_texts(model, collate, texts[:n], 1, batch)
    empty = [[] for _ in zs]

    def batched_gen():
        for r in decoding.batches(n, batch):
            decoding.greedy_generate(model, [zs[i] for i in r], [empty[i] for i in r], new_tokens, None,
                                     "reconstruct")

    def single_gen():
        for i in range(n):
            decoding.greedy_generate(model, [zs[i]], [[]], new_tokens, None, "reconstruct")

    prompts = [collate.dec_tok("Question: which one?\nAnswer:", add_special_tokens=False)["input_ids"]] * n
    cands = [collate.dec_tok(f" candidate answer {i}", add_special_tokens=False)["input_ids"] for i in range(n)]

    def batched_score():
        for r in decoding.batches(n, batch):
            decoding.score_continuations(model, [zs[i] for i in r], [prompts[i] for i in r], [cands[i] for i in r])

    def single_score():
        for i in range(n):
            decoding.score_continuations(model, [zs[i]], [prompts[i]], [cands[i]])

    res = {"samples": n, "new_tokens": new_tokens, "batch": batch, "threads": torch.get_num_threads()}
    res["generate_batched_s"], res["generate_single_s"] = _best(batched_gen, 2), _best(single_gen, 2)
    res["score_batched_s"], res["score_single_s"] = _best(batched_score), _best(single_score)
    res["generate_speedup"] = res["generate_single_s"] / res["generate_batched_s"]
    res["score_speedup"] = res["score_single_s"] / res["score_batched_s"]
    z = torch.randn(64, 32, 4096)  # B=64 memories of M·d = 131,072 values
    res["erank_D"] = z[0].numel()
    res["erank_gram_s"] = _best(lambda: effective_rank(z, "gram"))
    res["erank_svd_s"] = _best(lambda: effective_rank(z, "svd"))
    res["erank_gram_speedup"] = res["erank_svd_s"] / res["erank_gram_s"]
    res["erank_rel_diff"] = abs(effective_rank(z, "gram") - effective_rank(z, "svd")) / effective_rank(z, "svd")
    return res


def render(res: dict) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return "\n".join([
        f"# Evaluation benchmark ({dt.date.today().isoformat()})",
        "",
        f"Machine: {cpu}, {torch.get_num_threads()} torch threads; torch {torch.__version__}.",
        f"Tiny models (compressor d=64, decoder d=128), {res['samples']} samples, batch {res['batch']}.",
        "",
        "| what | batched (s) | one at a time (s) | speed-up |",
        "|---|---|---|---|",
        f"| greedy reconstruction, {res['new_tokens']} new tokens | {res['generate_batched_s']:.3f} | "
        f"{res['generate_single_s']:.3f} | {res['generate_speedup']:.1f}x |",
        f"| candidate scoring | {res['score_batched_s']:.3f} | {res['score_single_s']:.3f} | "
        f"{res['score_speedup']:.1f}x |",
        "",
        "Goal: at least 5x. Batched greedy decoding amortises the per-token model call over the batch; candidate "
        "scoring is one forward pass per candidate either way, so batching only removes per-call overhead and the "
        "matrix work dominates (profiled: the decoder's linear layers take about 80% of the batched time).",
        "",
        f"Effective rank of B=64 memories, D={res['erank_D']:,}: Gram route {res['erank_gram_s']:.3f} s, "
        f"SVD route {res['erank_svd_s']:.3f} s ({res['erank_gram_speedup']:.1f}x); relative difference "
        f"{res['erank_rel_diff']:.1e}.",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", help="also write the Markdown report here")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="the evaluate.batch_size to measure")
    args = ap.parse_args()
    text = render(run(n=args.samples, batch=args.batch))
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
