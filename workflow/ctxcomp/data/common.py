"""Pieces shared by the QA loaders: where rows come from, and a filter funnel that counts every drop."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .readers import ErrorLog, Row, hub_rows, iter_rows, resolve_path


def local_files(path: str | os.PathLike, patterns: tuple[str, ...] = ("*.jsonl", "*.json"),
                exclude: tuple[str, ...] = ()) -> list[Path]:
    """The file itself, or the files of a folder matching `patterns` (sorted by name, minus `exclude` substrings)."""
    p = resolve_path(path)
    if not p.exists():
        raise FileNotFoundError(f"data path not found: {path} (resolved to {p})")
    if p.is_file():
        return [p]
    files = sorted({f for pat in patterns for f in p.glob(pat)
                    if f.is_file() and not any(x in f.name for x in exclude)})
    if not files:
        raise FileNotFoundError(f"no files matching {patterns} in {p}")
    return files


def source_rows(src: dict, schema: dict, errors: ErrorLog, *, exclude: tuple[str, ...] = ()) -> Iterator[Row]:
    """Raw rows of a QA dataset config section (defaults filled): `load_dataset(path, split, data_files?)` for hub,
    else local JSON/JSONL file(s). `data_files` also lets a packaged builder ("json") stand in for the hub offline."""
    if src["source"] == "hub":
        extra = {"data_files": src["data_files"]} if src.get("data_files") else {}
        yield from hub_rows(src["path"], src["split"], schema=schema, errors=errors, **extra)
        return
    for f in local_files(src["path"], exclude=exclude):
        yield from iter_rows(f, schema, errors)


class Funnel:
    """Applies named rules in order and counts, per rule, the rows it dropped (the first failing rule wins)."""

    def __init__(self, rules: dict[str, str]) -> None:
        self.rules = rules
        self.read = 0
        self.dropped = dict.fromkeys(rules, 0)
        self.examples: dict[str, list[str]] = {name: [] for name in rules}

    def drop(self, rule: str, origin: str) -> None:
        self.dropped[rule] += 1
        if len(self.examples[rule]) < 3:
            self.examples[rule].append(origin)

    def stats(self, kept: int, max_records: int, written: int) -> dict[str, Any]:
        return {
            "read": self.read,
            "dropped": dict(self.dropped),
            "dropped_examples": {k: v for k, v in self.examples.items() if v},
            "kept": kept,
            "max_records": max_records,
            "written": written,
            "rules": dict(self.rules),
        }


def unique_records(rows: Iterable[Any], make: Callable[[Any, Funnel], dict | None], funnel: Funnel) -> list[dict]:
    """Records made from rows, in order; rows `make` rejects (None) and repeated ids are dropped and counted."""
    kept: list[dict] = []
    seen: set[str] = set()
    for row in rows:
        funnel.read += 1
        rec = make(row, funnel)
        if rec is None:
            continue
        if rec["id"] in seen:
            funnel.drop("duplicate_id", row.origin)
            continue
        seen.add(rec["id"])
        kept.append(rec)
    return kept


def cap(records: list[dict], max_records: int | None) -> list[dict]:
    """The first `max_records` records in source order (0 or None = all): deterministic, no sampling."""
    return records[:max_records] if max_records else records
