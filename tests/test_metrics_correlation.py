"""Correlations match scipy and degrade to NaN instead of raising; post-peak selection."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from ctxcomp.metrics import correlation


def test_matches_scipy():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0]
    res = correlation.correlate(x, y)
    assert res["n"] == 5
    assert res["pearson_r"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert res["pearson_p"] == pytest.approx(stats.pearsonr(x, y)[1])
    assert res["spearman_rho"] == pytest.approx(0.8)  # rank differences (0,1,0,1,0): 1 - 6*2/(5*24)
    assert res["spearman_p"] == pytest.approx(stats.spearmanr(x, y)[1])


def test_perfect_and_nan_pairs_dropped():
    res = correlation.correlate([1, 2, 3, float("nan")], [2, 4, 6, 1])
    assert res["n"] == 3
    assert res["pearson_r"] == pytest.approx(1.0) and res["spearman_rho"] == pytest.approx(1.0)


@pytest.mark.parametrize("x,y", [([], []), ([1.0], [2.0]), ([1.0, 2.0], [3.0, 1.0]), ([1, 2, 3], [5, 5, 5])])
def test_degenerate_is_nan(x, y):
    res = correlation.correlate(x, y)
    assert all(math.isnan(res[k]) for k in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p"))
    assert res["n"] == len(x)


def test_post_peak():
    steps = [0, 10, 20, 30, 40]
    vals = [1.0, 3.0, 5.0, 4.0, 2.0]
    s, v = correlation.post_peak(steps, vals)
    assert s.tolist() == [20, 30, 40] and v.tolist() == [5.0, 4.0, 2.0]
    # unsorted input, NaN ignored, first max wins
    s, v = correlation.post_peak([30, 0, 20, 10], [5.0, float("nan"), 5.0, 1.0])
    assert s.tolist() == [20, 30]
    assert correlation.post_peak_mask([30, 0, 20, 10], [5.0, np.nan, 5.0, 1.0]).tolist() == [True, False, True,
                                                                                            False]
    s, v = correlation.post_peak([], [])
    assert s.size == 0 and v.size == 0
