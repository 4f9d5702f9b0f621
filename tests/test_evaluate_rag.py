"""MuSiQue RAG end to end on doubles that run in milliseconds: which passages are compressed (idf ranking on designed
corpora where a changed smoothing constant reorders them), how their memories reach the decoder (rank order, one
segment each, the task token and prompt), how an answer is cut (first newline token, a multi-newline token, special
tokens, no clean-up) and the summary (hand-counted EM/F1 and supporting recall, bootstrap over questions)."""
from __future__ import annotations

import pytest
import torch

from ctxcomp.evaluate import prompts, rag
from ctxcomp.metrics import bootstrap as bs

BOS, EOS, NN = 1, 3, 500  # NN: one token spelling two newlines (as Llama-3's "\n\n"), not the newline token itself


class Tok:
    """Character-level tokenizer double with the Hugging Face call conventions the code relies on: special tokens
    are added unless add_special_tokens=False, decode keeps them unless skip_special_tokens, and clean-up follows the
    tokenizer's own default (True, as many tokenizers have it) when the caller passes None."""
    eos_token_id = EOS
    bos_token = None
    chat_template = None
    clean_up_tokenization_spaces = True

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([BOS] if add_special_tokens else []) + [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        pieces = {BOS: "<s>", EOS: "</s>", NN: "\n\n"}
        s = "".join("" if skip_special_tokens and i in (BOS, EOS) else pieces.get(i, chr(i) if i > 3 else "")
                    for i in ids)
        clean = clean_up_tokenization_spaces
        if clean is None:
            clean = self.clean_up_tokenization_spaces
        return s.replace(" .", ".").replace(" ,", ",") if clean else s

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, enable_thinking):
        assert not tokenize and add_generation_prompt and enable_thinking is False
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


class ChatTok(Tok):
    chat_template = "{{ messages }}"


def ids(text):
    return [ord(c) for c in text]


def _records():
    """Three designed questions and eight more whose answers overlap their gold by 0..7 of 8 words (distinct F1s,
    so the bootstrap interval depends on the seed)."""
    recs = [
        {"id": "q1", "question": "Who founded the cat club?", "answers": ["Ann Lee", "Ann"],
         "passages": [{"title": "Dogs", "text": "Dogs bark.", "is_supporting": True},
                      {"title": "Cat club", "text": "Ann Lee founded the cat club.", "is_supporting": True},
                      {"text": "The club meets in town.", "is_supporting": True}]},
        {"id": "q2", "question": "Where is the dog park?", "answers": ["the X wing"],
         "passages": [{"title": "Park", "text": "The dog park is in the X wing.", "is_supporting": True},
                      {"title": "Cats", "text": "Cats sleep.", "is_supporting": False}]},
        {"id": "q3", "question": "What does the owl eat?", "answers": ["mice"],
         "passages": [{"title": "Owl", "text": "The owl eats mice.", "is_supporting": False}]},
    ]
    gold = "alpha beta gamma delta epsilon zeta eta theta"
    for j in range(8):
        recs.append({"id": f"g{j}", "question": f"Which letters come in set {j}?", "answers": [gold],
                     "passages": [{"title": f"Set {j}", "text": gold, "is_supporting": j % 2 == 0}]})
    return recs


def _outputs(tok):
    """What the stub decoder generates per question (as token ids) and the prediction each must give."""
    out = {
        # BOS inside the answer: dropped by skip_special_tokens, and not a stop (only the newline token is);
        # " ." stays (no clean-up); the newline token ends the answer.
        "Who founded the cat club?": (ids("ann") + [BOS] + ids(" lee .") + [10] + ids("tail"), "ann lee ."),
        # no newline token: the "\n\n" token is cut by the text split, at its first newline only
        "Where is the dog park?": (ids("the X wing") + [NN] + ids("b") + [NN] + ids("c"), "the X wing"),
        # nothing to cut at all
        "What does the owl eat?": (ids("owls") + [EOS], "owls"),
    }
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    for j in range(8):
        text = " ".join(words[:j] + ["omega"] * (8 - j)) if j else "omega"
        out[f"Which letters come in set {j}?"] = (ids(text) + [10], text)
    return out


