"""Reader error messages name the culprit exactly: the file, the 1-based line of a JSON-array element wherever the
array starts, what is wrong (unterminated array, invalid JSON, schema, bytes that are not UTF-8, each reported
once, at its own element), and the count with at most MAX_EXAMPLES examples."""
from __future__ import annotations

import pytest

from ctxcomp.data import DataError, iter_rows, read_rows
from ctxcomp.data.readers import MAX_EXAMPLES, ErrorLog


def test_array_lines_count_from_the_top_of_the_file(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('\n\n[\n  {"id": "a"},\n  {"id": "b"}\n]\n')  # the array opens on line 3
    assert [(r.data["id"], r.line) for r in read_rows(path)] == [("a", 4), ("b", 5)]


def test_unterminated_array_names_the_line_after_the_last_element(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n {"id": "a"},\n')
    with pytest.raises(DataError) as exc:
        read_rows(path)
    assert str(exc.value) == f"1 malformed row(s) in {path}: {path}:3: unterminated JSON array"


def test_invalid_json_in_an_array_says_the_rest_is_unreadable(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n {"id": "a"},\n {"id": \n]\n')
    with pytest.raises(DataError) as exc:
        read_rows(path)
    msg = str(exc.value)
    assert msg.startswith(f"1 malformed row(s) in {path}: {path}:4: not valid JSON (")
    assert msg.endswith("); the rest of the array is unreadable")


def test_array_elements_are_checked_against_the_schema(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n {"text": "ok"},\n {"text": 3}\n]\n')
    schema = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
    with pytest.raises(DataError, match=rf"{path}:3: .*3 is not of type 'string'"):
        read_rows(path, schema)


def test_a_line_that_is_not_utf8_is_reported_at_its_own_element_only(tmp_path):
    path = tmp_path / "arr.json"
    path.write_bytes(b'[\n {"id": "\xff"},\n {"id": "b"}\n]\n')
    errors = ErrorLog(str(path))
    rows = list(iter_rows(path, errors=errors))
    assert [(r.data["id"], r.line) for r in rows] == [("b", 3)]
    assert [o for o, _ in errors.items] == [f"{path}:2"]


def test_error_log_message_at_the_cap():
    log = ErrorLog("f")
    for i in range(MAX_EXAMPLES):
        log.add(f"f:{i}", "bad")
    head = "; ".join(f"f:{i}: bad" for i in range(MAX_EXAMPLES))
    assert log.message() == f"{MAX_EXAMPLES} malformed row(s) in f: {head}"
    log.add("f:99", "bad")
    assert log.message() == f"{MAX_EXAMPLES + 1} malformed row(s) in f: {head} (and 1 more)"
