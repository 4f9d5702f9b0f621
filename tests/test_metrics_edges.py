"""Edges of the metric functions, each against a hand-derived expectation: the messages of the input errors, single
units and boundaries, defaults, device placement (PyTorch's `meta` device: no data, only where tensors live), and
which factorisation route a matrix takes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from ctxcomp import metrics
from ctxcomp.metrics import bleu, bootstrap, correlation, entropy, erank, qa, truncation


def test_input_errors_name_the_mismatch():
    with pytest.raises(ValueError, match=r"^2 hypotheses but 1 references$"):
        bleu.corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"^1 hypotheses but 2 references$"):
        bootstrap.bleu_unit_stats(["a"], ["a", "b"])
    with pytest.raises(ValueError, match=r"^paired statistics need the same units: \(3, 2\) vs \(2, 2\)$"):
        bootstrap.paired_difference(np.ones((3, 2)), np.ones((2, 2)), bootstrap.ratio)
    with pytest.raises(ValueError, match=r"^x has 3 values but y has 2$"):
        correlation.correlate([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"^steps has 2 values but values has 3$"):
        correlation.post_peak_mask([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"^shapes do not match: hidden \(2, 3\), weight \(5, 4\)$"):
        entropy.chunked_entropy(torch.zeros(2, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"^shapes do not match: hidden \(4,\), weight \(5, 4\)$"):
        entropy.chunked_entropy(torch.zeros(4), torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"^chunk must be >= 1$"):
        entropy.chunked_entropy(torch.zeros(2, 4), torch.zeros(5, 4), chunk=0)
    with pytest.raises(ValueError, match=r"^effective rank needs at least a \(B,\) tensor$"):
        erank.effective_rank(torch.tensor(3.0))
    with pytest.raises(ValueError, match=r"^method must be one of \('auto', 'svd', 'qr'\), got 'gram'$"):
        erank.singular_values(torch.eye(2), "gram")
    with pytest.raises(ValueError, match=r"^energy must be in \(0, 1\], got 1\.5$"):
        truncation.energy_rank(torch.ones(2), 1.5)
    with pytest.raises(ValueError, match=r"^energy must be in \(0, 1\], got 1\.01$"):
        truncation.truncate_energy(torch.ones(1, 2, 2), 1.01)
    with pytest.raises(ValueError, match=r"^z must be \[\.\.\., M, d\], got shape \(3,\)$"):
        truncation.truncate_energy(torch.ones(3), 0.5)
    with pytest.raises(ValueError, match=r"^an answerable question needs a gold answer$"):
        qa.drift_correct("x", None, True)
    with pytest.raises(AttributeError, match=r"module 'ctxcomp.metrics' has no attribute 'nope'"):
        metrics.nope  # noqa: B018


def test_lazy_names_resolve_to_their_submodules():
    for name in metrics.__all__:
        assert getattr(metrics, name) is getattr(__import__(f"ctxcomp.metrics.{metrics._WHERE[name]}",
                                                            fromlist=[name]), name)
    assert set(metrics.__all__) == set(metrics._WHERE)


def test_bootstrap_defaults_single_units_and_empty_inputs():
    x = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    idx = np.random.default_rng(0).integers(0, 7, (1000, 7))  # the documented defaults: 1000 resamples, seed 0
    want = np.percentile(x[idx].mean(axis=1), [2.5, 97.5])
    assert bootstrap.interval(bootstrap.flag_stats(x), bootstrap.ratio)["ci95"] == pytest.approx(want, abs=1e-12)
    assert bootstrap.accuracy_interval(x)["ci95"] == pytest.approx(want, abs=1e-12)
    assert bootstrap.paired_difference(bootstrap.flag_stats(x), bootstrap.flag_stats(x), bootstrap.ratio)[
        "ci95"] == pytest.approx(want, abs=1e-12)  # the control's own interval, same draws
    half = bootstrap.interval(bootstrap.flag_stats(x), bootstrap.ratio, confidence=0.5)["ci95"]
    assert half == pytest.approx(np.percentile(x[idx].mean(axis=1), [25, 75]), abs=1e-12)
    one = bootstrap.accuracy_interval([1.0])  # a single unit: every resample is that unit
    assert one == {"value": 1.0, "ci95": [1.0, 1.0], "n": 1}
    assert bootstrap.flag_stats([]).shape == (0, 2) and bootstrap.flag_stats([True]).dtype == np.float64
    assert bootstrap.accuracy_interval([]) == {"value": None, "ci95": None, "n": 0}
    assert bootstrap.interval(np.array([1.0, 2.0]), bootstrap.ratio) == {"value": None, "ci95": None}  # not (n, k)
    empty = bootstrap.paired_difference(np.zeros((0, 2)), np.zeros((0, 2)), bootstrap.ratio)
    assert empty == {"value": None, "ci95": None, "diff_ci95": None, "distinguishable": None}
    assert bootstrap.cluster_stats([True, False, True], ["b", "a", "b"]).tolist() == [[2.0, 2.0], [0.0, 1.0]]
    nan = bootstrap.interval(np.array([[0.0, 0.0], [0.0, 0.0]]), bootstrap.ratio)  # 0/0: no number, no interval
    assert nan == {"value": None, "ci95": None}
    assert bootstrap.percentile_interval(np.array([np.nan, 1.0, 3.0]), 0.5) == [1.5, 2.5]


def test_paired_difference_control_interval_is_seeded_like_scipy():
    rng = np.random.default_rng(4)
    a, b = rng.random(200) < 0.7, rng.random(200) < 0.4
    got = bootstrap.paired_difference(bootstrap.flag_stats(a), bootstrap.flag_stats(b), bootstrap.ratio,
                                      resamples=500, seed=11)
    want = sps.bootstrap((b.astype(float),), lambda v, axis: v.mean(axis=axis), n_resamples=500,
                         method="percentile", vectorized=True, rng=np.random.default_rng(11))
    assert got["ci95"] == pytest.approx([want.confidence_interval.low, want.confidence_interval.high], abs=1e-12)


def test_correlation_degenerate_one_side_and_integer_input():
    res = correlation.correlate([1, 2, 3, 4], [5, 5, 5, 5])  # only y constant
    assert math.isnan(res["pearson_r"]) and res["n"] == 4
    res = correlation.correlate([7, 7, 7, 7], [1, 2, 3, 5])  # only x constant
    assert math.isnan(res["spearman_rho"])
    res = correlation.correlate([1, 2, 3], [1, 2, 4])  # a range of exactly 1 or 2 is not constant
    assert res["pearson_r"] == pytest.approx(sps.pearsonr([1, 2, 3], [1, 2, 4])[0])
    res = correlation.correlate([0, 1, 0.5], [0, 1, 0.25])
    assert res["spearman_rho"] == pytest.approx(1.0)
    s, v = correlation.post_peak([1, 2, 3], [5, 1, 2])  # ints in, floats out
    assert s.dtype == np.float64 and v.dtype == np.float64 and s.tolist() == [1.0, 2.0, 3.0]
    assert correlation.post_peak_mask([10], [3.0]).tolist() == [True]  # one checkpoint is its own peak
    assert correlation.post_peak_mask([10, 20], [np.nan, np.nan]).tolist() == [False, False]
    # ties in step order: the stable order keeps the input order of equal steps
    s, v = correlation.post_peak([2, 1, 2, 2], [1.0, 0.0, 3.0, 2.0])
    assert s.tolist() == [2.0, 2.0, 2.0] and v.tolist() == [1.0, 3.0, 2.0]


def test_chunked_entropy_keeps_every_tensor_on_the_inputs_device():
    """On the `meta` device nothing is computed, but mixing a meta and a CPU tensor fails: so every intermediate is
    created where the input lives (on a GPU, the same code keeps the whole loop on the GPU)."""
    h, w, b = (torch.empty(5, 4, device="meta"), torch.empty(30, 4, device="meta"), torch.empty(30, device="meta"))
    out = entropy.chunked_entropy(h, w, b, chunk=7, rows=2)
    assert out.device.type == "meta" and out.shape == (5,) and out.dtype == torch.float64
    # a head on another device than the states (a CPU copy of a sharded head): chunks are moved to the states
    out = entropy.chunked_entropy(torch.empty(3, 4, device="meta"), torch.randn(9, 4), torch.randn(9), chunk=4)
    assert out.device.type == "meta"


def test_chunked_entropy_with_a_bias_in_float32():
    g = torch.Generator().manual_seed(3)
    h, w, b = torch.randn(3, 5, generator=g), torch.randn(11, 5, generator=g), torch.randn(11, generator=g)
    want = entropy.entropy_from_logits((h.double() @ w.double().T + b.double()).float())
    assert entropy.chunked_entropy(h, w, b.half().float(), chunk=4).float().tolist() == pytest.approx(
        entropy.entropy_from_logits(h @ w.T + b.half().float()).tolist(), abs=1e-5)
    assert entropy.chunked_entropy(h, w, b, chunk=4).tolist() == pytest.approx(want.tolist(), abs=1e-5)


def test_effective_rank_of_vectors_lists_and_bad_spectra():
    assert erank.effective_rank(torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(1.0)  # B scalars: one direction
    assert erank.singular_values(np.array([3.0, 4.0]), "svd").tolist() == pytest.approx([5.0])
    p = np.array([0.75, 0.25])
    assert erank.erank_from_singular_values([3.0, 1.0]) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert erank.erank_from_singular_values(np.array([3, 1])) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert erank.erank_from_singular_values(torch.tensor([2.0, 2.0], dtype=torch.float32)) == pytest.approx(2.0)
    assert erank.erank_from_singular_values([0.0, 0.0]) == 0.0
    assert math.isnan(erank.erank_from_singular_values([1.0, float("nan")]))
    assert math.isnan(erank.erank_from_singular_values([1.0, float("inf")]))
    assert erank.erank_from_singular_values([-1.0, 2.0]) == pytest.approx(1.0)  # negative noise clipped to 0


def test_auto_route_is_qr_only_for_wide_batches(monkeypatch):
    calls = []
    qr = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda *a, **k: calls.append(a[0].shape) or qr(*a, **k))
    erank.singular_values(torch.randn(3, 7))          # D > B: the QR route, on X^T (7 x 3)
    assert calls == [(7, 3)]
    erank.singular_values(torch.randn(4, 4))          # square: the plain SVD
    erank.singular_values(torch.randn(5, 2), "qr")    # asked for QR but D <= B: the plain SVD is as cheap
    assert calls == [(7, 3)]
    erank.singular_values(torch.randn(2, 9), "svd")   # asked for the SVD: no QR
    assert calls == [(7, 3)]
    erank.singular_values(torch.randn(2, 9), "qr")
    assert calls == [(7, 3), (9, 2)]


def test_energy_rank_and_truncation_edges():
    s = torch.tensor([2.0, 1.0])  # energies 4 and 1 of 5: cumulative 0.8, 1.0
    assert [truncation.energy_rank(s, e) for e in (0.8, 0.8 + 1e-9, 1.0)] == [1, 2, 2]
    assert truncation.energy_rank(torch.tensor([0.5, 0.5]), 1.0) == 2  # total energy 0.5 < 1 is still energy
    assert truncation.energy_rank(torch.tensor([0.1]), 1.0) == 1
    z = torch.zeros(2, 3, 2, 2, dtype=torch.float64)
    z[..., 0, 0], z[..., 1, 1] = 2.0, 1.0
    z[1, 2] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    out, ranks = truncation.truncate_energy(z, 0.8)  # per sample over a (2, 3) batch of 2 x 2 memories
    assert ranks.tolist() == [[1, 1, 1], [1, 1, 1]] and out.dtype == torch.float64
    assert out[0, 0].flatten().tolist() == pytest.approx([2.0, 0.0, 0.0, 0.0])
    _, ranks = truncation.truncate_energy(z, 0.81)
    assert ranks.tolist() == [[2, 2, 2], [2, 2, 1]]
    _, ranks = truncation.truncate_energy(z.float(), 1.0)  # numerical rank, per memory
    assert ranks.tolist() == [[2, 2, 2], [2, 2, 1]]
    tiny = torch.tensor([[1.0, 0.0], [0.0, 1e-9]], dtype=torch.float64)[None]
    assert truncation.truncate_energy(tiny, 1.0)[1].tolist() == [2]  # above max(sigma) * n * eps
    below = torch.tensor([[1.0, 0.0], [0.0, 1e-17]], dtype=torch.float64)[None]
    assert truncation.truncate_energy(below, 1.0)[1].tolist() == [1]
    batch = torch.stack([torch.diag(torch.tensor([1000.0, 1e-13], dtype=torch.float64)),
                         torch.diag(torch.tensor([1.0, 1e-13], dtype=torch.float64))])
    assert truncation.truncate_energy(batch, 1.0)[1].tolist() == [1, 2]  # the tolerance is each memory's own


def test_batch_basis_and_projection_shapes_and_dtypes():
    rows = torch.randn(3, 5, dtype=torch.float32)
    s, vh = truncation.batch_basis(rows)
    assert s.dtype == torch.float64 and s.shape == (3,) and vh.shape == (3, 5)  # r = min(N, D) directions
    out = truncation.project(rows, vh, 2)
    assert out.dtype == torch.float32 and out.shape == rows.shape
    x = rows.double()
    want = x @ vh[:2].T @ vh[:2]
    assert out.double().flatten().tolist() == pytest.approx(want.flatten().tolist(), abs=1e-6)
    wide = truncation.batch_basis(torch.randn(2, 2, 3, dtype=torch.float64))[1]
    assert wide.shape == (2, 6)


def test_abstention_phrases_around_the_answer():
    assert qa.is_abstention("The answer is unknown in the context.")  # prefix and suffix both removed
    assert qa.is_abstention("It is not stated")
    assert not qa.is_abstention("The answer is Paris")
    assert not qa.is_abstention("  ")
    assert qa.is_abstention("N/A")
    assert not qa.is_abstention("answer is 42 in the text")
    assert qa._loose(None) == "" and qa._loose("Don't!") == "don t"
    assert qa.f1("", "") == 1.0 and qa.f1("x", "") == 0.0 and qa.f1("", "b") == 0.0
    assert qa.f1("a", "") == 1.0  # an article alone normalises to nothing, like the empty gold
