"""FineWeb chunking on the shipped C4 sample with a tiny BPE trained here: exact token windows, filters, split."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxcomp.config import REPO_ROOT
from ctxcomp.data import DataError, chunk_spans, iter_documents, load_tokenizer, prepare_fineweb
from ctxcomp.data.readers import ErrorLog

C4 = REPO_ROOT / "workflow" / "data" / "c4" / "c4_sample.jsonl"
SEGMENT = {"segment_tokens": 32, "continuation_tokens": 16, "max_segments": 3}


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """A byte-level BPE (vocab 800) trained on 300 C4 docs, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [json.loads(line)["text"] for line, _ in zip(C4.open(), range(300))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=800, special_tokens=["<eos>"], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """The first 150 C4 docs, then a duplicate of doc 1, a near-empty doc and a doc too short to chunk."""
    lines = [line for line, _ in zip(C4.open(), range(150))]
    lines.append(json.dumps({"text": json.loads(lines[0])["text"], "url": "dup"}) + "\n")
    lines.append(json.dumps({"text": "a\n" * 400, "url": "near-empty"}) + "\n")
    lines.append(json.dumps({"text": "Too short.", "url": "short"}) + "\n")
    path = tmp_path_factory.mktemp("c4") / "c4_small.jsonl"
    path.write_text("".join(lines))
    return path


def fw_config(path: Path, **kw) -> dict:
    return {"source": "jsonl", "path": str(path), "name": None, "train_contexts": 100000, "eval_contexts": 20,
            "min_chars": 60, "eval_doc_fraction": 0.3, **kw}


def run(tmp_path: Path, fw: dict, tok: str, seed: int = 1, tag: str = "a") -> tuple[list, list, dict]:
    out = tmp_path / tag
    st = prepare_fineweb(fw, tok, SEGMENT, seed, str(out / "train.jsonl"), str(out / "eval.jsonl"),
                         str(out / "stats.json"))
    read = lambda p: [json.loads(line) for line in (out / p).open()]  # noqa: E731
    assert json.loads((out / "stats.json").read_text())["train"] == st["train"]
    return read("train.jsonl"), read("eval.jsonl"), st


def test_chunk_spans():
    assert chunk_spans(10, 4, 2) == [(0, 4, 6)]
    assert chunk_spans(12, 4, 2) == [(0, 4, 6), (6, 10, 12)]
    assert chunk_spans(100, 32, 16) == [(0, 32, 48), (48, 80, 96)]
    assert chunk_spans(32 + 7, 32, 16) == []  # L + fewer than min(C, 8) tokens: no chunk
    assert chunk_spans(32 + 8, 32, 16) == [(0, 32, 40)]  # short last continuation is allowed
    assert chunk_spans(130, 32, 16) == [(0, 32, 48), (48, 80, 96)]
    assert chunk_spans(140, 32, 16)[-1] == (96, 128, 140)


def test_chunks_are_exact_token_windows(tmp_path, corpus, tokenizer_dir):
    train, ev, st = run(tmp_path, fw_config(corpus), tokenizer_dir)
    tok = load_tokenizer(tokenizer_dir)
    docs = {f"c4_small:{i}": json.loads(line)["text"] for i, line in enumerate(corpus.open(), 1)}
    for rec in (train[:5] + ev[:3]):
        doc_id, k = rec["id"].split("#")
        assert doc_id == rec["doc_id"] and rec["source"] == "fineweb"
        ids = tok(docs[doc_id], add_special_tokens=False)["input_ids"]
        start = int(k) * 48
        assert rec["text"] == tok.decode(ids[start:start + 32], clean_up_tokenization_spaces=False)
        assert rec["continuation"] == tok.decode(ids[start + 32:start + 48], clean_up_tokenization_spaces=False)
        assert docs[doc_id].find(rec["text"] + rec["continuation"]) >= 0  # consecutive text of the doc
    assert st["tokenizer"] == tokenizer_dir and st["segment_tokens"] == 32


def test_counts_dedup_and_near_empty(tmp_path, corpus, tokenizer_dir):
    train, ev, st = run(tmp_path, fw_config(corpus), tokenizer_dir)
    assert st["docs_read"] == 153 and st["quotas_met"] is False  # train quota too large: read to the end
    assert st["docs_without_chunk"] >= 1  # "Too short."
    doc1 = {r["doc_id"] for r in train + ev if r["doc_id"] == "c4_small:1"}
    assert doc1 and not any(r["doc_id"] == "c4_small:151" for r in train + ev)  # the duplicate doc adds nothing
    assert st["duplicates_dropped"] >= 1 and st["near_empty_dropped"] >= 12  # "a\n" * 400 -> all chunks near-empty
    assert not any(r["doc_id"] == "c4_small:152" for r in train + ev)
    kept = st["train"] + st["eval"]
    assert st["chunks_made"] == (kept + st["near_empty_dropped"] + st["duplicates_dropped"]
                                 + st["eval_doc_extra_dropped"] + st["quota_dropped"])
    texts = [" ".join(r["text"].lower().split()) for r in train + ev]
    assert len(texts) == len(set(texts)) and all(len(r["text"].strip()) >= 60 for r in train + ev)


def test_exact_filter_counts_on_a_small_corpus(tmp_path, tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    doc = json.loads(C4.open().readline())["text"]
    junk = "a\n" * 400
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in (doc, doc, junk, "Too short.")))
    n_chunks = lambda t: len(chunk_spans(len(tok(t, add_special_tokens=False)["input_ids"]), 32, 16))  # noqa: E731
    n_doc, n_junk = n_chunks(doc), n_chunks(junk)
    assert n_doc >= 3 and n_junk >= 10
    train, ev, st = run(tmp_path, fw_config(path, min_chars=50, eval_doc_fraction=1e-9), tokenizer_dir)
    assert min(len(r["text"].strip()) for r in train) >= 50 and ev == []  # junk segments are ~31 chars
    assert st["docs_read"] == 4 and st["docs_without_chunk"] == 1
    assert st["chunks_made"] == 2 * n_doc + n_junk
    assert st["duplicates_dropped"] == n_doc and st["near_empty_dropped"] == n_junk
    assert st["train"] == n_doc and [r["doc_id"] for r in train] == ["small:1"] * n_doc


