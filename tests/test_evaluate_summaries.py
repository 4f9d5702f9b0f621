"""Task summaries recomputed from designed per-unit rows: every key, the values counted by hand, the intervals against
scipy.stats.bootstrap (percentile, paired where the control shares the units) and BLEU against sacreBLEU."""
from __future__ import annotations

import numpy as np
import pytest
from sacrebleu.metrics import BLEU
from scipy import stats as sps

from ctxcomp.evaluate import controls as ctl
from ctxcomp.evaluate import tasks
from ctxcomp.questions.schema import ALL_DIMENSIONS

BOOT = ctl.Bootstrap(resamples=300, seed=7)
NONE_ENTRY = {"value": None, "ci95": None, "diff_ci95": None, "distinguishable": None}


def _ci(data: tuple, statistic, paired: bool = False) -> list:
    res = sps.bootstrap(data, statistic, n_resamples=BOOT.resamples, method="percentile", vectorized=True,
                        paired=paired, rng=np.random.default_rng(BOOT.seed))
    return pytest.approx([res.confidence_interval.low, res.confidence_interval.high], rel=1e-9)


def _mean_ci(flags) -> list:
    return _ci((np.asarray(flags, dtype=float),), lambda x, axis: x.mean(axis=axis))


def _diff_ci(a, c) -> list:
    a, c = np.asarray(a, dtype=float), np.asarray(c, dtype=float)
    return _ci((a, c), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis), paired=True)


def _cluster_ci(sums, counts) -> list:
    return _ci((np.asarray(sums, float), np.asarray(counts, float)),
               lambda s, n, axis: s.sum(axis=axis) / n.sum(axis=axis), paired=True)


def test_versus_without_control_and_chance_without_candidates():
    assert ctl.versus(np.ones((3, 2)), None, lambda s: s[:, 0], BOOT) == NONE_ENTRY
    assert ctl.chance([]) == {"value": None}
    assert ctl.chance([2, 4]) == {"value": 0.375}
    flags = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    stats = np.stack([flags, np.ones(6)], axis=1)
    got = ctl.headline(stats, lambda s: s[:, 0] / s[:, 1], BOOT, "sample")
    assert got == {"value": pytest.approx(4 / 6), "ci95": _mean_ci(flags),
                   "bootstrap": {"resamples": 300, "seed": 7, "unit": "sample"}}
    control = np.stack([np.zeros(6), np.ones(6)], axis=1)
    entry = ctl.versus(stats, control, lambda s: s[:, 0] / s[:, 1], BOOT)
    assert entry["diff_ci95"] == _diff_ci(flags, np.zeros(6)) and entry["value"] == 0.0


def test_knowledge_overwriting_summary():
    correct = [True, False, True, True, False, True]
    norm = [True, True, False, False, False, True]
    shuffled = [False, False, True, False, True, False]
    prior = [False, True, False, False, False, False]
    rows = [{"correct": c, "correct_norm": k, "memory_vectors": v, "shuffled_z": {"correct": s},
             "no_memory": {"correct": p}} for c, k, v, s, p in zip(correct, norm, [4, 8, 4, 8, 4, 8], shuffled, prior)]
    got = tasks.ko_summary(rows, [2, 4, 2, 4, 2, 4], BOOT, controls=True)
    assert set(got) == {"metric", "value", "ci95", "bootstrap", "n", "controls", "details"}
    assert got["metric"] == "accuracy" and got["n"] == 6 and got["value"] == pytest.approx(4 / 6)
    assert got["ci95"] == _mean_ci(correct)
    assert got["bootstrap"] == {"resamples": 300, "seed": 7, "unit": "sample"}
    assert set(got["controls"]) == {"shuffled_z", "no_memory", "chance"}
    for name, flags in (("shuffled_z", shuffled), ("no_memory", prior)):
        entry = got["controls"][name]
        assert entry["value"] == pytest.approx(np.mean(flags)) and entry["ci95"] == _mean_ci(flags)
        assert entry["diff_ci95"] == _diff_ci(correct, flags)
        assert entry["distinguishable"] is bool(entry["diff_ci95"][0] > 0)
    assert got["controls"]["chance"] == {"value": pytest.approx(0.375)}
    assert got["details"] == {"accuracy_norm": {"value": pytest.approx(0.5), "ci95": _mean_ci(norm)},
                              "chance": pytest.approx(0.375), "memory_vectors_mean": 6.0}
    # rows without control measurements (controls off at evaluation time), a single row, no rows
    bare = [{k: r[k] for k in ("correct", "correct_norm", "memory_vectors")} for r in rows]
    got = tasks.ko_summary(bare, [2] * 6, BOOT, controls=True)
    assert got["controls"] == {"shuffled_z": NONE_ENTRY, "no_memory": NONE_ENTRY, "chance": {"value": 0.5}}
    assert "controls" not in tasks.ko_summary(rows, [2] * 6, BOOT, controls=False)
    one = tasks.ko_summary(rows[:1], [2], BOOT, controls=True)
    assert one["controls"]["no_memory"]["diff_ci95"] == [1.0, 1.0] and one["value"] == 1.0
    empty = tasks.ko_summary([], [], BOOT, controls=True)
    assert empty["value"] is None and empty["ci95"] is None and empty["n"] == 0
    assert empty["details"] == {"accuracy_norm": {"value": None, "ci95": None}, "chance": None,
                                "memory_vectors_mean": None}


