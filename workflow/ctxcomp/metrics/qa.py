"""Answer scoring for knowledge overwriting (KO) and semantic drift (SD) questions, SQuAD-style.

- `normalize_answer`: lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace (SQuAD v1.1).
- `exact_match` (EM) in {0, 1} and `f1` (token-overlap F1) in [0, 1]: higher is better.
- `contains_answer`: the paper's "exact substring" SD scoring - the normalised gold span occurs, as whole words, in
  the normalised prediction (a reader that answers "the river Thames" for gold "Thames" is right; EM is stored too).
- `is_abstention`: the model declined to answer, by an explicit phrase only (ABSTENTIONS as the whole answer,
  ABSTENTION_PHRASES anywhere in it). An empty output, or one that normalises to nothing ("::::", "..."), is NOT an
  abstention: a decoder that emits nothing has not said the question cannot be answered, and counting silence as
  abstaining gave a free 100 % on unanswerable questions to decoders that ignore the memory.
- `drift_correct`: SD scoring - an answerable question is right when the answer contains the gold span; an
  unanswerable one is right only if the model abstains explicitly (a made-up answer about something the text never
  said is exactly the drift the paper measures).
"""
from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Callable, Iterable

_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014", "\u2026"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")

#: Normalised phrases that count as "the model abstained" when they are the whole answer. SQuAD normalisation deletes
#: punctuation and articles ("N/A" -> "na", "Not in the text." -> "not in text"); the loose form keeps articles and
#: turns punctuation into spaces ("N/A" -> "n a", "don't" -> "don t"). Both forms are listed. The empty string is
#: deliberately absent (see the module docstring).
ABSTENTIONS: frozenset[str] = frozenset({
    "unanswerable", "not answerable", "unknown", "no answer", "none", "n a", "na", "not mentioned",
    "not stated", "not specified", "not given", "not provided", "not in text", "not in context",
    "not in passage", "cannot be determined", "can not be determined", "cannot determine", "cannot answer",
    "cannot be answered", "can not be answered", "not enough information", "insufficient information",
    "no information", "i dont know", "dont know", "i don t know", "don t know", "not known", "not available",
    "not in the text", "not in the context", "not in the passage",
})

#: Phrases (loose form) that signal abstention anywhere in a longer answer ("The question is unanswerable from the
#: context.", "It cannot be answered."). Only unambiguous ones: "none" or "unknown" inside an answer may be content.
ABSTENTION_PHRASES: tuple[str, ...] = (
    "unanswerable", "cannot be answered", "can not be answered", "cannot answer", "can t answer",
    "cannot be determined", "not enough information", "insufficient information", "does not say",
    "does not mention", "does not provide", "does not contain", "doesn t say", "doesn t mention",
    "not mentioned", "not stated", "not specified", "i don t know", "i do not know",
)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower-case, remove punctuation, remove articles (a, an, the), collapse whitespace."""
    s = (s or "").lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(pred: str, gold: str) -> float:
    """1.0 if the normalised prediction equals the normalised gold answer, else 0.0. Higher is better."""
    return float(normalize_answer(pred) == normalize_answer(gold))


def f1(pred: str, gold: str) -> float:
    """SQuAD token F1 between normalised prediction and gold (bag-of-tokens overlap). Higher is better.

    Two empty answers score 1.0; one empty answer scores 0.0.
    """
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(fn: Callable[[str, str], float], pred: str, golds: Iterable[str]) -> float:
    """Best score of `pred` over several acceptable gold answers (SQuAD convention); 0.0 if there are none."""
    return max((fn(pred, g) for g in golds), default=0.0)


def _loose(s: str) -> str:
    """Lower-case, punctuation to spaces, articles kept, whitespace collapsed ("Don't" -> "don t")."""
    return " ".join("".join(" " if ch in _PUNCT else ch for ch in (s or "").lower()).split())


def is_abstention(pred: str) -> bool:
    """True only if the prediction says, in words, that it cannot answer. Empty or punctuation-only is False.

    Whole-answer phrases (ABSTENTIONS: "unanswerable", "N/A", "unknown", "none", ...) are checked under SQuAD
    normalisation and under a looser one that turns punctuation into spaces and keeps articles (so "n / a" is
    "n a", not "n"), also after a leading "answer is"/"it is"/"this is" and before a trailing "in/from the
    text/context/passage" ("The answer is not mentioned in the text."); ABSTENTION_PHRASES count anywhere.
    """
    loose = _loose(pred)
    if not loose:  # _loose collapses whitespace: only an answer without words is empty
        return False
    padded = f" {loose} "
    if any(f" {p} " in padded for p in ABSTENTION_PHRASES):
        return True
    for s in (normalize_answer(pred), loose):
        head = re.sub(r"^(the )?(answer is|answer|it is|this is|that is|information is)\s+", "", s)
        tail = re.sub(r"\s+(in|from)\s+(the )?(text|context|passage|document|memory)$", "", head)
        if {s, head, tail} & ABSTENTIONS:
            return True
    return False


def contains_answer(pred: str, gold: str) -> bool:
    """The normalised gold span occurs in the normalised prediction as whole words ("exact substring" scoring).

    A gold that normalises to nothing (an answer made only of articles or punctuation) falls back to its loose form.
    """
    g, p = normalize_answer(gold), normalize_answer(pred)
    if not g:
        g, p = _loose(gold), _loose(pred)
    return bool(g) and f" {g} " in f" {p} "


def drift_correct(pred: str, gold: str | None, answerable: bool) -> bool:
    """Semantic-drift correctness: answerable -> the prediction contains the gold span (`contains_answer`);
    unanswerable -> the model abstains explicitly (`is_abstention`)."""
    if answerable:
        if gold is None:
            raise ValueError("an answerable question needs a gold answer")
        return contains_answer(pred, gold)
    return is_abstention(pred)


def accuracy(flags: Iterable[bool | float]) -> float:
    """Mean of 0/1 (or fractional) correctness flags; NaN for an empty list (no data is not 0% accuracy)."""
    vals = [float(f) for f in flags]
    return sum(vals) / len(vals) if vals else math.nan
