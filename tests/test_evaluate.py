"""Evaluation on small random tiny models: batching must not change results, and summaries follow their samples."""
from __future__ import annotations

import pytest
import torch

from ctxcomp.evaluate import decoding, tasks
from ctxcomp.evaluate.probes import reconstruction_entropy
from ctxcomp.evaluate.prompts import INSTRUCTION
from ctxcomp.metrics import entropy as ent_m
from helpers_eval import L, c4_texts, tiny_pair


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return c4_texts()


@pytest.fixture(scope="module")
def setup():
    return tiny_pair()


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


def _index_memories(monkeypatch, width: int = 8):
    """Replace the compressor by memories that carry their sample index: Z_i = i everywhere (M=4 vectors)."""
    fake = lambda segs: [torch.full((4, width), float(i)) for i in range(len(segs))]  # noqa: E731
    monkeypatch.setattr(tasks, "compress_segments", lambda model, collate, segs, bs: fake(segs))
    monkeypatch.setattr(tasks, "compress_texts", lambda model, collate, texts, max_seg, bs: fake(texts))


def test_reconstruction_bleu_is_corpus_bleu_of_samples(setup, texts, monkeypatch):
    """A stub decoder that reads its memory and reproduces the first half of that segment's words: BLEU has all
    n-gram precisions 1 and a brevity penalty, so swapping hypothesis and reference would change it."""
    import sacrebleu

    model, collate = setup
    recs = [{"id": f"c{i}", "text": t[:300], "continuation": t[300:600]} for i, t in enumerate(texts[:12])]
    want_refs = [collate.window_split(r["text"], r["continuation"])[1] for r in recs]
    half = [" ".join(r.split()[: len(r.split()) // 2]) for r in want_refs]
    dec_tok = collate.dec_tok

    def stub_generate(model_, zs, prompts, max_new, eos, task):
        assert task == "reconstruct" and all(p == [] for p in prompts)
        return [dec_tok(half[int(z[0, 0])], add_special_tokens=False)["input_ids"] for z in zs]

    _index_memories(monkeypatch)
    monkeypatch.setattr(tasks, "greedy_generate", stub_generate)
    summary, rows = tasks.reconstruction(model, collate, recs, batch_size=5, max_new_tokens=10, controls=True,
                                         boot=tasks.ctl.Bootstrap(500, 1))
    refs = [r["reference"] for r in rows]
    # the reference is the original text: exactly the first L compressor tokens of the chunk window
    for rec, ref in zip(recs, refs):
        assert (rec["text"] + rec["continuation"]).startswith(ref)
        assert len(collate.comp_tok(ref, add_special_tokens=False)["input_ids"]) == L
    assert [r["hypothesis"] for r in rows] == half
    want = sacrebleu.corpus_bleu(half, [refs]).score / 100
    swapped = sacrebleu.corpus_bleu(refs, [half]).score / 100
    assert summary["value"] == pytest.approx(want, abs=1e-12) and abs(want - swapped) > 0.02
    assert 0.2 < want < 0.8 and summary["ci95"][0] < want < summary["ci95"][1]
    # shuffled Z: each segment decoded from another segment's memory reproduces THAT segment's half
    ctrl = summary["controls"]["shuffled_z"]
    z_of = [int(r["shuffled_z"]["z_of"][1:]) for r in rows]
    assert sorted(z_of) == list(range(12)) and all(j != i for i, j in enumerate(z_of))
    assert ctrl["value"] == pytest.approx(sacrebleu.corpus_bleu([half[j] for j in z_of], [refs]).score / 100)
    assert ctrl["value"] < 0.1 and ctrl["diff_ci95"][0] > 0 and ctrl["distinguishable"] is True
    assert summary["bootstrap"] == {"resamples": 500, "seed": 1, "unit": "sample"}


def test_semantic_drift_scores_each_question(setup, texts, monkeypatch):
    """A stub decoder with known answers: containment for answerable questions, explicit abstention only for the
    unanswerable ones, the split and the per-dimension breakdown; with another context's memory it abstains."""
    model, collate = setup
    tok = collate.dec_tok
    # (dimension, gold or None, the stub's answer with the right memory, correct?)
    plan = {
        "a": [("main_topic", "barbecue", "barbecue", True),
              ("entity_list", "Texas", "the state of Texas", True),  # containment, not EM
              ("coreference", "the chef", "a waiter", False),
              ("unanswerable", None, "unanswerable", True),
              ("unanswerable", None, "", False)],  # silence is not abstention
        "b": [("main_topic", "rain", "rain", True),
              ("role_binding", "Anna", "", False),
              ("unanswerable", None, "The text does not say.", True),
              ("unanswerable", None, "::::", False),
              ("unanswerable", None, "Paris", False)],  # a made-up answer is drift
    }
    qrows, answers = [], {}
    for c, (cid, qs) in enumerate(plan.items()):
        questions = []
        for k, (dim, gold, ans, _) in enumerate(qs):
            q = f"question {k} about {cid}?"
            answers[q] = (c, ans)
            questions.append({"qid": f"{cid}-q{k}", "dimension": dim, "question": q, "answer": gold,
                              "answerable": gold is not None})
        qrows.append({"context_id": cid, "context": texts[c], "status": "ok", "questions": questions})
    qrows.append({"context_id": "z", "context": texts[5], "status": "failed", "questions": []})

    def stub_shared(model_, zs, prompts, owner, max_new, stop, task, bs):
        out = []
        for p, o in zip(prompts, owner):
            text = tok.decode(p)
            assert text.startswith(INSTRUCTION) and text.endswith("\nAnswer:")  # plain prompt, tiny decoder
            q = next(q for q in answers if f"Question: {q}" in text)
            ctx, ans = answers[q]
            said = ans if int(zs[o][0, 0]) == ctx else "I cannot answer"  # reads its memory
            out.append(tok(said + "\nmore text", add_special_tokens=False)["input_ids"])
        return out

    _index_memories(monkeypatch)
    monkeypatch.setattr(tasks, "generate_shared", stub_shared)
    summary, rows = tasks.semantic_drift(model, collate, qrows, batch_size=4, max_segments=2, max_new_tokens=8,
                                         controls=True, boot=tasks.ctl.Bootstrap(200, 3))
    want = [ok for qs in plan.values() for *_, ok in qs]
    assert [r["correct"] for r in rows] == want
    assert [r["prediction"] for r in rows][:2] == ["barbecue", "the state of Texas"]  # cut at the newline
    assert summary["value"] == pytest.approx(5 / 10) and summary["n"] == 10
    d = summary["details"]
    assert d["answerable"]["value"] == pytest.approx(3 / 5) and d["answerable"]["n"] == 5
    assert d["unanswerable"]["value"] == pytest.approx(2 / 5) and d["unanswerable"]["n"] == 5
    assert d["per_dimension"]["main_topic"]["value"] == 1.0 and d["per_dimension"]["coreference"]["value"] == 0.0
    assert d["per_dimension"]["unanswerable"] == {**d["unanswerable"]}
    assert d["per_dimension"]["modifier_scope"] == {"value": None, "ci95": None, "n": 0}  # no such question
    assert len(d["per_dimension"]) == 8
    assert d["em"]["value"] == pytest.approx(4 / 10)  # "the state of Texas" is not an exact match
    assert d["failed_contexts"] == 1 and d["contexts"] == 2 and d["prompt"] == "plain"
    # with another context's memory the stub abstains: right on unanswerable questions only
    ctrl = summary["controls"]["shuffled_z"]
    assert [r["shuffled_z"]["correct"] for r in rows] == [q[1] is None for qs in plan.values() for q in qs]
    assert ctrl["value"] == pytest.approx(5 / 10)
    assert summary["bootstrap"]["unit"] == "context" and summary["ci95"] is not None


def test_knowledge_overwriting_controls_from_designed_scores(setup, monkeypatch):
    """Designed log-likelihoods: with its own memory the decoder prefers the context answer in 54 of 60 questions,
    with another's in 12, with none it always picks candidate 0 (its prior); chance is the mean 1/#candidates."""
    model, collate = setup
    n = 60
    recs = [{"id": f"q{i}", "context": "ctx", "question": f"Q{i}?", "candidates": ["a", "b", "c"][: 2 + i % 2],
             "correct_index": (i // 2) % (2 + i % 2)} for i in range(n)]

    tok = collate.dec_tok

    def stub_scores(model_, zs, prompts, cands, max_rows):
        out = []
        for z, p, c in zip(zs, prompts, cands):
            q = int(tok.decode(p).split("Question: Q", 1)[1].split("?")[0])  # which question this row asks
            if z.shape[0] == 0:  # no memory: the prior prefers candidate 0
                out.append([(-1.0 if j == 0 else -2.0, 1) for j in range(len(c))])
                continue
            hit = q % 10 != 0 if int(z[0, 0]) == q else q % 5 == 0
            target = recs[q]["correct_index"]
            best = target if hit else (target + 1) % len(c)
            out.append([(-1.0 if j == best else -3.0, 2) for j in range(len(c))])
        return out

    _index_memories(monkeypatch)
    monkeypatch.setattr(tasks, "score_candidates", stub_scores)
    summary, rows = tasks.knowledge_overwriting(model, collate, recs, batch_size=7, max_segments=1, controls=True,
                                                boot=tasks.ctl.Bootstrap(1000, 5))
    assert summary["value"] == pytest.approx(54 / 60)
    perm = [int(r["shuffled_z"]["z_of"][1:]) for r in rows]
    assert sorted(perm) == list(range(n)) and all(j != i for i, j in enumerate(perm))
    want_shuf = sum(i % 5 == 0 for i in range(n)) / n
    c = summary["controls"]
    assert c["shuffled_z"]["value"] == pytest.approx(want_shuf) and c["shuffled_z"]["distinguishable"] is True
    prior = sum(r["correct_index"] == 0 for r in recs) / n
    assert c["no_memory"]["value"] == pytest.approx(prior) and c["no_memory"]["distinguishable"] is True
    assert c["chance"]["value"] == pytest.approx((30 / 2 + 30 / 3) / 60)
    assert all(r["margin"] == (2.0 if r["correct"] else -2.0) for r in rows)
    lo, hi = summary["ci95"]
    assert lo < 54 / 60 < hi and 0.05 < hi - lo < 0.2


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


def test_evaluation_builds_no_autograd_graph(setup, texts):
    """Every evaluation entry point runs without gradients: the memories, caches and entropies it returns hold no
    graph (on a GPU a graph over a whole evaluation set would not fit)."""
    model, collate = setup
    assert any(p.requires_grad for p in model.parameters())
    zs = decoding.compress_texts(model, collate, texts[:2], 2, batch_size=2)
    assert not any(z.requires_grad for z in zs)
    segs = [collate.comp_segments(t, 1)[0] for t in texts[:2]]
    assert not any(z.requires_grad for z in tasks.compress_segments(model, collate, segs, 2))
    cache, mask, last, logits = decoding.prefix_cache(model, zs, [[5, 6], [7]], "continue")
    assert not logits.requires_grad
    w = torch.randn(50, 4, requires_grad=True)
    assert not ent_m.chunked_entropy(torch.randn(3, 4), w, chunk=7).requires_grad
    z = model.compress(*collate.compressor_tensors(segs))
    assert z.requires_grad  # outside the evaluation functions gradients are on: the check above means something


def test_context_entropy_is_token_weighted_over_the_drift_segments(setup, texts, monkeypatch):
    """A stub entropy per segment (its position in the batch stream) and token count: each text's value is the
    token-weighted mean over its first max_segments segments, whatever the batching."""
    from ctxcomp.evaluate import probes

    model, collate = setup
    calls = []

    def stub(model_, z, re_ids, re_mask, vocab_chunk):
        start = sum(len(c) for c in calls)
        calls.append(list(range(start, start + z.shape[0])))
        n = re_mask.sum(-1)
        return torch.tensor([float(start + i) for i in range(z.shape[0])], dtype=torch.float64), n

    monkeypatch.setattr(probes, "reconstruction_entropy", stub)
    docs = [" ".join(texts[:3]), texts[3], " ".join(texts[4:6])]
    segs = [collate.comp_segments(t, 2) for t in docs]
    got = probes.context_entropy(model, collate, docs, max_segments=2, batch_size=3, vocab_chunk=5)
    tokens = [[len(collate.dec_ids(collate.segment_text(s), collate.max_recon, eos=True)) for s in ss] for ss in segs]
    k = 0
    for (e, n, nseg), ss, tk in zip(got, segs, tokens, strict=True):
        ids = list(range(k, k + len(ss)))
        k += len(ss)
        assert nseg == len(ss) and n == sum(tk)
        assert e == pytest.approx(sum(i * t for i, t in zip(ids, tk, strict=True)) / sum(tk))
    n_seg = sum(len(s) for s in segs)
    assert n_seg > 3 and [len(c) for c in calls] == [3, n_seg - 3]  # batches of 3 segments across the texts


def test_probe_batch_reports_erank_of_the_batch_and_entropy(setup, texts):
    from ctxcomp.evaluate import probes
    from ctxcomp.metrics.erank import effective_rank

    model, collate = setup
    batch = collate([{"text": t, "continuation": ""} for t in texts[:4]])
    got = probes.probe_batch(model, batch, vocab_chunk=64)
    z = model.compress(batch["comp_ids"], batch["comp_mask"])
    assert got["batch"] == 4 and tuple(got["z"].shape) == tuple(z.shape)
    assert got["erank"] == pytest.approx(effective_rank(z.detach().double()), rel=1e-6)
    ent, n = probes.reconstruction_entropy(model, z, batch["re_ids"], batch["re_mask"], 64)
    assert got["entropy"] == pytest.approx(ent.tolist()) and got["n_tokens"] == n.tolist()
    assert got["entropy_mean"] == pytest.approx(float(ent.mean()))
