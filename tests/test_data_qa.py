"""QA loaders on the shipped files: counts of every filter rule, field values, determinism, hub code paths."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ctxcomp.config import REPO_ROOT
from ctxcomp.data import DataError, load_conflictqa, load_faitheval, load_musique, normalize_text, prepare_qa
from ctxcomp.data import conflictqa as cqa_mod
from ctxcomp.data.records import record_problems

DATA = REPO_ROOT / "workflow" / "data"
FAITHEVAL = {"source": "jsonl", "path": "workflow/data/faitheval/test.jsonl", "max_records": 0}
CONFLICTQA = {"source": "jsonl", "path": "workflow/data/conflictqa", "parts": ["strategyQA"], "max_records": 0}
MUSIQUE = {"source": "jsonl", "path": "workflow/data/musique", "max_records": 0}


@pytest.fixture(scope="module")
def faitheval():
    return load_faitheval(FAITHEVAL)


@pytest.fixture(scope="module")
def conflictqa():
    return load_conflictqa(CONFLICTQA, seed=1234)


# ------------------------------------------------------------------------------------------------------ FaithEval


def test_faitheval_counts(faitheval):
    recs, st = faitheval
    assert st["read"] == 806
    assert st["dropped"] == {"key_unresolved": 0, "answer_mismatch": 0, "duplicate_candidates": 0, "meta_option": 0,
                             "unsupported": 68, "duplicate_id": 0}
    assert st["kept"] == st["written"] == len(recs) == 738
    assert st["paper_count"] == 598 and set(st["rules"]) == set(st["dropped"])
    assert all(record_problems(r) == [] for r in recs)
    assert len({r["id"] for r in recs}) == len(recs)


def test_faitheval_first_record(faitheval):
    r = faitheval[0][0]
    assert r["id"] == "Mercury_7175875" and r["source"] == "faitheval"
    assert r["candidates"] == ["Planetary density will decrease.", "Planetary years will become longer.",
                               "Planetary days will become shorter.", "Planetary gravity will become stronger."]
    assert r["correct_index"] == 3 and r["candidates"][3] == "Planetary gravity will become stronger."
    assert r["meta"]["answerKey"] == "D" and r["meta"]["labels"] == ["A", "B", "C", "D"]
    assert r["meta"]["origin"].endswith("test.jsonl:1")
    assert r["context"].startswith("Observing planetary changes post-meteorite impacts")


def test_faitheval_digit_labels_resolved_by_position(faitheval):
    recs = {r["id"]: r for r in faitheval[0]}
    r = recs["NYSEDREGENTS_2008_8_11"]  # answerKey "C", labels "1".."4"
    assert r["meta"]["key_resolved_by"] == "position" and r["candidates"][r["correct_index"]] == "carbon dioxide"
    assert sum(x["meta"]["key_resolved_by"] == "position" for x in faitheval[0]) == 14
    # every kept record's correct candidate is the source row's `answer`
    src = {json.loads(line)["id"]: json.loads(line) for line in (DATA / "faitheval" / "test.jsonl").open()}
    assert all(x["candidates"][x["correct_index"]] == src[x["id"]]["answer"].strip() for x in faitheval[0])


def test_faitheval_max_records_and_rules(tmp_path):
    recs, st = load_faitheval({**FAITHEVAL, "max_records": 5})
    assert len(recs) == 5 and st["kept"] == 738 and st["written"] == 5
    rows = [
        {"id": "q1", "question": "Q?", "context": "The sky is green because of chlorophyll in the air.",
         "choices": {"label": ["A", "B"], "text": ["green sky", "blue sky"]}, "answerKey": "A", "answer": "green sky"},
        {"id": "q2", "question": "Q?", "context": "ctx about green things",
         "choices": {"label": ["A", "B"], "text": ["green", "green."]}, "answerKey": "A"},
        {"id": "q3", "question": "Q?", "context": "green green",
         "choices": {"label": ["A", "B", "C"], "text": ["green", "red", "all of the above"]}, "answerKey": "A"},
        {"id": "q4", "question": "Q?", "context": "nothing relevant here",
         "choices": {"label": ["A", "B"], "text": ["green", "red"]}, "answerKey": "A"},
        {"id": "q5", "question": "Q?", "context": "green", "choices": {"label": ["A", "B"], "text": ["green", "red"]},
         "answerKey": "Z"},
        {"id": "q1", "question": "Q?", "context": "green sky", "choices": {"label": ["A", "B"], "text": ["green sky",
         "blue sky"]}, "answerKey": "A"},
        {"id": "q6", "question": "Q?", "context": "green sky", "choices": {"label": ["A", "B"], "text": ["green sky",
         "blue sky"]}, "answerKey": "A", "answer": "blue sky"},
    ]
    path = tmp_path / "fe.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs, st = load_faitheval({"source": "jsonl", "path": str(path)})
    assert [r["id"] for r in recs] == ["q1"]
    assert st["dropped"] == {"key_unresolved": 1, "answer_mismatch": 1, "duplicate_candidates": 1, "meta_option": 1,
                             "unsupported": 1, "duplicate_id": 1}


def test_faitheval_malformed_rows(tmp_path):
    good = (DATA / "faitheval" / "test.jsonl").open().readline()
    path = tmp_path / "fe.jsonl"
    path.write_text(good + '{"id": "x"}\n' + good.replace('"answerKey": "D"', '"answerKey": 4') + "{oops\n")
    with pytest.raises(DataError, match=r"^3 malformed row\(s\)") as exc:
        load_faitheval({"source": "jsonl", "path": str(path)})
    for lineno in (2, 3, 4):
        assert f"fe.jsonl:{lineno}" in str(exc.value)


def test_faitheval_hub_code_path(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "fe.jsonl"
    path.write_text("".join((DATA / "faitheval" / "test.jsonl").open().readlines()[:5]))
    recs, st = load_faitheval({"source": "hub", "path": "json", "split": "train", "data_files": str(path)})
    local, _ = load_faitheval({"source": "jsonl", "path": str(path)})
    assert [r["id"] for r in recs] == [r["id"] for r in local] and recs[0]["id"] == "Mercury_7175875"
    assert recs[0]["meta"]["origin"] == "json[train]:1"


# ----------------------------------------------------------------------------------------------------- ConflictQA


def test_conflictqa_counts_and_dedup(conflictqa):
    recs, st = conflictqa
    assert st["rows_per_file"] == {"strategyQA-chatgpt": 1245, "strategyQA-llama2-70b": 822,
                                   "strategyQA-llama2-7b": 698, "strategyQA-palm2": 502, "strategyQA-qwen7b": 671,
                                   "strategyQA-vicuna7b": 559}
    assert st["read"] == 4497
    assert st["dropped"] == {"empty_context": 0, "empty_answer": 0, "same_answer": 7, "truth_unclear": 193,
                             "prior_wrong": 2768, "counter_true": 0, "duplicate_question": 493}
    assert st["kept"] == len(recs) == 1036 == st["read"] - 7 - 193 - 2768 - 493
    # independent check of the dedup: distinct normalized questions among rows that pass the per-row rules
    qs = set()
    for f in sorted((DATA / "conflictqa").glob("conflictQA-strategyQA-*.json")):
        for line in f.open():
            d = json.loads(line)
            if cqa_mod.rejection("strategyQA", d) is None:
                qs.add(normalize_text(d["question"]))
    assert len(qs) == 1036
    assert st["parts_missing"] == [] and st["parts_not_requested"] == ["popQA"] and "popQA" in st["note"]
    assert all(record_problems(r) == [] for r in recs)


def test_conflictqa_record_fields_and_order(conflictqa):
    recs, st = conflictqa
    r = recs[0]
    assert r["question"] == "Are more people today related to Genghis Khan than Julius Caesar?"
    assert r["meta"]["llm"] == "chatgpt" and r["meta"]["origin"].endswith("conflictQA-strategyQA-chatgpt.json:1")
    counter = "More people today are not related to Genghis Khan than Julius Caesar."
    assert r["candidates"][r["correct_index"]] == counter
    assert r["context"].startswith("Recent studies have shown that the genetic legacy of Genghis Khan")
    # the correct answer is not always first, and the order is a function of (seed, id)
    counts = st["correct_index_counts"]
    assert counts["0"] + counts["1"] == 1036 and 418 < counts["0"] < 618
    again, _ = load_conflictqa(CONFLICTQA, seed=1234)
    assert again == recs
    other, _ = load_conflictqa({**CONFLICTQA, "max_records": 50}, seed=7)
    assert [r["id"] for r in other] == [r["id"] for r in recs[:50]]
    assert [r["correct_index"] for r in other] != [r["correct_index"] for r in recs[:50]]


def test_conflictqa_missing_part_and_llm_filter():
    recs, st = load_conflictqa({**CONFLICTQA, "parts": ["popQA", "strategyQA"], "llms": ["palm2", "qwen7b"]})
    assert st["parts_missing"] == ["popQA"] and st["files"] == {"strategyQA": ["palm2", "qwen7b"]}
    assert st["read"] == 502 + 671
    with pytest.raises(DataError, match="no files"):
        load_conflictqa({**CONFLICTQA, "parts": ["popQA"]})


def test_conflictqa_hub_code_path(tmp_path, monkeypatch):
    """The hub branch builds hf:// URLs per (part, llm); here they are mapped onto the shipped files."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    seen_urls = []
    real = cqa_mod.hub_rows

    def fake_hub_rows(path, split, name=None, *, data_files, **kw):
        seen_urls.append(data_files)
        return real(path, split, name, data_files=str(DATA / "conflictqa" / Path(data_files).name), **kw)

    monkeypatch.setattr(cqa_mod, "hub_rows", fake_hub_rows)
    recs, st = load_conflictqa({"source": "hub", "path": "osunlp/ConflictQA", "parts": ["strategyQA"],
                                "llms": ["qwen7b", "palm2"]})
    assert seen_urls == ["hf://datasets/osunlp/ConflictQA/conflictQA-strategyQA-palm2.json",
                         "hf://datasets/osunlp/ConflictQA/conflictQA-strategyQA-qwen7b.json"]
    local, _ = load_conflictqa({**CONFLICTQA, "llms": ["palm2", "qwen7b"]})
    assert [r["id"] for r in recs] == [r["id"] for r in local]
    assert recs[0]["meta"]["origin"] == "osunlp/ConflictQA/conflictQA-strategyQA-palm2.json:5"  # rows 1-4: wrong priors


