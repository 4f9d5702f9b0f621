"""Probes against independent computations: reconstruction entropy with an LM head that has a bias (the code reads
it; Llama and Qwen heads have none) against a full forward scored with scipy's entropy, and the per-context entropy
of the drift segments against each segment probed on its own."""
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


def test_context_entropy_equals_each_segment_on_its_own():
    from ctxcomp.evaluate import probes
    from ctxcomp.model.collate import pad_id_of, right_pad

    model, collate = tiny_pair()
    texts = c4_texts()
    docs = [" ".join(texts[:3]), texts[3]]
    got = probes.context_entropy(model, collate, docs, max_segments=2, batch_size=3, vocab_chunk=11)
    for doc, (e, n, nseg) in zip(docs, got, strict=True):
        segs = collate.comp_segments(doc, 2)
        total, tokens = 0.0, 0
        for s in segs:
            comp_ids, comp_mask = collate.compressor_tensors([s])
            target = collate.dec_ids(collate.segment_text(s), collate.max_recon, eos=True)
            re_ids, re_mask = right_pad([target], pad_id_of(collate.dec_tok))
            with torch.no_grad():
                ent, k = reconstruction_entropy(model, model.compress(comp_ids, comp_mask), re_ids, re_mask, 5)
            assert int(k[0]) == len(target) <= collate.max_recon
            total += float(ent[0]) * len(target)
            tokens += len(target)
        assert nseg == len(segs) and n == tokens
        assert e == pytest.approx(total / tokens, abs=1e-6)
