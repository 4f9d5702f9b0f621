"""Decoder-side batching from memories: prefixes of different lengths, candidate scoring, greedy decoding.

Layout of one row:  [left padding] [BOS?] <mem> Z_1..Z_K </mem> <task> prompt tokens | continuation (scored or
generated). K = M × number of segments, so rows differ in length; left padding keeps every row's last prompt
token at the same column, which is what batched greedy decoding with a KV cache needs.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..model.compressor import ContextCompressor, positions_from_mask
from ..model.collate import Collator


def batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def compress_texts(model: ContextCompressor, collate: Collator, texts: Sequence[str], max_segments: int,
                   batch_size: int) -> list[torch.Tensor]:
    """Memory of each text: its first `max_segments` segments compressed separately, memories concatenated
    in order -> a list of (M·S_i, d) tensors."""
    segs, owner = [], []
    for i, t in enumerate(texts):
        for s in collate.comp_segments(t, max_segments):
            segs.append(s)
            owner.append(i)
    device = next(model.parameters()).device
    zs: list[torch.Tensor] = []
    for r in batches(len(segs), batch_size):
        ids, mask = collate.compressor_tensors([segs[j] for j in r])
        zs.extend(model.compress(ids.to(device), mask.to(device)))
    per_text: list[list[torch.Tensor]] = [[] for _ in texts]
    for z, i in zip(zs, owner):
        per_text[i].append(z)
    return [torch.cat(parts, dim=0) for parts in per_text]


def prompt_rows(model: ContextCompressor, zs: Sequence[torch.Tensor], prompts: Sequence[Sequence[int]],
                task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded embeddings and mask of [prefix(Z); prompt tokens] for each row: (B, P, d), (B, P)."""
    emb = model.decoder.get_input_embeddings()
    rows = []
    for z, p in zip(zs, prompts):
        pre = model.prefix(z.unsqueeze(0), task)[0]  # (P_i, d)
        if len(p):
            pre = torch.cat([pre, emb(torch.tensor(list(p), device=pre.device))], dim=0)
        rows.append(pre)
    n = max(r.shape[0] for r in rows)
    d = rows[0].shape[1]
    out = rows[0].new_zeros(len(rows), n, d)
    mask = torch.zeros(len(rows), n, dtype=torch.long, device=out.device)
    for i, r in enumerate(rows):
        out[i, n - r.shape[0]:] = r
        mask[i, n - r.shape[0]:] = 1
    return out, mask


@torch.no_grad()
def score_continuations(model: ContextCompressor, zs: Sequence[torch.Tensor], prompts: Sequence[Sequence[int]],
                        continuations: Sequence[Sequence[int]], task: str = "continue") -> tuple[list[float], list[int]]:
    """Sum of log p(continuation | Z, prompt) per row, and the continuation's token count."""
    pre, pmask = prompt_rows(model, zs, prompts, task)
    n = max(1, max(len(c) for c in continuations))
    ids = torch.zeros(len(continuations), n, dtype=torch.long, device=pre.device)
    cmask = torch.zeros_like(ids)
    for i, c in enumerate(continuations):
        ids[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        cmask[i, : len(c)] = 1
    nll = model.target_nll(pre, pmask, ids, cmask)  # (B, T)
    return (-nll.sum(-1)).tolist(), cmask.sum(-1).tolist()


def stop_ids(model: ContextCompressor, eos_id: int | Sequence[int] | None) -> set[int]:
    """The ids that end a row: `eos_id` (the tokenizer's EOS) and the decoder's own EOS set (its generation config:
    Llama-3-Instruct ends with <|eot_id|> or <|end_of_text|>). `None` means: never stop early."""
    if eos_id is None:
        return set()
    given = [eos_id] if isinstance(eos_id, int) else list(eos_id)
    return {int(i) for i in given} | set(getattr(model, "decoder_eos_ids", ()))


@torch.no_grad()
def greedy_generate(model: ContextCompressor, zs: Sequence[torch.Tensor], prompts: Sequence[Sequence[int]],
                    max_new_tokens: int, eos_id: int | Sequence[int] | None, task: str) -> list[list[int]]:
    """Batched greedy decoding with a KV cache; each row stops at any id of `stop_ids(model, eos_id)` (not
    included) or after max_new_tokens."""
    dec = model.decoder
    stop = stop_ids(model, eos_id)
    embeds, mask = prompt_rows(model, zs, prompts, task)
    pos = positions_from_mask(mask)
    out = dec(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1]
    B = embeds.shape[0]
    done = [False] * B
    tokens: list[list[int]] = [[] for _ in range(B)]
    last_pos = pos[:, -1:]
    for _ in range(max_new_tokens):
        nxt = logits.float().argmax(-1)
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                if t in stop:
                    done[i] = True
                else:
                    tokens[i].append(t)
        if all(done):
            break
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
        last_pos = last_pos + 1
        out = dec(input_ids=nxt[:, None].to(embeds.device), attention_mask=mask, position_ids=last_pos, cache=cache,
                  use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
    return tokens
