"""The random compressor/decoder pair the evaluation tests run on, built once per process.

Training the two tokenizers takes seconds, the models themselves milliseconds; nothing here depends on the
evaluation code under test, so every module (and every process forked from one that built it, as the mutation
benchmark forks one per mutant) reuses the same pair. Tests only read it: the model is in eval mode, no test
trains or edits it.
"""
from __future__ import annotations

import json

import torch

from ctxcomp.model.collate import Collator
from ctxcomp.model.compressor import ContextCompressor
from ctxcomp.tiny.build import build_model
from ctxcomp.tiny.tokenizer import build_tokenizer
from snakemake_helpers import ROOT

L, C = 32, 16  # segment and continuation tokens
_BUILT: dict[str, object] = {}


def c4_texts() -> list[str]:
    """The first 200 texts of the shipped C4 sample."""
    if "texts" not in _BUILT:
        with open(ROOT / "workflow/data/c4/c4_sample.jsonl") as fh:
            _BUILT["texts"] = [json.loads(line)["text"] for _, line in zip(range(200), fh, strict=False)]
    return list(_BUILT["texts"])


def tiny_pair() -> tuple[ContextCompressor, Collator]:
    """A Qwen3-style compressor (BPE 400) and a wider Llama-style decoder (BPE 500, BOS), random, M = L/4."""
    if "pair" not in _BUILT:
        texts = c4_texts()
        comp_tok = build_tokenizer(texts, 400, "qwen3")
        dec_tok = build_tokenizer(texts, 500, "llama")
        arch = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=64)
        comp = build_model({"arch": "qwen3", "head_dim": 8, **arch}, comp_tok, seed=1)
        dec = build_model({"arch": "llama", **arch, "hidden_size": 48, "intermediate_size": 96}, dec_tok, seed=2)
        torch.manual_seed(3)
        model = ContextCompressor(comp, dec, num_memory=L // 4, decoder_bos_id=dec_tok.bos_token_id).eval()
        _BUILT["pair"] = (model, Collator(comp_tok, dec_tok, L, C))
    return _BUILT["pair"]
