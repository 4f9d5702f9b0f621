"""The question set's vocabulary and row layout, in one place so producers and consumers cannot drift apart.

The seven dimensions probe which kinds of meaning a compressed context keeps or loses ("semantic drift"): the gist
(main_topic), named things (entity_list), the exact verb (predicate_exactness), how two mentions relate
(relation_anchor), what a pronoun points to (coreference), who did what to whom (role_binding) and what a qualifier
attaches to (modifier_scope). Unanswerable questions check that a reader does not invent facts the context lacks.
"""
from __future__ import annotations

from typing import TypedDict

DIMENSIONS: tuple[str, ...] = (
    "main_topic",
    "entity_list",
    "predicate_exactness",
    "relation_anchor",
    "coreference",
    "role_binding",
    "modifier_scope",
)
UNANSWERABLE = "unanswerable"
ALL_DIMENSIONS: tuple[str, ...] = DIMENSIONS + (UNANSWERABLE,)


class Question(TypedDict):
    qid: str
    dimension: str
    question: str
    answer: str | None
    answerable: bool


class QuestionRow(TypedDict):
    context_id: str
    source: str
    context: str
    status: str  # "ok" | "failed"
    reason: str | None
    questions: list[Question]


def qid(context_id: str, index: int) -> str:
    """Question ids are stable across runs: the context id plus the question's position in the accepted reply."""
    return f"{context_id}-q{index:02d}"
