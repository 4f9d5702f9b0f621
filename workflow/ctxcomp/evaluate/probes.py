"""Probes of the memory: effective rank of Z over a batch, teacher-forced conditional entropy of the decoder."""
from __future__ import annotations

from typing import Any

import torch

from ..model.compressor import ContextCompressor


def reconstruction_entropy(model: ContextCompressor, z: torch.Tensor, re_ids: torch.Tensor, re_mask: torch.Tensor,
                           vocab_chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean vocabulary entropy (nats) at reconstruction positions under teacher forcing, and token counts.

    H_t = −Σ_v p(v | Z, x_<t) log p(v | Z, x_<t) at the state before each target token x_t (position P-1+t of
    [prefix; target]). Only real target positions go through the LM head, in row blocks and vocabulary chunks, in
    float64 (metrics.entropy.chunked_entropy): no (B, T, V) logits. Returns float64 (B,) means and (B,) counts.
    """
    from ..metrics.entropy import chunked_entropy
    from ..model.loss import gathered

    prefix = model.prefix(z, "reconstruct")
    pmask = torch.ones(prefix.shape[:2], dtype=re_mask.dtype, device=prefix.device)
    h = model.decoder_hidden(prefix, pmask, re_ids, re_mask)[:, prefix.shape[1] - 1 : -1]  # (B, T, d)
    B, T, d = h.shape
    mask = re_mask.to(h.device)
    keep = mask.reshape(-1).nonzero().squeeze(1)
    head = model.decoder.get_output_embeddings()
    bias = getattr(head, "bias", None)
    with gathered(head.weight, bias):  # a ZeRO-3 partition holds a slice of the head
        per_pos = chunked_entropy(h.reshape(B * T, d)[keep], head.weight, bias, chunk=vocab_chunk)
    ent = torch.zeros(B * T, dtype=torch.float64, device=h.device).index_copy(0, keep, per_pos.to(h.device))
    n = mask.sum(-1)
    return ent.view(B, T).sum(-1) / n.clamp_min(1), n


reconstruction_entropy = torch.no_grad()(reconstruction_entropy)  # not a decorator: mutmut skips decorated functions


def probe_batch(model: ContextCompressor, batch: dict[str, Any], vocab_chunk: int = 16384) -> dict[str, Any]:
    """erank of the batch's memories (B × M·d) and per-sample reconstruction entropy."""
    from ..metrics.erank import effective_rank

    z = model.compress(batch["comp_ids"], batch["comp_mask"])
    ent, n = reconstruction_entropy(model, z, batch["re_ids"], batch["re_mask"], vocab_chunk)
    return {
        "erank": float(effective_rank(z.float())),
        "entropy_mean": float(ent.mean()),
        "entropy": ent.tolist(),
        "n_tokens": n.tolist(),
        "batch": int(z.shape[0]),
        "z": z,
    }


probe_batch = torch.no_grad()(probe_batch)  # not a decorator: mutmut skips decorated functions


def context_entropy(model: ContextCompressor, collate: Any, texts: list[str], max_segments: int, batch_size: int,
                    vocab_chunk: int = 16384) -> list[tuple[float, int, int]]:
    """(entropy, tokens, segments) per text over its first `max_segments` compressor segments - the segments its
    memory (and so its semantic-drift answers) is made of. Each segment is reconstructed, teacher-forced, from its
    own memory; the text's entropy is the token-weighted mean over its segments' target tokens."""
    from ..model.collate import pad_id_of, right_pad

    device = next(model.parameters()).device
    segs, owner = [], []
    for i, t in enumerate(texts):
        for s in collate.comp_segments(t, max_segments):
            segs.append(s)
            owner.append(i)
    tot = [0.0] * len(texts)
    count = [0] * len(texts)
    nseg = [0] * len(texts)
    for a in range(0, len(segs), batch_size):
        chunk = segs[a:a + batch_size]
        comp_ids, comp_mask = collate.compressor_tensors(chunk)
        re_ids, re_mask = right_pad([collate.dec_ids(collate.segment_text(s), collate.max_recon, eos=True)
                                     for s in chunk], pad_id_of(collate.dec_tok))
        z = model.compress(comp_ids.to(device), comp_mask.to(device))
        ent, n = reconstruction_entropy(model, z, re_ids.to(device), re_mask.to(device), vocab_chunk)
        for i, e, k in zip(owner[a:a + batch_size], ent.tolist(), n.tolist()):
            tot[i] += e * k
            count[i] += int(k)
            nseg[i] += 1
    return [(tot[i] / max(count[i], 1), count[i], nseg[i]) for i in range(len(texts))]


context_entropy = torch.no_grad()(context_entropy)  # not a decorator: mutmut skips decorated functions
