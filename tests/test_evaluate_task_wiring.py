"""Semantic drift, knowledge overwriting and reconstruction wired on doubles that run in milliseconds: which contexts
are compressed and with which limits, what reaches the decoder (memories, prompts, stop ids, task token, batch size),
the shuffled-Z control only when asked for, and every row field against hand-derived values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ctxcomp.evaluate import controls as ctl
from ctxcomp.evaluate import prompts, tasks
from ctxcomp.questions.schema import UNANSWERABLE

EOS, TURN_END, NL = 3, 77, 10


class Tok:
    """Character-level tokenizer double (Hugging Face conventions: BOS added unless add_special_tokens=False)."""
    eos_token_id = EOS
    bos_token = None

    def __init__(self, chat=False):
        self.chat_template = "{{ messages }}" if chat else None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}

    clean_up_tokenization_spaces = True  # the tokenizer's own default, used when a caller passes None

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        s = "".join(chr(i) for i in ids if i > 3 or not skip_special_tokens)
        clean = clean_up_tokenization_spaces
        if clean is None:
            clean = self.clean_up_tokenization_spaces
        return s.replace(" .", ".") if clean else s

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, enable_thinking):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def ids(text):
    return [ord(c) for c in text]


class Collate:
    """Segments of three words; a segment's text is its words."""

    def __init__(self, tok):
        self.dec_tok = tok
        self.limits = []

    def comp_segments(self, text, max_segments):
        self.limits.append(max_segments)
        words = text.split()
        return [tuple(words[i:i + 3]) for i in range(0, len(words), 3)][:max_segments]

    def segment_text(self, seg):
        return " ".join(seg)


class Model:
    decoder_eos_ids = (TURN_END,)


def q(qid, question, answer, dim="main_topic", answerable=True):
    return {"qid": qid, "question": question, "answer": answer, "dimension": dim, "answerable": answerable}


ROWS = [
    # read with max_segments=2: "the cat sat | on the mat" ("today" is cut off)
    {"context_id": "c1", "status": "ok", "context": "the cat sat on the mat today",
     "questions": [q("a", "What did the cat do?", "sat on"),
                   q("b", "What color was the cat?", "", UNANSWERABLE, answerable=False),
                   q("c", "When?", "today", "entity_list")]},
    {"context_id": "c2", "status": "ok", "context": "dogs run fast in parks",
     "questions": [q("d", "What do dogs do?", "run fast")]},
    {"context_id": "c3", "status": "failed", "context": "x y z", "questions": [q("e", "Why?", "z")]},
    {"context_id": "c4", "status": "ok", "context": "p q r", "questions": []},
]
# " ." stays as generated (no clean-up); the answer ends at its first newline (a token may hold several)
SAID = {"What did the cat do?": "it sat on the mat .", "What color was the cat?": "unanswerable",
        "When?": "today\nand\nmore", "What do dogs do?": "they swim"}


def _drift(monkeypatch, chat=False, controls=True, rows=ROWS, **kw):
    tok = Tok(chat)
    collate, model = Collate(tok), Model()
    memories = [torch.full((2, 3), float(k)) for k in range(len(rows))]
    calls = []

    def stub_compress(m, c, texts, max_segments, batch_size):
        assert m is model and c is collate and max_segments == 2 and batch_size == 5
        calls.append(list(texts))
        return memories[:len(texts)]

    def expected_prompt(question):
        if chat:
            return ids(f"<user>{prompts.INSTRUCTION}\n\nQuestion: {question}</user><assistant>")
        return ids(f"{prompts.INSTRUCTION}\nQuestion: {question}\nAnswer:")

    def stub_generate(m, zs, prompt_ids, owner, max_new, stop, task, batch_size):
        assert m is model and max_new == 9 and task == "continue" and batch_size == 5
        assert set(stop) == {EOS, TURN_END, NL}
        by_prompt = {tuple(expected_prompt(x["question"])): x["question"] for r in rows for x in r["questions"]}
        out = []
        for p, o in zip(prompt_ids, owner):
            question = by_prompt[tuple(p)]
            shuffled = zs[o] is not memories[o]
            out.append(ids("unanswerable" if shuffled else SAID[question]))
        calls.append([float(z[0, 0]) for z in zs])
        return out

    monkeypatch.setattr(tasks, "compress_texts", stub_compress)
    monkeypatch.setattr(tasks, "generate_shared", stub_generate)
    summary, out = tasks.semantic_drift(model, collate, rows, 5, 2, 9, controls=controls, **kw)
    return collate, calls, summary, out


