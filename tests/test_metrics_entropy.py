"""Vocabulary entropy: known distributions, and the chunked streaming version equals the direct one."""
import math
import sys
from pathlib import Path

import pytest
import torch

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from ctxcomp.metrics import entropy


def test_uniform_is_log_v():
    v = 1000
    assert entropy.entropy_from_logits(torch.zeros(3, v)) == pytest.approx([math.log(v)] * 3, abs=1e-5)
    h = torch.zeros(2, 4)
    w = torch.randn(v, 4)
    assert entropy.chunked_entropy(h, w, chunk=333).tolist() == pytest.approx([math.log(v)] * 2, abs=1e-5)


def test_known_distribution():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])
    expected = 1.75 * math.log(2)  # = -sum p log p
    assert float(entropy.entropy_from_logits(p.log())) == pytest.approx(expected, abs=1e-6)
    # As an LM head: hidden = [1], weight column = log p.
    got = entropy.chunked_entropy(torch.ones(1, 1), p.log()[:, None], chunk=3)
    assert float(got[0]) == pytest.approx(expected, abs=1e-6)
    # A one-hot (masked) distribution has zero entropy, not NaN.
    masked = torch.tensor([[0.0, float("-inf"), float("-inf")]])
    assert float(entropy.entropy_from_logits(masked)[0]) == 0.0
    assert float(entropy.chunked_entropy(torch.ones(1, 1), masked.T, chunk=2)[0]) == 0.0


@pytest.mark.parametrize("chunk", [1, 7, 64, 500, 1000, 4096])
def test_chunked_equals_unchunked(chunk):
    g = torch.Generator().manual_seed(1)
    n, d, v = 12, 16, 1000
    hidden = torch.randn(n, d, generator=g) * 2
    weight = torch.randn(v, d, generator=g)
    bias = torch.randn(v, generator=g)
    ref = entropy.entropy_from_logits(hidden @ weight.T + bias)
    got = entropy.chunked_entropy(hidden, weight, bias, chunk=chunk)
    assert got.shape == (n,) and got.dtype == torch.float64
    assert torch.allclose(got.float(), ref, atol=1e-5, rtol=0)


def test_large_logits_and_bf16():
    g = torch.Generator().manual_seed(2)
    hidden = (torch.randn(4, 8, generator=g) * 30).to(torch.bfloat16)  # logits in the hundreds
    weight = torch.randn(777, 8, generator=g).to(torch.bfloat16)
    ref = entropy.entropy_from_logits(hidden.float() @ weight.float().T)
    got = entropy.chunked_entropy(hidden, weight, chunk=100)
    assert got.dtype == torch.float64
    assert torch.allclose(got.float(), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("vocab", [128_256, 151_936])
def test_real_vocabulary_matches_float64_reference(vocab):
    """Peaked hand-set distributions at the real vocabulary sizes: each row puts a set mass on one token and spreads
    the rest uniformly, so its entropy is known in closed form; chunked over rows and vocabulary, float64 inside."""
    from scipy.stats import entropy as scipy_entropy

    d = 4
    peaks = [0.999, 0.9, 0.5, 0.05]  # mass on the top token per row
    hidden = torch.eye(d)  # row i reads weight column i: logits = weight[:, i]
    weight = torch.zeros(vocab, d)
    for i, q in enumerate(peaks):
        # logit of the peak token: log(q (V-1) / (1-q)) relative to the others at 0
        weight[(i * 7919) % vocab, i] = math.log(q * (vocab - 1) / (1 - q))
    got = entropy.chunked_entropy(hidden, weight, chunk=16384, rows=3)
    for i, _ in enumerate(peaks):
        lg = float(weight[(i * 7919) % vocab, i])  # the float32-rounded logit actually stored
        q = math.exp(lg) / (math.exp(lg) + vocab - 1)
        closed = -(q * math.log(q) + (1 - q) * math.log((1 - q) / (vocab - 1)))
        p = torch.softmax(weight[:, i].double(), 0).numpy()
        # float64 accumulation: far inside the 1e-6 the probe needs (float32 sums are off by up to 3e-6 here)
        assert float(got[i]) == pytest.approx(closed, abs=1e-9)
        assert float(got[i]) == pytest.approx(float(scipy_entropy(p)), abs=1e-9)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        entropy.chunked_entropy(torch.zeros(2, 3), torch.zeros(5, 4))
