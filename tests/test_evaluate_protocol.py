"""Protocol pieces with hand-computed answers: the answer prompt (chat template or plain), the fixed derangement of
the shuffled-Z control, lexical RAG retrieval (idf ranking, ties) and EM/F1/supporting recall."""
from __future__ import annotations

import json
import math

import pytest
import torch

from ctxcomp.evaluate import controls, prompts, rag
from ctxcomp.tiny.tokenizer import build_tokenizer
from snakemake_helpers import ROOT

# The structure of Llama-3-Instruct's template (header tokens, double newline, eot), enough to place the memory.
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


@pytest.fixture(scope="module")
def tok():
    with open(ROOT / "workflow/data/c4/c4_sample.jsonl") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(100), fh)]
    t = build_tokenizer(texts, 400, "llama")
    t.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    return t


def test_plain_prompt_without_a_chat_template(tok):
    tok.chat_template = None
    text = prompts.answer_prompt_text(tok, "  Who won? ")
    assert text == prompts.INSTRUCTION + "\nQuestion: Who won?\nAnswer:"
    assert prompts.prompt_kind(tok) == "plain"
    assert tok.bos_token_id not in prompts.answer_prompt_ids(tok, "Who won?")


def test_chat_template_prompt_follows_the_memory(tok):
    tok.chat_template = LLAMA3_TEMPLATE
    try:
        text = prompts.answer_prompt_text(tok, "Who won?")
        assert text == ("<|start_header_id|>user<|end_header_id|>\n\n" + prompts.INSTRUCTION
                        + "\n\nQuestion: Who won?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        ids = prompts.answer_prompt_ids(tok, "Who won?")
        assert ids[0] == tok.convert_tokens_to_ids("<|start_header_id|>")  # special tokens parsed, BOS dropped
        assert tok.bos_token_id not in ids and prompts.prompt_kind(tok) == "chat_template"
    finally:
        tok.chat_template = None


@pytest.mark.parametrize("n", [2, 3, 10, 449])
def test_derangement_is_a_fixed_cycle(n):
    perm = controls.derangement(n, seed=1234)
    assert sorted(perm) == list(range(n)) and all(p != i for i, p in enumerate(perm))
    seen, i = set(), 0
    while i not in seen:  # one cycle through every sample
        seen.add(i)
        i = perm[i]
    assert len(seen) == n
    assert controls.derangement(n, 1234) == perm and (n < 4 or controls.derangement(n, 1) != perm)
    assert controls.derangement(1, 0) is None and controls.derangement(0, 0) is None


def test_retrieval_idf_ranking_and_ties():
    passages = [{"title": "A", "text": "the cat sat"}, {"title": "B", "text": "a dog ran far"},
                {"title": "C", "text": "cat and dog"}, {"title": "D", "text": "dog dog dog"},
                {"title": "E", "text": "nothing here"}]
    # question words (normalised, articles dropped): {where, did, cat, dog, go}; n = 5 passages
    # df: cat 2 (A, C), dog 3 (B, C, D) -> idf cat = log(6/2.5), dog = log(6/3.5)
    cat, dog = math.log(6 / 2.5), math.log(6 / 3.5)
    assert cat > dog
    # C has both; A has cat; B and D tie on dog -> input order; E nothing
    assert rag.retrieve("Where did the cat and the dog go?", passages, 5) == [2, 0, 1, 3, 4]
    assert rag.retrieve("Where did the cat and the dog go?", passages, 2) == [2, 0]
    # titles count as passage words
    assert rag.retrieve("What about E?", passages, 1) == [4]


def test_rag_scores_em_f1_and_supporting_recall(monkeypatch):
    """A stub decoder answering from a fixed table: EM/F1 over gold aliases and supporting recall by hand."""
    recs = [
        {"id": "q1", "question": "Who founded the cat club?", "answers": ["Ann Lee", "Ann"],
         "passages": [{"title": "Cat club", "text": "Ann Lee founded the cat club.", "is_supporting": True},
                      {"title": "Dogs", "text": "Dogs bark.", "is_supporting": False},
                      {"title": "Club", "text": "The club meets in town.", "is_supporting": True}]},
        {"id": "q2", "question": "Where is the dog park?", "answers": ["north side"],
         "passages": [{"title": "Park", "text": "The dog park is on the north side.", "is_supporting": True},
                      {"title": "Cats", "text": "Cats sleep.", "is_supporting": False}]},
    ]
    said = {"Who founded the cat club?": "ann lee.", "Where is the dog park?": "the north"}

    class Tok:
        eos_token_id = 0
        chat_template = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

        def decode(self, ids, **kw):
            return "".join(chr(i) for i in ids)

    tok = Tok()

    class Collate:
        dec_tok = tok

    monkeypatch.setattr(rag, "compress_texts", lambda m, c, texts, s, b: [torch.zeros(1, 2) for _ in texts])

    def stub_generate(model, zs, prompt_ids, max_new, eos, task):
        out = []
        for p in prompt_ids:
            q = tok.decode(p).split("Question: ")[1].split("\nAnswer:")[0]
            out.append(tok(said[q] + "\nignored")["input_ids"])
        return out

    monkeypatch.setattr(rag, "greedy_generate", stub_generate)
    summary, rows = rag.musique_rag(None, Collate(), recs, top_k=1, batch_size=2, max_new_tokens=8)
    assert [r["prediction"] for r in rows] == ["ann lee.", "the north"]
    assert [r["em"] for r in rows] == [1.0, 0.0]
    assert rows[1]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)  # pred [north], gold [north, side]: P=1, R=1/2
    assert summary["em"] == 0.5 and summary["f1"] == pytest.approx((1 + 2 / 3) / 2)
    # top-1: q1 retrieves its first passage (supporting), q2 its first (supporting): 2 of 3 supporting passages
    assert [r["retrieved"] for r in rows] == [[0], [0]]
    assert summary["supporting_recall"] == pytest.approx(2 / 3)
    assert summary["prompt"] == "plain" and len(summary["em_ci95"]) == 2
