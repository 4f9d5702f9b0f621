"""The chunked frozen-head cross-entropy equals F.cross_entropy over materialised logits, values and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctxcomp.model.loss import frozen_head_nll, rows_per_chunk


def reference(head: torch.nn.Linear, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(h).float(), t, reduction="none")


@pytest.mark.parametrize("vocab,rows,bias", [(1000, 7, True), (1000, 1000, False), (128_256, 13, False),
                                             (151_936, None, True)])
def test_values_and_gradients_equal_materialised_logits(vocab, rows, bias):
    g = torch.Generator().manual_seed(vocab)
    n, d = 40, 16
    head = torch.nn.Linear(d, vocab, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, d, generator=g) * 0.5)
        if bias:
            head.bias.copy_(torch.randn(vocab, generator=g))
    head.requires_grad_(False)
    h = (torch.randn(n, d, generator=g) * 2).requires_grad_(True)
    t = torch.randint(0, vocab, (n,), generator=g)
    up = torch.rand(n, generator=g)  # an arbitrary upstream gradient: per-row weights as in a masked mean

    want = reference(head, h, t)  # float32 logits, materialised
    (gw,) = torch.autograd.grad((want * up).sum(), h)
    h64 = h.detach().double().requires_grad_(True)  # the float64 truth
    ref64 = F.cross_entropy(F.linear(h64, head.weight.double(), None if head.bias is None else head.bias.double()),
                            t, reduction="none")
    (g64,) = torch.autograd.grad((ref64 * up.double()).sum(), h64)

    got = frozen_head_nll(head, h, t, rows=rows)
    (gg,) = torch.autograd.grad((got * up).sum(), h)
    assert got.dtype == torch.float32 and got.shape == (n,)
    # NLLs reach ~18 nats at 128k, where one float32 ulp is 2e-6: values agree to a few ulp
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-5)
    torch.testing.assert_close(got.double(), ref64.detach(), rtol=2e-6, atol=1e-5)
    # gradients: within 1e-5 of float64 (measured 1.1e-6 at 128k); autograd through float32 logits is itself off
    # by 2.5e-5 there (its softmax gradient is rounded to float32 per logit), so it is the looser reference
    torch.testing.assert_close(gg.double(), g64, rtol=0, atol=1e-5)
    torch.testing.assert_close(gg, gw, rtol=0, atol=5e-5)


def test_trainable_head_falls_back_to_checkpointed_chunks():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 300)
    h = torch.randn(25, 8, requires_grad=True)
    t = torch.randint(0, 300, (25,))
    want = reference(head, h, t)
    gw = torch.autograd.grad(want.sum(), [h, head.weight])
    got = frozen_head_nll(head, h, t, rows=4)
    gg = torch.autograd.grad(got.sum(), [h, head.weight])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    for a, b in zip(gg, gw):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_rows_per_chunk_bounds_logit_elements():
    assert rows_per_chunk(128_256) * 128_256 <= 2**25 < (rows_per_chunk(128_256) + 1) * 128_256
    assert rows_per_chunk(10**9) == 1


def test_model_loss_equals_cross_entropy_of_its_logits(tmp_path_factory):
    """ContextCompressor.forward (chunked head) against F.cross_entropy over target_logits (materialised), values
    and the gradients of every trainable parameter."""
    from ctxcomp.model.collate import Collator
    from ctxcomp.model.load import build_for_training
    from ctxcomp.settings import CellTrainSettings
    from helpers_tiny import tiny_env

    tiny = tiny_env(tmp_path_factory.mktemp("tiny"))
    s = tiny.settings()
    torch.manual_seed(0)
    model, comp_tok, dec_tok = build_for_training(CellTrainSettings.of(s), torch.device("cpu"), torch.float32)
    batch = Collator(comp_tok, dec_tok, s["segment"]["segment_tokens"], s["segment"]["continuation_tokens"])(
        tiny.records(3))
    params = [p for p in model.parameters() if p.requires_grad]
    w = {"reconstruct": 1.0, "continue": 0.0}
    got = model(batch, weights=w)["loss"]
    g_got = torch.autograd.grad(got, params)
    z = model.compress(batch["comp_ids"], batch["comp_mask"])
    pre = model.prefix(z, "reconstruct")
    logits = model.target_logits(pre, torch.ones(pre.shape[:2], dtype=torch.long), batch["re_ids"], batch["re_mask"])
    m = batch["re_mask"].float()
    want = (F.cross_entropy(logits.float().transpose(1, 2), batch["re_ids"], reduction="none") * m).sum() / m.sum()
    g_want = torch.autograd.grad(want, params)
    assert float(got) == pytest.approx(float(want), abs=1e-5)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