def test_split_by_document_and_deterministic(tmp_path, corpus, tokenizer_dir):
    fw = fw_config(corpus, train_contexts=300)
    train1, ev1, st1 = run(tmp_path, fw, tokenizer_dir, seed=1, tag="s1")
    train2, ev2, _ = run(tmp_path, fw, tokenizer_dir, seed=1, tag="s1b")
    train3, ev3, _ = run(tmp_path, fw, tokenizer_dir, seed=2, tag="s2")
    assert [r["id"] for r in train1] == [r["id"] for r in train2] and ev1 == ev2
    assert {r["doc_id"] for r in ev1} != {r["doc_id"] for r in ev3}
    for tr, ev in ((train1, ev1), (train3, ev3)):
        assert not {r["doc_id"] for r in tr} & {r["doc_id"] for r in ev}
        assert len(ev) == 20 and len(tr) == 300
        assert len({r["doc_id"] for r in ev}) == 20  # eval_chunks_per_doc = 1
    assert st1["quotas_met"] is True and st1["docs_read"] < 153  # stopped once both quotas were met
    assert st1["eval_docs"] == 20


def test_eval_set_does_not_depend_on_train_quota(tmp_path, corpus, tokenizer_dir):
    _, ev_small, _ = run(tmp_path, fw_config(corpus, train_contexts=50), tokenizer_dir, tag="q1")
    _, ev_big, _ = run(tmp_path, fw_config(corpus, train_contexts=400), tokenizer_dir, tag="q2")
    assert ev_small == ev_big


def test_hub_streaming_code_path(tmp_path, corpus, tokenizer_dir):
    fw = {"source": "hub", "path": "json", "name": None, "split": "train", "data_files": str(corpus),
          "train_contexts": 40, "eval_contexts": 5, "min_chars": 60, "eval_doc_fraction": 0.3}
    errors = ErrorLog()
    first = next(iter_documents(fw, errors))
    assert first[0] == "json[train]:1" and first[1].startswith("Beginners BBQ Class")
    train, ev, st = run(tmp_path, fw, tokenizer_dir, tag="hub")
    assert len(train) == 40 and len(ev) == 5 and st["quotas_met"]


def test_malformed_source_lines(tmp_path, tokenizer_dir):
    lines = C4.open().readlines()[:30]
    lines[3] = '{"text": "unterminated\n'
    lines[10] = '{"url": "no text field"}\n'
    lines[20] = '{"text": 42}\n'
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"^3 malformed row\(s\)") as exc:
        run(tmp_path, fw_config(path), tokenizer_dir, tag="bad")
    for lineno in (4, 11, 21):
        assert f"bad.jsonl:{lineno}" in str(exc.value)
    assert not (tmp_path / "bad" / "train.jsonl").exists()


def test_prepare_fineweb_script(tmp_path, corpus, tokenizer_dir, monkeypatch):
    import logging
    import runpy
    import sys
    from types import SimpleNamespace

    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(logging.getLogger(), "handlers", list(logging.getLogger().handlers))
    out = tmp_path / "fw"
    smk = SimpleNamespace(
        params=SimpleNamespace(fineweb=fw_config(corpus, train_contexts=30, eval_contexts=4), tokenizer=tokenizer_dir,
                               segment=SEGMENT, seed=3),
        output=SimpleNamespace(train=str(out / "train.jsonl"), eval=str(out / "eval.jsonl"),
                               stats=str(out / "stats.json")),
        log=[str(tmp_path / "fw.log")], threads=None)
    runpy.run_path(str(REPO_ROOT / "workflow" / "scripts" / "prepare_fineweb.py"), init_globals={"snakemake": smk})
    sys.stderr.flush()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["train"] == 30 and stats["eval"] == 4 and stats["quotas_met"]
    assert len((out / "train.jsonl").read_text().splitlines()) == 30
    assert "fineweb chunks" in (tmp_path / "fw.log").read_text()  # the progress bar goes to the job log