def _drift_rows():
    extra = "zz_not_a_paper_dimension"
    d0, d1 = ALL_DIMENSIONS[0], ALL_DIMENSIONS[1]
    spec = [  # context, dimension, answerable, correct, em, abstained, gold in memory text, shuffled correct
        ("c1", d0, True, True, True, False, True, False),
        ("c1", d0, True, False, False, False, False, False),
        ("c1", d1, False, True, False, True, None, True),
        ("c2", d1, True, True, False, False, True, False),
        ("c2", extra, False, False, False, False, None, False),
        ("c3", d0, True, True, True, False, None, True),
        ("c3", extra, True, False, False, True, True, False),
        ("c4", d1, True, True, True, False, False, False),
    ]
    keys = ("context_id", "dimension", "answerable", "correct", "em", "abstained", "gold_in_memory_text")
    rows = [dict(zip(keys, s[:7]), shuffled_z={"correct": s[7]}) for s in spec]
    return rows, extra


def _cluster(rows, key="correct"):
    ids = list(dict.fromkeys(r["context_id"] for r in rows))
    sums = [sum(float(r[key]) for r in rows if r["context_id"] == c) for c in ids]
    counts = [sum(1.0 for r in rows if r["context_id"] == c) for c in ids]
    return sums, counts


def test_semantic_drift_summary():
    rows, extra = _drift_rows()
    got = tasks.drift_summary(rows, BOOT, controls=True)
    assert set(got) == {"metric", "value", "ci95", "bootstrap", "n", "controls", "details"}
    assert got["metric"] == "accuracy" and got["n"] == 8 and got["value"] == pytest.approx(5 / 8)
    assert got["bootstrap"] == {"resamples": 300, "seed": 7, "unit": "context"}
    sums, counts = _cluster(rows)  # per context: c1 2/3, c2 1/2, c3 1/2, c4 1/1
    assert (sums, counts) == ([2.0, 1.0, 1.0, 1.0], [3.0, 2.0, 2.0, 1.0])
    assert got["ci95"] == _cluster_ci(sums, counts)
    shuffled = got["controls"]["shuffled_z"]
    assert shuffled["value"] == pytest.approx(2 / 8)
    assert shuffled["ci95"] == _cluster_ci([1.0, 0.0, 1.0, 0.0], counts)
    d = got["details"]
    assert set(d) == {"answerable", "unanswerable", "per_dimension", "em", "abstention_rate",
                      "answerable_gold_in_memory_text"}
    answerable = [r for r in rows if r["answerable"]]
    assert d["answerable"]["value"] == pytest.approx(4 / 6) and d["answerable"]["n"] == 6
    assert d["answerable"]["ci95"] == _cluster_ci(*_cluster(answerable))
    assert d["unanswerable"]["value"] == pytest.approx(1 / 2) and d["unanswerable"]["n"] == 2
    assert list(d["per_dimension"]) == [*ALL_DIMENSIONS, extra]
    for dim, value, n in ((ALL_DIMENSIONS[0], 2 / 3, 3), (ALL_DIMENSIONS[1], 1.0, 3), (extra, 0.0, 2)):
        part = d["per_dimension"][dim]
        assert part["value"] == pytest.approx(value) and part["n"] == n
        assert part["ci95"] == _cluster_ci(*_cluster([r for r in rows if r["dimension"] == dim]))
    for dim in ALL_DIMENSIONS[2:]:
        assert d["per_dimension"][dim] == {"value": None, "ci95": None, "n": 0}
    assert set(d["em"]) == {"value", "ci95"} and d["em"]["value"] == pytest.approx(3 / 8)
    assert d["em"]["ci95"] == _cluster_ci(*_cluster(rows, "em"))
    assert d["abstention_rate"] == pytest.approx(2 / 8)
    assert d["answerable_gold_in_memory_text"] == pytest.approx(3 / 5)  # answerable rows with a known flag: 3 of 5
    # no control measurements, one row, no rows
    bare = [{k: v for k, v in r.items() if k != "shuffled_z"} for r in rows]
    assert tasks.drift_summary(bare, BOOT, controls=True)["controls"] == {"shuffled_z": NONE_ENTRY}
    assert "controls" not in tasks.drift_summary(rows, BOOT, controls=False)
    one = tasks.drift_summary(rows[:1], BOOT, controls=True)
    assert one["controls"]["shuffled_z"]["diff_ci95"] == [1.0, 1.0]
    assert one["details"]["answerable_gold_in_memory_text"] == 1.0
    unknown = tasks.drift_summary(rows[2:3], BOOT, controls=False)  # unanswerable only: no gold to look for
    assert unknown["details"]["answerable_gold_in_memory_text"] is None
    empty = tasks.drift_summary([], BOOT, controls=True)
    assert empty["value"] is None and empty["n"] == 0 and empty["controls"] == {"shuffled_z": NONE_ENTRY}
    assert empty["details"]["abstention_rate"] is None and empty["details"]["answerable_gold_in_memory_text"] is None