# ------------------------------------------------------------------------------------------------------- MuSiQue


def test_musique_records():
    recs, st = load_musique(MUSIQUE)
    assert st["read"] == st["kept"] == len(recs) == 100
    assert st["hops"] == {"2": 68, "3": 27, "4": 5}
    r = recs[0]
    assert r["id"] == "2hop__150763_14904" and r["answers"] == ["G. Stanley Hall", "Stanley Hall"]
    assert r["question"].startswith("Who was the first president of the association")
    assert len(r["passages"]) == 20 and r["meta"]["supporting"] == [6, 10] and r["meta"]["hops"] == 2
    assert {"title", "text", "is_supporting"} == set(r["passages"][0])
    assert all(record_problems(x) == [] for x in recs)
    capped, st = load_musique({**MUSIQUE, "max_records": 24})
    assert len(capped) == 24 and capped == recs[:24] and st["written"] == 24


def test_musique_jsonl_and_filters(tmp_path):
    rows = json.load((DATA / "musique" / "musique_train.json").open())[:3]
    rows[1]["answerable"] = False
    for p in rows[2]["paragraphs"]:
        p["is_supporting"] = False
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs, st = load_musique({"source": "jsonl", "path": str(path)})
    assert [r["id"] for r in recs] == ["2hop__150763_14904"]
    assert st["dropped"]["not_answerable"] == 1 and st["dropped"]["no_supporting"] == 1


