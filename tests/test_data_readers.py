"""Readers and record validation: malformed rows are all reported (count + file:line), never dropped silently."""
from __future__ import annotations

import json

import pytest

from ctxcomp.data import DataError, iter_rows, read_rows, record_problems, write_records
from ctxcomp.data.readers import ErrorLog

GOOD_CHOICE = {"id": "x1", "source": "faitheval", "context": "ctx", "question": "q?", "candidates": ["a", "b"],
               "correct_index": 1, "meta": {"origin": "src.jsonl:1"}}


def test_three_bad_lines_reported_together(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = ['{"text": "ok 1"}', '{"text": "broken', '{"text": "ok 2"}', "[1, 2]", "", '{"text": 3}',
             '{"text": "ok 3"}']
    path.write_text("\n".join(lines) + "\n")
    schema = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
    with pytest.raises(DataError) as exc:
        read_rows(path, schema)
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert msg.startswith("3 malformed row(s)")
    for lineno in (2, 4, 6):
        assert f"{path}:{lineno}" in msg
    assert "not valid JSON" in msg and "expected a JSON object" in msg and "text: 3 is not of type 'string'" in msg


def test_error_log_caps_examples():
    log = ErrorLog("f")
    for i in range(8):
        log.add(f"f:{i}", "bad")
    assert "8 malformed row(s) in f" in log.message() and "(and 3 more)" in log.message()


def test_iter_rows_collects_errors_without_stopping(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    errors = ErrorLog(str(path))
    rows = list(iter_rows(path, errors=errors))
    assert [r.data["a"] for r in rows] == [1, 2] and [r.line for r in rows] == [1, 3]
    assert len(errors) == 1 and errors.items[0][0] == f"{path}:2"


def test_json_array_rows_keep_their_line(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n  {"id": "a"},\n  {"id": "b",\n   "x": 1},\n  {"id": "c"}\n]\n')
    rows = read_rows(path)
    assert [(r.data["id"], r.line) for r in rows] == [("a", 2), ("b", 3), ("c", 5)]
    # ConflictQA's .json files are JSON Lines: the format is sniffed, not taken from the extension
    jl = tmp_path / "lines.json"
    jl.write_text('{"id": "a"}\n{"id": "b"}\n')
    assert [r.data["id"] for r in read_rows(jl)] == ["a", "b"]


def test_broken_json_array_names_the_line(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n {"id": "a"},\n {"id": \n]\n')
    with pytest.raises(DataError, match=r"1 malformed row\(s\).*arr\.json:4"):
        read_rows(path)


def test_record_schema_checks():
    assert record_problems(GOOD_CHOICE) == []
    bad = {**GOOD_CHOICE, "correct_index": 2}
    assert any("out of range" in p for p in record_problems(bad))
    assert any("candidates" in p for p in record_problems({**GOOD_CHOICE, "candidates": ["a", "a"]}))
    assert any("extra" in p for p in record_problems({**GOOD_CHOICE, "extra": 1}))
    assert record_problems({"source": "nope"}) == ["unknown source 'nope'"]


def test_write_records_reports_origin_and_writes_nothing(tmp_path):
    out = tmp_path / "out.jsonl"
    recs = [GOOD_CHOICE,
            {**GOOD_CHOICE, "id": "x2", "question": "", "meta": {"origin": "test.jsonl:17"}},
            {**GOOD_CHOICE, "id": "x3", "candidates": ["only"], "meta": {"origin": "test.jsonl:18"}}]
    with pytest.raises(DataError) as exc:
        write_records(out, recs)
    assert "2 malformed row(s)" in str(exc.value)
    assert "test.jsonl:17" in str(exc.value) and "test.jsonl:18" in str(exc.value)
    assert not out.exists() and not list(tmp_path.iterdir())
    assert write_records(out, [GOOD_CHOICE]) == 1
    assert json.loads(out.read_text()) == GOOD_CHOICE
