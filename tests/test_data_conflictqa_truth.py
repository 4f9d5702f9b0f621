"""ConflictQA keeps only conflicts against a well-established fact: the memory answer agrees with ground_truth and
the counter answer contradicts it. Counts on the shipped StrategyQA files, hand-checked examples, popQA aliases."""
from __future__ import annotations

import json

import pytest

from ctxcomp.config import REPO_ROOT
from ctxcomp.data import load_conflictqa
from ctxcomp.data.conflictqa import rejection
from ctxcomp.data.conflictqa_truth import agreement, ground_truths, mentions_alias, polarity

DATA = REPO_ROOT / "workflow" / "data" / "conflictqa"
CONFLICTQA = {"source": "jsonl", "path": str(DATA), "parts": ["strategyQA"], "max_records": 0}


@pytest.fixture(scope="module")
def loaded():
    return load_conflictqa(CONFLICTQA, seed=1234)


def _raw(question: str) -> list[dict]:
    rows = []
    for f in sorted(DATA.glob("conflictQA-strategyQA-*.json")):
        rows += [d for d in map(json.loads, f.open()) if d["question"] == question]
    assert rows, question
    return rows


def test_counts_per_rule_and_per_part(loaded):
    recs, st = loaded
    assert st["read"] == 4497
    assert st["dropped"]["prior_wrong"] == 2768 and st["dropped"]["truth_unclear"] == 193
    assert st["kept"] == 1036 and len(recs) == 1036
    part = st["per_part"]["strategyQA"]
    assert part["read"] == 4497 and part["kept"] == 1036 and part["written"] == 1036
    assert part["dropped"] == st["dropped"]
    assert set(st["per_part"]) == {"strategyQA"}
    # kept priors agree with the fact: True questions are answered affirmatively by the memory answer, False ones
    # negatively (checked on the records' own ground truth, which the loader copies into meta)
    by_truth = {r["meta"]["ground_truth"][0] for r in recs}
    assert by_truth == {"True", "False"}


@pytest.mark.parametrize("question, truth, memory_ok", [
    # hand-checked against the facts: Pumbaa (The Lion King musical) is a warthog on Broadway -> prior "no" is wrong
    ("Is there a warthog on Broadway?", "True", False),
    # Wonder Woman (2017) grossed ~$820M, a 737 costs ~$100M -> the prior "not covered" is wrong
    ("Is a Boeing 737 cost covered by Wonder Woman (2017 film) box office receipts?", "True", False),
    # right priors: genetic legacy of Genghis Khan; a band's members are not police officers
    ("Are more people today related to Genghis Khan than Julius Caesar?", "True", True),
    ("Could the members of The Police perform lawful arrests?", "False", True),
    ("Is Argon near Neon on the periodic table of elements?", "True", True),
])
def test_hand_checked_items(loaded, question, truth, memory_ok):
    recs, _ = loaded
    rows = _raw(question)
    assert {r["ground_truth"][0] for r in rows} == {truth}
    verdicts = {rejection("strategyQA", r) for r in rows}
    kept = [r for r in recs if r["question"] == question]
    if memory_ok:
        assert None in verdicts and len(kept) == 1
        rec = kept[0]
        counter = rec["candidates"][rec["correct_index"]]
        assert any(counter == r["counter_answer"].strip() for r in rows)
    else:
        assert verdicts == {"prior_wrong"} and kept == []


def test_item_is_kept_from_the_first_llm_with_the_right_prior(loaded):
    # desert mongooses (e.g. the yellow mongoose) are sand-coloured: ground truth True; chatgpt, llama2-70b and
    # llama2-7b said "does not have", palm2 (the 4th file) said it has
    recs, _ = loaded
    q = "Does a mongoose have natural camouflage for desert?"
    rows = _raw(q)
    assert [rejection("strategyQA", r) for r in rows] == ["prior_wrong"] * 3 + [None] + ["prior_wrong"] * 2
    (rec,) = [r for r in recs if r["question"] == q]
    assert rec["meta"]["llm"] == "palm2"
    assert rec["candidates"][rec["correct_index"]] == "A mongoose does not have natural camouflage for the desert."


