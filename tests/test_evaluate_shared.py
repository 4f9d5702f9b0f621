"""Shared-prefix scoring and generation (one prefix forward, rows continued from its key/value cache) give the same
numbers as scoring and decoding every row on its own."""
from __future__ import annotations

import pytest

from ctxcomp.evaluate import decoding
from helpers_eval import c4_texts, tiny_pair


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return c4_texts()


@pytest.fixture(scope="module")
def setup():
    return tiny_pair()


def test_candidates_from_cache_equal_full_scoring(setup, texts):
    model, collate = setup
    tok = collate.dec_tok
    # memories of 1, 2 and 3 segments and one with no memory vectors at all (the no-memory control)
    zs = decoding.compress_texts(model, collate, [texts[0], " ".join(texts[1:3]), " ".join(texts[3:6])], 3, 4)
    zs.append(zs[0][:0])
    prompts = [tok(f"Question: {q}?\nAnswer:", add_special_tokens=False)["input_ids"]
               for q in ("who", "what was it", "where", "why not")]
    cands = [[tok(f" {c}", add_special_tokens=False)["input_ids"] for c in cs]
             for cs in (["red", "a blue whale", "x"], ["yes", "no"], ["one", "two", "three", "four"], ["ok"])]
    got = decoding.score_candidates(model, zs, prompts, cands, max_rows=3)
    for i, (z, p) in enumerate(zip(zs, prompts)):
        want, n = decoding.score_continuations(model, [z] * len(cands[i]), [p] * len(cands[i]), cands[i])
        assert [k for _, k in got[i]] == n == [len(c) for c in cands[i]]
        assert [s for s, _ in got[i]] == pytest.approx(want, abs=1e-5)
    assert got[0][0][0] != got[3][0][0]


def test_shared_prefix_generation_equals_one_row_at_a_time(setup, texts):
    model, collate = setup
    tok = collate.dec_tok
    zs = decoding.compress_texts(model, collate, [" ".join(texts[:3]), texts[3], texts[4]], 3, 4)
    qs = ["who", "what happened next in the story", "where", "when", "why", "how many were there"]
    prompts = [tok(f"Question: {q}?\nAnswer:", add_special_tokens=False)["input_ids"] for q in qs]
    owner = [0, 0, 1, 2, 2, 0]
    got = decoding.generate_shared(model, zs, prompts, owner, 10, [], "continue", batch_size=2)
    want = [decoding.greedy_generate(model, [zs[o]], [p], 10, None, "continue")[0] for o, p in zip(owner, prompts)]
    assert got == want and all(len(t) == 10 for t in got)
    # a stop token ends a row without being kept
    stop = {got[1][4]}
    cut = decoding.generate_shared(model, zs, prompts, owner, 10, stop, "continue", batch_size=4)
    for full, c in zip(got, cut):
        k = next((i for i, t in enumerate(full) if t in stop), len(full))
        assert c == full[:k]
    with pytest.raises(ValueError):
        decoding.generate_shared(model, zs, [[]], [0], 4, [], "continue", 2)
