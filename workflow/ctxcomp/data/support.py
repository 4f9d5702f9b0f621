"""Lexical support of a candidate answer by a context: used to keep only unambiguous knowledge conflicts.

A multiple-choice conflict item measures "does the model follow the context?" only if the context clearly backs the
counterfactual answer and backs no alternative better. Without an NLI model (no network, CPU-only tiny runs) this
is judged lexically on the words that set the answer apart from each alternative.
"""
from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an the of to in on at by for with from and or but is are was were be been being it its this that these those "
    "as will would can could may might do does did has have had not no than then so such into onto over under about "
    "their there they them he she his her we our you your i".split())


def _stem(w: str) -> str:
    """Truncation stemming: the first 5 letters ('gravity' ~ 'gravitational', 'stronger' ~ 'strongly')."""
    return w[:5]


def content_words(text: str) -> set[str]:
    """Lowercased words without stopwords, truncated to 5 letters ('rotates' and 'rotation' both give 'rotat')."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def pairwise_support(candidates: list[str], index: int, context: str) -> list[float | None]:
    """For each other candidate j: the share of the words that set candidate `index` apart from j
    (its content words that j lacks) which occur in the context.

    None for a j whose words include all of the candidate's (e.g. the same words re-ordered: "kinetic energy
    decreases and potential energy increases" vs the swap): words alone cannot show the context backs one of them.
    Contexts that argue for a counterfactual answer usually also mention the real one to refute it, so support is
    measured for the answer only, not as a contest with the alternatives.
    """
    ctx = content_words(context)
    words = [content_words(c) for c in candidates]
    out: list[float | None] = []
    for j, other in enumerate(words):
        if j == index:
            continue
        own = words[index] - other
        out.append(len(own & ctx) / len(own) if own else None)
    return out
