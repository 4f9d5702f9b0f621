"""The normalized record schemas every prepared data file follows, checked on write.

Three kinds, one per use:
- "chunk"  (fineweb): a reconstruction segment and its continuation.
- "choice" (faitheval, conflictqa): a context, a question and candidate answers; `correct_index` is the answer the
  context supports (the counterfactual one), so accuracy = share of picks that follow the context.
- "rag"    (musique): a question, gold answers and the passages to retrieve from.

Downstream rules read these files without re-checking them, so they are validated when written: a bad record stops
the job with its origin (`meta.origin` = source `file:line`) instead of surfacing as a KeyError hours later.
"""
from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Iterable, Iterator
from typing import Any

from ..io import write_jsonl
from .readers import DataError, ErrorLog, make_validator

_STR = {"type": "string", "minLength": 1}
_META = {
    "type": "object",
    "required": ["origin"],
    "properties": {"origin": _STR},
}

SCHEMAS: dict[str, dict] = {
    "chunk": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "source", "doc_id", "text", "continuation"],
        "properties": {
            "id": _STR,
            "source": {"const": "fineweb"},
            "doc_id": _STR,
            "text": _STR,
            "continuation": _STR,
        },
    },
    "choice": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "source", "context", "question", "candidates", "correct_index", "meta"],
        "properties": {
            "id": _STR,
            "source": {"enum": ["faitheval", "conflictqa"]},
            "context": _STR,
            "question": _STR,
            "candidates": {"type": "array", "items": _STR, "minItems": 2, "uniqueItems": True},
            "correct_index": {"type": "integer", "minimum": 0},
            "meta": _META,
        },
    },
    "rag": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "source", "question", "answers", "passages", "meta"],
        "properties": {
            "id": _STR,
            "source": {"const": "musique"},
            "question": _STR,
            "answers": {"type": "array", "items": _STR, "minItems": 1},
            "passages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["title", "text", "is_supporting"],
                    "properties": {"title": {"type": "string"}, "text": _STR, "is_supporting": {"type": "boolean"}},
                },
            },
            "meta": {**_META, "required": ["origin", "hops"],
                     "properties": {**_META["properties"], "hops": {"type": "integer", "minimum": 1}}},
        },
    },
}

KIND_OF_SOURCE = {"fineweb": "chunk", "faitheval": "choice", "conflictqa": "choice", "musique": "rag"}

_VALIDATORS: dict[str, Any] = {}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Signs and comparison marks carry meaning in answers ("+3" vs "-3", "<" vs ">"), so they are kept.
_DROP = "".join(c for c in string.punctuation if c not in "+-%<>=$")
_PUNCT = str.maketrans(_DROP, " " * len(_DROP))


def normalize_text(s: str) -> str:
    """SQuAD-style answer normalization (lowercase, no articles, single spaces, punctuation removed except the
    signs + - % < > = $).

    Used to decide whether two answers are 'the same' (duplicate candidates, memory == counter answer), so that
    case or a trailing period never counts as a knowledge conflict.
    """
    s = s.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def text_key(s: str) -> bytes:
    """Dedup key of a text: 16-byte blake2b of its case- and whitespace-normalized form (small for big sets)."""
    return hashlib.blake2b(" ".join(s.lower().split()).encode("utf-8"), digest_size=16).digest()


def stable_unit(*parts: Any) -> float:
    """A number in [0, 1) fixed by `parts` (e.g. seed and id): a split or shuffle that is the same on every run."""
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") / 2**64


def _validator(kind: str) -> Any:
    if kind not in _VALIDATORS:
        _VALIDATORS[kind] = make_validator(SCHEMAS[kind])
    return _VALIDATORS[kind]


def record_problems(rec: Any, kind: str | None = None) -> list[str]:
    """Every way `rec` breaks its schema (kind inferred from `rec["source"]`), plus cross-field checks."""
    if not isinstance(rec, dict):
        return [f"record is a {type(rec).__name__}, not an object"]
    kind = kind or KIND_OF_SOURCE.get(rec.get("source"))
    if kind is None:
        return [f"unknown source {rec.get('source')!r}"]
    val = _validator(kind)
    if val.is_valid(rec):
        problems = []
    else:
        problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '<record>'}: {e.message}"
                    for e in val.iter_errors(rec)]
    if kind == "choice" and isinstance(rec.get("candidates"), list) and isinstance(rec.get("correct_index"), int):
        if rec["correct_index"] >= len(rec["candidates"]):
            n = len(rec["candidates"])
            problems.append(f"correct_index {rec['correct_index']} out of range for {n} candidates")
    return problems


def record_origin(rec: Any, position: int) -> str:
    """Where a record came from: its source `file:line`, else its doc/record id, else its output position."""
    if isinstance(rec, dict):
        meta = rec.get("meta")
        if isinstance(meta, dict) and meta.get("origin"):
            return str(meta["origin"])
        for key in ("doc_id", "id"):
            if rec.get(key):
                return f"{key} {rec[key]}"
    return f"record #{position}"


def checked(records: Iterable[dict], kind: str | None = None, what: str = "records") -> Iterator[dict]:
    """Pass records through, raising one DataError at the end if any broke the schema (all of them listed)."""
    errors = ErrorLog(what)
    for i, rec in enumerate(records, 1):
        problems = record_problems(rec, kind)
        if problems:
            errors.add(record_origin(rec, i), "; ".join(problems))
            continue
        yield rec
    errors.raise_if_any()


def write_records(path: str | os.PathLike, records: Iterable[dict], kind: str | None = None) -> int:
    """Validate and write JSON Lines atomically; on any invalid record nothing is written and DataError is raised."""
    return write_jsonl(path, checked(records, kind, what=f"records for {path}"))


__all__ = ["SCHEMAS", "KIND_OF_SOURCE", "DataError", "normalize_text", "text_key", "stable_unit", "record_problems",
           "checked", "write_records"]
