"""Effective rank on known spectra, and the SVD and Gram routes agree."""
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


@pytest.mark.parametrize("method", ["svd", "gram", "auto"])
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
        erank.effective_rank(torch.eye(2), "qr")


@pytest.mark.parametrize("shape", [(8, 50), (6, 4, 7), (4, 100_000), (5, 3)])
def test_svd_and_gram_agree(shape):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(*shape, generator=g) * torch.linspace(0.1, 3.0, shape[0]).reshape(-1, *[1] * (len(shape) - 1))
    a = erank.effective_rank(z, "svd")
    b = erank.effective_rank(z, "gram")
    assert b == pytest.approx(a, rel=1e-6)
    sa, sb = erank.singular_values(z, "svd"), erank.singular_values(z, "gram")
    assert torch.allclose(sa, sb, rtol=1e-6, atol=1e-9)


def test_auto_picks_gram_when_wide(monkeypatch):
    calls = []
    real = torch.linalg.eigvalsh
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda x: calls.append(x.shape) or real(x))
    erank.effective_rank(torch.randn(3, 10), "auto")
    assert calls == [(3, 3)]


def test_bf16_input_uses_float64():
    z = torch.randn(4, 32).to(torch.bfloat16)
    assert erank.singular_values(z).dtype == torch.float64
