"""Effective rank of the compressed memory (paper Fig. 3): how many directions the memory Z actually uses.

Definition (Roy & Vetterli 2007): flatten a batch of memories to X in R^{B x D} (D = M*d), take its singular values
sigma_i, normalise p_i = sigma_i / sum_j sigma_j, and erank = exp(-sum_i p_i log p_i) with 0 log 0 = 0.
Range [1, min(B, D)] (0 for an all-zero matrix). Direction: descriptive, not "better". The paper (Fig. 3a) finds
that the effective rank of Z RISES with compressor size (larger compressors spread the memory over more
directions), and that during training it peaks early and then falls; after the peak, erank tracks
knowledge-overwriting accuracy (Fig. 3b/3c).

Two routes with the same singular values: "svd" (torch.linalg.svdvals on B x D) and "qr" (a reduced QR of X^T,
D x B = Q R, then the singular values of the B x B factor R, which equal those of X because Q has orthonormal
columns). The QR route costs O(D B^2) like a Gram matrix but never squares the matrix: the eigenvalues of X X^T
carry an absolute error of ~eps * sigma_max^2, i.e. ~1e-8 * sigma_max on every singular value after the square root,
which turns the exact zeros of a rank-deficient (collapsed) memory into spurious directions (a rank-1 memory would
measure 1.000005). Both run in float64.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

METHODS = ("auto", "svd", "qr")


def _as_matrix(z: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(z)) if not isinstance(z, torch.Tensor) else z
    t = t.detach().to("cpu", torch.float64)
    if t.ndim == 0:
        raise ValueError("effective rank needs at least a (B,) tensor")
    return t.reshape(t.shape[0], -1)  # a (B,) vector becomes B x 1


def singular_values(z: Any, method: str = "auto") -> torch.Tensor:
    """The min(B, D) singular values (float64, descending) of z flattened to (B, D).

    method: "svd", "qr" (singular values of R in X^T = QR; exact and cheap for D >> B) or "auto" (qr if D > B).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = _as_matrix(z)
    b, d = x.shape
    # "auto" is "qr" exactly when D > B; with D <= B, R would be D x D: the plain SVD is as cheap
    if method == "svd" or d <= b:
        return torch.linalg.svdvals(x)
    r = torch.linalg.qr(x.T, mode="r").R  # (B, B): X^T = Q R, so X = R^T Q^T has the singular values of R
    return torch.linalg.svdvals(r)


def erank_from_singular_values(sigma: Any) -> float:
    """exp(Shannon entropy) of the singular values normalised to sum 1; 0.0 if they are all zero."""
    s = torch.as_tensor(np.asarray(sigma, dtype=np.float64)) if not isinstance(sigma, torch.Tensor) else sigma
    s = s.detach().to(torch.float64).clamp_min(0.0)
    total = float(s.sum())
    if total <= 0.0 or not math.isfinite(total):
        return 0.0 if total == 0.0 else float("nan")
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def effective_rank(z: Any, method: str = "auto") -> float:
    """Effective rank of a batch of memories z of shape (B, ...), flattened to B x D. See module docstring."""
    return erank_from_singular_values(singular_values(z, method))
