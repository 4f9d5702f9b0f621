"""Reconstruction entropy with an LM head that has a bias (the code reads it; Llama and Qwen heads have none): the
bias enters the softmax, as in an independent full forward of the decoder scored with scipy's entropy."""
from __future__ import annotations

import copy

import pytest
import torch

from ctxcomp.evaluate.probes import reconstruction_entropy
from helpers_eval import c4_texts, tiny_pair


def test_reconstruction_entropy_with_a_head_bias():
    from scipy.stats import entropy as scipy_entropy

    base, collate = tiny_pair()
    model = copy.deepcopy(base)
    old = model.decoder.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.copy_(torch.linspace(-4.0, 4.0, old.out_features))  # large enough to move every entropy
    model.decoder.set_output_embeddings(head)
    batch = collate([{"text": t, "continuation": ""} for t in c4_texts()[:2]])
    with torch.no_grad():
        z = model.compress(batch["comp_ids"], batch["comp_mask"])
    got, n = reconstruction_entropy(model, z, batch["re_ids"], batch["re_mask"], vocab_chunk=7)
    emb = model.decoder.get_input_embeddings()
    for b in range(2):
        ids = batch["re_ids"][b, : int(n[b])]
        pre = model.prefix(z[b : b + 1], "reconstruct")[0]
        with torch.no_grad():
            logits = model.decoder(inputs_embeds=torch.cat([pre, emb(ids)])[None]).logits[0].double()
            unbiased = logits - head.bias.double()
        rows = slice(pre.shape[0] - 1, pre.shape[0] - 1 + len(ids))
        want = sum(float(scipy_entropy(torch.softmax(r, 0).numpy())) for r in logits[rows]) / len(ids)
        without = sum(float(scipy_entropy(torch.softmax(r, 0).numpy())) for r in unbiased[rows]) / len(ids)
        assert abs(want - without) > 1e-2  # the bias matters here
        assert float(got[b]) == pytest.approx(want, abs=1e-5)
