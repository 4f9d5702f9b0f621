"""MuSiQue's filter funnel: each rule counts the rows it drops and keeps the first examples' file:line, so a
stats file says which input rows a rule removed; the hop count comes from the id or the decomposition."""
from __future__ import annotations

import json

from ctxcomp.data import load_musique


def _row(i, **kw):
    return {"id": f"2hop__{i}", "question": f"Question {i}?", "answer": "Ann",
            "paragraphs": [{"title": "T", "paragraph_text": "Ann lives here.", "is_supporting": True}], **kw}


def test_every_rule_keeps_its_examples(tmp_path):
    rows = [_row(1),
            _row(2, answerable=False),
            _row(3, answer="  "),
            _row(4, paragraphs=[{"title": "T", "paragraph_text": "x", "is_supporting": False}]),
            {**_row(5), "id": "plain_5"},  # no '<n>hop' prefix and no decomposition
            {**_row(6), "id": "plain_6", "question_decomposition": [{"id": 1}, {"id": 2}, {"id": 3}]},
            _row(1)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs, st = load_musique({"source": "jsonl", "path": str(path)})
    assert [(r["id"], r["meta"]["hops"]) for r in recs] == [("2hop__1", 2), ("plain_6", 3)]
    assert st["dropped"] == {"not_answerable": 1, "no_answer": 1, "no_supporting": 1, "no_hops": 1,
                             "duplicate_id": 1}
    ex = st["dropped_examples"]
    assert {k: ex[k] for k in ("not_answerable", "no_answer", "no_supporting", "no_hops")} == {
        "not_answerable": [f"{path}:2"], "no_answer": [f"{path}:3"], "no_supporting": [f"{path}:4"],
        "no_hops": [f"{path}:5"]}
    assert st["read"] == 7 and st["kept"] == 2 and st["hops"] == {"2": 1, "3": 1}