def _expected_prompt(tok, question):
    if tok.chat_template:
        text = f"<user>{prompts.INSTRUCTION}\n\nQuestion: {question}</user><assistant>"
    else:
        text = f"{prompts.INSTRUCTION}\nQuestion: {question}\nAnswer:"
    return ids(text)


def _run(monkeypatch, tok, **kw):
    recs = _records()
    model = object()
    outs = _outputs(tok)
    compressed, generated = [], []

    class Collate:
        dec_tok = tok

    collate = Collate()

    def stub_compress(m, c, texts, max_segments, batch_size):
        assert m is model and c is collate
        assert max_segments == 1 and batch_size == 4  # one memory of one segment per passage
        compressed.append(list(texts))
        # the memory of a passage: two rows (M = 2) marked with the passage's text length
        return [torch.full((2, 3), float(len(t))) for t in texts]

    def stub_generate(m, zs, prompt_ids, max_new, eos, task):
        assert m is model and max_new == 7 and eos == EOS and task == "continue"
        assert len(zs) == len(prompt_ids) <= 4
        by_prompt = {tuple(_expected_prompt(tok, r["question"])): r["question"] for r in recs}
        res = []
        for z, p in zip(zs, prompt_ids):
            q = by_prompt[tuple(p)]
            generated.append((q, z))
            res.append(outs[q][0])
        return res

    monkeypatch.setattr(rag, "compress_texts", stub_compress)
    monkeypatch.setattr(rag, "greedy_generate", stub_generate)
    summary, rows = rag.musique_rag(model, collate, recs, top_k=2, batch_size=4, max_new_tokens=7, **kw)
    return recs, outs, compressed, generated, summary, rows


@pytest.mark.parametrize("chat", [False, True])
def test_rag_rows_and_summary(monkeypatch, chat):
    tok = ChatTok() if chat else Tok()
    recs, outs, compressed, generated, summary, rows = _run(monkeypatch, tok, resamples=400, seed=5)
    # q1: "who founded cat club" -> passage 1 (cat, club) first, then 2 (club, no title); q2: park passage, then
    # cats; q3 has one passage; the letter sets one each
    assert compressed[:3] == [["Cat club. Ann Lee founded the cat club.", ". The club meets in town."],
                              ["Park. The dog park is in the X wing.", "Cats. Cats sleep."],
                              ["Owl. The owl eats mice."]]
    assert len(compressed) == len(recs)
    # the memories of the retrieved passages, concatenated along the memory axis in rank order
    z1 = dict(generated)["Who founded the cat club?"]
    assert z1.shape == (4, 3)
    assert z1[:, 0].tolist() == [39.0, 39.0, 25.0, 25.0]
    assert [q for q, _ in generated] == [r["question"] for r in recs]  # batches of 4, in order

    assert [r["id"] for r in rows] == [r["id"] for r in recs]
    assert [r["prediction"] for r in rows] == [outs[r["question"]][1] for r in recs]
    assert set(rows[0]) == {"id", "prediction", "answers", "retrieved", "supporting_retrieved", "em", "f1"}
    assert rows[0]["answers"] == ["Ann Lee", "Ann"] and rows[0]["retrieved"] == [1, 2]
    assert [r["supporting_retrieved"] for r in rows[:3]] == [2, 1, 0]
    assert [r["em"] for r in rows[:3]] == [1.0, 1.0, 0.0]  # "ann lee ." normalises to "ann lee"
    assert rows[2]["f1"] == 0.0
    # letter set j: j of the prediction's tokens are gold (of max(j, 1) + (8 - j) omegas), gold has 8
    f1s = []
    for j in range(8):
        n_pred = 8 if j else 1
        p, r = j / n_pred, j / 8
        f1s.append(0.0 if j == 0 else 2 * p * r / (p + r))
    assert [r["f1"] for r in rows[3:]] == pytest.approx(f1s)
    em, f1 = [1.0, 1.0, 0.0] + [0.0] * 8, [1.0, 1.0, 0.0] + f1s

    assert set(summary) == {"em", "f1", "n", "em_ci95", "f1_ci95", "top_k", "prompt", "supporting_recall"}
    assert summary["n"] == 11 and summary["top_k"] == 2
    assert summary["prompt"] == ("chat_template" if chat else "plain")
    assert summary["em"] == pytest.approx(2 / 11) and summary["f1"] == pytest.approx(sum(f1) / 11)
    # supporting passages: 3 + 1 + 0 + 4 (even letter sets); retrieved: 2 + 1 + 0 + 4
    assert summary["supporting_recall"] == pytest.approx(7 / 8)
    # percentile bootstrap over questions with the given resamples and seed (the interval depends on both here)
    ref = {(n, s): (bs.interval(bs.flag_stats(em), bs.ratio, n, s)["ci95"],
                    bs.interval(bs.flag_stats(f1), bs.ratio, n, s)["ci95"]) for n, s in [(400, 5), (400, 0)]}
    assert ref[400, 5][1] != ref[400, 0][1] and ref[400, 5][0] != ref[400, 0][0]
    assert (summary["em_ci95"], summary["f1_ci95"]) == ref[400, 5]


