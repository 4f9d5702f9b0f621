"""Each figure function writes a PNG and a PDF, also from empty or degenerate inputs."""
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import results_fixture as rf
from ctxcomp.metrics import correlate
from ctxcomp.report import collect, figures


def _check(paths):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF-")


def test_corr_label():
    assert figures.corr_label(correlate([1, 2], [3, 4]), "KO") == "KO: n too small (n=2)"
    assert figures.corr_label(correlate([1, 2, 3], [1, 2, 4])) == "r=0.98, \u03c1=1.00 (n=3)"
    assert "constant" in figures.corr_label(correlate([1, 2, 3], [1, 1, 1]))


def test_figures_from_empty_inputs(tmp_path):
    """No results at all (a run that has not computed anything yet): every figure says "no data" but renders."""
    cells = ["dec/qwen-s/r4"]
    ev = collect.load_eval(tmp_path, cells, rf.MODELS)
    pr = collect.load_probes(tmp_path, cells, rf.MODELS)
    rt = collect.load_rank_truncation(tmp_path, cells, rf.MODELS)
    ed = collect.load_entropy_drift(tmp_path, cells)
    r = tmp_path / "report"
    _check(figures.fig1_centre(ev, r / "f1"))
    _check(figures.fig2_loss({}, ev, r / "f2"))
    _check(figures.fig3a_erank_size(pr, r / "f3a"))
    _check(figures.fig3b_erank_steps(None, None, None, r / "f3b"))
    _check(figures.fig3c_erank_ko(None, None, r / "f3c"))
    _check(figures.fig4a_entropy_size(pr, r / "f4a"))
    _check(figures.fig4b_entropy_steps(None, None, None, r / "f4b"))
    _check(figures.fig4c_entropy_drift(ed, r / "f4c"))
    _check(figures.figG2_rank_truncation(rt, r / "g2"))


def test_few_points_give_nan_correlations(tmp_path):
    dyn = pd.DataFrame({"step": [0, 20], "erank": [1.0, 2.0], "entropy": [3.0, math.nan],
                        "ko_faitheval": [0.5, math.nan], "ko_conflictqa": [0.4, 0.4]})
    _check(figures.fig3c_erank_ko(dyn, "d/c/r4", tmp_path / "f3c"))
    _check(figures.fig4b_entropy_steps(dyn, None, "d/c/r4", tmp_path / "f4b"))
    ed = pd.DataFrame({"cell": ["c"] * 2, "source": ["fineweb", "faitheval"], "context_id": ["1", "1"],
                       "entropy": [2.0, 2.5], "drift_accuracy": [1.0, 0.5], "n_tokens": [4, 4],
                       "n_questions": [2, 2]})
    _check(figures.fig4c_entropy_drift(ed, tmp_path / "f4c"))


@pytest.mark.parametrize("name", figures.FIGURES)
def test_figure_names_match_workflow(name):
    assert name in rf.FIGURES
