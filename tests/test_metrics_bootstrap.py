"""Bootstrap intervals against scipy.stats.bootstrap, hand-computed values and sacreBLEU on resampled corpora."""
from __future__ import annotations

import numpy as np
import pytest
from sacrebleu.metrics import BLEU
from scipy import stats as sps

from ctxcomp.metrics import bootstrap as bs


def _scipy_ci(data: tuple, statistic, seed: int, resamples: int = 1000, paired: bool = False):
    res = sps.bootstrap(data, statistic, n_resamples=resamples, method="percentile", vectorized=True,
                        paired=paired, rng=np.random.default_rng(seed), confidence_level=0.95)
    return [res.confidence_interval.low, res.confidence_interval.high]


def test_mean_interval_equals_scipy():
    flags = np.random.default_rng(0).random(600) < 0.7
    got = bs.accuracy_interval(flags, resamples=1000, seed=1234)
    assert got["value"] == pytest.approx(flags.mean(), abs=1e-15) and got["n"] == 600
    want = _scipy_ci((flags.astype(float),), lambda x, axis: x.mean(axis=axis), seed=1234)
    assert got["ci95"] == pytest.approx(want, abs=1e-12)
    # ~600 FaithEval items at ~0.7: the interval is about +-1.96 sqrt(p(1-p)/n) = +-0.037
    half = (got["ci95"][1] - got["ci95"][0]) / 2
    assert 0.030 < half < 0.045


def test_cluster_interval_equals_scipy_paired_ratio():
    rng = np.random.default_rng(3)
    clusters = [f"c{i}" for i in range(40) for _ in range(int(rng.integers(15, 25)))]
    flags = rng.random(len(clusters)) < 0.4
    got = bs.accuracy_interval(flags, resamples=500, seed=7, clusters=clusters)
    st = bs.cluster_stats(flags, clusters)
    assert st.shape == (40, 2) and st[:, 1].sum() == len(flags)
    assert got["value"] == pytest.approx(flags.mean(), abs=1e-15)  # the question-level mean
    want = _scipy_ci((st[:, 0], st[:, 1]), lambda a, b, axis: a.sum(axis=axis) / b.sum(axis=axis), seed=7,
                     resamples=500, paired=True)
    assert got["ci95"] == pytest.approx(want, abs=1e-12)


def test_hand_computed_resamples():
    # n=2 units, seed fixed: the interval is the percentiles of the hand-averaged resamples
    x = np.array([0.0, 1.0])
    idx = np.random.default_rng(5).integers(0, 2, (4, 2))
    means = x[idx].mean(axis=1)
    got = bs.interval(bs.flag_stats(x), bs.ratio, resamples=4, seed=5)
    assert got["value"] == 0.5
    assert got["ci95"] == pytest.approx([np.percentile(means, 2.5), np.percentile(means, 97.5)])
    assert bs.interval(np.zeros((0, 2)), bs.ratio) == {"value": None, "ci95": None}
    assert bs.accuracy_interval([1, 1, 1], seed=0)["ci95"] == [1.0, 1.0]


def test_paired_difference():
    rng = np.random.default_rng(11)
    model = rng.random(300) < 0.8
    control = rng.random(300) < 0.5
    got = bs.paired_difference(bs.flag_stats(model), bs.flag_stats(control), bs.ratio, resamples=1000, seed=2)
    assert got["value"] == pytest.approx(control.mean())
    want = _scipy_ci((model.astype(float), control.astype(float)),
                     lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis), seed=2, paired=True)
    assert got["diff_ci95"] == pytest.approx(want, abs=1e-12)
    assert got["distinguishable"] is True and got["diff_ci95"][0] > 0.2
    same = bs.paired_difference(bs.flag_stats(model), bs.flag_stats(model), bs.ratio, seed=2)
    assert same["diff_ci95"] == [0.0, 0.0] and same["distinguishable"] is False
    with pytest.raises(ValueError):
        bs.paired_difference(bs.flag_stats(model), bs.flag_stats(control[:5]), bs.ratio)


REFS = ["the cat sat on the mat today", "a quick brown fox jumps over the lazy dog",
        "rain fell softly on the old tin roof", "she sold sea shells by the sea shore",
        "the meeting was moved to thursday afternoon", "prices rose sharply in the last quarter"]
HYPS = ["the cat sat on a mat", "a quick brown fox jumped over a lazy dog", "rain fell on the roof",
        "she sells sea shells on the shore", "the meeting moved to friday", "prices rose in the quarter"]


def test_bleu_from_stats_is_corpus_bleu():
    st = bs.bleu_unit_stats(HYPS, REFS)
    assert st.shape == (6, 10)
    want = BLEU().corpus_score(HYPS, [REFS]).score / 100
    assert bs.bleu_from_stats(st.sum(axis=0, keepdims=True))[0] == pytest.approx(want, abs=1e-12)


def test_bleu_replicates_equal_sacrebleu_on_resampled_corpora():
    st = bs.bleu_unit_stats(HYPS, REFS)
    reps = bs.replicates(st, bs.bleu_from_stats, resamples=12, seed=4)
    idx = bs.resample_indices(6, 12, 4)
    for r, rows in zip(reps, idx):
        corpus = BLEU().corpus_score([HYPS[i] for i in rows], [[REFS[i] for i in rows]]).score / 100
        assert r == pytest.approx(corpus, abs=1e-12)
    ci = bs.interval(st, bs.bleu_from_stats, resamples=200, seed=4)
    assert ci["ci95"][0] <= ci["value"] <= ci["ci95"][1]