# --------------------------------------------------------------------------------------------- prepare_qa + script


def test_prepare_qa_writes_records_and_stats(tmp_path):
    out, stats_path = tmp_path / "musique.jsonl", tmp_path / "musique.stats.json"
    st = prepare_qa("musique", {**MUSIQUE, "max_records": 10}, 1234, str(out), str(stats_path))
    rows = [json.loads(line) for line in out.open()]
    assert len(rows) == 10 and rows[0]["id"] == "2hop__150763_14904"
    saved = json.loads(stats_path.read_text())
    assert saved["written"] == 10 and saved["seed"] == 1234 and saved["record_kind"] == "rag"
    assert "provenance" in saved and st["kept"] == 100
    with pytest.raises(ValueError, match="unknown QA dataset"):
        prepare_qa("squad", MUSIQUE, 0, str(out), str(stats_path))


def test_prepare_qa_script(tmp_path, monkeypatch):
    import logging

    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    smk = SimpleNamespace(
        wildcards=SimpleNamespace(qa="conflictqa"),
        params=SimpleNamespace(source={**CONFLICTQA, "max_records": 20}, seed=1234),
        output=SimpleNamespace(records=str(tmp_path / "c.jsonl"), stats=str(tmp_path / "c.stats.json")),
        log=[str(tmp_path / "c.log")], threads=None, config={"data": {"conflictqa": {"min_records": 10}}})
    runpy.run_path(str(REPO_ROOT / "workflow" / "scripts" / "prepare_qa.py"), init_globals={"snakemake": smk})
    sys.stdout.flush()
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 20
    assert json.loads((tmp_path / "c.stats.json").read_text())["kept"] == 1036
    assert "conflictqa: read 4497" in (tmp_path / "c.log").read_text()
