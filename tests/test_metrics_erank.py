"""Effective rank on known spectra, and the SVD and QR routes agree with a float64 numpy SVD, also when Z collapses."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from ctxcomp.metrics import erank


@pytest.mark.parametrize("method", ["svd", "qr", "auto"])
def test_known_spectra(method):
    assert erank.effective_rank(torch.eye(4), method) == pytest.approx(4.0, rel=1e-9)
    assert erank.effective_rank(torch.diag(torch.tensor([1.0, 0.0, 0.0])), method) == pytest.approx(1.0, rel=1e-6)
    p = np.array([0.75, 0.25])  # sigma = [3, 1]
    expected = math.exp(-(p * np.log(p)).sum())  # = 1.7548...
    assert expected == pytest.approx(1.7547654, abs=1e-6)
    assert erank.effective_rank(np.diag([3.0, 1.0]), method) == pytest.approx(expected, rel=1e-9)


def test_flattens_memory_shape():
    # B=3 memories of shape (M=2, d=2) whose flattened rows are orthonormal -> erank 3.
    z = torch.zeros(3, 2, 2)
    z[0, 0, 0] = z[1, 0, 1] = z[2, 1, 1] = 1.0
    assert erank.effective_rank(z) == pytest.approx(3.0, rel=1e-9)
    assert erank.singular_values(z, "svd").shape == (3,)


def test_zero_matrix_and_bad_method():
    assert erank.effective_rank(torch.zeros(3, 5)) == 0.0
    with pytest.raises(ValueError):
        erank.effective_rank(torch.eye(2), "gram")


@pytest.mark.parametrize("shape", [(8, 50), (6, 4, 7), (4, 100_000), (5, 3)])
def test_svd_and_qr_agree(shape):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(*shape, generator=g) * torch.linspace(0.1, 3.0, shape[0]).reshape(-1, *[1] * (len(shape) - 1))
    a = erank.effective_rank(z, "svd")
    b = erank.effective_rank(z, "qr")
    assert b == pytest.approx(a, rel=1e-12)
    sa, sb = erank.singular_values(z, "svd"), erank.singular_values(z, "qr")
    assert torch.allclose(sa, sb, rtol=1e-10, atol=1e-12)


def _np_erank(x: np.ndarray) -> float:
    """Independent reference: float64 LAPACK SVD through numpy, entropy of the normalised spectrum."""
    s = np.linalg.svd(x.reshape(x.shape[0], -1).astype(np.float64), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _low_rank(b: int, d: int, spectrum: list[float], seed: int) -> tuple[np.ndarray, float]:
    """B x D matrix with exactly the given nonzero singular values, and its effective rank from them."""
    rng = np.random.default_rng(seed)
    k = len(spectrum)
    u, _ = np.linalg.qr(rng.standard_normal((b, k)))
    v, _ = np.linalg.qr(rng.standard_normal((d, k)))
    p = np.asarray(spectrum) / sum(spectrum)
    return (u * spectrum) @ v.T, float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("method", ["qr", "auto", "svd"])
@pytest.mark.parametrize("spectrum", [[7.0], [5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 1e-3, 1e-6]])
def test_rank_deficient_memory_wide(method, spectrum):
    # B = 32 memories of D = 20,000 values spanning only k directions: the collapse the paper measures.
    x, exact = _low_rank(32, 20_000, spectrum, seed=len(spectrum))
    got = erank.effective_rank(torch.from_numpy(x).reshape(32, 50, 400), method)
    assert got == pytest.approx(_np_erank(x), rel=1e-9)
    assert got == pytest.approx(exact, rel=1e-9)
    if spectrum == [7.0]:
        assert abs(got - 1.0) < 1e-9  # the squared Gram route measured 1.0000052 here


def test_rank_deficient_float32_input():
    # float32 Z (as the models emit it) is promoted to float64 before the factorisation.
    x, _ = _low_rank(16, 4096, [3.0, 2.0, 1.0], seed=3)
    z = torch.from_numpy(x).float()
    assert erank.effective_rank(z) == pytest.approx(_np_erank(z.double().numpy()), rel=1e-9)


def test_auto_picks_qr_when_wide(monkeypatch):
    calls = []
    real = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda x, mode="reduced": calls.append((x.shape, mode)) or real(x, mode))
    erank.effective_rank(torch.randn(3, 10), "auto")
    assert calls == [((10, 3), "r")]
    erank.effective_rank(torch.randn(10, 3), "auto")
    assert len(calls) == 1  # tall: plain SVD


def test_bf16_input_uses_float64():
    z = torch.randn(4, 32).to(torch.bfloat16)
    assert erank.singular_values(z).dtype == torch.float64
