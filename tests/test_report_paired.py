"""Paired bootstrap of differences between cells: exact deltas, intervals against normal approximations, units."""
import math

import numpy as np
import pandas as pd
import pytest
from sacrebleu.metrics import BLEU

from ctxcomp.report import paired


def _ko(flags, ids=None):
    ids = ids if ids is not None else [f"q{i}" for i in range(len(flags))]
    return pd.DataFrame({"id": ids, "correct": flags})


def test_accuracy_delta_hand_example():
    d = paired.accuracy_delta(_ko([True, True, False, False]), _ko([True, False, False, False]), "ko_x")
    assert d["delta"] == 0.25 and d["n"] == 4
    assert 0.0 <= d["ci_low"] <= 0.25 <= d["ci_high"] <= 0.75  # per-item differences are 0, 1, 0, 0


def test_accuracy_delta_interval_matches_normal_approximation():
    rng = np.random.default_rng(0)
    a = rng.random(600) < 0.72
    b = np.where(rng.random(600) < 0.8, a, rng.random(600) < 0.6)  # correlated with a, as two cells are
    d = paired.accuracy_delta(_ko(a), _ko(b), "ko_x", resamples=2000, seed=7)
    diff = a.astype(float) - b.astype(float)
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert d["delta"] == pytest.approx(diff.mean())
    assert d["ci_low"] == pytest.approx(diff.mean() - 1.96 * se, abs=0.006)
    assert d["ci_high"] == pytest.approx(diff.mean() + 1.96 * se, abs=0.006)
    # seeded: the same call gives the same interval, another seed a (slightly) different one
    again = paired.accuracy_delta(_ko(a), _ko(b), "ko_x", resamples=2000, seed=7)
    other = paired.accuracy_delta(_ko(a), _ko(b), "ko_x", resamples=2000, seed=8)
    assert (again["ci_low"], again["ci_high"]) == (d["ci_low"], d["ci_high"])
    assert (other["ci_low"], other["ci_high"]) != (d["ci_low"], d["ci_high"])


def test_only_shared_items_are_paired():
    a = _ko([True, True, True], ["q0", "q1", "q2"])
    b = _ko([False, True, False], ["q1", "q2", "q9"])  # shares q1 (1 vs 0) and q2 (1 vs 1)
    d = paired.accuracy_delta(a, b, "ko_x")
    assert d["n"] == 2 and d["delta"] == 0.5
    assert math.isnan(paired.accuracy_delta(a, _ko([True], ["q0"]), "ko_x")["delta"])  # one shared item: no interval