def test_rag_default_bootstrap(monkeypatch):
    """Without resamples/seed: the package's default resample count and seed 0 (the F1 interval tells seeds apart)."""
    recs, outs, _, _, summary, rows = _run(monkeypatch, Tok())
    em, f1 = [r["em"] for r in rows], [r["f1"] for r in rows]
    ref = {s: (bs.interval(bs.flag_stats(em), bs.ratio, bs.DEFAULT_RESAMPLES, s)["ci95"],
               bs.interval(bs.flag_stats(f1), bs.ratio, bs.DEFAULT_RESAMPLES, s)["ci95"]) for s in (0, 1)}
    assert ref[0][1] != ref[1][1]
    assert (summary["em_ci95"], summary["f1_ci95"]) == ref[0]


def test_rag_single_question_divides_by_one(monkeypatch):
    monkeypatch.setattr(rag, "compress_texts", lambda m, c, texts, s, b: [torch.zeros(2, 3) for _ in texts])
    monkeypatch.setattr(rag, "greedy_generate", lambda m, zs, p, n, e, t: [ids("mice")])

    class Collate:
        dec_tok = Tok()

    rec = {"id": "q", "question": "What does the owl eat?", "answers": ["mice"],
           "passages": [{"title": "Owl", "text": "The owl eats mice.", "is_supporting": True},
                        {"title": "Dog", "text": "Dogs eat.", "is_supporting": False}]}
    summary, rows = rag.musique_rag(None, Collate(), [rec], top_k=1, batch_size=2, max_new_tokens=4)
    assert summary["em"] == 1.0 and summary["f1"] == 1.0 and summary["n"] == 1
    assert summary["supporting_recall"] == 1.0 and rows[0]["retrieved"] == [0]


def _p(text, title="t"):
    return {"title": title, "text": text}


def test_retrieval_idf_constants_decide_the_order():
    """Designed corpora where one rare word (df r) and two common words (df k) nearly balance, n passages:
    score(rare) = log((n+1)/(r+0.5)) vs score(common pair) = 2 log((n+1)/(k+0.5))."""
    q = "Was none of the zebra, lion or tiger seen?"
    # n=3, r=1, k=2: log(4/1.5) = 0.981 > 2 log(4/2.5) = 0.940 -> the zebra passage first (with n+2: 1.21 < 1.39)
    assert rag.retrieve(q, [_p("lion tiger"), _p("lion tiger"), _p("zebra")], 3) == [2, 0, 1]
    # n=8, r=1, k=3: log(9/1.5) = 1.792 < 2 log(9/3.5) = 1.889 -> the pairs first (with df-0.5: 2.197 > 1.872)
    corpus = [_p("zebra"), _p("lion tiger"), _p("lion tiger"), _p("lion tiger")] + [_p("other words")] * 4
    assert rag.retrieve(q, corpus, 4) == [1, 2, 3, 0]
    # n=4, r=2, k=3: log(5/2.5) = 0.693 < 2 log(5/3.5) = 0.713 -> pairs before the zebra (with +1.5: 0.916 > 0.811)
    assert rag.retrieve(q, [_p("zebra"), _p("lion tiger"), _p("lion tiger"), _p("zebra lion tiger")], 4) == [3, 1, 2, 0]
    # a passage without a title has no title words ("none" is a question word here)
    assert rag.retrieve(q, [_p("lion", title="x"), {"text": "lion"}, _p("lion", title="x")], 3) == [0, 1, 2]
