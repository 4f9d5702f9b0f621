"""ConflictQA (osunlp/ConflictQA; Xie et al., ICLR 2024) as "choice" records.

The dataset has one file per (part, elicited LLM): `conflictQA-{popQA|strategyQA}-{llm}.json`, JSON Lines. A row
holds the LLM's parametric answer (`memory_answer`) and a counter-memory passage (`counter_memory`) arguing for
`counter_answer`. Here the context is the counter-memory, the candidates are {counter_answer, memory_answer} in an
order fixed by a hash of (seed, id) so the correct index is not always 0, and the correct pick is counter_answer.

Kept = clear conflicts, rules in this order (the first failing one is counted):
1. empty_context: `counter_memory` is blank.
2. empty_answer: `counter_answer` or `memory_answer` is blank.
3. same_answer: counter_answer equals memory_answer after normalization (no conflict to measure).
4. duplicate_question: the (normalized) question was already kept from an earlier file. Files are read in a
   fixed order (popQA before strategyQA, then LLM names sorted) and rows in file order, so the first valid
   occurrence wins. Questions repeat because every LLM was asked the same questions.
The paper uses 1,431 contexts; the popQA files are not shipped here (only the StrategyQA part), which the stats
say under `parts_missing`.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Iterator

from .common import Funnel, cap
from .readers import DataError, ErrorLog, Row, hub_rows, iter_rows, resolve_path
from .records import normalize_text, stable_unit

log = logging.getLogger(__name__)

PAPER_COUNT = 1431
PARTS = ("popQA", "strategyQA")
LLMS = ("chatgpt", "gpt4", "llama2-70b", "llama2-7b", "palm2", "qwen7b", "vicuna33b", "vicuna7b")
_FILE = re.compile(r"^conflictQA-(popQA|strategyQA)-(.+)\.jsonl?$")

RULES = {
    "empty_context": "counter_memory is blank",
    "empty_answer": "counter_answer or memory_answer is blank",
    "same_answer": "counter_answer == memory_answer after normalization",
    "duplicate_question": "normalized question already kept from an earlier file (files: part, then LLM name)",
}

RAW_SCHEMA = {
    "type": "object",
    "required": ["question", "memory_answer", "counter_answer", "counter_memory"],
    "properties": {k: {"type": "string"} for k in ("question", "memory_answer", "counter_answer", "counter_memory")}
    | {"question": {"type": "string", "minLength": 1}},
}


def _file_order(part: str, llm: str) -> tuple[int, str]:
    return (PARTS.index(part) if part in PARTS else len(PARTS), llm)


def local_sources(path: str, parts: list[str], llms: list[str] | None = None) -> list[tuple[str, str, Path]]:
    """(part, llm, file) for the requested parts found at `path` (a folder of conflictQA-*.json, or one such file)."""
    p = resolve_path(path)
    files = [p] if p.is_file() else sorted(p.glob("conflictQA-*.json*"))
    out = []
    for f in files:
        m = _FILE.match(f.name)
        if not m:
            raise DataError(f"{f}: file name is not conflictQA-<part>-<llm>.json")
        part, llm = m.groups()
        if part in parts and (not llms or llm in llms):
            out.append((part, llm, f))
    return sorted(out, key=lambda t: _file_order(t[0], t[1]))


def _rows(src: dict, parts: list[str], errors: ErrorLog, found: dict[str, list[str]]) -> Iterator[tuple[str, str, Row]]:
    """(part, llm, row) in the stable file order; `found` collects which files each part had."""
    llms = src.get("llms")
    if src["source"] == "hub":
        # The hub repo carries a loading script that datasets>=4 refuses to run; its files are plain JSON Lines,
        # so they are read with the packaged json builder straight from the repo.
        for part in sorted(parts, key=lambda p: _file_order(p, "")):
            for llm in sorted(llms or LLMS):
                found.setdefault(part, []).append(llm)
                url = f"hf://datasets/{src['path']}/conflictQA-{part}-{llm}.json"
                for row in hub_rows("json", "train", data_files=url, schema=RAW_SCHEMA, errors=errors):
                    yield part, llm, Row(f"{src['path']}/conflictQA-{part}-{llm}.json", row.line, row.data)
        return
    for part, llm, f in local_sources(src["path"], parts, llms):
        found.setdefault(part, []).append(llm)
        for row in iter_rows(f, RAW_SCHEMA, errors):
            yield part, llm, row


def question_id(part: str, question: str) -> str:
    """Stable id of a question: its part and a hash of the normalized question (questions are deduplicated)."""
    return f"{part}-{hashlib.sha1(normalize_text(question).encode('utf-8')).hexdigest()[:12]}"


def load_conflictqa(src: dict, seed: int = 0) -> tuple[list[dict], dict]:
    """Records and stats for the `data.conflictqa` config section {source, path, parts, llms?, max_records}."""
    parts = list(src.get("parts") or PARTS)
    errors = ErrorLog(f"conflictqa source {src['path']}")
    funnel = Funnel(RULES)
    found: dict[str, list[str]] = {}
    seen: set[str] = set()
    kept: list[dict] = []
    per_file: dict[str, int] = {}
    for part, llm, row in _rows(src, parts, errors, found):
        funnel.read += 1
        d = row.data
        per_file[f"{part}-{llm}"] = per_file.get(f"{part}-{llm}", 0) + 1
        counter, memory = d["counter_answer"].strip(), d["memory_answer"].strip()
        if not d["counter_memory"].strip():
            funnel.drop("empty_context", row.origin)
            continue
        if not counter or not memory:
            funnel.drop("empty_answer", row.origin)
            continue
        if normalize_text(counter) == normalize_text(memory):
            funnel.drop("same_answer", row.origin)
            continue
        rid = question_id(part, d["question"])
        if rid in seen:
            funnel.drop("duplicate_question", row.origin)
            continue
        seen.add(rid)
        swap = stable_unit("conflictqa-order", seed, rid) < 0.5
        kept.append({
            "id": rid,
            "source": "conflictqa",
            "context": d["counter_memory"].strip(),
            "question": d["question"].strip(),
            "candidates": [memory, counter] if swap else [counter, memory],
            "correct_index": 1 if swap else 0,
            "meta": {"origin": row.origin, "part": part, "llm": llm, "popularity": d.get("popularity"),
                     "ground_truth": d.get("ground_truth")},
        })
    errors.raise_if_any()
    if not found:
        raise DataError(f"conflictqa: no files for parts {parts} at {src['path']}")
    missing = [p for p in parts if p not in found]
    not_requested = [p for p in PARTS if p not in parts]
    if missing:
        log.warning("conflictqa: no files for part(s) %s at %s", missing, src["path"])
    out = cap(kept, src.get("max_records", 0))
    stats = {
        "dataset": "conflictqa",
        "source": {k: src.get(k) for k in ("source", "path", "parts", "llms")},
        "files": {p: llms for p, llms in found.items()},
        "rows_per_file": per_file,
        "parts_missing": missing,
        "parts_not_requested": not_requested,
        **funnel.stats(len(kept), src.get("max_records", 0), len(out)),
        "correct_index_counts": {str(i): sum(r["correct_index"] == i for r in out) for i in (0, 1)},
        "paper_count": PAPER_COUNT,
        "note": ("paper uses 1,431 ConflictQA contexts; "
                 + ("the popQA part is not included here (not shipped / not requested), so counts differ"
                    if "popQA" not in found else "both parts loaded")),
    }
    return out, stats
