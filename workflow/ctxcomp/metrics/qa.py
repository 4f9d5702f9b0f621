"""Answer scoring for knowledge overwriting (KO) and semantic drift (SD) questions, SQuAD-style.

- `normalize_answer`: lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace (SQuAD v1.1).
- `exact_match` (EM) in {0, 1} and `f1` (token-overlap F1) in [0, 1]: higher is better.
- `is_abstention`: the model declined to answer (empty answer or a phrase in ABSTENTIONS after normalisation).
- `drift_correct`: SD scoring - an answerable question is right on EM; an unanswerable one is right only if the model
  abstains (a made-up answer about something the text never said is exactly the drift the paper measures).
"""
from __future__ import annotations

import collections
import math
import re
import string
from typing import Callable, Iterable

_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014", "\u2026"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")

#: Normalised phrases that count as "the model abstained". SQuAD normalisation deletes punctuation and articles
#: ("N/A" -> "na", "Not in the text." -> "not in text"); the loose form keeps articles and turns punctuation into
#: spaces ("N/A" -> "n a", "don't" -> "don t"). Both forms are listed.
ABSTENTIONS: frozenset[str] = frozenset({
    "", "unanswerable", "not answerable", "unknown", "no answer", "none", "n a", "na", "not mentioned",
    "not stated", "not specified", "not given", "not provided", "not in text", "not in context",
    "not in passage", "cannot be determined", "can not be determined", "cannot determine", "cannot answer",
    "cannot be answered", "can not be answered", "not enough information", "insufficient information",
    "no information", "i dont know", "dont know", "i don t know", "don t know", "not known", "not available",
    "not in the text", "not in the context", "not in the passage",
})


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


def is_abstention(pred: str) -> bool:
    """True if the prediction is empty or one of ABSTENTIONS (e.g. "unanswerable", "N/A", "unknown", "none").

    Checked under SQuAD normalisation and under a looser one that turns punctuation into spaces and keeps articles
    (so "n / a" is "n a", not "n"). Also accepts such a phrase after a leading "answer is"/"it is"/"this is" or
    before a trailing "in/from the text/context/passage" ("The answer is not mentioned in the text."), because
    decoders rarely emit the bare phrase.
    """
    loose = " ".join("".join(" " if ch in _PUNCT else ch for ch in (pred or "").lower()).split())
    for s in (normalize_answer(pred), loose):
        head = re.sub(r"^(the )?(answer is|answer|it is|this is|that is|information is)\s+", "", s)
        tail = re.sub(r"\s+(in|from)\s+(the )?(text|context|passage|document|memory)$", "", head)
        if s in ABSTENTIONS or head in ABSTENTIONS or tail in ABSTENTIONS - {""}:
            return True
    return False


def drift_correct(pred: str, gold: str | None, answerable: bool) -> bool:
    """Semantic-drift correctness: answerable -> exact match with gold; unanswerable -> the model abstains."""
    if answerable:
        if gold is None:
            raise ValueError("an answerable question needs a gold answer")
        return bool(exact_match(pred, gold))
    return is_abstention(pred)


def accuracy(flags: Iterable[bool | float]) -> float:
    """Mean of 0/1 (or fractional) correctness flags; NaN for an empty list (no data is not 0% accuracy)."""
    vals = [float(f) for f in flags]
    return sum(vals) / len(vals) if vals else math.nan
