"""Percentile bootstrap intervals for every headline number, and paired intervals of a number minus its control.

Every statistic here is a function of SUMS of per-unit sufficient statistics, so one resample is a row of unit
indices drawn with replacement and its statistic comes from the summed rows:
- accuracy over samples: unit = sample, stats (correct, 1), statistic sum(correct) / sum(1);
- semantic-drift accuracy: unit = context (its ~20 questions are not independent), stats (correct questions,
  questions): a cluster bootstrap of the question-level accuracy;
- corpus BLEU: unit = segment, stats = sacreBLEU's sufficient statistics (hypothesis and reference lengths, matched
  and total n-grams per order), statistic = BLEU of the summed statistics, exactly what corpus BLEU computes. So a
  resample costs a sum, not a re-tokenisation (`corpus_score` is never called per resample).
A paired difference (value - control on the same units) resamples the units once for both.

Indices are drawn as scipy.stats.bootstrap draws them (`numpy.random.default_rng(seed).integers(0, n, (R, n))`) and
the interval is its "percentile" one (linear-interpolated 2.5th and 97.5th percentiles), so for a plain mean the
interval equals scipy's to rounding. All functions are pure; nothing reads files or global state.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
_CHUNK = 256  # resamples summed at a time: bounds memory at CHUNK x n x k


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) unit indices drawn with replacement, the same draws as scipy.stats.bootstrap."""
    return np.random.default_rng(seed).integers(0, n, (resamples, n))


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> list[float] | None:
    """[lo, hi] percentile interval of bootstrap replicates (non-finite replicates ignored); None if none is finite."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(v, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def replicates(stats: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], resamples: int,
               seed: int) -> np.ndarray:
    """The statistic of each resample: `statistic` maps summed stats (R, k) to values (R,)."""
    stats = np.asarray(stats, dtype=np.float64)
    idx = resample_indices(stats.shape[0], resamples, seed)
    out = np.empty(resamples, dtype=np.float64)
    for a in range(0, resamples, _CHUNK):
        out[a:a + _CHUNK] = statistic(stats[idx[a:a + _CHUNK]].sum(axis=1))
    return out


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def interval(stats: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], resamples: int = DEFAULT_RESAMPLES,
             seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """{"value": statistic of all units, "ci95": percentile interval} (None where undefined, e.g. no units)."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] == 0:
        return {"value": None, "ci95": None}
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(statistic(stats.sum(axis=0, keepdims=True))[0])
        reps = replicates(stats, statistic, resamples, seed)
    return {"value": _finite(value), "ci95": percentile_interval(reps, confidence)}


def paired_difference(stats: np.ndarray, control: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray],
                      resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """The control's own {"value", "ci95"}, the paired interval of value - control, and `distinguishable`
    (the whole difference interval lies above 0). `stats` and `control` hold the same units in the same rows."""
    stats, control = np.asarray(stats, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if stats.shape != control.shape:
        raise ValueError(f"paired statistics need the same units: {stats.shape} vs {control.shape}")
    own = interval(control, statistic, resamples, seed, confidence)
    if stats.ndim != 2 or stats.shape[0] == 0:
        return {**own, "diff_ci95": None, "distinguishable": None}
    k = stats.shape[1]
    both = np.concatenate([stats, control], axis=1)

    def diff(s: np.ndarray) -> np.ndarray:
        return statistic(s[:, :k]) - statistic(s[:, k:])

    with np.errstate(divide="ignore", invalid="ignore"):
        ci = percentile_interval(replicates(both, diff, resamples, seed), confidence)
    return {**own, "diff_ci95": ci, "distinguishable": None if ci is None else bool(ci[0] > 0)}


# ------------------------------------------------------------------------------------------ unit statistics
def ratio(s: np.ndarray) -> np.ndarray:
    """Summed (numerator, denominator) -> numerator / denominator: a mean over samples or a cluster mean."""
    return s[:, 0] / s[:, 1]


def flag_stats(flags: Sequence[bool | float]) -> np.ndarray:
    """(n, 2) stats of 0/1 flags for `ratio`: one row per sample."""
    f = np.asarray([float(x) for x in flags], dtype=np.float64)
    return np.stack([f, np.ones_like(f)], axis=1) if f.size else np.zeros((0, 2))


def cluster_stats(flags: Sequence[bool | float], clusters: Sequence[str]) -> np.ndarray:
    """(n_clusters, 2) stats (sum of flags, count) per cluster, in order of first appearance, for `ratio`."""
    order: dict[str, int] = {}
    for c in clusters:
        order.setdefault(c, len(order))
    out = np.zeros((len(order), 2), dtype=np.float64)
    for f, c in zip(flags, clusters):
        out[order[c], 0] += float(f)
        out[order[c], 1] += 1.0
    return out


def accuracy_interval(flags: Sequence[bool | float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      clusters: Sequence[str] | None = None) -> dict:
    """Mean of flags with its percentile interval; clusters (e.g. context ids) make it a cluster bootstrap."""
    stats = flag_stats(flags) if clusters is None else cluster_stats(flags, clusters)
    return {**interval(stats, ratio, resamples, seed), "n": len(flags)}


# ------------------------------------------------------------------------------------------------------- BLEU
def bleu_unit_stats(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(n, 2 + 2·N) sacreBLEU sufficient statistics per segment: sys_len, ref_len, matched[N], total[N]."""
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    metric = BLEU()
    rows = []
    for h, r in zip(hypotheses, references):
        s = metric.corpus_score([h], [[r]])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), 2 + 2 * metric.max_ngram_order)


def bleu_from_stats(s: np.ndarray) -> np.ndarray:
    """Corpus BLEU / 100 of each row of summed sufficient statistics (sacreBLEU's defaults: exp smoothing, 4-grams)."""
    from sacrebleu.metrics import BLEU

    metric = BLEU()
    n = metric.max_ngram_order
    out = np.empty(s.shape[0], dtype=np.float64)
    for i, row in enumerate(np.rint(s).astype(np.int64)):
        out[i] = metric.compute_bleu(
            row[2:2 + n].tolist(), row[2 + n:2 + 2 * n].tolist(), int(row[0]), int(row[1]),
            smooth_method=metric.smooth_method, smooth_value=metric.smooth_value,
            effective_order=metric.effective_order, max_ngram_order=n).score / 100.0
    return out
