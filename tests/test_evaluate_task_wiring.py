"""Semantic drift, knowledge overwriting and reconstruction wired on doubles that run in milliseconds: which contexts
are compressed and with which limits, what reaches the decoder (memories, prompts, stop ids, task token, batch size),
the shuffled-Z control only when asked for, and every row field against hand-derived values."""
from __future__ import annotations

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

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        return "".join(chr(i) for i in ids if i > 3 or not skip_special_tokens)

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
SAID = {"What did the cat do?": "it sat on the mat", "What color was the cat?": "unanswerable",
        "When?": "today\nand more", "What do dogs do?": "they swim"}


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
    assert [r["prediction"] for r in rows] == ["it sat on the mat", "unanswerable", "today", "they swim"]
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
