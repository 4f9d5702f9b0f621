"""The control entries of a summary: the bootstrap settings of the run reach every interval (seed and resample count
both change the numbers on these continuous units), a missing control is all None, chance is the mean 1/k."""
from __future__ import annotations

import numpy as np
import pytest

from ctxcomp.evaluate import controls as ctl
from ctxcomp.metrics import bootstrap as bs


@pytest.fixture(scope="module")
def units():
    rng = np.random.default_rng(42)
    stats = np.stack([rng.uniform(0, 1, 30), np.ones(30)], axis=1)
    control = np.stack([rng.uniform(0, 0.8, 30), np.ones(30)], axis=1)
    return stats, control


def test_headline_uses_the_run_bootstrap(units):
    stats, _ = units
    boot = ctl.Bootstrap(resamples=300, seed=9)
    got = ctl.headline(stats, bs.ratio, boot, "sample")
    want = bs.interval(stats, bs.ratio, 300, 9)
    assert want["ci95"] != bs.interval(stats, bs.ratio, 300, 0)["ci95"]
    assert got == {**want, "bootstrap": {"resamples": 300, "seed": 9, "unit": "sample"}}
    assert got["value"] == pytest.approx(stats[:, 0].mean())


def test_versus_uses_the_run_bootstrap(units):
    stats, control = units
    got = ctl.versus(stats, control, bs.ratio, ctl.Bootstrap(resamples=300, seed=9))
    want = bs.paired_difference(stats, control, bs.ratio, 300, 9)
    assert want["diff_ci95"] != bs.paired_difference(stats, control, bs.ratio, 300, 0)["diff_ci95"]
    assert want["diff_ci95"] != bs.paired_difference(stats, control, bs.ratio, bs.DEFAULT_RESAMPLES, 9)["diff_ci95"]
    assert got == want
    assert got["value"] == pytest.approx(control[:, 0].mean())


def test_missing_control_is_all_none(units):
    stats, _ = units
    assert ctl.versus(stats, None, bs.ratio, ctl.Bootstrap()) == {"value": None, "ci95": None, "diff_ci95": None,
                                                                  "distinguishable": None}


def test_chance():
    assert ctl.chance([2, 4]) == {"value": pytest.approx(0.375)}
    assert ctl.chance([]) == {"value": None}