def test_reconstruction_summary():
    refs = ["the cat sat on the mat today", "a quick brown fox jumps over the dog", "one two three four five six",
            "red green blue yellow black white"]
    hyps = ["the cat sat on a mat today", "a quick brown fox jumps over the dog", "one two three five six",
            "red green yellow black"]
    shuffled = ["one two three four", "the cat", "red blue", "a fox"]
    rows = [{"reference": r, "hypothesis": h, "sentence_bleu": s, "shuffled_z": {"hypothesis": z}}
            for r, h, s, z in zip(refs, hyps, [0.5, 1.0, 0.25, 0.25], shuffled)]
    got = tasks.reconstruction_summary(rows, BOOT, controls=True)
    assert set(got) == {"metric", "value", "ci95", "bootstrap", "n", "controls", "details"}
    metric = BLEU()
    want = metric.corpus_score(hyps, [refs])
    assert got["metric"] == "bleu" and got["n"] == 4 and got["value"] == pytest.approx(want.score / 100, rel=1e-12)
    assert got["bootstrap"] == {"resamples": 300, "seed": 7, "unit": "sample"}
    idx = np.random.default_rng(BOOT.seed).integers(0, 4, (BOOT.resamples, 4))
    reps = [BLEU().corpus_score([hyps[i] for i in row], [[refs[i] for i in row]]).score / 100 for row in idx]
    assert got["ci95"] == pytest.approx(np.percentile(reps, [2.5, 97.5]).tolist(), rel=1e-9)
    ctrl = got["controls"]["shuffled_z"]
    assert ctrl["value"] == pytest.approx(BLEU().corpus_score(shuffled, [refs]).score / 100, rel=1e-12)
    assert got["details"] == {"signature": str(metric.get_signature()), "score_100": pytest.approx(want.score),
                              "mean_sentence_bleu": 0.5}
    bare = [{k: v for k, v in r.items() if k != "shuffled_z"} for r in rows]
    assert tasks.reconstruction_summary(bare, BOOT, controls=True)["controls"] == {"shuffled_z": NONE_ENTRY}
    assert "controls" not in tasks.reconstruction_summary(rows, BOOT, controls=False)
    one = tasks.reconstruction_summary(rows[1:2], BOOT, controls=True)
    assert one["value"] == pytest.approx(1.0) and one["controls"]["shuffled_z"]["value"] is not None
    empty = tasks.reconstruction_summary([], BOOT, controls=True)
    assert empty["value"] is None and empty["n"] == 0 and empty["controls"] == {"shuffled_z": NONE_ENTRY}
    assert empty["details"] == {"signature": None, "score_100": None, "mean_sentence_bleu": None}
