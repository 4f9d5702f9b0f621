"""MuSiQue-Ans questions as "rag" records for the downstream RAG evaluation.

Each question comes with 20 paragraphs (2-4 supporting, the rest distractors); they are kept as the passages to
retrieve from, with `is_supporting` so retrieval recall can be measured. Answers = the answer plus its aliases
(deduplicated after normalization) so EM/F1 take the best match. The shipped file is a JSON array (train split
sample); JSON Lines and a hub split (MuSiQue-Ans format) load the same way. A folder path means its
`*.json`/`*.jsonl` files minus the passage corpus (`*corpus*`).

Kept, rules in order (first failing counted): not_answerable (`answerable` is false), no_answer (blank answer),
no_supporting (no paragraph marked supporting), no_hops (hop count neither in the id prefix `<n>hop` nor in
`question_decomposition`), duplicate_id.
"""
from __future__ import annotations

import re
from typing import Any

from ..config import fill_section
from .common import Funnel, cap, source_rows, unique_records
from .readers import ErrorLog, Row
from .records import normalize_text

RULES = {
    "not_answerable": "answerable is false",
    "no_answer": "answer is blank",
    "no_supporting": "no paragraph has is_supporting = true",
    "no_hops": "hop count not in the id prefix '<n>hop' nor in question_decomposition",
    "duplicate_id": "id already seen",
}

RAW_SCHEMA = {
    "type": "object",
    "required": ["id", "question", "answer", "paragraphs"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "question": {"type": "string", "minLength": 1},
        "answer": {"type": "string"},
        "answer_aliases": {"type": "array", "items": {"type": "string"}},
        "answerable": {"type": "boolean"},
        "paragraphs": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "required": ["title", "paragraph_text"],
                      "properties": {"title": {"type": "string"}, "paragraph_text": {"type": "string", "minLength": 1},
                                     "is_supporting": {"type": "boolean"}}},
        },
        "question_decomposition": {"type": "array"},
    },
}

_HOPS = re.compile(r"^(\d+)hop")


def hops_of(d: dict[str, Any]) -> int | None:
    """Number of reasoning hops: from the id ('3hop1__...' -> 3), else the length of the decomposition."""
    m = _HOPS.match(d["id"])
    if m:
        return int(m.group(1))
    return len(d["question_decomposition"]) if d.get("question_decomposition") else None


def answer_list(answer: str, aliases: list[str]) -> list[str]:
    """Answer first, then aliases, without blanks or normalized duplicates."""
    out, seen = [], set()
    for a in [answer, *aliases]:
        a = a.strip()
        if a and normalize_text(a) not in seen:
            seen.add(normalize_text(a))
            out.append(a)
    return out


def musique_record(row: Row, funnel: Funnel) -> dict | None:
    d = row.data
    if d.get("answerable") is False:
        return funnel.drop("not_answerable", row.origin)
    if not d["answer"].strip():
        return funnel.drop("no_answer", row.origin)
    passages = [{"title": p["title"].strip(), "text": p["paragraph_text"].strip(),
                 "is_supporting": bool(p.get("is_supporting", False))} for p in d["paragraphs"]]
    if not any(p["is_supporting"] for p in passages):
        return funnel.drop("no_supporting", row.origin)
    hops = hops_of(d)
    if not hops:
        return funnel.drop("no_hops", row.origin)
    return {
        "id": d["id"],
        "source": "musique",
        "question": d["question"].strip(),
        "answers": answer_list(d["answer"], d.get("answer_aliases") or []),
        "passages": passages,
        "meta": {"origin": row.origin, "hops": hops,
                 "supporting": [i for i, p in enumerate(passages) if p["is_supporting"]]},
    }


def load_musique(src: dict, seed: int = 0) -> tuple[list[dict], dict]:
    """Records and stats for the `data.musique` config section {source, path, split?, max_records}.

    The seed is unused (source order is kept) but accepted for a uniform loader signature.
    """
    src = fill_section("data.musique", src)
    errors = ErrorLog(f"musique source {src['path']}")
    funnel = Funnel(RULES)
    kept = unique_records(source_rows(src, RAW_SCHEMA, errors, exclude=("corpus",)), musique_record, funnel)
    errors.raise_if_any()
    out = cap(kept, src["max_records"])
    hops: dict[str, int] = {}
    for r in out:
        hops[str(r["meta"]["hops"])] = hops.get(str(r["meta"]["hops"]), 0) + 1
    stats = {"dataset": "musique", "source": {k: src.get(k) for k in ("source", "path", "split")},
             **funnel.stats(len(kept), src["max_records"], len(out)), "hops": hops,
             "note": "shipped sample is 100 MuSiQue-Ans train questions, not the dev set RAG papers report on"}
    return out, stats
