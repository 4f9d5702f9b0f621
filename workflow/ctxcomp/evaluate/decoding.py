"""Decoder-side batching from memories: prefixes of different lengths, candidate scoring, greedy decoding.

Layout of one row:  [left padding] [BOS?] <mem> Z_1..Z_K </mem> <task> prompt tokens | continuation (scored or
generated). K = M × number of segments, so rows differ in length; left padding keeps every row's last prompt
token at the same column, which is what batched greedy decoding with a KV cache needs.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.collate import Collator
from ..model.compressor import ContextCompressor, positions_from_mask


def batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


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


compress_texts = torch.no_grad()(compress_texts)  # not a decorator: mutmut skips decorated functions


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


def score_continuations(model: ContextCompressor, zs: Sequence[torch.Tensor], prompts: Sequence[Sequence[int]],
                        continuations: Sequence[Sequence[int]],
                        task: str = "continue") -> tuple[list[float], list[int]]:
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


score_continuations = torch.no_grad()(score_continuations)  # not a decorator: mutmut skips decorated functions


def stop_ids(model: ContextCompressor, eos_id: int | Sequence[int] | None) -> set[int]:
    """The ids that end a row: `eos_id` (the tokenizer's EOS) and the decoder's own EOS set (its generation config:
    Llama-3-Instruct ends with <|eot_id|> or <|end_of_text|>). `None` means: never stop early."""
    if eos_id is None:
        return set()
    given = [eos_id] if isinstance(eos_id, int) else list(eos_id)
    return {int(i) for i in given} | set(getattr(model, "decoder_eos_ids", ()))


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


greedy_generate = torch.no_grad()(greedy_generate)  # not a decorator: mutmut skips decorated functions


# ------------------------------------------------------------------------------------ shared prefixes (KV cache)
# A question's candidates share [Z; question], and a context's ~20 drift questions share its memory prefix and the
# answer instruction: both run that prefix once and continue every row from a copy of its key/value cache.
def _cache_rows(cache, rows: torch.Tensor):
    """A cache holding batch rows `rows` of `cache`, which stays unchanged (selection replaces tensors, so a
    shallow copy of the container and of each layer is enough)."""
    import copy

    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    out.batch_select_indices(rows)
    return out


def prefix_cache(model: ContextCompressor, zs: Sequence[torch.Tensor], prompts: Sequence[Sequence[int]],
                 task: str):
    """Run the left-padded [prefix(Z); prompt] rows once: (cache, mask (B, P), last position (B,), next-token
    logits (B, V) in float32)."""
    embeds, mask = prompt_rows(model, zs, prompts, task)
    pos = positions_from_mask(mask)
    out = model.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True,
                        logits_to_keep=1)
    return out.cache, mask, pos[:, -1], out.logits[:, -1].float()


prefix_cache = torch.no_grad()(prefix_cache)  # not a decorator: mutmut skips decorated functions


def score_candidates(model: ContextCompressor, zs: Sequence[torch.Tensor], prompts: Sequence[Sequence[int]],
                     candidates: Sequence[Sequence[Sequence[int]]], task: str = "continue",
                     max_rows: int = 64) -> list[list[tuple[float, int]]]:
    """Per question i, [(sum log p(candidate | Z_i, prompt_i), token count)] for each of its candidates.

    The prefix runs once per question; its candidates (right-padded, `max_rows` at a time) continue from its cache.
    Equal to `score_continuations` on each (Z, prompt, candidate) row.
    """
    from ..model.collate import right_pad

    cache, mask, last, first = prefix_cache(model, zs, prompts, task)
    first_lp = torch.log_softmax(first, dim=-1)
    pairs = sorted(((i, j) for i, cands in enumerate(candidates) for j in range(len(cands))),
                   key=lambda ij: len(candidates[ij[0]][ij[1]]))  # similar lengths per chunk: less padding
    out: list[list[tuple[float, int]]] = [[(0.0, 0)] * len(c) for c in candidates]
    for b in batches(len(pairs), max_rows):
        chunk = [pairs[k] for k in b]
        sel = torch.tensor([i for i, _ in chunk], device=mask.device)
        ids, cmask = right_pad([list(candidates[i][j]) for i, j in chunk], 0)
        ids, cmask = ids.to(mask.device), cmask.to(mask.device)
        steps = torch.arange(ids.shape[1], device=mask.device)
        res = model.decoder(input_ids=ids, attention_mask=torch.cat([mask[sel], cmask], dim=1),
                            position_ids=last[sel, None] + 1 + steps, cache=_cache_rows(cache, sel), use_cache=True)
        lp = torch.log_softmax(res.logits[:, :-1].float(), dim=-1)  # predicts tokens 1..T-1
        tok_lp = torch.cat([first_lp[sel].gather(1, ids[:, :1]), lp.gather(2, ids[:, 1:, None]).squeeze(-1)], 1)
        sums, counts = (tok_lp * cmask).sum(-1).tolist(), cmask.sum(-1).tolist()
        for (i, j), s, n in zip(chunk, sums, counts):
            out[i][j] = (s, int(n))
    return out


score_candidates = torch.no_grad()(score_candidates)  # not a decorator: mutmut skips decorated functions


def _greedy_from(dec, cache, logits: torch.Tensor, mask: torch.Tensor, last_pos: torch.Tensor, max_new_tokens: int,
                 stop_ids: frozenset[int]) -> list[list[int]]:
    """Greedy continuation of cached rows; a row stops at its first token in `stop_ids` (not included)."""
    B = logits.shape[0]
    done = [False] * B
    tokens: list[list[int]] = [[] for _ in range(B)]
    for step in range(max_new_tokens):
        nxt = logits.float().argmax(-1)
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                if t in stop_ids:
                    done[i] = True
                else:
                    tokens[i].append(t)
        if all(done) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
        last_pos = last_pos + 1
        out = dec(input_ids=nxt[:, None], attention_mask=mask, position_ids=last_pos, cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
    return tokens


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix of `seqs`, at most min length - 1 (each row keeps a last token)."""
    n = min(len(x) for x in seqs) - 1
    first = seqs[0]
    for k in range(max(n, 0)):
        if any(x[k] != first[k] for x in seqs[1:]):
            return k
    return max(n, 0)


def generate_shared(model: ContextCompressor, zs: Sequence[torch.Tensor], prompts: Sequence[Sequence[int]],
                    owner: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int], task: str,
                    batch_size: int) -> list[list[int]]:
    """Greedy answers to `prompts`, prompt k about memory zs[owner[k]].

    Each memory's prefix runs once (`batch_size` memories at a time), together with the longest token prefix its
    prompts share (the answer instruction), and every prompt about it continues from that cache with its own
    remaining tokens: those are left-padded AFTER the shared part (mask 0 in the middle of the row, positions
    counting real tokens only), so all rows end at the same column. Equal to `greedy_generate` on each
    (memory, prompt) row.
    """
    from ..model.collate import left_pad

    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate_shared needs a non-empty prompt per row (its last token gives the first logits)")
    stop = frozenset(int(t) for t in stop_ids)
    by_owner: dict[int, list[int]] = {}
    for k, o in enumerate(owner):
        by_owner.setdefault(int(o), []).append(k)
    order = list(by_owner)
    out: list[list[int]] = [[] for _ in prompts]
    for cb in batches(len(order), batch_size):
        ctxs = [order[k] for k in cb]
        local = {c: n for n, c in enumerate(ctxs)}
        shared = {c: _common_prefix([prompts[q] for q in by_owner[c]]) for c in ctxs}
        cache, mask, last, _ = prefix_cache(model, [zs[c] for c in ctxs],
                                            [list(prompts[by_owner[c][0]][: shared[c]]) for c in ctxs], task)
        rows = [q for c in ctxs for q in by_owner[c]]
        for qb in batches(len(rows), batch_size):
            qs = [rows[k] for k in qb]
            sel = torch.tensor([local[int(owner[q])] for q in qs], device=mask.device)
            ids, qmask = left_pad([list(prompts[q][shared[int(owner[q])]:]) for q in qs], 0)
            ids, qmask = ids.to(mask.device), qmask.to(mask.device)
            am = torch.cat([mask[sel], qmask], dim=1)
            pos = last[sel, None] + qmask.cumsum(-1)
            res = model.decoder(input_ids=ids, attention_mask=am, position_ids=pos, cache=_cache_rows(cache, sel),
                                use_cache=True, logits_to_keep=1)
            for q, t in zip(qs, _greedy_from(model.decoder, res.cache, res.logits[:, -1], am, pos[:, -1:],
                                             max_new_tokens, stop)):
                out[q] = t
    return out


generate_shared = torch.no_grad()(generate_shared)  # not a decorator: mutmut skips decorated functions
