"""Prompt construction: a versioned template file plus a repair message, so the exact wording is part of the data.

The template lives in `prompts/<version>.txt`; changing the wording means adding a new version file, which changes
the cache key (through the messages) and keeps older question sets reproducible.
"""
from __future__ import annotations

import string
from functools import cache
from pathlib import Path

from .schema import DIMENSIONS
from .settings import QuestionSettings

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
MAX_PROBLEMS_SHOWN = 15


@cache
def load_template(version: str) -> string.Template:
    """Read prompts/<version>.txt; a clear error lists the versions that exist."""
    path = PROMPT_DIR / f"{version}.txt"
    if not path.is_file():
        have = sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))
        raise FileNotFoundError(f"no question prompt version {version!r} (have: {', '.join(have)})")
    return string.Template(path.read_text(encoding="utf-8"))


def coverage_rule(s: QuestionSettings) -> str:
    if s.n_answerable == 0:
        return "There are no answerable questions this time."
    if s.needs_full_coverage:
        return (f"Cover every one of the {len(DIMENSIONS)} dimensions at least once and spread the remaining "
                "answerable questions over the dimensions.")
    return f"Use {s.n_answerable} different dimensions."


def build_messages(context: str, s: QuestionSettings) -> list[dict]:
    """The first request for a context: a single user turn (DeepSeek-R1 is documented to work best without a system
    prompt)."""
    text = load_template(s.prompt_version).substitute(
        context=context,
        per_context=s.per_context,
        n_answerable=s.n_answerable,
        n_unanswerable=s.unanswerable_per_context,
        dimensions=", ".join(DIMENSIONS),
        coverage_rule=coverage_rule(s),
    )
    return [{"role": "user", "content": text}]


def repair_message(problems: list[str], s: QuestionSettings) -> dict:
    """The re-ask after an invalid reply: says what was wrong so the model can fix it rather than start over."""
    shown = problems[:MAX_PROBLEMS_SHOWN]
    more = len(problems) - len(shown)
    lines = "\n".join(f"- {p}" for p in shown) + (f"\n- ... and {more} more problems" if more > 0 else "")
    text = (
        "Your reply could not be accepted because of these problems:\n"
        f"{lines}\n\n"
        f"Reply again with the complete corrected JSON object: exactly {s.per_context} questions, "
        f"{s.n_answerable} answerable (answers copied verbatim from the passage) and "
        f"{s.unanswerable_per_context} unanswerable (dimension \"unanswerable\", answer null). "
        "Output the JSON object only."
    )
    return {"role": "user", "content": text}