@pytest.mark.parametrize("chat", [False, True])
def test_semantic_drift_rows(monkeypatch, chat):
    boot = ctl.Bootstrap(resamples=50, seed=7)
    collate, calls, summary, rows = _drift(monkeypatch, chat, boot=boot)
    # only contexts with status ok AND questions; each cut to two segments
    assert calls[0] == ["the cat sat on the mat today", "dogs run fast in parks"]
    assert collate.limits == [2, 2]
    perm = ctl.derangement(2, 7)
    assert perm == [1, 0]
    assert calls[1] == [0.0, 1.0] and calls[2] == [1.0, 0.0]  # own memories, then the deranged ones
    assert [r["qid"] for r in rows] == ["a", "b", "c", "d"]
    keys = {"context_id", "qid", "dimension", "answerable", "question", "gold", "prediction", "correct", "em",
            "abstained", "gold_in_memory_text", "segments", "shuffled_z"}
    assert all(set(r) == keys for r in rows)
    a, b, c, d = rows
    assert (a["context_id"], a["question"], a["gold"], a["dimension"]) == ("c1", "What did the cat do?", "sat on",
                                                                         "main_topic")
    assert [r["prediction"] for r in rows] == ["it sat on the mat .", "unanswerable", "today", "they swim"]
    assert [r["correct"] for r in rows] == [True, True, True, False]
    # EM: answerable -> exact match; unanswerable -> abstained
    assert [r["em"] for r in rows] == [False, True, True, False]
    assert [r["abstained"] for r in rows] == [False, True, False, False]
    # "sat on" spans the two segments read; "today" was cut off; an empty gold has no answer to look for
    assert [r["gold_in_memory_text"] for r in rows] == [True, None, False, True]
    assert [r["segments"] for r in rows] == [2, 2, 2, 2]
    assert all(set(r["shuffled_z"]) == {"z_of", "prediction", "correct"} for r in rows)
    assert [r["shuffled_z"]["z_of"] for r in rows] == ["c2", "c2", "c2", "c1"]
    assert [r["shuffled_z"]["prediction"] for r in rows] == ["unanswerable"] * 4
    assert [r["shuffled_z"]["correct"] for r in rows] == [False, True, False, False]
    assert summary["value"] == pytest.approx(3 / 4) and summary["n"] == 4
    assert summary["details"]["contexts"] == 2 and summary["details"]["failed_contexts"] == 2
    assert summary["details"]["prompt"] == ("chat_template" if chat else "plain")
    assert summary["bootstrap"]["seed"] == 7 and "shuffled_z" in summary["controls"]


def test_semantic_drift_without_controls_or_bootstrap_settings(monkeypatch):
    _, calls, summary, rows = _drift(monkeypatch, controls=False)
    assert len(calls) == 2  # compress, one generation: no shuffled run
    assert "controls" not in summary and not any("shuffled_z" in r for r in rows)
    assert summary["bootstrap"]["seed"] == 0 and summary["bootstrap"]["resamples"] == ctl.Bootstrap().resamples


def test_semantic_drift_controls_default_off(monkeypatch):
    tok = Tok()
    monkeypatch.setattr(tasks, "compress_texts", lambda m, c, t, s, b: [torch.zeros(2, 3) for _ in t])
    monkeypatch.setattr(tasks, "generate_shared", lambda m, zs, p, o, n, s, t, b: [ids("x") for _ in p])
    summary, rows = tasks.semantic_drift(Model(), Collate(tok), ROWS[:2], 5, 2, 9)
    assert "controls" not in summary and not any("shuffled_z" in r for r in rows)


