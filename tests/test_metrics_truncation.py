"""Energy-based SVD truncation of the memory keeps the right rank and reconstructs."""
import sys
from pathlib import Path

import pytest
import torch

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from ctxcomp.metrics import truncation


def _with_spectrum(sigma, m=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    k = len(sigma)
    return u[:, :k] @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v[:, :k].T


def test_energy_one_is_identity():
    z = torch.randn(2, 3, 6, 8)
    out, ranks = truncation.truncate_energy(z, 1.0)
    assert torch.equal(out, z) and out.dtype == z.dtype
    assert ranks.shape == (2, 3) and ranks.tolist() == [[6, 6, 6], [6, 6, 6]]


def test_rank_one_stays_rank_one():
    z = (torch.randn(4, 1) @ torch.randn(1, 5))[None]
    for e in (0.5, 0.9, 0.999):
        out, ranks = truncation.truncate_energy(z, e)
        assert ranks.tolist() == [1]
        assert torch.allclose(out, z, atol=1e-5)


def test_known_spectrum_gives_known_k():
    # sigma^2 = [9, 4, 1] -> cumulative energy 9/14 = .643, 13/14 = .929, 1
    z = _with_spectrum([3.0, 2.0, 1.0])[None]
    for energy, k in [(0.5, 1), (0.643, 2), (9 / 14, 1), (0.9, 2), (0.95, 3), (1.0, 3)]:
        out, ranks = truncation.truncate_energy(z, energy)
        assert ranks.tolist() == [k], energy
        assert torch.linalg.matrix_rank(out[0]).item() == k
    out, _ = truncation.truncate_energy(z, 0.9)
    expected = _with_spectrum([3.0, 2.0])
    assert torch.allclose(out[0], expected, atol=1e-10)


def test_per_sample_and_dtype():
    z = torch.stack([_with_spectrum([1.0]), _with_spectrum([1.0, 1.0, 1.0, 1.0])]).to(torch.bfloat16)
    out, ranks = truncation.truncate_energy(z, 0.9)
    assert ranks.tolist() == [1, 4] and out.dtype == torch.bfloat16 and out.shape == z.shape


def test_zero_memory_and_bad_energy():
    out, ranks = truncation.truncate_energy(torch.zeros(1, 3, 4), 0.5)
    assert ranks.tolist() == [0] and torch.count_nonzero(out) == 0
    with pytest.raises(ValueError):
        truncation.truncate_energy(torch.zeros(1, 3, 4), 0.0)


# ------------------------------------------------------------------------------------------ batch variant
def test_energy_rank_hand_computed():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14: cumulative 0.6429, 0.9286, 1
    assert [truncation.energy_rank(s, e) for e in (0.5, 0.6428, 0.6430, 0.9, 0.93, 1.0)] == [1, 1, 2, 2, 3, 3]
    assert truncation.energy_rank(torch.zeros(3), 0.9) == 0
    with pytest.raises(ValueError):
        truncation.energy_rank(s, 0.0)


def test_batch_projection_against_numpy_svd():
    import numpy as np

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((12, 4)) @ rng.standard_normal((4, 30)) + 1e-3 * rng.standard_normal((12, 30))
    x = torch.from_numpy(rows)
    s, vh = truncation.batch_basis(x)
    _, s_np, vh_np = np.linalg.svd(rows, full_matrices=False)
    assert s.numpy() == pytest.approx(s_np, rel=1e-10)
    k = truncation.energy_rank(s, 0.99)
    assert k == 4  # four strong directions, the noise holds far less than 1 % of the energy
    want = rows @ vh_np[:k].T @ vh_np[:k]
    got = truncation.project(x, vh, k)
    assert got.dtype == x.dtype and np.allclose(got.numpy(), want, atol=1e-5)
    # projecting onto every direction returns the rows; onto none returns zeros
    assert torch.allclose(truncation.project(x, vh, vh.shape[0]), x, atol=1e-5)
    assert torch.count_nonzero(truncation.project(x, vh, 0)) == 0
