"""Does a ConflictQA answer agree with the real-world fact? Rules for keeping only well-established priors.

ConflictQA elicits an LLM's parametric answer (`memory_answer`) and writes a passage for the opposite
(`counter_answer`). Knowledge overwriting measures whether the decoder follows the passage against a prior that is
RIGHT; an item whose memory answer is itself wrong (StrategyQA: "There is no warthog on Broadway", ground truth True)
measures nothing of the kind. So an item is kept only when the memory answer agrees with `ground_truth` and the
counter answer contradicts it.

StrategyQA (`ground_truth` = ["True"] or ["False"]; answers are declarative restatements of a yes/no question):
the polarity of an answer is read from its negation cues relative to the question's. An answer with an even number
of extra cues (0: "More people today are related to Genghis Khan ...") affirms the question (True), an odd number
("... are not related ...", "There is no warthog ...") denies it (False). The cues are whole words: not, no, never,
cannot, none, nobody, nothing, neither, unlikely, impossible, false, incorrect and the contraction n't ("nor" is not
counted: "neither ... nor" is one negation). The polarity is unreadable (None) when the answer is meta-text rather
than a claim ("There is no claim that can be made ...", "(Note: ...)", "I'm sorry ...", "The answer ...",
"This question is ..."); an item whose two answers read the same polarity ("over 150,000" vs "under 150,000": no
negation cue) is unclear too and dropped, not guessed.

popQA (`ground_truth` = the entity's aliases): an answer agrees when some normalised alias occurs in the normalised
answer as a whole-word span.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .records import normalize_text

NEGATION = re.compile(
    r"\b(?:not|no|never|cannot|none|nobody|nothing|neither|unlikely|impossible|false|incorrect)\b|n[’']t\b")
META = re.compile(r"\bclaim\b|\(note\b|\bsorry\b|\banswer\b|\bas an ai\b|\bthis question\b")


def ground_truths(value: Any) -> list[str]:
    """`ground_truth` as a list of non-empty strings (a JSON-encoded list, as PopQA stores aliases, is decoded)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [value]
    if isinstance(value, str):
        value = [value]
    return [str(v).strip() for v in value or [] if str(v).strip()]


def polarity(answer: str, question: str) -> bool | None:
    """True if a StrategyQA answer affirms its yes/no question, False if it denies it, None if unreadable."""
    a = answer.lower()
    if META.search(a):
        return None
    return (len(NEGATION.findall(a)) - len(NEGATION.findall(question.lower()))) % 2 == 0


def strategyqa_truth(truth: list[str]) -> bool | None:
    """The boolean of a StrategyQA ground truth ["True"] / ["False"]; None if it is neither."""
    vals = {t.lower() for t in truth}
    if vals == {"true"}:
        return True
    if vals == {"false"}:
        return False
    return None


def mentions_alias(answer: str, aliases: list[str]) -> bool:
    """Whether some normalised alias is a whole-word span of the normalised answer (popQA)."""
    text = f" {normalize_text(answer)} "
    return any(f" {a} " in text for a in (normalize_text(x) for x in aliases) if a)


def agreement(part: str, question: str, memory: str, counter: str, truth: Any) -> tuple[bool, bool] | None:
    """(memory answer agrees with the ground truth, counter answer agrees with it), or None when unreadable."""
    aliases = ground_truths(truth)
    if part == "strategyQA":
        gt = strategyqa_truth(aliases)
        pm, pc = polarity(memory, question), polarity(counter, question)
        if gt is None or pm is None or pc is None or pm == pc:
            return None
        return pm == gt, pc == gt
    if not aliases:
        return None
    return mentions_alias(memory, aliases), mentions_alias(counter, aliases)
