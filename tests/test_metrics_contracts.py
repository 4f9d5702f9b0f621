"""Documented contracts of the metric functions at their edges: float64 arithmetic whatever the input dtype, missing
values, degenerate bootstrap inputs, tolerances, devices and the memory blocking of the entropy."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats as sps

from ctxcomp.metrics import bootstrap as bs
from ctxcomp.metrics import correlation, entropy, erank, qa, truncation

BIG = 2.0**24  # float32 has 24 significand bits: BIG + 1 is not a float32, so a float32 sum drops the 1


def test_bootstrap_sums_in_float64_for_float32_input():
    stats = np.array([[BIG, 1.0], [1.0, 1.0]], dtype=np.float32)
    got = bs.interval(stats, bs.ratio, resamples=50, seed=3)
    assert got["value"] == (BIG + 1.0) / 2.0
    idx = np.random.default_rng(3).integers(0, 2, (50, 2))  # scipy's draws
    s64 = stats.astype(np.float64)[idx].sum(axis=1)
    want = s64[:, 0] / s64[:, 1]
    assert bs.replicates(stats, bs.ratio, 50, 3).tolist() == want.tolist()
    control = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    for a, b in ((stats, control), (control, stats)):
        pair = bs.paired_difference(a, b, bs.ratio, resamples=50, seed=3)
        diffs = (want if a is stats else -want)
        assert pair["diff_ci95"] == pytest.approx(np.percentile(diffs, [2.5, 97.5]).tolist(), rel=0, abs=0)
        assert pair["value"] == (0.0 if b is control else (BIG + 1.0) / 2.0)


def test_bootstrap_default_seed_is_zero_like_scipy_with_rng_zero():
    flags = np.random.default_rng(1).random(40)  # continuous: percentiles that depend on the draws
    res = sps.bootstrap((flags,), lambda x, axis: x.mean(axis=axis), n_resamples=1000, method="percentile",
                        vectorized=True, rng=np.random.default_rng(0))
    want = pytest.approx([res.confidence_interval.low, res.confidence_interval.high], rel=1e-12)
    assert bs.accuracy_interval(flags)["ci95"] == want
    assert bs.interval(bs.flag_stats(flags), bs.ratio)["ci95"] == want
    paired = bs.paired_difference(bs.flag_stats(flags), bs.flag_stats(np.zeros(40)), bs.ratio)
    assert paired["diff_ci95"] == want


def test_bootstrap_confidence_reaches_both_intervals():
    a = np.stack([np.arange(30.0), np.ones(30)], axis=1)
    c = np.stack([np.zeros(30), np.ones(30)], axis=1)
    idx = np.random.default_rng(5).integers(0, 30, (200, 30))
    means = a[idx].sum(axis=1)[:, 0] / 30.0
    want = pytest.approx(np.percentile(means, [25.0, 75.0]).tolist(), rel=1e-12)
    got = bs.paired_difference(a, c, bs.ratio, resamples=200, seed=5, confidence=0.5)
    assert got["diff_ci95"] == want  # value - 0 on the same draws
    got = bs.paired_difference(c, a, bs.ratio, resamples=200, seed=5, confidence=0.5)
    assert got["ci95"] == want  # the control's own interval


def test_bootstrap_with_no_units_or_one_unit_for_a_statistic_finite_at_zero():
    # BLEU of all-zero statistics is a finite 0: only the unit count can say "undefined"
    empty = np.zeros((0, 10))
    assert bs.interval(empty, bs.bleu_from_stats) == {"value": None, "ci95": None}
    got = bs.paired_difference(empty, empty, bs.bleu_from_stats)
    assert got["diff_ci95"] is None and got["distinguishable"] is None and got["value"] is None
    one = bs.paired_difference(np.array([[1.0, 1.0]]), np.array([[0.0, 1.0]]), bs.ratio, resamples=20)
    assert one["diff_ci95"] == [1.0, 1.0] and one["distinguishable"] is True  # every resample is that unit
    assert bs.bleu_unit_stats([], []).shape == (0, 10)


def test_paired_difference_distinguishable_needs_the_lower_bound_above_zero():
    # half the units gain 1, half lose 1: the difference interval straddles 0
    a = np.stack([np.tile([1.0, 0.0], 20), np.ones(40)], axis=1)
    c = np.stack([np.tile([0.0, 1.0], 20), np.ones(40)], axis=1)
    got = bs.paired_difference(a, c, bs.ratio, resamples=300)
    assert got["diff_ci95"][0] < 0 < got["diff_ci95"][1] and got["distinguishable"] is False
    # no finite replicate (every denominator 0): no interval and no verdict, not an error
    nan = bs.paired_difference(np.zeros((3, 2)), np.zeros((3, 2)), bs.ratio, resamples=20)
    assert nan["diff_ci95"] is None and nan["distinguishable"] is None and nan["value"] is None


def test_bootstrap_of_undefined_ratios_raises_no_numpy_warnings():
    stats = np.array([[1.0, 0.0], [0.0, 0.0]])  # 1/0 and 0/0 occur among the resamples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bs.interval(stats, bs.ratio, resamples=50)["value"] is None
        assert bs.paired_difference(stats, stats, bs.ratio, resamples=50)["value"] is None


def test_missing_values_as_none_are_ignored():
    # JSON null is a missing value, like NaN
    x, y = [1.0, 2.0, None, 3.0, 4.0], [2.0, 1.0, 5.0, 4.0, 3.0]
    got = correlation.correlate(x, y)
    want = sps.pearsonr([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0])
    assert got["n"] == 4 and got["pearson_r"] == pytest.approx(want[0], rel=1e-12)
    got = correlation.correlate(y, x)
    assert got["n"] == 4 and got["pearson_r"] == pytest.approx(want[0], rel=1e-12)
    assert correlation.post_peak_mask([1, 2, 3, 4], [1.0, None, 3.0, 2.0]).tolist() == [False, False, True, True]


def test_post_peak_keeps_input_order_of_equal_steps_in_long_runs():
    # numpy's default sort is not stable beyond 16 elements; checkpoints logged twice at a step keep their order
    rng = np.random.default_rng(0)
    steps = rng.integers(0, 4, 64).astype(float)
    values = np.arange(64.0)
    values[np.argmin(steps)] = 1000.0  # the peak at the first step: every point is kept
    s, v = correlation.post_peak(steps, values)
    want = [values[steps == k].tolist() for k in sorted(set(steps))]
    assert v.tolist() == [x for group in want for x in group]
    assert s.tolist() == sorted(steps.tolist())


def test_chunked_entropy_row_blocks_follow_the_logit_budget(monkeypatch):
    seen = []

    def rows(h, weight, bias, chunk):
        seen.append((h.shape[0], chunk))
        return torch.zeros(h.shape[0], dtype=torch.float64)

    monkeypatch.setattr(entropy, "_entropy_rows", rows)
    head = torch.zeros(1, 2).expand(2**20, 2)  # a 2**20-token head, no memory behind it
    entropy.chunked_entropy(torch.zeros(1025, 2), head)  # 2**24 logits / 16384 per chunk = 1024 rows a block
    assert seen == [(1024, 16384), (1, 16384)]
    seen.clear()
    entropy.chunked_entropy(torch.zeros(5, 2), torch.zeros(1, 2).expand(100, 2), chunk=50)
    assert seen == [(5, 50)]  # 2**24 // 50 rows: one block
    seen.clear()
    huge = torch.zeros(1, 2).expand(2**24 + 1, 2)  # more logits per row than the budget: one row at a time
    entropy.chunked_entropy(torch.zeros(3, 2), huge, chunk=2**25)
    assert seen == [(1, 2**25)] * 3
    seen.clear()
    entropy.chunked_entropy(torch.zeros(5, 2), head, rows=2)
    assert [n for n, _ in seen] == [2, 2, 1]


def test_effective_rank_in_float64_for_float32_and_grad_tensors():
    sigma = torch.linspace(1.0, 2.0, 1001, dtype=torch.float32)
    p = sigma.double().numpy() / sigma.double().numpy().sum()
    want = math.exp(-(p * np.log(p)).sum())
    assert erank.erank_from_singular_values(sigma) == pytest.approx(want, rel=1e-13)
    sigma = torch.tensor([3.0, 1.0], dtype=torch.float64, requires_grad=True)  # straight from a differentiable SVD
    q = np.array([0.75, 0.25])
    assert erank.erank_from_singular_values(sigma) == pytest.approx(math.exp(-(q * np.log(q)).sum()), rel=1e-13)


def test_abstention_under_squad_normalisation_only():
    # the article goes only under SQuAD normalisation: "answer is not given" then loses its head
    assert qa.is_abstention("An answer is not given.")
    assert not qa.is_abstention("An answer is Paris.")


def test_truncation_of_a_single_memory_and_of_zero_memories():
    z = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))  # [M, d] without a batch
    out, rank = truncation.truncate_energy(z, 0.8)
    assert rank.shape == () and int(rank) == 1 and out.flatten().tolist() == pytest.approx([2.0, 0.0, 0.0, 0.0])
    out, rank = truncation.truncate_energy(torch.zeros(2, 3, 4), 1.0)
    assert rank.tolist() == [0, 0] and not out.any()  # an all-zero memory has rank 0 also at energy 1


def test_numerical_rank_tolerance_is_numpys():
    # sigma_2 = 1e-14 lies between 2 * eps and 50 * eps: a 2 x 50 memory has numerical rank 1, as numpy says
    z = torch.zeros(3, 2, 50, dtype=torch.float64)
    z[:, 0, 0], z[:, 1, 1] = 1.0, 1e-14
    z[2, 1, 1] = 1e-13  # above 50 * eps
    want = [int(np.linalg.matrix_rank(m)) for m in z.numpy()]
    assert want == [1, 1, 2]
    assert truncation.truncate_energy(z, 1.0)[1].tolist() == want
    assert truncation.truncate_energy(z.transpose(1, 2).contiguous(), 1.0)[1].tolist() == want
    # the tolerance counts the matrix's rows and columns, not the batch: 60 memories of 2 x 50, sigma_2 = 1.2e-14
    z = torch.zeros(60, 2, 50, dtype=torch.float64)
    z[:, 0, 0], z[:, 1, 1] = 1.0, 1.2e-14
    assert np.linalg.matrix_rank(z[0].numpy()) == 2
    assert truncation.truncate_energy(z, 1.0)[1].tolist() == [2] * 60


def test_energy_tolerance_is_four_eps_of_the_working_precision():
    # s = (1, 1): the first direction holds exactly half the energy
    for dtype in (torch.float32, torch.float64):
        eps = torch.finfo(dtype).eps
        z = torch.eye(2, dtype=dtype)[None]
        assert truncation.truncate_energy(z, 0.5 + 4 * eps)[1].tolist() == [1]    # within the tolerance
        assert truncation.truncate_energy(z, 0.5 + 4.5 * eps)[1].tolist() == [2]  # beyond it
    # float32 memories are judged in float32: 2 float32 eps above 0.5 is within 4 of them
    assert truncation.truncate_energy(torch.eye(2)[None], 0.5 + 2 * torch.finfo(torch.float32).eps)[1].tolist() == [1]
    eps = torch.finfo(torch.float64).eps
    s = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert truncation.energy_rank(s, 0.5 + 4 * eps) == 1
    assert truncation.energy_rank(s, 0.5 + 4.5 * eps) == 2


def test_truncation_stays_on_the_memorys_device():
    # on `meta` nothing is computed, but a CPU tensor mixed in fails: the rank mask is built on z's device
    out, ranks = truncation.truncate_energy(torch.empty(3, 4, 5, device="meta"), 0.5)
    assert out.device.type == "meta" and ranks.device.type == "meta" and ranks.shape == (3,)
