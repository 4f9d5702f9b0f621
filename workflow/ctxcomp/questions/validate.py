"""Checks a question set against its context; every problem is phrased so it can be shown to the model on a re-ask.

Answerable answers must be substrings of the context after whitespace normalisation only (no case folding, no
punctuation stripping): downstream metrics score a reader's answer against the exact span, so a paraphrased "answer"
would silently corrupt the benchmark. The accepted answer is the span as it appears in the raw context.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .schema import ALL_DIMENSIONS, DIMENSIONS, UNANSWERABLE
from .settings import QuestionSettings

_NULL_ANSWERS = {"", "null", "none", "n/a", "na", "unanswerable", "not answerable", "unknown"}


@dataclass
class Validation:
    questions: list[dict] = field(default_factory=list)  # {dimension, question, answer, answerable}
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def normalize_ws(text: str) -> str:
    return " ".join(text.split())


def find_span(context: str, answer: str) -> str | None:
    """The raw context span equal to `answer` up to whitespace (runs of any whitespace match each other), or None."""
    tokens = answer.split()
    if not tokens:
        return None
    m = re.search(r"\s+".join(re.escape(t) for t in tokens), context)
    return m.group(0) if m else None


def normalize_dimension(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    name = re.sub(r"[\s\-]+", "_", value.strip().lower())
    return name if name in ALL_DIMENSIONS else None


def _question_key(text: str) -> str:
    return normalize_ws(text).lower().rstrip(" ?.!")


def _snippet(text: Any, n: int = 60) -> str:
    text = normalize_ws(str(text))
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def validate_questions(items: list, context: str, s: QuestionSettings) -> Validation:
    """Check each item, then the mix: total count, unanswerable count and dimension coverage."""
    out = Validation()
    seen: dict[str, int] = {}
    for i, item in enumerate(items, 1):
        where = f"question {i}"
        if not isinstance(item, dict):
            out.problems.append(f"{where} is not a JSON object")
            continue
        question = item.get("question")
        if not isinstance(question, str) or not question.strip():
            out.problems.append(f'{where} has no "question" text')
            continue
        question = normalize_ws(question)
        where = f"question {i} ({_snippet(question)})"
        dim = normalize_dimension(item.get("dimension"))
        if dim is None:
            out.problems.append(f"{where} has unknown dimension {_snippet(item.get('dimension'))}; use one of "
                                f"{', '.join(ALL_DIMENSIONS)}")
            continue
        key = _question_key(question)
        if key in seen:
            out.problems.append(f"{where} duplicates question {seen[key]}")
            continue
        seen[key] = i
        answer = item.get("answer")
        if dim == UNANSWERABLE:
            if answer is not None and not (isinstance(answer, str) and answer.strip().lower() in _NULL_ANSWERS):
                out.problems.append(f"{where} is marked unanswerable, so its answer must be null, not "
                                    f"{_snippet(answer)}")
                continue
            out.questions.append({"dimension": dim, "question": question, "answer": None, "answerable": False})
            continue
        if not isinstance(answer, str) or not answer.strip():
            out.problems.append(f"{where} ({dim}) needs an answer copied from the passage")
            continue
        span = find_span(context, answer)
        if span is None:
            out.problems.append(f"{where}: answer {_snippet(answer)} is not an exact substring of the passage; "
                                "copy the span verbatim")
            continue
        out.questions.append({"dimension": dim, "question": question, "answer": span, "answerable": True})
    # The mix is judged on the reply as written (invalid items included), so one re-ask can fix everything at once.
    dims = [normalize_dimension(item.get("dimension")) for item in items if isinstance(item, dict)]
    n_unans = dims.count(UNANSWERABLE)
    if len(items) != s.per_context:
        out.problems.append(f"expected exactly {s.per_context} questions, got {len(items)}")
    if n_unans != s.unanswerable_per_context:
        out.problems.append(f"expected exactly {s.unanswerable_per_context} unanswerable questions, got {n_unans}")
    if s.needs_full_coverage:
        missing = [d for d in DIMENSIONS if d not in dims]
        if missing:
            out.problems.append(f"no question for dimension(s): {', '.join(missing)}; cover all "
                                f"{len(DIMENSIONS)} dimensions")
    return out