def test_semantic_drift_resamples_contexts():
    """Questions of a context move together: the interval is the one of per-context differences, wider than a
    per-question bootstrap would give."""
    rng = np.random.default_rng(1)
    rows_a, rows_b = [], []
    for c in range(150):
        ka, kb = rng.integers(0, 5), rng.integers(0, 5)  # 4 questions per context, right counts 0..4
        for q in range(4):
            rows_a.append({"context_id": f"c{c}", "qid": f"c{c}-{q}", "correct": q < ka})
            rows_b.append({"context_id": f"c{c}", "qid": f"c{c}-{q}", "correct": q < kb})
    a, b = pd.DataFrame(rows_a), pd.DataFrame(rows_b)
    d = paired.paired_delta(a, b, "sd_fineweb", resamples=2000, seed=3)
    per_ctx = (a.groupby("context_id")["correct"].mean() - b.groupby("context_id")["correct"].mean()).to_numpy()
    se = per_ctx.std(ddof=1) / math.sqrt(len(per_ctx))
    assert d["n"] == 150 and d["delta"] == pytest.approx(per_ctx.mean())
    assert d["ci_high"] - d["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.1)
    per_q = a["correct"].astype(float).to_numpy() - b["correct"].astype(float).to_numpy()
    assert d["ci_high"] - d["ci_low"] > 2 * 1.96 * per_q.std(ddof=1) / math.sqrt(len(per_q))


def test_bleu_delta_is_the_corpus_bleu_difference():
    refs = [f"the quick brown fox {i} jumps over the lazy dog number {i}" for i in range(60)]
    hyp_a = [r if i % 3 else r.replace("quick", "slow") for i, r in enumerate(refs)]
    hyp_b = [r.replace("lazy dog", "cat") for r in refs]
    a = pd.DataFrame({"id": range(60), "reference": refs, "hypothesis": hyp_a})
    b = pd.DataFrame({"id": range(60), "reference": refs, "hypothesis": hyp_b})
    d = paired.paired_delta(a, b, "recon_fineweb", resamples=300, seed=1)
    want = (BLEU().corpus_score(hyp_a, [refs]).score - BLEU().corpus_score(hyp_b, [refs]).score) / 100
    assert d["delta"] == pytest.approx(want) and d["n"] == 60
    assert d["ci_low"] < want < d["ci_high"] and d["ci_low"] > 0  # a is clearly better
    same = paired.paired_delta(a, a, "recon_fineweb", resamples=100)
    assert same["delta"] == 0 and same["ci_low"] == same["ci_high"] == 0


def test_missing_rows_give_nan():
    assert math.isnan(paired.paired_delta(None, _ko([True, False]), "ko_x")["delta"])
    assert math.isnan(paired.paired_delta(_ko([True]), pd.DataFrame({"id": ["q0"]}), "ko_x")["delta"])
    no_text = pd.DataFrame({"id": [0, 1], "sentence_bleu": [0.1, 0.2]})
    assert math.isnan(paired.paired_delta(no_text, no_text, "recon_fineweb")["delta"])


def test_no_interval_without_two_shared_items_says_how_many():
    a, b = _ko([True, False], ["q0", "q1"]), _ko([True], ["q1"])
    got = paired.paired_delta(a, b, "ko_x")
    assert set(got) == {"delta", "ci_low", "ci_high", "n"} and got["n"] == 1
    assert all(math.isnan(got[k]) for k in ("delta", "ci_low", "ci_high"))
    assert paired.paired_delta(None, b, "ko_x")["n"] == 0
    nothing = paired.bleu_delta(pd.DataFrame({"id": [0], "hypothesis": ["a"]}), pd.DataFrame({"id": [0]}))
    assert nothing["n"] == 0 and math.isnan(nothing["ci_high"])


def test_bleu_pairs_segments_by_id():
    refs = [f"the quick brown fox {i} jumps over the lazy dog number {i}" for i in range(60)]
    hyp_a = [r if i % 3 else r.replace("quick", "slow") for i, r in enumerate(refs)]
    a = pd.DataFrame({"id": [f"s{i}" for i in range(60)], "reference": refs, "hypothesis": hyp_a})
    b_rows = list(range(20, 60))[::-1]  # b reconstructed 40 of the segments, listed in another order
    b = pd.DataFrame({"id": [f"s{i}" for i in b_rows], "reference": [refs[i] for i in b_rows],
                      "hypothesis": [refs[i].replace("lazy dog", "cat") for i in b_rows]})
    d = paired.paired_delta(a, b, "recon_fineweb", resamples=200, seed=2)
    common = list(range(20, 60))
    want = (BLEU().corpus_score([hyp_a[i] for i in common], [[refs[i] for i in common]]).score
            - BLEU().corpus_score([refs[i].replace("lazy dog", "cat") for i in common], [[refs[i] for i in common]]
                                  ).score) / 100
    assert d["n"] == 40 and d["delta"] == pytest.approx(want, abs=1e-12)
    again = paired.paired_delta(a, b, "recon_fineweb", resamples=200, seed=2)
    assert (again["ci_low"], again["ci_high"]) == (d["ci_low"], d["ci_high"])  # seeded
    two = paired.bleu_delta(a.iloc[:2], a.iloc[:2].assign(hypothesis=["x y", "z"]), resamples=50)
    assert two["n"] == 2 and np.isfinite(two["ci_low"])  # two shared segments are enough for an interval
    assert paired.bleu_delta(a.iloc[:1], a.iloc[:1])["n"] == 1
    no_text = a.drop(columns=["hypothesis"])
    assert math.isnan(paired.paired_delta(a, no_text, "recon_fineweb")["delta"])
    assert math.isnan(paired.paired_delta(a.iloc[:0], a, "recon_fineweb")["delta"])
    ko = _ko([True, False, True, True, False, True])
    first = paired.accuracy_delta(ko, _ko([False] * 6), "ko_x", resamples=100, seed=9)
    assert paired.accuracy_delta(ko, _ko([False] * 6), "ko_x", resamples=100, seed=9) == first
    assert paired.unit_of("sd_fineweb") == "context" and paired.unit_of("ko_faitheval") == "sample"
    assert paired.unit_of("recon_fineweb") == "sample"  # the bootstrap unit names of the result files
