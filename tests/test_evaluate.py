"""Evaluation on small random tiny models: batching must not change results, and summaries follow their samples."""
from __future__ import annotations

import json

import pytest
import torch

from ctxcomp.evaluate import decoding, tasks
from ctxcomp.evaluate.probes import reconstruction_entropy
from ctxcomp.metrics import bleu, entropy as ent_m
from ctxcomp.model.collate import Collator
from ctxcomp.model.compressor import ContextCompressor
from ctxcomp.tiny.build import build_model
from ctxcomp.tiny.tokenizer import build_tokenizer
from snakemake_helpers import ROOT

L, C = 32, 16


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with open(ROOT / "workflow/data/c4/c4_sample.jsonl") as fh:
        return [json.loads(line)["text"] for _, line in zip(range(200), fh)]


@pytest.fixture(scope="module")
def setup(texts):
    comp_tok = build_tokenizer(texts, 400, "qwen3")
    dec_tok = build_tokenizer(texts, 500, "llama")
    arch = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64)
    comp = build_model({"arch": "qwen3", "head_dim": 8, **arch}, comp_tok, seed=1)
    dec = build_model({"arch": "llama", **arch, "hidden_size": 48, "intermediate_size": 96}, dec_tok, seed=2)
    torch.manual_seed(3)
    model = ContextCompressor(comp, dec, num_memory=L // 4, decoder_bos_id=dec_tok.bos_token_id).eval()
    return model, Collator(comp_tok, dec_tok, L, C)


def test_multi_segment_memory_length(setup, texts):
    model, collate = setup
    long_text = " ".join(texts[:3])
    zs = decoding.compress_texts(model, collate, [long_text, "short text"], max_segments=3, batch_size=2)
    assert zs[0].shape == (3 * model.num_memory, 48)
    assert zs[1].shape == (model.num_memory, 48)


def test_batched_greedy_equals_one_at_a_time(setup, texts):
    model, collate = setup
    zs = decoding.compress_texts(model, collate, [" ".join(texts[:3]), texts[3], texts[4]], 3, batch_size=4)
    prompts = [collate.dec_tok("Question: what?\nAnswer:", add_special_tokens=False)["input_ids"], [], [5, 6, 7]]
    batched = decoding.greedy_generate(model, zs, prompts, 12, None, "continue")
    single = [decoding.greedy_generate(model, [z], [p], 12, None, "continue")[0] for z, p in zip(zs, prompts)]
    assert batched == single
    assert all(len(t) == 12 for t in batched)


def test_batched_scores_equal_a_plain_forward(setup, texts):
    model, collate = setup
    zs = decoding.compress_texts(model, collate, [texts[0], " ".join(texts[1:3])], 3, batch_size=4)
    prompts = [[11, 12, 13], [14]]
    conts = [[21, 22], [23, 24, 25, 26]]
    got, counts = decoding.score_continuations(model, zs, prompts, conts)
    assert counts == [2, 4]
    emb = model.decoder.get_input_embeddings()
    for z, p, c, score in zip(zs, prompts, conts, got):
        x = torch.cat([model.prefix(z[None], "continue")[0], emb(torch.tensor(p + c))])
        with torch.no_grad():
            logp = torch.log_softmax(model.decoder(inputs_embeds=x[None]).logits[0].float(), -1)
        start = x.shape[0] - len(c)
        want = sum(float(logp[start - 1 + i, t]) for i, t in enumerate(c))
        assert score == pytest.approx(want, abs=1e-4)


def test_knowledge_overwriting_summary_matches_samples(setup, texts):
    model, collate = setup
    recs = [{"id": f"r{i}", "context": texts[i], "question": "Which is right?", "candidates": ["red", "blue", "x y"],
             "correct_index": i % 3} for i in range(6)]
    summary, rows = tasks.knowledge_overwriting(model, collate, recs, batch_size=4, max_segments=2)
    assert summary["n"] == 6
    for r in rows:
        assert r["pred_sum"] == max(range(3), key=r["loglik_sum"].__getitem__)
        assert r["correct"] == (r["pred_sum"] == r["correct_index"])
    assert summary["value"] == pytest.approx(sum(r["correct"] for r in rows) / 6)
    assert summary["details"]["chance"] == pytest.approx(1 / 3)


def test_reconstruction_bleu_is_corpus_bleu_of_samples(setup, texts):
    model, collate = setup
    recs = [{"id": f"c{i}", "text": t, "continuation": ""} for i, t in enumerate(texts[:5])]
    summary, rows = tasks.reconstruction(model, collate, recs, batch_size=3, max_new_tokens=10)
    again = bleu.corpus_bleu([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
    assert summary["value"] == again["score"]
    assert all(r["new_tokens"] <= 10 for r in rows)


def test_semantic_drift_scores_each_question(setup, texts):
    model, collate = setup
    qrows = [{"context_id": "a", "context": texts[0], "status": "ok", "questions": [
        {"qid": "a-q00", "dimension": "main_topic", "question": "What is it about?", "answer": "BBQ",
         "answerable": True},
        {"qid": "a-q01", "dimension": "unanswerable", "question": "Who won?", "answer": None, "answerable": False}]},
        {"context_id": "b", "context": texts[1], "status": "failed", "questions": []}]
    summary, rows = tasks.semantic_drift(model, collate, qrows, batch_size=4, max_segments=2, max_new_tokens=4)
    assert [r["qid"] for r in rows] == ["a-q00", "a-q01"]
    assert summary["details"]["failed_contexts"] == 1
    assert set(summary["details"]["per_dimension"]) == {"main_topic", "unanswerable"}


def test_reconstruction_entropy_matches_full_softmax(setup, texts):
    """Against an independent reference: the decoder run as a plain causal LM over each sample's unpadded
    [prefix; target] embeddings, softmax entropy (scipy, float64) of the logits before each target token."""
    from scipy.stats import entropy as scipy_entropy

    model, collate = setup
    batch = collate([{"text": t, "continuation": ""} for t in texts[:3]])
    z = model.compress(batch["comp_ids"], batch["comp_mask"])
    got, n = reconstruction_entropy(model, z, batch["re_ids"], batch["re_mask"], vocab_chunk=7)
    assert got.dtype == torch.float64
    assert n.tolist() == batch["re_mask"].sum(-1).tolist()
    emb = model.decoder.get_input_embeddings()
    for b in range(3):
        ids = batch["re_ids"][b, : int(n[b])]
        pre = model.prefix(z[b : b + 1], "reconstruct")[0]
        x = torch.cat([pre, emb(ids)])
        with torch.no_grad():
            logits = model.decoder(inputs_embeds=x[None]).logits[0].double()
        rows = logits[pre.shape[0] - 1 : pre.shape[0] - 1 + len(ids)]
        want = sum(float(scipy_entropy(torch.softmax(r, 0).numpy())) for r in rows) / len(ids)
        assert float(got[b]) == pytest.approx(want, abs=1e-5)


def test_reconstruction_entropy_reads_the_state_before_each_target(setup, texts, monkeypatch):
    """Hand-set hidden states and LM head: the state at position j puts mass q_j on one token (the rest uniform),
    q_j cycling through 0.999 / 0.3 / 0.05, and the targets are 1-2 tokens, so reading the positions off by one
    in either direction moves each sample's mean by > 0.5 nats. Expected values are closed-form, in float64."""
    import math

    model, collate = setup
    batch = collate([{"text": t, "continuation": ""} for t in texts[:3]])
    z = model.compress(batch["comp_ids"], batch["comp_mask"])
    P = model.prefix(z, "reconstruct").shape[1]
    re_ids = torch.tensor([[5, 6], [8, 9], [10, 0]])
    re_mask = torch.tensor([[1, 1], [1, 1], [1, 0]])
    V, d = 500, 48
    peaks = [(0.999, 0.3, 0.05)[j % 3] for j in range(d)]

    def fake_hidden(prefix, pmask, ids, mask):  # state j = e_(j mod d)
        j = torch.arange(prefix.shape[1] + ids.shape[1]) % d
        return torch.nn.functional.one_hot(j, d).float()[None].expand(ids.shape[0], -1, -1)

    head = torch.nn.Linear(d, V, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        for k, q in enumerate(peaks):
            head.weight[k, k] = math.log(q * (V - 1) / (1 - q))
    monkeypatch.setattr(model, "decoder_hidden", fake_hidden)
    monkeypatch.setattr(model.decoder, "get_output_embeddings", lambda: head)

    def h_of(j: int) -> float:
        lg = float(head.weight[j % d, j % d])
        q = math.exp(lg) / (math.exp(lg) + V - 1)
        return -(q * math.log(q) + (1 - q) * math.log((1 - q) / (V - 1)))

    got, n = reconstruction_entropy(model, z, re_ids, re_mask, vocab_chunk=64)
    assert n.tolist() == [2, 2, 1]
    for b in range(3):
        T = int(n[b])
        want = sum(h_of(P - 1 + t) for t in range(T)) / T
        for off in (-1, 1):
            assert abs(want - sum(h_of(P - 1 + off + t) for t in range(T)) / T) > 0.5
        assert float(got[b]) == pytest.approx(want, abs=1e-6)
