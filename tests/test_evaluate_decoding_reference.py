"""Cached, batched, left-padded greedy decoding (greedy_generate, generate_shared) against the plainest reference: one
row at a time, no padding, no cache, the whole [prefix(Z); prompt; answer so far] re-run through the decoder for
every new token. Stop ids, the shared-prefix split and the decoder config's own use_cache do not change a token."""
from __future__ import annotations

import copy

import pytest
import torch

from ctxcomp.evaluate import decoding
from helpers_eval import c4_texts, tiny_pair

N_NEW = 8


@pytest.fixture(scope="module")
def setup():
    base, collate = tiny_pair()
    # A random decoder at its init scale repeats one token whatever it reads; with its matrices scaled up each next
    # token depends on the context, so a wrong cache row, mask or position shows in the tokens.
    model = copy.deepcopy(base)
    with torch.no_grad():
        for p in model.decoder.parameters():
            if p.dim() >= 2:
                p.mul_(8)
    texts = c4_texts()
    zs = decoding.compress_texts(model, collate, [" ".join(texts[:2]), texts[3], texts[4]], 2, 4)
    return model, collate, zs


@torch.no_grad()
def reference(model, z, prompt, n, stop=()):
    emb = model.decoder.get_input_embeddings()
    x = model.prefix(z[None], "continue")[0]
    if prompt:
        x = torch.cat([x, emb(torch.tensor(prompt))])
    out = []
    for _ in range(n):
        t = int(model.decoder(inputs_embeds=x[None]).logits[0, -1].float().argmax())
        if t in stop:
            break
        out.append(t)
        x = torch.cat([x, emb(torch.tensor([t]))])
    return out


def _prompts(collate):
    tok = collate.dec_tok
    return [tok(q, add_special_tokens=False)["input_ids"] for q in
            ("Question: who was there?\nAnswer:", "Question: why?\nAnswer:", "Question: what did the story say")]


def test_greedy_generate_equals_the_uncached_reference(setup):
    model, collate, zs = setup
    prompts = _prompts(collate)
    want = [reference(model, z, p, N_NEW) for z, p in zip(zs, prompts)]
    assert len({tuple(w) for w in want}) == 3 and all(len(set(w)) > 1 for w in want)  # rows tell mistakes apart
    assert decoding.greedy_generate(model, zs, prompts, N_NEW, None, "continue") == want


def test_greedy_generate_ignores_the_config_cache_default(setup, monkeypatch):
    model, collate, zs = setup
    prompts = _prompts(collate)
    monkeypatch.setattr(model.decoder.config, "use_cache", False)  # as a checkpoint saved for training may have
    want = [reference(model, z, p, N_NEW) for z, p in zip(zs, prompts)]
    assert decoding.greedy_generate(model, zs, prompts, N_NEW, None, "continue") == want
    assert decoding.generate_shared(model, zs, prompts, [0, 1, 2], N_NEW, [], "continue", 2) == want


def test_greedy_generate_stops_at_eos_and_the_decoder_end_ids(setup, monkeypatch):
    model, collate, zs = setup
    prompts = _prompts(collate)
    full = [reference(model, z, p, N_NEW) for z, p in zip(zs, prompts)]
    eos, turn_end = full[0][2], full[1][3]
    monkeypatch.setattr(model, "decoder_eos_ids", (turn_end,), raising=False)
    stop = {eos, turn_end}
    want = [reference(model, z, p, N_NEW, stop) for z, p in zip(zs, prompts)]
    assert len(want[0]) <= 2 and want[0] == full[0][:len(want[0])]
    assert decoding.greedy_generate(model, zs, prompts, N_NEW, eos, "continue") == want
    # every row stops at once: nothing generated, and the loop ends early
    firsts = [f[0] for f in full]
    monkeypatch.setattr(model, "decoder_eos_ids", tuple(firsts[1:]), raising=False)
    assert decoding.greedy_generate(model, zs, prompts, N_NEW, firsts[0], "continue") == [[], [], []]


def test_generate_shared_equals_the_uncached_reference(setup):
    model, collate, zs = setup
    tok = collate.dec_tok
    qs = ["who", "what happened next in the story", "where", "when", "why", "how many were there", "which one"]
    prompts = [tok(f"Question: {q}?\nAnswer:", add_special_tokens=False)["input_ids"] for q in qs]
    owner = [0, 0, 1, 2, 2, 0, 1]
    want = [reference(model, zs[o], p, N_NEW) for o, p in zip(owner, prompts)]
    assert len({tuple(w) for w in want}) > 3
    assert decoding.generate_shared(model, zs, prompts, owner, N_NEW, [], "continue", batch_size=2) == want
    assert decoding.generate_shared(model, zs, prompts, owner, N_NEW, [], "continue", batch_size=3) == want
    stop = {want[1][2], want[3][1]}
    cut = [reference(model, zs[o], p, N_NEW, stop) for o, p in zip(owner, prompts)]
    assert decoding.generate_shared(model, zs, prompts, owner, N_NEW, sorted(stop), "continue", 3) == cut
    with pytest.raises(ValueError, match="non-empty prompt per row"):
        decoding.generate_shared(model, zs, [prompts[0], []], [0, 1], 4, [], "continue", 2)


@pytest.mark.parametrize(("seqs", "n"), [
    ([[1, 2, 3], [1, 2, 4]], 2),
    ([[1, 2, 3], [1, 2, 3]], 2),  # identical: each keeps its last token
    ([[1, 2, 3, 4], [1, 9, 3, 4], [1, 2, 3, 4]], 1),  # every row counts, not only the first two
    ([[5, 6, 7], [8, 6, 7]], 0),
    ([[1], [1, 2]], 0),
    ([[4, 5, 6, 7]], 3),
])
def test_common_prefix(seqs, n):
    assert decoding._common_prefix(seqs) == n


def test_stop_ids():
    class M:
        decoder_eos_ids = (7, 8)

    assert decoding.stop_ids(M(), None) == set()
    assert decoding.stop_ids(M(), 5) == {5, 7, 8}
    assert decoding.stop_ids(M(), [5, 6]) == {5, 6, 7, 8}
    assert decoding.stop_ids(M(), (7,)) == {7, 8}
    assert decoding.stop_ids(object(), 5) == {5}
    assert decoding.stop_ids(object(), [5, 6]) == {5, 6}