def test_semantic_drift_one_context_has_no_shuffled_control(monkeypatch):
    _, calls, summary, rows = _drift(monkeypatch, rows=ROWS[1:2])
    assert len(calls) == 2 and not any("shuffled_z" in r for r in rows)
    assert summary["controls"]["shuffled_z"]["value"] is None


# ------------------------------------------------------------------------------------------ knowledge overwriting
class WordTok:
    """Word-level tokenizer double: one id per whitespace word, BOS unless add_special_tokens=False."""
    eos_token_id = EOS

    def __init__(self):
        self.vocab = {}

    def __call__(self, text, add_special_tokens=True):
        words = [self.vocab.setdefault(w, 100 + len(self.vocab)) for w in text.split(" ")]
        return {"input_ids": ([1] if add_special_tokens else []) + words}


KO = [
    {"id": "k1", "question": "Who is he?", "context": "c one", "candidates": ["Paris", "New York City"],
     "correct_index": 0},
    {"id": "k2", "question": "Where is it?", "context": "c two", "candidates": ["Rome", " Milan "], "correct_index": 1},
    {"id": "k3", "question": "What?", "context": "c three", "candidates": ["mice"], "correct_index": 0},
]
# summed log-likelihood per (memory seen, candidate): own memory, another question's memory, no memory
LOGLIK = {("own", "Paris"): -3.0, ("own", "New York City"): -4.5, ("own", "Rome"): -1.0, ("own", "Milan"): -2.0,
          ("own", "mice"): -0.5, ("shuf", "Paris"): -9.0, ("shuf", "New York City"): -1.0, ("shuf", "Rome"): -3.0,
          ("shuf", "Milan"): -1.0, ("shuf", "mice"): -1.0, ("none", "Paris"): -5.0, ("none", "New York City"): -2.0,
          ("none", "Rome"): -1.0, ("none", "Milan"): -6.0, ("none", "mice"): -2.0}
MEM_ROWS = {"k1": 6, "k2": 2, "k3": 4}  # memory vectors per context (M x segments)


def _ko(monkeypatch, zs=None, **kw):
    tok = WordTok()
    model = Model()
    collate = Collate(tok)
    memories = [torch.full((MEM_ROWS[r["id"]], 3), float(k)) for k, r in enumerate(KO)]
    batches_seen, labels = [], []

    def stub_compress(m, c, texts, max_segments, batch_size):
        assert m is model and c is collate and max_segments == 3 and batch_size == 2
        assert texts == [r["context"] for r in KO]
        return memories

    def stub_score(m, mems, prompt_ids, cands, max_rows):
        assert m is model
        by_prompt = {tuple(tok(f"Question: {r['question']}\nAnswer:", add_special_tokens=False)["input_ids"]): k
                     for k, r in enumerate(KO)}
        out, seen = [], []
        for z, p, cs in zip(mems, prompt_ids, cands):
            k = by_prompt[tuple(p)]
            seen.append(KO[k]["id"])
            kind = "none" if z.shape[0] == 0 else "own" if z is memories[k] else "shuf"
            texts = [c.strip() for c in KO[k]["candidates"]]
            want = [tok(" " + t, add_special_tokens=False)["input_ids"] for t in texts]
            assert [list(c) for c in cs] == want  # " candidate", no special tokens
            out.append([(LOGLIK[kind, t], len(t.split())) for t in texts])
        batches_seen.append(seen)
        return out

    monkeypatch.setattr(tasks, "compress_texts", stub_compress)
    monkeypatch.setattr(tasks, "score_candidates", stub_score)
    monkeypatch.setattr(tasks, "_progress", lambda it, desc: labels.append(desc) or it)
    summary, rows = tasks.knowledge_overwriting(model, collate, KO, 2, 3, zs, **kw)
    return memories, batches_seen, labels, summary, rows


