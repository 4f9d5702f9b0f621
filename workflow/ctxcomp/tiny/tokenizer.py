"""Byte-level BPE tokenizers trained locally for the tiny preset, one per architecture family.

Each family gets its own vocabulary and special tokens (Llama-style with a BOS token, Qwen-style without), so the
tiny preset exercises the real situation where compressor and decoder tokenize the same text differently.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..io import atomic_dir

log = logging.getLogger(__name__)

SPECIALS = {
    "llama": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<|pad|>"},
    "qwen3": {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"},
}


def iter_corpus(path: str | Path, text_field: str = "text") -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)[text_field]
            except (json.JSONDecodeError, KeyError) as exc:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with '{text_field}' ({exc})") from exc


def build_tokenizer(texts: Iterable[str], vocab_size: int, style: str):
    """Train a byte-level BPE and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[style]
    special_list = [t for t in specials.values() if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_list,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in specials.items() if v})
    # Like Llama-3 and Qwen3, BOS (if any) is added by the pipeline explicitly, never implicitly.
    return fast


def train_tokenizer(corpus: str | Path, out_dir: str | Path, vocab_size: int, style: str) -> dict:
    texts = list(iter_corpus(corpus))
    tok = build_tokenizer(texts, vocab_size, style)
    with atomic_dir(out_dir) as tmp:
        tok.save_pretrained(tmp)
    ids = tok(texts[:50])["input_ids"]
    chars = sum(len(t) for t in texts[:50])
    info = {"vocab_size": len(tok), "style": style, "chars_per_token": chars / max(1, sum(map(len, ids)))}
    log.info("tokenizer %s: %s", out_dir, info)
    return info
