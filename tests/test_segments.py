"""Every compressor reads exactly L of its OWN tokens of a chunk window, the reconstruction target is exactly that
text and the continuation starts right after it - for both tokenizer families of the tiny preset, cut by either
family's chunk tokenizer, at the tiny layout (L=64, C=32) and the real one (L=256, C=256)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxcomp.data import prepare_fineweb
from ctxcomp.model.collate import Collator
from ctxcomp.tiny.tokenizer import build_tokenizer
from snakemake_helpers import ROOT

C4 = ROOT / "workflow" / "data" / "c4" / "c4_sample.jsonl"
LAYOUTS = {"tiny": (64, 32), "real": (256, 256)}


@pytest.fixture(scope="module")
def toks(tmp_path_factory) -> dict[str, tuple[str, object]]:
    """The preset's two families: Qwen-style (vocab 2048, no BOS) and Llama-style (vocab 1536, BOS)."""
    texts = [json.loads(line)["text"] for line, _ in zip(C4.open(), range(300))]
    out = {}
    for fam, (vocab, style) in {"Qwen3": (2048, "qwen3"), "LLaMA-3": (1536, "llama")}.items():
        tok = build_tokenizer(texts, vocab, style)
        path = tmp_path_factory.mktemp(fam)
        tok.save_pretrained(path)
        out[fam] = (str(path), tok)
    return out


def _chunks(tmp_path: Path, toks: dict, chunk_family: str, L: int, C: int) -> tuple[list, list, dict]:
    fw = {"source": "jsonl", "path": str(C4), "name": None, "train_contexts": 40, "eval_contexts": 12,
          "min_chars": 50, "eval_doc_fraction": 0.2}
    families = {fam: src for fam, (src, _) in toks.items()}
    st = prepare_fineweb(fw, toks[chunk_family][0], {"segment_tokens": L, "continuation_tokens": C}, 7,
                         str(tmp_path / "train.jsonl"), str(tmp_path / "eval.jsonl"), str(tmp_path / "stats.json"),
                         families=families)
    read = lambda p: [json.loads(x) for x in (tmp_path / p).open()]  # noqa: E731
    return read("train.jsonl"), read("eval.jsonl"), st


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("chunk_family", ["LLaMA-3", "Qwen3"])
def test_each_family_reads_exactly_L_of_its_own_tokens(tmp_path, toks, layout, chunk_family):
    L, C = LAYOUTS[layout]
    train, ev, st = _chunks(tmp_path, toks, chunk_family, L, C)
    assert len(ev) == 12 and len(train) == 40
    dec_tok = toks["LLaMA-3"][1]
    for fam, (_, comp_tok) in toks.items():
        collate = Collator(comp_tok, dec_tok, L, C)
        for r in train[:15] + ev:
            seg, seg_text, rest = collate.window_split(r["text"], r["continuation"])
            window = r["text"] + r["continuation"]
            assert len(seg) == L, (fam, r["id"])
            assert comp_tok.decode(seg) == seg_text and seg_text + rest == window  # no gap, no overlap
            assert len(comp_tok(rest, add_special_tokens=False)["input_ids"]) >= 1
        batch = collate(ev[:4])
        for i, r in enumerate(ev[:4]):
            _, seg_text, rest = collate.window_split(r["text"], r["continuation"])
            want_re = dec_tok(seg_text, add_special_tokens=False)["input_ids"][: collate.max_recon]
            n_re = int(batch["re_mask"][i].sum())  # the target is exactly the segment's text, then one EOS
            assert n_re == len(want_re) + 1 and batch["re_ids"][i, : n_re - 1].tolist() == want_re
            want_nt = dec_tok(rest, add_special_tokens=False)["input_ids"][:C]
            assert batch["nt_ids"][i, : int(batch["nt_mask"][i].sum())].tolist() == want_nt
            assert int(batch["comp_mask"][i].sum()) == L + (comp_tok.bos_token_id is not None)
        fs = st["families"][fam]
        assert fs["eval_segments_of_exactly_L"] == fs["eval_segments"] == 12
    # the effective ratio in chunk-tokenizer tokens per memory vector: the chunk family spans ~L of them, the other
    # family a different number (here its vocabulary is larger or smaller)
    other = "Qwen3" if chunk_family == "LLaMA-3" else "LLaMA-3"
    assert st["families"][chunk_family]["decoder_tokens_per_L"] == pytest.approx(1.0, abs=0.02)
    assert abs(st["families"][other]["decoder_tokens_per_L"] - 1.0) > 0.03


def test_windows_too_short_for_a_family_are_dropped_for_all(tmp_path, toks):
    L, C = LAYOUTS["tiny"]
    _, _, st = _chunks(tmp_path, toks, "LLaMA-3", L, C)
    # Llama-cut windows hold >= L + 8 Llama tokens by construction; the Qwen vocabulary is more efficient, so some
    # end-of-document windows (continuation of 8..C tokens) hold fewer than L + 8 Qwen tokens
    assert st["families"]["LLaMA-3"]["too_short_dropped"] == 0
    assert st["families"]["Qwen3"]["too_short_dropped"] == st["family_short_dropped"] > 0


def test_decoding_never_cleans_up_spaces(toks):
    """A tokenizer configured to clean up spaces (Llama-3's config asks for it; transformers 5 honours it for BPE
    only with the "corrupt output" flag, other tokenizers and versions do) turns "here ." into "here."; the reference
    must stay the text the compressor read."""
    _, comp_tok = toks["Qwen3"]
    comp_tok.clean_up_tokenization_spaces = True
    comp_tok.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    try:
        collate = Collator(comp_tok, toks["LLaMA-3"][1], 8, 4)
        text = "It is here . And there , he said ! Then it ends ."
        seg, seg_text, rest = collate.window_split(text, " more")
        assert comp_tok.decode(seg) == "It is here. And there, he"  # what a default decode would give
        assert seg_text == "It is here . And there , he" and seg_text + rest == text + " more"
    finally:
        comp_tok.clean_up_tokenization_spaces = False
        comp_tok.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = False
