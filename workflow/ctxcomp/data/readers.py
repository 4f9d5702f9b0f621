"""Reading raw dataset files (JSON Lines or one JSON array) and hub splits, reporting every malformed row.

A broken line in an evaluation set must not vanish silently (the denominators of accuracies would change without
anyone noticing) nor stop the run at the first problem (fixing a file one line per run is slow). So readers keep
going, collect every problem with its `file:line`, and raise one `DataError` listing the count and the first
examples once the input has been read.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT

MAX_EXAMPLES = 5


class DataError(ValueError):
    """Input or output data is malformed; the message gives the count and the first `file:line` examples."""


@dataclass(frozen=True)
class Row:
    """One raw input object and where it came from (1-based line of a file, or 1-based row of a hub split)."""

    file: str
    line: int
    data: dict

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


class ErrorLog:
    """Collects `(origin, problem)` pairs so a whole input can be checked before failing."""

    def __init__(self, what: str = "input") -> None:
        self.what = what
        self.items: list[tuple[str, str]] = []

    def add(self, origin: str, problem: str) -> None:
        self.items.append((origin, problem))

    def __len__(self) -> int:
        return len(self.items)

    def message(self) -> str:
        head = "; ".join(f"{o}: {p}" for o, p in self.items[:MAX_EXAMPLES])
        more = f" (and {len(self.items) - MAX_EXAMPLES} more)" if len(self.items) > MAX_EXAMPLES else ""
        return f"{len(self.items)} malformed row(s) in {self.what}: {head}{more}"

    def raise_if_any(self) -> None:
        if self.items:
            raise DataError(self.message())


def resolve_path(path: str | os.PathLike) -> Path:
    """Config paths are relative to the repo root (the pipeline's working dir); accept cwd-relative ones too."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def _schema_problem(validator: Any, obj: Any) -> str | None:
    """The first schema violation of `obj` as 'field: message', or None when it conforms."""
    if validator is None or validator.is_valid(obj):
        return None
    err = min(validator.iter_errors(obj), key=lambda e: (len(e.absolute_path), e.message))
    where = ".".join(str(p) for p in err.absolute_path) or "<row>"
    return f"{where}: {err.message}"


def make_validator(schema: dict | None) -> Any:
    """A compiled Draft 2020-12 validator (compiled once: validation runs on millions of rows)."""
    if schema is None:
        return None
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _check(obj: Any, origin: str, validator: Any, errors: ErrorLog) -> bool:
    if not isinstance(obj, dict):
        errors.add(origin, f"expected a JSON object, got {type(obj).__name__}")
        return False
    problem = _schema_problem(validator, obj)
    if problem:
        errors.add(origin, problem)
        return False
    return True


_BOM = b"\xef\xbb\xbf"


def _utf8_problem(raw: bytes) -> str | None:
    """Why a line's bytes are not UTF-8 text (byte and column), or None."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    return None


def _iter_jsonl(fh: Iterable[bytes], name: str, validator: Any, errors: ErrorLog) -> Iterator[Row]:
    for lineno, raw in enumerate(fh, 1):
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        bad = _utf8_problem(raw)
        if bad:
            errors.add(f"{name}:{lineno}", bad)
            continue
        line = raw.decode("utf-8")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.add(f"{name}:{lineno}", f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if _check(obj, f"{name}:{lineno}", validator, errors):
            yield Row(name, lineno, obj)


def _iter_json_array(data: bytes, name: str, validator: Any, errors: ErrorLog) -> Iterator[Row]:
    """Decode a JSON array element by element so each row keeps the line it starts on. Elements spanning a line
    that is not UTF-8 are reported like any other malformed row (the rest is decoded with replacement)."""
    bad_lines = {}
    for i, raw in enumerate(data.split(b"\n"), 1):
        problem = _utf8_problem(raw)
        if problem:
            bad_lines[i] = problem
    text = data.decode("utf-8", errors="replace")
    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    line = 1 + text.count("\n", 0, pos)
    n = len(text)
    while True:
        start = pos
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        line += text.count("\n", start, pos)
        if pos >= n:
            errors.add(f"{name}:{line}", "unterminated JSON array")
            return
        if text[pos] == "]":
            return
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            errors.add(f"{name}:{exc.lineno}", f"not valid JSON ({exc.msg}); the rest of the array is unreadable")
            return
        last = line + text.count("\n", pos, end)
        bad = next((f"line {i}: {bad_lines[i]}" for i in range(line, last + 1) if i in bad_lines), None)
        if bad:
            errors.add(f"{name}:{line}", bad)
        elif _check(obj, f"{name}:{line}", validator, errors):
            yield Row(name, line, obj)
        line = last
        pos = end


def iter_rows(path: str | os.PathLike, schema: dict | None = None, errors: ErrorLog | None = None) -> Iterator[Row]:
    """Yield the valid objects of a JSON Lines file or JSON array file; problems go to `errors`.

    The format is detected from the first non-blank character ('[' = one array), not the extension: ConflictQA's
    `.json` files are JSON Lines. JSON Lines are streamed, so a multi-GB file is never loaded whole. The caller
    owns `errors` and must call `errors.raise_if_any()` when done (see `read_rows` for the one-shot version).
    """
    path = resolve_path(path)
    errors = errors if errors is not None else ErrorLog(str(path))
    validator = make_validator(schema)
    name = str(path)
    with open(path, "rb") as fh:  # bytes: a line that is not UTF-8 is a malformed row, not a crash
        head = fh.read(4096)
        while head.isspace() or head.startswith(_BOM) and head[len(_BOM):].isspace():
            more = fh.read(4096)
            if not more:
                break
            head += more
        first = head.removeprefix(_BOM).lstrip()[:1]
        fh.seek(0)
        if first == b"[":
            data = fh.read()
            yield from _iter_json_array(data.removeprefix(_BOM), name, validator, errors)
        else:
            yield from _iter_jsonl(fh, name, validator, errors)


def read_rows(path: str | os.PathLike, schema: dict | None = None) -> list[Row]:
    """All valid rows of a file; raise DataError listing every malformed row if there is any."""
    errors = ErrorLog(str(resolve_path(path)))
    rows = list(iter_rows(path, schema, errors))
    errors.raise_if_any()
    return rows


def hub_rows(path: str, split: str, name: str | None = None, *, streaming: bool = False, schema: dict | None = None,
             errors: ErrorLog | None = None, **kwargs: Any) -> Iterator[Row]:
    """Rows of a `datasets.load_dataset(path, name, split=...)` split, checked like file rows.

    `path` is a hub id (e.g. "Salesforce/FaithEval-counterfactual-v1.0") or a packaged builder ("json") with
    `data_files=...`, which is how the tests exercise this code offline. Row numbers are 1-based positions.
    """
    import datasets

    ds = datasets.load_dataset(path, name=name, split=split, streaming=streaming, **kwargs)
    errors = errors if errors is not None else ErrorLog(f"{path}[{split}]")
    validator = make_validator(schema)
    label = f"{path}[{split}]"
    for i, obj in enumerate(ds, 1):
        if _check(obj, f"{label}:{i}", validator, errors):
            yield Row(label, i, dict(obj))