def test_knowledge_overwriting_rows(monkeypatch):
    boot = ctl.Bootstrap(resamples=30, seed=11)
    _, batches_seen, labels, summary, rows = _ko(monkeypatch, boot=boot, controls=True)
    # prefix lengths (memory rows + prompt words): k1 6 + 4, k2 2 + 4, k3 4 + 2 -> k2 (6), k3 (6, later), k1 (10)
    assert batches_seen[:2] == [["k2", "k3"], ["k1"]]
    assert labels == ["knowledge", "knowledge (shuffled Z)", "knowledge (no memory)"]
    keys = {"id", "correct_index", "loglik_sum", "loglik_norm", "pred_sum", "pred_norm", "correct", "correct_norm",
            "margin", "memory_vectors", "shuffled_z", "no_memory"}
    assert all(set(r) == keys for r in rows)
    k1, k2, k3 = rows
    assert [r["id"] for r in rows] == ["k1", "k2", "k3"] and [r["correct_index"] for r in rows] == [0, 1, 0]
    assert k1["loglik_sum"] == [-3.0, -4.5] and k1["loglik_norm"] == [-3.0, -1.5]  # per word: 1 and 3 words
    assert (k1["pred_sum"], k1["pred_norm"], k1["correct"], k1["correct_norm"]) == (0, 1, True, False)
    assert (k2["pred_sum"], k2["pred_norm"], k2["correct"], k2["correct_norm"]) == (0, 0, False, False)
    assert (k3["pred_sum"], k3["pred_norm"], k3["correct"], k3["correct_norm"]) == (0, 0, True, True)
    assert [r["margin"] for r in rows] == [1.5, -1.0, None]  # one candidate: nothing to beat
    assert [r["memory_vectors"] for r in rows] == [6, 2, 4]
    perm = ctl.derangement(3, 11)
    assert [r["shuffled_z"]["z_of"] for r in rows] == [KO[j]["id"] for j in perm]
    assert all(set(r["shuffled_z"]) == {"z_of", "pred", "correct"} for r in rows)
    assert [(r["shuffled_z"]["pred"], r["shuffled_z"]["correct"]) for r in rows] == [(1, False), (1, True), (0, True)]
    assert all(set(r["no_memory"]) == {"pred", "correct", "loglik_sum"} for r in rows)
    assert [(r["no_memory"]["pred"], r["no_memory"]["correct"]) for r in rows] == [(1, False), (0, False), (0, True)]
    assert k1["no_memory"]["loglik_sum"] == [-5.0, -2.0]
    assert summary["value"] == pytest.approx(2 / 3) and summary["n"] == 3
    assert summary["controls"]["chance"]["value"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert summary["bootstrap"]["seed"] == 11


def test_knowledge_overwriting_given_memories_no_controls(monkeypatch):
    memories = [torch.full((MEM_ROWS[r["id"]], 3), float(k)) for k, r in enumerate(KO)]
    calls = []
    monkeypatch.setattr(tasks, "compress_texts", lambda *a: calls.append(a))
    monkeypatch.setattr(tasks, "score_candidates",
                        lambda m, mems, p, cands, max_rows: [[(-float(len(c)), len(c)) for c in cs] for cs in cands])
    summary, rows = tasks.knowledge_overwriting(Model(), Collate(WordTok()), KO, 2, 3, memories)
    assert not calls  # the given memories are used as they are
    assert "controls" not in summary and not any("shuffled_z" in r or "no_memory" in r for r in rows)
    # fewer words scores higher here: k1 Paris (right), k2 Rome (wrong), k3 mice
    assert [r["correct"] for r in rows] == [True, False, True]


# ------------------------------------------------------------------------------------------------ reconstruction
class ReconCollate:
    """window_split double: the first three words of text + continuation are the segment (one id per word)."""

    def __init__(self):
        self.dec_tok = Tok()
        self.split_args = []

    def window_split(self, text, continuation):
        self.split_args.append((text, continuation))
        words = (text + continuation).split(" ")
        return [len(w) for w in words[:3]], " ".join(words[:3]), " ".join(words[3:])


def test_reconstruction_rows(monkeypatch):
    import sacrebleu

    records = [{"id": "s1", "text": "the cat sat down", "continuation": " later"},
               {"id": "s2", "text": "a dog ran"},
               {"id": "s3", "text": "birds fly high above"}]
    collate, model = ReconCollate(), Model()
    memories = [torch.full((2, 3), float(k)) for k in range(3)]
    labels, generated = [], []

    def stub_compress(m, c, segs, batch_size):
        assert m is model and c is collate and batch_size == 2
        assert segs == [[3, 3, 3], [1, 3, 3], [5, 3, 4]]
        return memories

    def stub_generate(m, zs, prompt_ids, max_new, eos, task):
        assert m is model and max_new == 12 and eos == EOS and task == "reconstruct"
        assert prompt_ids == [[] for _ in zs] and len(zs) <= 2  # nothing after the memory
        out = []
        for z in zs:
            k = int(z[0, 0])
            own = any(z is mem for mem in memories) and generated.count(k) == 0
            generated.append(k)
            text = ["the cat sat", "a dog", "birds fly high"][k] if own else "zz"
            out.append([1] + ids(text) + [EOS])  # BOS/EOS are dropped by skip_special_tokens
        return out

    monkeypatch.setattr(tasks, "compress_segments", stub_compress)
    monkeypatch.setattr(tasks, "greedy_generate", stub_generate)
    monkeypatch.setattr(tasks, "_progress", lambda it, desc: labels.append(desc) or it)
    summary, rows = tasks.reconstruction(model, collate, records, 2, 12, boot=ctl.Bootstrap(20, 4), controls=True)
    assert collate.split_args == [("the cat sat down", " later"), ("a dog ran", ""), ("birds fly high above", "")]
    assert labels == ["reconstruct", "reconstruct (shuffled Z)"]
    keys = {"id", "reference", "hypothesis", "sentence_bleu", "new_tokens", "segment_tokens", "shuffled_z"}
    assert all(set(r) == keys for r in rows)
    assert [r["id"] for r in rows] == ["s1", "s2", "s3"]
    assert [r["reference"] for r in rows] == ["the cat sat", "a dog ran", "birds fly high"]
    assert [r["hypothesis"] for r in rows] == ["the cat sat", "a dog", "birds fly high"]
    assert [r["new_tokens"] for r in rows] == [13, 7, 16]  # generated ids, BOS and EOS included
    assert [r["segment_tokens"] for r in rows] == [3, 3, 3]
    for r in rows:
        ref = sacrebleu.metrics.BLEU(effective_order=True).sentence_score(r["hypothesis"], [r["reference"]])
        assert r["sentence_bleu"] == pytest.approx(ref.score / 100)
    perm = ctl.derangement(3, 4)
    assert [r["shuffled_z"]["z_of"] for r in rows] == [records[j]["id"] for j in perm]
    assert all(set(r["shuffled_z"]) == {"z_of", "hypothesis", "sentence_bleu"} for r in rows)
    assert [r["shuffled_z"]["hypothesis"] for r in rows] == ["zz"] * 3
    assert [r["shuffled_z"]["sentence_bleu"] for r in rows] == [0.0] * 3
    assert summary["n"] == 3 and "shuffled_z" in summary["controls"]


def test_reconstruction_defaults_have_no_control(monkeypatch):
    collate = ReconCollate()
    monkeypatch.setattr(tasks, "compress_segments", lambda m, c, segs, b: [torch.zeros(2, 3) for _ in segs])
    monkeypatch.setattr(tasks, "greedy_generate", lambda m, zs, p, n, e, t: [ids("a b") for _ in zs])
    summary, rows = tasks.reconstruction(Model(), collate, [{"id": "s", "text": "a b c"}, {"id": "t", "text": "d"}],
                                         2, 5)
    assert "controls" not in summary and not any("shuffled_z" in r for r in rows)
    assert summary["bootstrap"]["seed"] == 0


# ------------------------------------------------------------------------------------------------ rank truncation
def _numpy_rank(a, energy):
    s = np.linalg.svd(a, compute_uv=False)
    share = np.cumsum(s ** 2) / np.sum(s ** 2)
    return int(np.argmax(share >= energy) + 1)


def test_rank_truncation_memories_against_numpy_svd(monkeypatch):
    """One dataset of two contexts (2 and 1 segments of M = 2 vectors, d = 3): the memories each variant scores,
    against numpy's float64 SVD, and the ranks it reports."""
    rng = np.random.default_rng(5)
    # singular values well apart, so energy 0.8 keeps a clear k
    zs = [torch.tensor(rng.normal(size=(4, 3)) * [4.0, 1.0, 0.3], dtype=torch.float32),
          torch.tensor(rng.normal(size=(2, 3)) * [3.0, 0.5, 0.1], dtype=torch.float32)]
    recs = [{"id": "a", "context": "ctx a"}, {"id": "b", "context": "ctx b"}]

    class M:
        num_memory = 2

    model, collate = M(), Collate(WordTok())
    boot = ctl.Bootstrap(resamples=10, seed=3)
    seen = []

    def stub_compress(m, c, texts, max_segments, batch_size):
        assert m is model and c is collate and texts == ["ctx a", "ctx b"] and max_segments == 2 and batch_size == 4
        return zs

    def stub_ko(m, c, records, batch_size, max_segments, memories, *, boot):
        assert m is model and c is collate and records is recs and batch_size == 4 and max_segments == 2
        assert boot.seed == 3
        seen.append([z.clone() for z in memories])
        return {"value": 0.1 * len(seen), "ci95": [0.0, 1.0]}, []

    monkeypatch.setattr(tasks, "compress_texts", stub_compress)
    monkeypatch.setattr(tasks, "knowledge_overwriting", stub_ko)
    out = tasks.rank_truncation(model, collate, {"set": recs}, [0.8], 4, 2, boot=boot)
    full, per_sample, batch = seen
    assert all(torch.equal(a, b) for a, b in zip(full, zs))
    assert out["full_rank"] == {"ko_set": pytest.approx(0.1)}
    # per sample: each memory cut to its own top-k
    ranks = []
    for z, cut in zip(zs, per_sample):
        a = z.double().numpy()
        k = _numpy_rank(a, 0.8)
        ranks.append(k)
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        assert cut.numpy() == pytest.approx((u[:, :k] * s[:k]) @ vt[:k], abs=1e-5)
    # batch: the three segment memories flattened to M·d = 6 and projected on the stack's top-k directions
    stack = np.concatenate([z.double().numpy().reshape(-1, 6) for z in zs])
    kb = _numpy_rank(stack, 0.8)
    _, _, vt = np.linalg.svd(stack, full_matrices=False)
    for z, cut in zip(zs, batch):
        f = z.double().numpy().reshape(-1, 6)
        assert cut.shape == z.shape
        assert cut.double().numpy().reshape(-1, 6) == pytest.approx(f @ vt[:kb].T @ vt[:kb], abs=1e-5)
    rows = out["results"]
    assert [(r["variant"], r["energy"]) for r in rows] == [("per_sample", 0.8), ("batch", 0.8)]
    assert rows[0]["rank_set"] == pytest.approx(sum(ranks) / 2) and rows[1]["rank_set"] == kb
    assert rows[0]["mean_rank"] == rows[0]["rank_set"] and rows[1]["mean_rank"] == kb  # one dataset
    assert rows[0]["ko_set"] == pytest.approx(0.2) and rows[0]["ko_set_ci95"] == [0.0, 1.0]


def test_drift_stop_ids_without_an_eos_token(monkeypatch):
    """A tokenizer without EOS: the decoder's end-of-turn ids and the newline token stop an answer, nothing else."""
    tok = Tok()
    tok.eos_token_id = None
    seen = []
    monkeypatch.setattr(tasks, "compress_texts", lambda m, c, t, s, b: [torch.zeros(2, 3) for _ in t])

    def stub_generate(m, zs, p, o, n, stop, t, b):
        seen.append(set(stop))
        return [ids("x") for _ in p]

    monkeypatch.setattr(tasks, "generate_shared", stub_generate)
    tasks.semantic_drift(Model(), Collate(tok), ROWS[:1], 5, 2, 9)
    assert seen == [{TURN_END, NL}]
