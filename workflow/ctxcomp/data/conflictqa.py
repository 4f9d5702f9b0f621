"""ConflictQA (osunlp/ConflictQA; Xie et al., ICLR 2024) as "choice" records.

The dataset has one file per (part, elicited LLM): `conflictQA-{popQA|strategyQA}-{llm}.json`, JSON Lines. A row
holds the LLM's parametric answer (`memory_answer`) and a counter-memory passage (`counter_memory`) arguing for
`counter_answer`. Here the context is the counter-memory, the candidates are {counter_answer, memory_answer} in an
order fixed by a hash of (seed, id) so the correct index is not always 0, and the correct pick is counter_answer.

Kept = clear conflicts against a well-established fact, rules in this order (the first failing one is counted,
overall and per part):
1. empty_context: `counter_memory` is blank.
2. empty_answer: `counter_answer` or `memory_answer` is blank.
3. same_answer: counter_answer equals memory_answer after normalization (no conflict to measure).
4. truth_unclear: the ground truth, or the stance of an answer towards it, cannot be read (rules in
   `conflictqa_truth`: StrategyQA answers by negation polarity, popQA answers by ground-truth aliases).
5. prior_wrong: memory_answer contradicts `ground_truth`. The paper keeps only items whose real-world fact is well
   established: overwriting a prior that is wrong measures nothing.
6. counter_true: counter_answer agrees with `ground_truth` (the context is not counterfactual).
7. duplicate_question: the (normalized) question was already kept from an earlier file. Files are read in a
   fixed order (popQA before strategyQA, then LLM names sorted) and rows in file order, so the first valid
   occurrence wins (a question whose first LLM had a wrong prior is kept from the next LLM that had it right).
   Questions repeat because every LLM was asked the same questions.
The paper uses 1,431 contexts; the popQA files are not shipped here (only the StrategyQA part), which the stats
say under `parts_missing`.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from ..config import fill_section
from .common import Funnel, cap
from .conflictqa_truth import agreement
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
    "truth_unclear": "ground_truth or an answer's stance unreadable (StrategyQA: meta-text or equal negation "
                     "polarity of both answers; popQA: no aliases)",
    "prior_wrong": "memory_answer contradicts ground_truth (StrategyQA: polarity; popQA: no alias in it)",
    "counter_true": "counter_answer agrees with ground_truth (StrategyQA: polarity; popQA: an alias in it)",
    "duplicate_question": "normalized question already kept from an earlier file (files: part, then LLM name)",
}

RAW_SCHEMA = {
    "type": "object",
    "required": ["question", "memory_answer", "counter_answer", "counter_memory", "ground_truth"],
    "properties": {k: {"type": "string"} for k in ("question", "memory_answer", "counter_answer", "counter_memory")}
    | {"question": {"type": "string", "minLength": 1},
       "ground_truth": {"type": ["array", "string"], "items": {"type": "string"}}},
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


def rejection(part: str, d: dict) -> str | None:
    """The first of rules 1-6 a raw row fails, or None if it is a clear conflict against a well-established fact."""
    counter, memory = d["counter_answer"].strip(), d["memory_answer"].strip()
    if not d["counter_memory"].strip():
        return "empty_context"
    if not counter or not memory:
        return "empty_answer"
    if normalize_text(counter) == normalize_text(memory):
        return "same_answer"
    agree = agreement(part, d["question"], memory, counter, d["ground_truth"])
    if agree is None:
        return "truth_unclear"
    if not agree[0]:
        return "prior_wrong"
    if agree[1]:
        return "counter_true"
    return None


def _record(part: str, llm: str, row: Row, rid: str, seed: int) -> dict:
    d = row.data
    counter, memory = d["counter_answer"].strip(), d["memory_answer"].strip()
    swap = stable_unit("conflictqa-order", seed, rid) < 0.5
    return {
        "id": rid,
        "source": "conflictqa",
        "context": d["counter_memory"].strip(),
        "question": d["question"].strip(),
        "candidates": [memory, counter] if swap else [counter, memory],
        "correct_index": 1 if swap else 0,
        "meta": {"origin": row.origin, "part": part, "llm": llm, "popularity": d.get("popularity"),
                 "ground_truth": d.get("ground_truth")},
    }


def load_conflictqa(src: dict, seed: int = 0) -> tuple[list[dict], dict]:
    """Records and stats for the `data.conflictqa` config section {source, path, parts, llms?, max_records}."""
    src = fill_section("data.conflictqa", src)
    parts = list(src["parts"])
    errors = ErrorLog(f"conflictqa source {src['path']}")
    funnel = Funnel(RULES)
    per_part: dict[str, Funnel] = {}
    found: dict[str, list[str]] = {}
    seen: set[str] = set()
    kept: list[dict] = []
    per_file: dict[str, int] = {}
    for part, llm, row in _rows(src, parts, errors, found):
        part_funnel = per_part.setdefault(part, Funnel(RULES))
        funnel.read += 1
        part_funnel.read += 1
        per_file[f"{part}-{llm}"] = per_file.get(f"{part}-{llm}", 0) + 1
        rid = question_id(part, row.data["question"])
        rule = rejection(part, row.data) or ("duplicate_question" if rid in seen else None)
        if rule:
            funnel.drop(rule, row.origin)
            part_funnel.drop(rule, row.origin)
            continue
        seen.add(rid)
        kept.append(_record(part, llm, row, rid, seed))
    errors.raise_if_any()
    if not found:
        raise DataError(f"conflictqa: no files for parts {parts} at {src['path']}")
    out = cap(kept, src["max_records"])
    return out, _stats(src, parts, found, per_file, funnel, per_part, kept, out)


def _stats(src: dict, parts: list[str], found: dict[str, list[str]], per_file: dict[str, int], funnel: Funnel,
           per_part: dict[str, Funnel], kept: list[dict], out: list[dict]) -> dict:
    missing = [p for p in parts if p not in found]
    not_requested = [p for p in PARTS if p not in parts]
    if missing:
        log.warning("conflictqa: no files for part(s) %s at %s", missing, src["path"])
    part_stats = {}
    for part, f in per_part.items():
        st = f.stats(sum(r["meta"]["part"] == part for r in kept), 0, sum(r["meta"]["part"] == part for r in out))
        part_stats[part] = {k: st[k] for k in ("read", "dropped", "dropped_examples", "kept", "written")}
    return {
        "dataset": "conflictqa",
        "source": {k: src.get(k) for k in ("source", "path", "parts", "llms")},
        "files": dict(found.items()),
        "rows_per_file": per_file,
        "parts_missing": missing,
        "parts_not_requested": not_requested,
        **funnel.stats(len(kept), src["max_records"], len(out)),
        "per_part": part_stats,
        "correct_index_counts": {str(i): sum(r["correct_index"] == i for r in out) for i in (0, 1)},
        "paper_count": PAPER_COUNT,
        "note": ("paper uses 1,431 ConflictQA contexts; "
                 + ("the popQA part is not included here (not shipped / not requested), so counts differ"
                    if "popQA" not in found else "both parts loaded")),
    }
