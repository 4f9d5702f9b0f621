"""Effective rank of the compressed memory (paper Fig. 3): how many directions the memory Z actually uses.

Definition (Roy & Vetterli 2007): flatten a batch of memories to X in R^{B x D} (D = M*d), take its singular values
sigma_i, normalise p_i = sigma_i / sum_j sigma_j, and erank = exp(-sum_i p_i log p_i) with 0 log 0 = 0.
Range [1, min(B, D)] (0 for an all-zero matrix). Direction: descriptive, not "better" - the paper finds that larger
compressors collapse to a lower effective rank and that, after its peak during training, erank tracks
knowledge-overwriting accuracy.

Two numerically equivalent routes: "svd" (torch.linalg.svdvals on B x D) and "gram" (sigma_i = sqrt of the
eigenvalues of the B x B Gram matrix X X^T), which is far cheaper when D >> B, as with M*d ~ 1e5-1e6.
Both run in float64 so the routes agree to ~1e-6 relative.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

METHODS = ("auto", "svd", "gram")


def _as_matrix(z: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(z)) if not isinstance(z, torch.Tensor) else z
    t = t.detach().to("cpu", torch.float64)
    if t.ndim == 0:
        raise ValueError("effective rank needs at least a (B,) tensor")
    if t.ndim == 1:
        t = t.unsqueeze(1)
    return t.reshape(t.shape[0], -1)


def singular_values(z: Any, method: str = "auto") -> torch.Tensor:
    """The min(B, D) singular values (float64, descending) of z flattened to (B, D).

    method: "svd", "gram" (square roots of the eigenvalues of X X^T, negatives clamped to 0) or "auto" (gram if D > B).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = _as_matrix(z)
    b, d = x.shape
    if method == "auto":
        method = "gram" if d > b else "svd"
    if method == "svd":
        return torch.linalg.svdvals(x)
    gram = x @ x.T
    eig = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    return torch.sqrt(eig).flip(0)[: min(b, d)]  # X X^T has B - rank extra zero eigenvalues when B > D


def erank_from_singular_values(sigma: Any) -> float:
    """exp(Shannon entropy) of the singular values normalised to sum 1; 0.0 if they are all zero."""
    s = torch.as_tensor(np.asarray(sigma, dtype=np.float64)) if not isinstance(sigma, torch.Tensor) else sigma
    s = s.to(torch.float64).clamp_min(0.0)
    total = float(s.sum())
    if total <= 0.0 or not math.isfinite(total):
        return 0.0 if total == 0.0 else float("nan")
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def effective_rank(z: Any, method: str = "auto") -> float:
    """Effective rank of a batch of memories z of shape (B, ...), flattened to B x D. See module docstring."""
    return erank_from_singular_values(singular_values(z, method))
