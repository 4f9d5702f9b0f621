"""Probes of the memory: effective rank of Z over a batch, teacher-forced conditional entropy of the decoder."""
from __future__ import annotations

from typing import Any

import torch

from ..model.compressor import ContextCompressor


@torch.no_grad()
def reconstruction_entropy(model: ContextCompressor, z: torch.Tensor, re_ids: torch.Tensor, re_mask: torch.Tensor,
                           vocab_chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean vocabulary entropy (nats) at reconstruction positions under teacher forcing, and token counts.

    H_t = −Σ_v p(v | Z, x_<t) log p(v | Z, x_<t); the LM head is applied in vocabulary chunks (128k vocabularies).
    """
    from ..metrics.entropy import chunked_entropy

    prefix = model.prefix(z, "reconstruct")
    pmask = torch.ones(prefix.shape[:2], dtype=re_mask.dtype, device=re_mask.device)
    h = model.decoder_hidden(prefix, pmask, re_ids, re_mask)[:, prefix.shape[1] - 1 : -1]  # (B, T, d)
    head = model.decoder.get_output_embeddings()
    B, T, d = h.shape
    ent = chunked_entropy(h.reshape(B * T, d), head.weight, getattr(head, "bias", None), chunk=vocab_chunk)
    ent = ent.view(B, T) * re_mask
    n = re_mask.sum(-1)
    return ent.sum(-1) / n.clamp_min(1), n


@torch.no_grad()
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