def test_unreadable_items_are_dropped_not_guessed():
    # no negation cue separates "over" from "under": both answers read as affirmative
    assert rejection("strategyQA", _raw("Were there under 150,000 American troops in Vietnam in 1965?")[0]) \
        == "truth_unclear"
    # meta-text instead of a claim
    rows = _raw("Did Hamlet's author use email?")
    meta = [r for r in rows if r["counter_answer"].startswith("The answer given is not true")]
    assert meta and rejection("strategyQA", meta[0]) == "truth_unclear"


def test_polarity_rules():
    q = "Would someone in Boston not receive the Toronto Star?"
    assert polarity("Someone in Boston would not receive the Toronto Star.", q) is True  # the question's own "not"
    assert polarity("Someone in Boston would receive the Toronto Star.", q) is False
    assert polarity("Neither Kublai Khan nor his grandfather practiced monogamy.", "Did either ... ?") is False
    assert polarity("You can't buy Casio products at Petco.", "Can you buy ...?") is False
    assert polarity("It is unlikely to find a crucifix in Karachi.", "Are you likely to ...?") is False
    assert polarity("I'm sorry, I cannot make a claim.", "Is it ...?") is None
    assert polarity("Nothing is known.", "Is ...?") is False and polarity("It is known.", "Is ...?") is True


def test_popqa_aliases(tmp_path):
    assert ground_truths('["politician", "political leader"]') == ["politician", "political leader"]
    assert ground_truths(["Paris", " "]) == ["Paris"] and ground_truths("Paris") == ["Paris"]
    assert mentions_alias("George Rankin's occupation is a politician.", ["political leader", "politician"])
    assert not mentions_alias("He is a politicians' aide.", ["politician"])  # whole words only
    rows = [
        {"question": "What is George Rankin's occupation?", "ground_truth": ["politician", "political leader"],
         "memory_answer": "George Rankin is a politician.", "counter_answer": "George Rankin is a journalist.",
         "counter_memory": "George Rankin worked as a journalist for forty years."},
        {"question": "In what country is Kentucky?", "ground_truth": '["United States of America", "USA"]',
         "memory_answer": "Kentucky is in Canada.", "counter_answer": "Kentucky is in Mexico.",
         "counter_memory": "Kentucky is a state of Mexico."},
        {"question": "Who wrote Hamlet?", "ground_truth": ["William Shakespeare", "Shakespeare"],
         "memory_answer": "Hamlet was written by Shakespeare.", "counter_answer": "Shakespeare did not write it.",
         "counter_memory": "Some claim Shakespeare did not write Hamlet."},
        {"question": "What is X's genre?", "ground_truth": [], "memory_answer": "rock", "counter_answer": "jazz",
         "counter_memory": "X plays jazz."},
    ]
    (tmp_path / "conflictQA-popQA-test.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert agreement("popQA", rows[0]["question"], rows[0]["memory_answer"], rows[0]["counter_answer"],
                     rows[0]["ground_truth"]) == (True, False)
    recs, st = load_conflictqa({"source": "jsonl", "path": str(tmp_path), "parts": ["popQA"]})
    assert [r["question"] for r in recs] == ["What is George Rankin's occupation?"]
    assert st["per_part"]["popQA"]["dropped"] == {"empty_context": 0, "empty_answer": 0, "same_answer": 0,
                                                  "truth_unclear": 1, "prior_wrong": 1, "counter_true": 1,
                                                  "duplicate_question": 0}


def test_missing_ground_truth_is_a_data_error(tmp_path):
    from ctxcomp.data import DataError

    row = {"question": "Q?", "memory_answer": "a", "counter_answer": "b", "counter_memory": "c"}
    (tmp_path / "conflictQA-strategyQA-x.json").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"conflictQA-strategyQA-x.json:1"):
        load_conflictqa({"source": "jsonl", "path": str(tmp_path), "parts": ["strategyQA"]})
