"""Correlations between memory statistics and accuracy (paper Fig. 3c, 4c).

`correlate` gives Pearson r (linear) and Spearman rho (rank) with two-sided p-values from scipy.stats. Range
[-1, 1]; sign is the direction of the association. Degenerate inputs (fewer than 3 finite pairs, or a constant
series) give NaN rather than raising, so a report built from a partial run still renders and says "n too small".
`post_peak` keeps the checkpoints from the erank peak onwards: the paper correlates erank with accuracy only after
the peak, where erank and KO accuracy move together.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def correlate(x: Sequence[float] | Any, y: Sequence[float] | Any) -> dict:
    """Pearson and Spearman correlation of paired samples, ignoring pairs where either value is NaN/inf.

    Returns {"pearson_r", "pearson_p", "spearman_rho", "spearman_p", "n"}; the four statistics are NaN when n < 3
    or either series is constant.
    """
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x has {xa.size} values but y has {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    out = {"pearson_r": math.nan, "pearson_p": math.nan, "spearman_rho": math.nan, "spearman_p": math.nan,
           "n": int(xa.size)}
    if xa.size < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr = stats.pearsonr(xa, ya)
        sr = stats.spearmanr(xa, ya)
    out.update(pearson_r=float(pr[0]), pearson_p=float(pr[1]), spearman_rho=float(sr[0]), spearman_p=float(sr[1]))
    return out


def post_peak(steps: Sequence[float] | Any, values: Sequence[float] | Any) -> tuple[np.ndarray, np.ndarray]:
    """Points (steps, values) at or after the first argmax of `values` (NaNs ignored), in step order.

    The peak is taken in step order (first maximum wins). Empty input, or all-NaN values, returns empty arrays.
    """
    s, v = np.asarray(steps, dtype=float).ravel(), np.asarray(values, dtype=float).ravel()
    keep = post_peak_mask(s, v)
    order = np.argsort(s[keep], kind="stable")
    return s[keep][order], v[keep][order]


def post_peak_mask(steps: Sequence[float] | Any, values: Sequence[float] | Any) -> np.ndarray:
    """Boolean mask over the input order selecting the points `post_peak` keeps (to filter paired columns)."""
    s, v = np.asarray(steps, dtype=float).ravel(), np.asarray(values, dtype=float).ravel()
    if s.shape != v.shape:
        raise ValueError(f"steps has {s.size} values but values has {v.size}")
    if v.size == 0 or not np.isfinite(v).any():
        return np.zeros(s.shape, dtype=bool)
    finite = np.where(np.isfinite(v), v, -np.inf)
    order = np.argsort(s, kind="stable")
    peak_step = s[order][int(np.argmax(finite[order]))]
    return s >= peak_step
