"""Turning text into compressor and decoder tensors, each side with its own tokenizer.

What L means: a segment is the first L tokens of the text under the COMPRESSOR's tokenizer (plus its BOS, if it
has one, which is not counted). The reconstruction target is that same span of text, decoded back to a string and
re-tokenized by the DECODER's tokenizer, followed by the decoder's EOS; the continuation target is the following
text, cut to `continuation_tokens` decoder tokens.

A training/evaluation chunk is a window of a document, `text` + `continuation` (cut by data/fineweb.py in the
chunk tokenizer's tokens). Each compressor re-cuts that window in ITS OWN tokens (`window_split`): it reads exactly
L of them, the reconstruction target is exactly their text and the continuation starts right after it, whatever
family the chunk tokenizer was. Every decode uses clean_up_tokenization_spaces=False (CLEAN_UP), as data/fineweb.py
and the reconstruction hypotheses do, so the BLEU reference is exactly the text the compressor read.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: The one clean_up_tokenization_spaces choice for every decode of the pipeline (no " ." -> "." rewriting).
CLEAN_UP = False


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape (B, longest); `side` = "left" or "right" is where the padding goes."""
    n = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            cols = slice(n - len(s), n) if side == "left" else slice(0, len(s))
            ids[i, cols] = torch.tensor(s, dtype=torch.long)
            mask[i, cols] = 1
    return ids, mask


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pad(seqs, pad_id, "left")


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pad(seqs, pad_id, "right")


def pad_id_of(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


class Collator:
    """Callable over chunk records {"text", "continuation"} -> the batch dict ContextCompressor.forward takes."""

    def __init__(self, comp_tok: Any, dec_tok: Any, segment_tokens: int, continuation_tokens: int,
                 max_recon_tokens: int | None = None):
        self.comp_tok = comp_tok
        self.dec_tok = dec_tok
        self.L = segment_tokens
        self.C = continuation_tokens
        # a segment of L compressor tokens rarely needs more than ~2L decoder tokens; the cap bounds memory
        self.max_recon = max_recon_tokens or 2 * segment_tokens

    # ------------------------------------------------------------------------------------------------ pieces
    def comp_segments(self, text: str, max_segments: int = 1) -> list[list[int]]:
        """The text's first `max_segments` segments of L compressor tokens (the last may be shorter)."""
        ids = self.comp_tok(text, add_special_tokens=False)["input_ids"]
        segs = [ids[i : i + self.L] for i in range(0, max(len(ids), 1), self.L)][:max_segments]
        return segs or [[]]

    def comp_input(self, seg: list[int]) -> list[int]:
        bos = self.comp_tok.bos_token_id
        return ([bos] if bos is not None else []) + list(seg)

    def segment_text(self, seg: list[int]) -> str:
        return self.comp_tok.decode(seg, skip_special_tokens=True, clean_up_tokenization_spaces=CLEAN_UP)

    def window_split(self, text: str, continuation: str = "") -> tuple[list[int], str, str]:
        """(the window's first L compressor tokens, their text, the text right after them).

        The window is `text + continuation`. For a lossless (byte-level) tokenizer the decoded segment is a prefix
        of the window and the rest is the window after it; otherwise the rest is decoded from the remaining ids.
        """
        window = text + continuation
        ids = self.comp_tok(window, add_special_tokens=False)["input_ids"]
        seg = ids[: self.L]
        seg_text = self.segment_text(seg)
        if window.startswith(seg_text):
            rest = window[len(seg_text):]
        else:
            rest = self.comp_tok.decode(ids[self.L:], skip_special_tokens=True, clean_up_tokenization_spaces=CLEAN_UP)
        return seg, seg_text, rest

    def dec_ids(self, text: str, limit: int, eos: bool) -> list[int]:
        ids = self.dec_tok(text, add_special_tokens=False)["input_ids"][:limit]
        return ids + ([self.dec_tok.eos_token_id] if eos else [])

    def compressor_tensors(self, segments: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_pad([self.comp_input(s) for s in segments], pad_id_of(self.comp_tok))

    # ------------------------------------------------------------------------------------------------- batch
    def __call__(self, records: Sequence[dict]) -> dict[str, Any]:
        splits = [self.window_split(r["text"], r.get("continuation", "")) for r in records]
        segs, seg_texts = [s for s, _, _ in splits], [t for _, t, _ in splits]
        comp_ids, comp_mask = self.compressor_tensors(segs)
        re_ids, re_mask = right_pad([self.dec_ids(t, self.max_recon, eos=True) for t in seg_texts],
                                    pad_id_of(self.dec_tok))
        nt_ids, nt_mask = right_pad([self.dec_ids(rest, self.C, eos=False) for _, _, rest in splits],
                                    pad_id_of(self.dec_tok))
        return {
            "comp_ids": comp_ids, "comp_mask": comp_mask,
            "re_ids": re_ids, "re_mask": re_mask,
            "nt_ids": nt_ids, "nt_mask": nt_mask,
            "segment_texts": seg_texts,
            "ids": [r.get("id") for r in records],
        }


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
