"""What the x axis of a line holds (training steps, kept energy) and how compressor colours scale with a family's
size: the same darkest shade for a family's largest member whatever the family's size, and a map for six families."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import rgb_to_hsv

import results_fixture as rf
from ctxcomp.report import collect, figures


def test_fig2_loss_is_drawn_against_the_training_step():
    steps = np.arange(100, 400, 5)  # steps do not start at 0 and are not the row index
    cells = pd.DataFrame({"cell": ["d/a/r4"], "family": ["F"], "size": ["1B"], "params_b": [1.0], "ratio": [4],
                          "compressor": ["a"]})
    plot = figures.fig2_loss({"d/a/r4": pd.DataFrame({"step": steps, "loss": np.linspace(6, 3, len(steps))})},
                             cells, ratio=4)
    line = plot.fig.axes[0].get_lines()[0]
    assert np.asarray(line.get_xdata()).tolist() == steps.tolist()


def test_figG2_lines_are_drawn_against_the_kept_energy(tmp_path):
    run = rf.write_results(tmp_path / "run")
    rt = collect.load_rank_truncation(run["out"], run["cells"], run["models"])
    plot = figures.figG2_rank_truncation(rt)
    lines = [ln for ax in plot.fig.axes for ln in ax.get_lines() if len(ln.get_xdata()) > 1]
    assert lines and all(np.asarray(ln.get_xdata()).tolist() == [0.5, 0.9, 0.99, 1.0] for ln in lines)


def test_largest_member_is_the_darkest_shade_whatever_the_family_size():
    fams = ["A", "B", "C", "D", "E", "F", "G"]  # seven families: the seventh reuses the first map
    rows = [("A", "a1", 1.0), ("A", "a2", 2.0)] + [(f, f.lower(), 1.0) for f in fams[1:6]]
    rows += [("G", "g1", 1.0), ("G", "g2", 2.0), ("G", "g3", 3.0)]
    df = pd.DataFrame(rows, columns=["family", "compressor", "params_b"])
    c = figures.compressor_colors(df)
    assert c["a2"] == pytest.approx(c["g3"])  # family of 2 and of 3 on the same map: the same darkest shade
    assert c["a1"] == pytest.approx(c["g1"])  # and the same lightest
    hue = {k: rgb_to_hsv(np.array(v[:3]))[0] for k, v in c.items()}
    sat = {k: rgb_to_hsv(np.array(v[:3]))[1] for k, v in c.items()}
    assert hue["e"] < 0.05 or hue["e"] > 0.95  # the fifth family: a red map
    assert sat["f"] < 0.05  # the sixth: grey
    assert len({tuple(np.round(c[k], 6)) for k in ("a1", "b", "c", "d", "e", "f")}) == 6
