"""SQuAD-style answer normalisation, EM/F1, abstention detection and drift scoring."""
import math
import sys
from pathlib import Path

import pytest

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from ctxcomp.metrics import qa


def test_normalize_answer():
    assert qa.normalize_answer("  The Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    assert qa.normalize_answer("An apple a day") == "apple day"
    assert qa.normalize_answer("theory") == "theory"  # articles only as whole words
    assert qa.normalize_answer("") == ""


def test_exact_match_and_f1():
    assert qa.exact_match("the Paris.", "paris") == 1.0
    assert qa.exact_match("Paris, France", "Paris") == 0.0
    # pred tokens: [paris, france]; gold: [paris] -> P=1/2, R=1, F1=2/3
    assert qa.f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert qa.f1("blue whale", "the blue whale") == 1.0
    assert qa.f1("red", "blue") == 0.0
    assert qa.f1("", "") == 1.0 and qa.f1("", "x") == 0.0
    # repeated tokens count with multiplicity: pred [a1 a1 b], gold [a1 b b] -> common 2, P=R=2/3
    assert qa.f1("x x y", "x y y") == pytest.approx(2 / 3)


def test_max_over_golds():
    assert qa.max_over_golds(qa.exact_match, "NYC", ["New York", "nyc"]) == 1.0
    assert qa.max_over_golds(qa.f1, "new york city", ["New York", "Boston"]) == pytest.approx(0.8)
    assert qa.max_over_golds(qa.f1, "x", []) == 0.0


@pytest.mark.parametrize("pred", ["Unanswerable.", "unknown", "N/A", "n / a", "None", "No answer",
                                  "Not mentioned in the text.", "The answer is not mentioned.",
                                  "Cannot be determined", "not in the text", "I don't know",
                                  "The question is unanswerable from the context.",
                                  "It cannot be answered from the passage", "The text does not say."])
def test_abstentions(pred):
    assert qa.is_abstention(pred)


# Silence is not abstention: "" and "::::" (punctuation normalises to "") would otherwise give a decoder that emits
# nothing 100 % on unanswerable questions. "unknown" inside a longer answer may be content.
@pytest.mark.parametrize("pred", ["", "   ", "::::", "...", "\n", "Paris", "none of the above were elected",
                                  "1999", "not", "an unknown soldier", "the Unknown Soldier's tomb"])
def test_non_abstentions(pred):
    assert not qa.is_abstention(pred)


def test_contains_answer():
    assert qa.contains_answer("the river Thames, in London", "Thames")
    assert qa.contains_answer("Louvre", "The Louvre")
    assert not qa.contains_answer("Thameside", "Thames")  # whole words only
    assert not qa.contains_answer("", "Thames") and not qa.contains_answer("::::", "x")
    assert qa.contains_answer("it was 3.5 km", "3.5")  # "35" in both after punctuation removal
    assert qa.contains_answer("a", "A") and not qa.contains_answer("b", "A")  # gold of articles only: loose form


def test_drift_correct():
    assert qa.drift_correct("The Louvre", "louvre", answerable=True)
    assert qa.drift_correct("It is the Louvre museum.", "louvre", answerable=True)  # containment, not EM
    assert not qa.drift_correct("unknown", "louvre", answerable=True)
    assert not qa.drift_correct("", None, answerable=False) and not qa.drift_correct("::::", None, answerable=False)
    assert qa.drift_correct("unanswerable", None, answerable=False)
    assert not qa.drift_correct("The Louvre", None, answerable=False)  # a made-up answer is drift
    with pytest.raises(ValueError):
        qa.drift_correct("x", None, answerable=True)


def test_accuracy():
    assert qa.accuracy([True, False, True, True]) == 0.75
    assert math.isnan(qa.accuracy([]))
