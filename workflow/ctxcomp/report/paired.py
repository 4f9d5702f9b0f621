"""Paired bootstrap of the difference between two cells on the same evaluation items.

Every cell of a table is evaluated on the same questions and segments, so whether 0.71 and 0.72 differ is a paired
question: resample the items (questions for KO, segments for reconstruction, contexts with all their questions for
semantic drift - the bootstrap units of the result-file contract), recompute both cells' headline numbers on the
same resample and take the 2.5 / 97.5 percentiles of the difference (scipy.stats.bootstrap, percentile method,
seeded). Reconstruction recomputes corpus BLEU from sacreBLEU's per-segment sufficient statistics, so the
difference is one of the headline metric itself, not of a per-sentence proxy.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

#: Bootstrap settings when a result file does not name its own (contract: `bootstrap`).
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 1234
#: Resampled unit indices held at once (per-segment BLEU statistics are ~10 floats per index).
_BATCH_ELEMENTS = 500_000


def unit_of(task: str) -> str:
    """Bootstrap unit of a task: semantic drift resamples contexts, everything else single samples."""
    return "context" if task.startswith("sd_") else "sample"


def _nan(n: int = 0) -> dict:
    return {"delta": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": n}


def _percentile_ci(n: int, stat: Callable[[np.ndarray], np.ndarray], resamples: int, seed: int) -> tuple:
    """Percentile interval of a statistic of resampled unit indices (stat maps [..., n] indices to [...])."""
    res = stats.bootstrap((np.arange(n),), lambda i, axis=-1: stat(np.asarray(i)), vectorized=True,
                          n_resamples=resamples, batch=max(1, min(resamples, _BATCH_ELEMENTS // max(n, 1))),
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _accuracy_units(rows: pd.DataFrame, task: str) -> pd.DataFrame:
    """Correct count and question count per bootstrap unit, indexed by the unit's key."""
    d = rows.assign(correct=rows["correct"].astype(float))
    if unit_of(task) == "context":
        key = d["context_id"].astype(str)
    else:
        key = d["id"].astype(str)
    return d.groupby(key).agg(hits=("correct", "sum"), n=("correct", "size"))


def accuracy_delta(a: pd.DataFrame, b: pd.DataFrame, task: str, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED) -> dict:
    """Accuracy of `a` minus accuracy of `b` over the units both evaluated, with its paired 95 % interval.

    Returns {"delta", "ci_low", "ci_high", "n" (units)}; NaN when they share fewer than two units.
    """
    ua, ub = _accuracy_units(a, task), _accuracy_units(b, task)
    common = ua.index.intersection(ub.index)
    if len(common) < 2:
        return _nan(len(common))
    ha, na = ua.loc[common, "hits"].to_numpy(), ua.loc[common, "n"].to_numpy()
    hb, nb = ub.loc[common, "hits"].to_numpy(), ub.loc[common, "n"].to_numpy()

    def stat(i: np.ndarray) -> np.ndarray:
        return ha[i].sum(-1) / na[i].sum(-1) - hb[i].sum(-1) / nb[i].sum(-1)

    lo, hi = _percentile_ci(len(common), stat, resamples, seed)
    return {"delta": float(stat(np.arange(len(common)))), "ci_low": lo, "ci_high": hi, "n": int(len(common))}


def _bleu_stats(rows: pd.DataFrame) -> pd.DataFrame:
    """sacreBLEU's sufficient statistics per segment (lengths, n-gram matches and totals), indexed by id; kept in
    `rows.attrs` so a cell compared with several others is tokenised once. pandas hands `attrs` on to frames
    derived from `rows` (a slice, new hypotheses), so the cache holds the texts it was computed from and is used
    only for exactly those."""
    from sacrebleu.metrics import BLEU  # the metric of the headline number (ctxcomp.metrics.bleu)

    ids, hyps, refs = (rows[c].astype(str).tolist() for c in ("id", "hypothesis", "reference"))
    key = hash((tuple(ids), tuple(hyps), tuple(refs)))  # in-process only: a number is cheap for pandas to copy
    cached = rows.attrs.get("_bleu_stats")
    if cached is None or cached[0] != key:
        st = BLEU()._extract_corpus_statistics(hyps, [refs])
        rows.attrs["_bleu_stats"] = (key, pd.DataFrame(np.asarray(st, dtype=float), index=ids))
    return rows.attrs["_bleu_stats"][1]


def bleu_delta(a: pd.DataFrame, b: pd.DataFrame, resamples: int = DEFAULT_RESAMPLES,
               seed: int = DEFAULT_SEED) -> dict:
    """Corpus BLEU/100 of `a` minus that of `b` over the segments both reconstructed, paired 95 % interval."""
    from sacrebleu.metrics import BLEU

    if not {"id", "reference", "hypothesis"} <= set(a.columns) & set(b.columns):
        return _nan()
    sa, sb = _bleu_stats(a), _bleu_stats(b)
    common = sa.index.intersection(sb.index)
    if len(common) < 2:
        return _nan(len(common))
    xa, xb = sa.loc[common].to_numpy(), sb.loc[common].to_numpy()
    metric = BLEU()

    def corpus(x: np.ndarray) -> float:
        return metric._compute_score_from_stats(x.tolist()).score / 100

    def stat(i: np.ndarray) -> np.ndarray:
        ta, tb = xa[i].sum(-2), xb[i].sum(-2)  # [..., stats]
        flat_a, flat_b = ta.reshape(-1, ta.shape[-1]), tb.reshape(-1, tb.shape[-1])
        d = np.array([corpus(u) - corpus(v) for u, v in zip(flat_a, flat_b)])
        return d.reshape(ta.shape[:-1])

    lo, hi = _percentile_ci(len(common), stat, resamples, seed)
    return {"delta": float(corpus(xa.sum(0)) - corpus(xb.sum(0))), "ci_low": lo, "ci_high": hi,
            "n": int(len(common))}


def paired_delta(a: pd.DataFrame | None, b: pd.DataFrame | None, task: str, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = DEFAULT_SEED) -> dict:
    """Headline metric of `a` minus that of `b` (per-sample rows of the same task), with its paired interval."""
    if a is None or b is None or not len(a) or not len(b):
        return _nan()
    if task.startswith("recon"):
        return bleu_delta(a, b, resamples, seed)
    if "correct" not in a or "correct" not in b:
        return _nan()
    return accuracy_delta(a, b, task, resamples, seed)
