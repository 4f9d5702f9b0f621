"""FaithEval counterfactual (Salesforce/FaithEval-counterfactual-v1.0, split test) as "choice" records.

Each item is an ARC science question with a passage that argues for a counterfactual answer; `answerKey` is the
label of that answer. The candidates are the original choices in their original order: the counterfactual answer
(`correct_index`) and the others as the world-knowledge alternatives. Accuracy = share of picks that follow the
context, i.e. knowledge overwriting.

Kept = unambiguous conflicts, the rules applied in this order (the first failing rule is counted in the stats):
1. key_unresolved: `answerKey` is one of the choice labels; or, when the labels are digits ('1'..'4') and the key is
   a letter (18 NYSEDREGENTS rows), the key's alphabet position, accepted only if that choice equals `answer`.
2. answer_mismatch: if the row has `answer`, it equals the keyed choice after normalization.
3. duplicate_candidates: at least 2 choices, all non-empty and distinct after normalization.
4. meta_option: no choice refers to the others ("all/none of the above", "both A and B", "cannot be determined").
5. unsupported: the context backs the counterfactual answer against every alternative: for each other choice,
   the answer has content words that choice lacks (stopwords removed, crude stemming) and at least half of those
   words occur in the context. Alternatives are not scored against it: these passages often name the real answer
   in order to refute it.
6. duplicate_id: an id seen before (the first is kept).
The paper keeps 598 of 1000 with an unpublished rule; on the shipped 806 rows this rule keeps 738.
"""
from __future__ import annotations

import re
from typing import Any

from ..config import fill_section
from .common import Funnel, cap, source_rows, unique_records
from .readers import ErrorLog, Row
from .records import normalize_text
from .support import pairwise_support

PAPER_COUNT = 598
MIN_SUPPORT = 0.5

RULES = {
    "key_unresolved": "answerKey is not a choice label (nor, with digit labels, a letter whose position matches "
                      "`answer`)",
    "answer_mismatch": "the keyed choice differs from the `answer` field after normalization",
    "duplicate_candidates": "fewer than 2 choices, an empty choice, or two choices equal after normalization",
    "meta_option": "a choice refers to the others (all/none of the above, both A and B, cannot be determined)",
    "unsupported": f"for some other choice, the counterfactual answer has no content word that choice lacks, or "
                   f"fewer than {MIN_SUPPORT:.0%} of those words occur in the context",
    "duplicate_id": "id already seen",
}

RAW_SCHEMA = {
    "type": "object",
    "required": ["id", "question", "choices", "answerKey", "context"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "question": {"type": "string", "minLength": 1},
        "context": {"type": "string", "minLength": 1},
        "answerKey": {"type": "string", "minLength": 1},
        "answer": {"type": "string"},
        "choices": {
            "type": "object",
            "required": ["label", "text"],
            "properties": {"label": {"type": "array", "items": {"type": "string"}},
                           "text": {"type": "array", "items": {"type": "string"}}},
        },
    },
}

_META_OPTION = re.compile(
    r"\b(all|none|any) of (the )?(above|these|those|them|choices|options|answers)\b"
    r"|\b(both|neither|either) [a-e1-5] (and|nor|or) [a-e1-5]\b"
    r"|\b(not enough|insufficient) information\b|\bcannot be determined\b", re.IGNORECASE)


def resolve_key(labels: list[str], texts: list[str], key: str, answer: str | None) -> tuple[int | None, str]:
    """Index of the keyed choice and how it was found ('label' or 'position'); (None, '') if unresolvable."""
    if len(labels) == len(texts) and key in labels:
        return labels.index(key), "label"
    k = key.strip().upper()
    if len(k) == 1 and "A" <= k <= "Z" and all(lab.strip().isdigit() for lab in labels) and answer:
        pos = ord(k) - ord("A")
        if pos < len(texts) and normalize_text(texts[pos]) == normalize_text(answer):
            return pos, "position"
    return None, ""


def faitheval_record(row: Row, funnel: Funnel) -> dict | None:
    """The normalized record of one raw row, or None after counting the rule that rejected it."""
    d: dict[str, Any] = row.data
    labels, texts = list(d["choices"]["label"]), [t.strip() for t in d["choices"]["text"]]
    answer = d.get("answer")
    idx, how = resolve_key(labels, texts, d["answerKey"], answer)
    if idx is None:
        return funnel.drop("key_unresolved", row.origin)
    if answer is not None and normalize_text(texts[idx]) != normalize_text(answer):
        return funnel.drop("answer_mismatch", row.origin)
    norm = [normalize_text(t) for t in texts]
    if len(texts) < 2 or not all(norm) or len(set(norm)) < len(norm):
        return funnel.drop("duplicate_candidates", row.origin)
    if any(_META_OPTION.search(t) for t in texts):
        return funnel.drop("meta_option", row.origin)
    support = pairwise_support(texts, idx, d["context"])
    if any(s is None or s < MIN_SUPPORT for s in support):
        return funnel.drop("unsupported", row.origin)
    return {
        "id": d["id"],
        "source": "faitheval",
        "context": d["context"].strip(),
        "question": d["question"].strip(),
        "candidates": texts,
        "correct_index": idx,
        "meta": {"origin": row.origin, "orig_id": d["id"], "answerKey": d["answerKey"], "labels": labels,
                 "key_resolved_by": how, "support": round(min(support), 4)},
    }


def load_faitheval(src: dict, seed: int = 0) -> tuple[list[dict], dict]:
    """Records (after the conflict filter and `max_records`) and stats. Raises DataError on malformed rows.

    `src` = the `data.faitheval` config section {source: hub|jsonl, path, split, max_records}. The seed is unused
    (original choice order is kept; ARC already shuffled it) but accepted for a uniform loader signature.
    """
    src = fill_section("data.faitheval", src)
    errors = ErrorLog(f"faitheval source {src['path']}")
    funnel = Funnel(RULES)
    kept = unique_records(source_rows(src, RAW_SCHEMA, errors), faitheval_record, funnel)
    errors.raise_if_any()
    out = cap(kept, src["max_records"])
    stats = {"dataset": "faitheval", "source": {k: src.get(k) for k in ("source", "path", "split")},
             **funnel.stats(len(kept), src["max_records"], len(out)),
             "paper_count": PAPER_COUNT,
             "note": "paper keeps 598 of the 1000 test rows (rule unpublished); shipped data has 806 of the 1000"}
    return out, stats
