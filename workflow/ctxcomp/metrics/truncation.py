"""Rank truncation of the memory (paper App. G.2): how much of Z's spectrum the decoder actually needs.

Two variants; the paper does not say which SVD it truncates, so both are computed (rank_truncation.json rows carry
`variant`):
- per sample (`truncate_energy`): for each sample's memory Z in R^{M x d} (M x d per segment; M·S x d for a context
  of S segments), take ITS OWN SVD Z = U S V^T, keep the smallest k whose cumulative energy
  sum_{i<=k} sigma_i^2 / sum_i sigma_i^2 reaches `energy` (in (0, 1]), and rebuild Z_k = U_k S_k V_k^T. The kept
  directions differ from sample to sample (k <= min(M·S, d)).
- batch (`batch_basis` + `energy_rank` + `project`): stack the memories of a batch as rows, each flattened to M·d
  (Z_batch in R^{N x M·d}: the matrix the effective rank is measured on, metrics/erank.py), take its right-singular
  vectors, keep the smallest k reaching `energy` of Z_batch's spectrum and project every memory onto those k shared
  directions. This asks how many directions the memory SPACE uses, the question the effective rank answers.
Re-running KO questions on the truncated memories shows whether accuracy lives in a few dominant directions
(energy 1.0 keeps every direction with nonzero energy: Z unchanged).
"""
from __future__ import annotations

import torch


def truncate_energy(z: torch.Tensor, energy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample energy-based SVD truncation of z [..., M, d]. Returns (truncated z, kept ranks [...]).

    The result has z's shape and dtype; the SVD runs in float32 (float64 for float64 input). An all-zero memory keeps
    rank 0 and stays zero.
    """
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    if z.ndim < 2:
        raise ValueError(f"z must be [..., M, d], got shape {tuple(z.shape)}")
    lead = z.shape[:-2]
    work_dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    x = z.detach().to(work_dtype).reshape(-1, *z.shape[-2:])
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    if energy >= 1.0:
        return z.clone(), _numerical_rank(s, max(z.shape[-2:])).reshape(lead)
    e = s.pow(2)
    total = e.sum(dim=-1, keepdim=True)
    frac = e.cumsum(dim=-1) / total.clamp_min(torch.finfo(work_dtype).tiny)
    # smallest k with frac[k-1] >= energy; guard against rounding leaving the last entry just below 1.
    frac[..., -1] = 1.0
    ranks = (frac < energy - 4 * torch.finfo(work_dtype).eps).sum(dim=-1) + 1
    ranks = torch.where(total.squeeze(-1) > 0, ranks, torch.zeros_like(ranks))
    keep = torch.arange(s.shape[-1], device=s.device)[None, :] < ranks[:, None]
    out = (u * (s * keep)[:, None, :]) @ vh
    return out.reshape(z.shape).to(z.dtype), ranks.reshape(lead)


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """Smallest k whose singular values s (descending) hold at least `energy` of sum(s^2); 0 for an all-zero s."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    e = s.double().pow(2)
    total = float(e.sum())
    if total <= 0.0:
        return 0
    frac = e.cumsum(0) / total
    frac[-1] = 1.0
    return int((frac < energy - 4 * torch.finfo(torch.float64).eps).sum()) + 1


def batch_basis(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values (descending) and right-singular vectors (as rows, (r, D)) of the batch matrix rows (N, D).

    float64 on the rows' device (float32 input is promoted); r = min(N, D).
    """
    x = rows.detach().to(torch.float64).reshape(rows.shape[0], -1)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return s, vh


def project(rows: torch.Tensor, vh: torch.Tensor, k: int) -> torch.Tensor:
    """rows (N, D) projected onto the first k right-singular directions vh[:k] (float64 arithmetic, rows' dtype)."""
    v = vh[:k].to(rows.device)
    x = rows.detach().to(torch.float64).reshape(rows.shape[0], -1)
    return ((x @ v.T) @ v).reshape(rows.shape).to(rows.dtype)


def _numerical_rank(s: torch.Tensor, size: int) -> torch.Tensor:
    """Number of singular values s [N, r] of M x d matrices above the usual numerical-rank tolerance
    (max sigma * max(M, d) * eps, numpy.linalg.matrix_rank's); size = max(M, d)."""
    tol = s.amax(dim=-1, keepdim=True) * size * torch.finfo(s.dtype).eps
    return (s > tol).sum(dim=-1)
