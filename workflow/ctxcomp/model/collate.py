"""Turning text into compressor and decoder tensors, each side with its own tokenizer.

What L means: a segment is the first L tokens of the text under the COMPRESSOR's tokenizer (plus its BOS, if it
has one, which is not counted). The reconstruction target is that same span of text, decoded back to a string and
re-tokenized by the DECODER's tokenizer, followed by the decoder's EOS; the continuation target is the following
text, cut to `continuation_tokens` decoder tokens.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


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
        return self.comp_tok.decode(seg, skip_special_tokens=True)

    def dec_ids(self, text: str, limit: int, eos: bool) -> list[int]:
        ids = self.dec_tok(text, add_special_tokens=False)["input_ids"][:limit]
        return ids + ([self.dec_tok.eos_token_id] if eos else [])

    def compressor_tensors(self, segments: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_pad([self.comp_input(s) for s in segments], pad_id_of(self.comp_tok))

    # ------------------------------------------------------------------------------------------------- batch
    def __call__(self, records: Sequence[dict]) -> dict[str, Any]:
        segs = [self.comp_segments(r["text"])[0] for r in records]
        seg_texts = [self.segment_text(s) for s in segs]
        comp_ids, comp_mask = self.compressor_tensors(segs)
        re_ids, re_mask = right_pad([self.dec_ids(t, self.max_recon, eos=True) for t in seg_texts],
                                    pad_id_of(self.dec_tok))
        nt_ids, nt_mask = right_pad([self.dec_ids(r.get("continuation", ""), self.C, eos=False) for r in records],
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
