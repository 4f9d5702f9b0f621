"""Figures: the plotted data, the legend's numbers and the correlations, read back from the Figure objects and the
data frames they are drawn from; and every figure renders from empty or degenerate inputs."""
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from scipy import stats

import results_fixture as rf
from ctxcomp.metrics import correlate
from ctxcomp.report import collect, figures


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return rf.write_results(tmp_path_factory.mktemp("figures") / "run")


def _check(paths):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF-")


def test_corr_label_has_r_rho_p_and_n():
    assert figures.corr_label(correlate([1, 2], [3, 4]), "KO") == "KO: n too small (n=2)"
    r, p = stats.pearsonr([1, 2, 3, 4], [1, 2, 4, 3])
    rho, q = stats.spearmanr([1, 2, 3, 4], [1, 2, 4, 3])
    assert figures.corr_label(correlate([1, 2, 3, 4], [1, 2, 4, 3])) == (
        f"r={r:.2f} (p={p:.2g}), \u03c1={rho:.2f} (p={q:.2g}), n=4")
    assert "constant" in figures.corr_label(correlate([1, 2, 3], [1, 1, 1]))


def test_fig1_means_and_lines(run):
    ev = collect.load_eval(run["out"], run["cells"], run["models"])
    plot = figures.fig1_centre(ev)
    data = plot.data
    qa = data[data["series"] == "qa_mean"].set_index("cell")["value"]
    cell = "dec/qwen-l/r16"
    want = np.mean([rf.stored_value(cell, t) for t in ("ko_faitheval", "ko_conflictqa", "sd_fineweb", "sd_faitheval")])
    assert qa[cell] == pytest.approx(want)
    assert rf.MISSING not in qa.index  # no QA mean without all four tasks
    # one panel per ratio, shared y; per family a dashed (BLEU) and a solid (QA) line through the cells' values
    assert [ax.get_title() for ax in plot.fig.axes] == ["ratio 4", "ratio 16"]
    lines = [ln for ln in plot.fig.axes[1].get_lines() if len(ln.get_xdata())]
    solid = [ln for ln in lines if ln.get_linestyle() == "-"]
    dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(solid) == 2 and len(dashed) == 2
    qwen = next(ln for ln in solid if list(ln.get_xdata()) == [0.6, 4.0])
    assert list(qwen.get_ydata()) == pytest.approx([qa["dec/qwen-s/r16"], qa[cell]])
    assert plot.fig.axes[0].get_shared_y_axes().joined(plot.fig.axes[0], plot.fig.axes[1])
    legend = plot.legend_texts(1)
    assert "Qwen3" in legend and "reconstruction BLEU (FineWeb)" in legend


def test_fig2_total_loss_at_ratio_4_per_family():
    steps = np.arange(60)
    loss = 5.0 + np.sin(steps / 3.0)
    cells = pd.DataFrame({"cell": ["d/a/r4", "d/b/r4", "d/a/r16"], "family": ["F", "F", "F"],
                          "size": ["1B", "8B", "1B"], "params_b": [1.0, 8.0, 1.0], "ratio": [4, 4, 16],
                          "compressor": ["a", "b", "a"]})
    losses = {c: pd.DataFrame({"step": steps, "loss": loss + i}) for i, c in enumerate(cells["cell"])}
    plot = figures.fig2_loss(losses, cells, ratio=4)
    assert len(plot.fig.axes) == 1 and plot.fig.axes[0].get_title() == "F"
    assert set(plot.data["cell"]) == {"d/a/r4", "d/b/r4"}  # the 16x cell is not drawn
    assert plot.legend_texts() == ["1B", "8B"]
    # centred rolling mean over len/20 = 3 steps, shortened at the ends
    want = np.array([loss[max(0, i - 1):i + 2].mean() for i in range(60)])
    line = plot.fig.axes[0].get_lines()[0]
    assert np.asarray(line.get_ydata()) == pytest.approx(want)


def test_fig3c_post_peak_selection_legend_and_band(run):
    files = collect.DynamicsFiles.of_run(run["out"], run["dynamics_cell"])
    dyn, samples = collect.load_dynamics(files), collect.load_checkpoint_samples(files)
    plot = figures.fig3c_erank_ko(dyn, samples, run["dynamics_cell"])
    n_post = rf.N_CHECKPOINTS - rf.PEAK_INDEX
    steps = [rf.PROBE_EVERY * (k + 1) for k in range(rf.PEAK_INDEX, rf.N_CHECKPOINTS)]
    for task, label in (("ko_faitheval", "KO FaithEval"), ("ko_conflictqa", "KO ConflictQA")):
        d = plot.data[plot.data["task"] == task]
        assert d["step"].tolist() == steps  # from the erank peak on, nothing before it
        er = [rf.dyn_erank(k) for k in range(rf.PEAK_INDEX, rf.N_CHECKPOINTS)]
        acc = [np.mean(rf.dyn_correct(task, k)) for k in range(rf.PEAK_INDEX, rf.N_CHECKPOINTS)]
        r, p = stats.pearsonr(er, acc)
        rho, q = stats.spearmanr(er, acc)
        assert f"{label}: r={r:.2f} (p={p:.2g}), \u03c1={rho:.2f} (p={q:.2g}), n={n_post}" in plot.legend_texts()
        row = plot.correlations[plot.correlations["task"] == task].iloc[0]
        assert row["n"] == n_post and row["pearson_p"] == pytest.approx(p) and row["x"] == "erank"
        # band: IQR of the accuracy over question resamples ~ acc -/+ 0.674 binomial standard errors
        se = np.sqrt(d["accuracy"] * (1 - d["accuracy"]) / rf.N_DYN_ITEMS)
        assert (d["q25"] <= d["accuracy"] + 1e-12).all() and (d["q75"] >= d["accuracy"] - 1e-12).all()
        assert np.asarray(d["q75"] - d["q25"]) == pytest.approx(np.asarray(2 * 0.674 * se), abs=0.025)
    assert f"{n_post} post-peak checkpoints" in plot.fig.axes[0].get_title()
    assert len(plot.fig.axes[0].collections) == 4  # a band and a scatter per task


def test_fig3c_without_per_question_rows_has_no_band(run):
    dyn = collect.load_dynamics(collect.DynamicsFiles.of_run(run["out"], run["dynamics_cell"]))
    plot = figures.fig3c_erank_ko(dyn, None, run["dynamics_cell"])
    assert plot.data["q25"].isna().all() and "no band" in plot.fig.axes[0].get_title()
    assert all(isinstance(c, PathCollection) for c in plot.fig.axes[0].collections)


def test_fig4a_distribution_per_compressor(run):
    ent = collect.load_entropy_samples(run["out"], run["cells"], run["models"])
    plot = figures.fig4a_entropy_size(ent)
    s = plot.data.set_index(["cell", "source"])
    cell = "dec/llama-s/r16"
    vals = [rf.entropy_of(cell, "faitheval", i) for i in range(rf.N_CONTEXTS)]
    got = s.loc[(cell, "faitheval")]
    assert got["n"] == rf.N_CONTEXTS and got["median"] == pytest.approx(np.median(vals))
    assert got["q25"] == pytest.approx(np.percentile(vals, 25)) and got["mean"] == pytest.approx(np.mean(vals))
    # panels: source x ratio; boxes of the 16x FineWeb panel are the three computed compressors, family order
    titles = [ax.get_title() for ax in plot.fig.axes]
    assert titles == ["fineweb, ratio 4", "fineweb, ratio 16", "faitheval, ratio 4", "faitheval, ratio 16"]
    ticks = [t.get_text() for t in plot.fig.axes[1].get_xticklabels()]
    assert ticks == [f"Qwen3\n0.6B\nn={rf.N_CONTEXTS}", f"Qwen3\n4B\nn={rf.N_CONTEXTS}",
                     f"LLaMA-3.2\n1B\nn={rf.N_CONTEXTS}"]


def _hand_join(out, cell):
    """(source, context_id) -> (entropy, drift accuracy), joined without pandas from the raw files."""
    import json
    from pathlib import Path

    ent = {(r["source"], r["context_id"]): r["entropy"] for r in map(json.loads, (
        Path(out) / "probes" / cell / "entropy.samples.jsonl").read_text().splitlines())}
    out_ = {}
    for src in rf.SOURCES:
        rows = [json.loads(x) for x in (Path(out) / "eval" / cell / f"sd_{src}.samples.jsonl").read_text().splitlines()]
        for ctx in {r["context_id"] for r in rows}:
            c = [r["correct"] for r in rows if r["context_id"] == ctx]
            out_[(src, ctx)] = (ent[(src, ctx)], sum(c) / len(c))
    return out_


def test_entropy_drift_join_keeps_sources_apart(run):
    """Context ids collide across sources in the fixture: a join on context_id alone would mix them."""
    ed = collect.load_entropy_drift(run["out"], run["cells"], run["models"])
    assert len(ed) == 7 * 2 * rf.N_CONTEXTS
    cell = "dec/qwen-s/r4"
    want = _hand_join(run["out"], cell)
    got = ed[ed["cell"] == cell].set_index(["source", "context_id"])
    assert len(got) == len(want)
    for key, (e, acc) in want.items():
        assert got.loc[key, "entropy"] == pytest.approx(e) and got.loc[key, "drift_accuracy"] == pytest.approx(acc)
    assert got.loc[("faitheval", "ctx-2"), "entropy"] == pytest.approx(got.loc[("fineweb", "ctx-2"), "entropy"] + 1)


def test_fig4c_panels_per_compressor_and_within_cell_correlations(run):
    ed = collect.load_entropy_drift(run["out"], run["cells"], run["models"])
    plot = figures.fig4c_entropy_drift(ed)
    visible = [ax for ax in plot.fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["Qwen3 0.6B, ratio 16", "Qwen3 4B, ratio 16",
                                                  "LLaMA-3.2 1B, ratio 16", "all cells pooled (between models)"]
    cell = "dec/qwen-l/r16"
    pairs = list(_hand_join(run["out"], cell).values())
    e, a = [p[0] for p in pairs], [p[1] for p in pairs]
    r, p = stats.pearsonr(e, a)
    rho, q = stats.spearmanr(e, a)
    legend = plot.legend_texts(1)
    assert legend[-1] == f"within cell: r={r:.2f} (p={p:.2g}), \u03c1={rho:.2f} (p={q:.2g}), n={len(pairs)}"
    assert sorted(legend[:-1]) == ["faitheval", "fineweb"]
    assert visible[1].get_xlabel() == figures.ENTROPY_LABEL and "compressor entropy" not in visible[1].get_xlabel()
    # the correlation data cover every cell (also those without a panel), per source and pooled
    c = plot.correlations
    assert set(c.loc[c["subset"] == "cell", "cell"]) == set(run["cells"]) - {rf.MISSING}
    row = c[(c["cell"] == cell) & (c["source"] == "all")].iloc[0]
    assert row["pearson_r"] == pytest.approx(r) and row["spearman_p"] == pytest.approx(q) and row["n"] == len(pairs)
    src = c[(c["cell"] == cell) & (c["source"] == "fineweb")].iloc[0]
    assert src["n"] == rf.N_CONTEXTS
    assert (c["subset"] == "all cells pooled").sum() == 1


def test_rank_truncation_figure_data(run):
    rt = collect.load_rank_truncation(run["out"], run["cells"], run["models"])
    plot = figures.figG2_rank_truncation(rt)
    assert [ax.get_title() for ax in plot.fig.axes] == ["KO FaithEval, per_sample", "KO ConflictQA, per_sample",
                                                        "KO FaithEval, batch", "KO ConflictQA, batch"]
    d = plot.data[(plot.data["cell"] == "dec/qwen-s/r4") & (plot.data["task"] == "ko_faitheval")
                  & (plot.data["variant"] == "batch")]
    full = rf.stored_value("dec/qwen-s/r4", "ko_faitheval")
    assert d["energy"].tolist() == [0.5, 0.9, 0.99, 1.0]  # the full-rank value closes each line at 1.0
    assert d["accuracy"].tolist() == pytest.approx([full * e * 0.5 for e in (0.5, 0.9, 0.99)] + [full], abs=1e-6)


def test_figures_from_empty_inputs(tmp_path):
    """No results at all (a run that has not computed anything yet): every figure says "no data" but renders."""
    cells = ["dec/qwen-s/r4"]
    ev = collect.load_eval(tmp_path, cells, rf.MODELS)
    pr = collect.load_probes(tmp_path, cells, rf.MODELS)
    rt = collect.load_rank_truncation(tmp_path, cells, rf.MODELS)
    ed = collect.load_entropy_drift(tmp_path, cells, rf.MODELS)
    ent = collect.load_entropy_samples(tmp_path, cells, rf.MODELS)
    r = tmp_path / "report"
    plots = {"f1": figures.fig1_centre(ev), "f2": figures.fig2_loss({}, ev), "f3a": figures.fig3a_erank_size(pr),
             "f3b": figures.fig3b_erank_steps(None, None, None), "f3c": figures.fig3c_erank_ko(None, None, None),
             "f4a": figures.fig4a_entropy_size(ent), "f4b": figures.fig4b_entropy_steps(None, None, None),
             "f4c": figures.fig4c_entropy_drift(ed), "g2": figures.figG2_rank_truncation(rt)}
    _check(plots["f1"].save(r / "f1"))  # one figure through the files; the others drawn (cheaper, same layout)
    for name, plot in plots.items():
        plot.fig.canvas.draw()
        assert plot.data.empty, name
        texts = [t.get_text() for ax in plot.fig.axes for t in ax.texts]
        assert any("no data" in t or "no dynamics" in t for t in texts), name
    assert plots["f3c"].correlations.empty and list(plots["f3c"].correlations.columns) == list(figures.CORR_COLUMNS)


def test_few_points_give_nan_correlations(tmp_path):
    dyn = pd.DataFrame({"step": [0, 20], "erank": [1.0, 2.0], "entropy": [3.0, math.nan],
                        "ko_faitheval": [0.5, math.nan], "ko_conflictqa": [0.4, 0.4]})
    plot = figures.fig3c_erank_ko(dyn, None, "d/c/r4")
    # the peak is the last checkpoint; its FaithEval accuracy is missing
    assert plot.legend_texts() == ["KO FaithEval: n too small (n=0)", "KO ConflictQA: n too small (n=1)"]
    assert plot.correlations["pearson_r"].isna().all()
    plot.fig.canvas.draw()  # renders
    figures.fig4b_entropy_steps(dyn, None, "d/c/r4").fig.canvas.draw()


@pytest.mark.parametrize("name", figures.FIGURES)
def test_figure_names_match_workflow(name):
    assert name in rf.FIGURES


def _iqr_by_hand(x, resamples, seed):
    """The percentile bootstrap at 50 %, written out: scipy's draws (integers(0, n, (R, n)) from the seeded
    generator), the mean of each resample, and the 25th / 75th percentiles of those means."""
    x = np.asarray(x, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), (resamples, len(x)))
    return tuple(np.percentile(x[idx].mean(axis=1), [25, 75]))


def test_accuracy_iqr_by_hand():
    rows = ([{"step": 40, "task": "ko_a", "correct": c} for c in (True, False, True, True, False, True)]
            + [{"step": 20, "task": "ko_a", "correct": c} for c in (True, False)]        # two questions: a band
            + [{"step": 30, "task": "ko_a", "correct": True} for _ in range(3)]         # all right: no spread
            + [{"step": 10, "task": "ko_a", "correct": False}]                            # one question
            + [{"step": 20, "task": "ko_b", "correct": True} for _ in range(5)])         # another task
    got = figures.accuracy_iqr(pd.DataFrame(rows), "ko_a", resamples=300, seed=5)
    assert list(got.columns) == ["step", "accuracy", "q25", "q75", "n_questions"]
    assert got["step"].tolist() == [10, 20, 30, 40] and got["n_questions"].tolist() == [1, 2, 3, 6]
    assert got["accuracy"].tolist() == pytest.approx([0.0, 0.5, 1.0, 4 / 6])
    assert (got.at[0, "q25"], got.at[0, "q75"]) == (0.0, 0.0)
    assert (got.at[2, "q25"], got.at[2, "q75"]) == (1.0, 1.0)
    assert (got.at[1, "q25"], got.at[1, "q75"]) == pytest.approx(_iqr_by_hand([1, 0], 300, 5), abs=1e-12)
    assert (got.at[3, "q25"], got.at[3, "q75"]) == pytest.approx(_iqr_by_hand([1, 0, 1, 1, 0, 1], 300, 5), abs=1e-12)
    many = [bool(v) for v in np.random.default_rng(0).random(41) < 0.6]  # a step whose band depends on the draws
    rows += [{"step": 50, "task": "ko_a", "correct": c} for c in many]
    for seed in (5, 6):  # few resamples: the quartiles of 0/1 means then differ between seeds
        band = figures.accuracy_iqr(pd.DataFrame(rows), "ko_a", resamples=30, seed=seed).iloc[-1]
        assert (band["q25"], band["q75"]) == pytest.approx(_iqr_by_hand(many, 30, seed), abs=1e-12)
    assert _iqr_by_hand(many, 30, 5) != _iqr_by_hand(many, 30, 6)
    default = figures.accuracy_iqr(pd.DataFrame(rows), "ko_a")  # BAND_RESAMPLES resamples, BAND_SEED
    assert default.at[3, "q75"] == pytest.approx(
        _iqr_by_hand([1, 0, 1, 1, 0, 1], figures.BAND_RESAMPLES, figures.BAND_SEED)[1], abs=1e-12)
    empty = figures.accuracy_iqr(None, "ko_a")
    assert empty.empty and list(empty.columns) == ["step", "accuracy", "q25", "q75", "n_questions"]


def test_default_panel_ratio():
    assert figures.default_panel_ratio([4, 16, 32]) == 16
    assert figures.default_panel_ratio([4, 8, 16]) == 16                  # the paper's 16x even when not the middle
    assert figures.default_panel_ratio([32, 4, 8, 64]) == 32              # else the middle one, in sorted order
    assert figures.default_panel_ratio([8, 4, 4]) == 8
    assert figures.default_panel_ratio([]) is None


def test_corr_row_and_label():
    res = correlate([1, 2, 3, 4], [1, 3, 2, 4])
    row = figures.corr_row("figX", "a", "b", "subset s", res)
    assert row == {"figure": "figX", "x": "a", "y": "b", "subset": "subset s", "cell": None, "source": None,
                   "task": None, **{k: res[k] for k in ("n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p")}}
    assert figures.corr_row("figX", "a", "b", "s", res, cell="c", task="t")["cell"] == "c"
    assert figures.corr_label(correlate([1, 2, 3], [4, 4, 4]), "KO") == "KO: r undefined (constant values) (n=3)"
    assert figures.corr_label(correlate([1, 2], [4, 5])) == "n too small (n=2)"


def test_correlation_tables_say_what_was_correlated(run):
    ed = collect.load_entropy_drift(run["out"], run["cells"], run["models"])
    c = figures.fig4c_entropy_drift(ed).correlations
    assert list(c.columns) == list(figures.CORR_COLUMNS)
    assert set(c["figure"]) == {"fig4c_entropy_drift"} and set(c["x"]) == {"entropy"}
    assert set(c["y"]) == {"drift_accuracy"} and c["task"].isna().all()
    assert set(c["subset"]) == {"cell", "cell, source", "all cells pooled"}
    files = collect.DynamicsFiles.of_run(run["out"], run["dynamics_cell"])
    c3 = figures.fig3c_erank_ko(collect.load_dynamics(files), None, run["dynamics_cell"]).correlations
    assert c3[["figure", "x", "y", "subset", "cell", "task"]].values.tolist() == [
        ["fig3c_erank_ko", "erank", t, "post-peak checkpoints", run["dynamics_cell"], t] for t in collect.KO_TASKS]
    assert c3["source"].isna().all()


def test_size_axis_is_logarithmic_in_billions():
    probes = pd.DataFrame({"cell": ["d/a/r4", "d/b/r4"], "family": ["F", "F"], "ratio": [4, 4], "size": ["a", "b"],
                           "params_b": [0.5, 1.0], "erank": [2.0, 3.0]})
    ax = figures.fig3a_erank_size(probes).fig.axes[0]
    assert ax.get_xscale() == "log"  # also for compressors below one billion parameters
    assert ax.xaxis.get_major_formatter()(4.0, 0) == "4" and ax.xaxis.get_minor_formatter()(0.6, 0) == "0.6"
    assert ax.get_xlabel() == "compressor parameters (billions, log scale)"
    unknown = probes.assign(params_b=[0.0, math.nan])  # no positive size: nothing to put on a log axis
    assert figures.fig3a_erank_size(unknown).fig.axes[0].get_xscale() == "linear"


def test_fig3a_lines_per_family_and_ratio():
    """One line per (family, ratio) through the cells' erank in size order; colour = family, marker and line style
    = ratio; a group without a finite point is skipped, the next ones still drawn."""
    rows = [("d/q1/r4", "Q", 4, "1B", 1.0, 3.0), ("d/q4/r4", "Q", 4, "4B", 4.0, 5.0),
            ("d/q1/r16", "Q", 16, "1B", 1.0, 2.0), ("d/q4/r16", "Q", 16, "4B", 4.0, 2.5),
            ("d/l1/r4", "L", 4, "1B", 1.0, math.nan), ("d/l8/r4", "L", 4, "8B", 8.0, 4.0),
            ("d/x/r4", "X", 4, "?", math.nan, 1.0), ("d/m2/r4", "M", 4, "2B", 2.0, 6.0)]
    df = pd.DataFrame(rows, columns=["cell", "family", "ratio", "size", "params_b", "erank"])
    df = pd.concat([df.iloc[[1, 0]], df.iloc[2:]], ignore_index=True)  # the 4B row first: lines are size-ordered
    plot = figures.fig3a_erank_size(df)
    ax = plot.fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines) == ["Q, ratio 4", "Q, ratio 16", "L, ratio 4", "M, ratio 4"]  # X has no size: no line
    assert list(lines["Q, ratio 4"].get_xdata()) == [1.0, 4.0] and list(lines["Q, ratio 4"].get_ydata()) == [3.0, 5.0]
    assert list(lines["L, ratio 4"].get_xdata()) == [8.0]  # the NaN erank point is left out
    color = {k: ln.get_color() for k, ln in lines.items()}
    assert color["Q, ratio 4"] == color["Q, ratio 16"] and len({color[k] for k in ("Q, ratio 4", "L, ratio 4",
                                                                                 "M, ratio 4")}) == 3
    style = {k: (ln.get_marker(), ln.get_linestyle()) for k, ln in lines.items()}
    assert style["Q, ratio 4"] == style["L, ratio 4"] == style["M, ratio 4"] != style["Q, ratio 16"]
    assert style["Q, ratio 16"][0] != style["Q, ratio 4"][0] and style["Q, ratio 16"][1] != style["Q, ratio 4"][1]
    assert plot.legend_texts() == list(lines)
    assert ax.get_ylabel() == "effective rank of memory Z"
    assert ax.get_title() == "Fig. 3a: effective rank vs compressor size"
    assert list(plot.data.columns) == ["cell", "family", "ratio", "size", "params_b", "erank"]
    assert plot.data["cell"].tolist() == ["d/q1/r4", "d/q4/r4", "d/q1/r16", "d/q4/r16", "d/l8/r4", "d/m2/r4"]
    empty = figures.fig3a_erank_size(df.assign(erank=math.nan))
    assert empty.data.empty and list(empty.data.columns) == list(plot.data.columns)
    assert empty.legend_texts() == []  # an empty panel has no legend
    assert [t.get_text() for t in empty.fig.axes[0].texts] == ["no data"]
    text = empty.fig.axes[0].texts[0]  # in the middle of the panel, whatever its data range
    assert text.get_position() == (0.5, 0.5) and text.get_transform() == empty.fig.axes[0].transAxes
    assert (text.get_ha(), text.get_va()) == ("center", "center")
    assert empty.fig.axes[0].get_xlabel() == "compressor parameters (billions, log scale)"


@pytest.mark.parametrize("fig, ycol, ylabel, title", [
    (figures.fig3b_erank_steps, "erank", "effective rank", "Fig. 3b: effective rank during training"),
    (figures.fig4b_entropy_steps, "entropy", figures.ENTROPY_LABEL, "Fig. 4b: entropy during training")])
def test_step_figures_draw_both_series_and_mark_the_peak(fig, ycol, ylabel, title):
    dyn = pd.DataFrame({"step": [10, 20, 30, 40], ycol: [1.0, 4.0, 3.0, math.nan], "other": [9.0, 9.0, 9.0, 9.0]})
    train = pd.DataFrame({"step": [5, 15, 25], ycol: [0.5, 2.0, 6.0]})
    plot = fig(dyn, train, "d/c/r16")
    ax = plot.fig.axes[0]
    assert ax.get_title() == f"{title} (d/c/r16)" and ax.get_ylabel() == ylabel
    assert ax.get_xlabel() == "training step"
    assert plot.legend_texts() == ["probe checkpoints", "peak at step 20", "training probe batch"]
    assert plot.data.to_dict("list") == {"step": [10, 20, 30, 5, 15, 25], ycol: [1.0, 4.0, 3.0, 0.5, 2.0, 6.0],
                                         "series": ["probe checkpoints"] * 3 + ["training probe batch"] * 3}
    peak = [ln for ln in ax.get_lines() if ln.get_label() == "peak at step 20"][0]
    assert list(peak.get_xdata()) == [20, 20]  # a vertical line at the first series' maximum
    only_train = fig(None, train, None)  # no probe checkpoints: the training series carries the peak
    assert only_train.legend_texts() == ["training probe batch", "peak at step 25"]
    assert only_train.fig.axes[0].get_title() == f"{title} (no dynamics cell)"
    nothing = fig(dyn.assign(**{ycol: math.nan}), train.drop(columns=[ycol]), None)
    assert nothing.data.empty and [t.get_text() for t in nothing.fig.axes[0].texts] == ["no data"]


def test_fig2_skips_cells_without_losses_and_defaults_to_ratio_4():
    cells = pd.DataFrame({"cell": ["d/a/r4", "d/b/r4", "d/c/r4", "d/a/r8"], "family": ["F"] * 4,
                          "size": ["1B", "2B", "3B", "1B"], "params_b": [1.0, 2.0, 3.0, 1.0], "ratio": [4, 4, 4, 8],
                          "compressor": ["a", "b", "c", "a"]})
    steps = np.arange(30)
    losses = {"d/a/r4": pd.DataFrame({"step": steps, "loss_re": 1.0}),                    # no total loss column
              "d/b/r4": pd.DataFrame({"step": steps, "loss": np.where(steps % 7 == 3, np.nan, 10.0 - steps)}),
              "d/c/r4": pd.DataFrame({"step": steps, "loss": 2.0 + steps % 2}),
              "d/a/r8": pd.DataFrame({"step": steps, "loss": 1.0})}
    plot = figures.fig2_loss(losses, cells)  # the paper's 4x by default
    assert plot.legend_texts() == ["2B", "3B"] and set(plot.data["cell"]) == {"d/b/r4", "d/c/r4"}
    b = plot.data[plot.data["cell"] == "d/b/r4"]
    keep = steps[steps % 7 != 3]
    assert b["step"].tolist() == keep.tolist()  # NaN losses are not drawn
    # 30 steps: a window of max(1, 30 // 20) = 1 step, i.e. no smoothing
    assert b["loss_smooth"].tolist() == (10.0 - keep).tolist()
    assert "rolling mean over 1 steps" in plot.fig._suptitle.get_text()
    two = pd.concat([cells, cells.iloc[[2]].assign(cell="d/g/r4", family="G", compressor="g")], ignore_index=True)
    plot2 = figures.fig2_loss({**losses, "d/g/r4": losses["d/c/r4"]}, two)
    assert [ax.get_title() for ax in plot2.fig.axes] == ["F", "G"]  # a panel per family, on one loss scale
    assert plot2.fig.axes[0].get_shared_y_axes().joined(plot2.fig.axes[0], plot2.fig.axes[1])
    none = figures.fig2_loss({}, cells.iloc[:0])
    assert [ax.get_title() for ax in none.fig.axes] == ["(none)"] and none.data.empty


def _eval_frame(rows):
    """A load_eval-like frame: cell, family, ratio, size, params_b and the five task values."""
    cols = ["cell", "family", "ratio", "size", "params_b", *collect.TASKS]
    return pd.DataFrame(rows, columns=cols)


def test_fig1_lines_legend_and_the_qa_mean_needs_all_four_tasks():
    ev = _eval_frame([
        ("d/q1/r4", "Q", 4, "1B", 1.0, 0.3, 0.6, 0.5, 0.4, 0.7),
        ("d/q4/r4", "Q", 4, "4B", 4.0, 0.5, 0.4, 0.3, 0.2, 0.3),
        ("d/a2/r4", "A", 4, "2B", 2.0, 0.4, 0.5, 0.5, math.nan, 0.5),   # one SD task missing: no QA mean
        ("d/a8/r4", "A", 4, "8B", 8.0, 0.6, 0.2, 0.2, 0.2, 0.2),
        ("d/q1/r16", "Q", 16, "1B", 1.0, 0.2, 0.5, 0.5, 0.5, 0.5)])
    data = figures.fig1_data(ev).set_index("cell")
    assert math.isnan(data.at["d/a2/r4", "qa_mean"]) and data.at["d/q1/r4", "qa_mean"] == pytest.approx(0.55)
    plot = figures.fig1_centre(ev)
    assert plot.data.index.tolist() == list(range(len(plot.data)))
    assert [ax.get_title() for ax in plot.fig.axes] == ["ratio 4", "ratio 16"]
    assert plot.fig._suptitle.get_text() == "Fig. 1: reconstruction vs QA accuracy by compressor size"
    assert plot.fig.axes[0].get_ylabel() == "score (0-1)"
    ax = plot.fig.axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
    by = {(tuple(ln.get_xdata()), ln.get_linestyle()): ln for ln in lines}
    assert set(by) == {((1.0, 4.0), "--"), ((1.0, 4.0), "-"), ((2.0, 8.0), "--"), ((8.0,), "-")}
    assert list(by[((1.0, 4.0), "-")].get_ydata()) == pytest.approx([0.55, 0.3])
    assert all(ln.get_marker() == "o" for ln in lines)
    q, a = by[((1.0, 4.0), "--")].get_color(), by[((2.0, 8.0), "--")].get_color()
    assert q != a and by[((1.0, 4.0), "-")].get_color() == q and by[((8.0,), "-")].get_color() == a
    legend = plot.fig.axes[-1].get_legend()
    entries = [(t.get_text(), h) for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)]
    assert [t for t, _ in entries] == ["Q", "A", "reconstruction BLEU (FineWeb)", "QA accuracy (mean of KO and SD)"]
    assert entries[0][1].get_color() == q and entries[1][1].get_color() == a  # families in first-appearance order
    assert [(h.get_color(), h.get_linestyle()) for _, h in entries[2:]] == [("k", "--"), ("k", "-")]
    assert plot.fig.axes[1].get_lines()[0].get_color() == q  # a family keeps its colour in every panel
    empty = figures.fig1_centre(ev.iloc[:0])
    assert [ax.get_title() for ax in empty.fig.axes] == [""] and empty.data.empty
    assert list(empty.data.columns) == ["cell", "family", "ratio", "size", "params_b", "value", "series"]


def test_fig4a_boxes_are_each_cells_own_contexts(run):
    ent = collect.load_entropy_samples(run["out"], run["cells"], run["models"])
    plot = figures.fig4a_entropy_size(ent)
    axes = plot.fig.axes
    assert plot.fig._suptitle.get_text() == "Fig. 4a: entropy distribution over contexts by compressor size"
    assert [ax.get_ylabel() for ax in axes] == [figures.ENTROPY_LABEL, "", figures.ENTROPY_LABEL, ""]
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[3])
    for ax, (src, ratio) in zip(axes, [(s, r) for s in rf.SOURCES for r in rf.RATIOS], strict=True):
        cells = [f"dec/{c}/r{ratio}" for c in ("qwen-s", "qwen-l", "llama-s", "llama-l")
                 if f"dec/{c}/r{ratio}" != rf.MISSING]
        medians = [ln for ln in ax.get_lines() if ln.get_color() == "k"]
        want = [np.median([rf.entropy_of(c, src, i) for i in range(rf.N_CONTEXTS)]) for c in cells]
        assert [float(ln.get_ydata()[0]) for ln in medians] == pytest.approx(want), (src, ratio)
        assert [float(np.mean(ln.get_xdata())) for ln in medians] == pytest.approx(list(range(len(cells))))
        means = [ln for ln in ax.get_lines() if ln.get_marker() == "^"]
        assert [float(ln.get_ydata()[0]) for ln in means] == pytest.approx(
            [np.mean([rf.entropy_of(c, src, i) for i in range(rf.N_CONTEXTS)]) for c in cells])
        faces = [p.get_facecolor() for p in ax.patches]
        assert faces[0] == faces[1] != faces[2]  # colour = family (Qwen3, Qwen3, LLaMA-3.2)
    empty = figures.fig4a_entropy_size(ent.iloc[:0])
    assert [ax.get_title() for ax in empty.fig.axes] == ["(none), ratio None"]


def test_fig4c_layout_colours_and_pooled_panel(run):
    ed = collect.load_entropy_drift(run["out"], run["cells"], run["models"])
    four = ed[ed["ratio"] == 4]  # four cells at 4x (the panel ratio when it is the only one): 4 + pooled = 5 panels
    plot = figures.fig4c_entropy_drift(four)
    axes = plot.fig.axes
    assert len(axes) == 8 and [ax.get_visible() for ax in axes] == [True] * 5 + [False] * 3  # 4 columns, 2 rows
    assert [ax.get_title() for ax in axes[:5]] == ["Qwen3 0.6B, ratio 4", "Qwen3 4B, ratio 4", "LLaMA-3.2 1B, ratio 4",
                                                   "LLaMA-3.2 3B, ratio 4", "all cells pooled (between models)"]
    ylabels = [ax.get_ylabel() for ax in axes[:5]]
    assert ylabels[0] == ylabels[4] == "drift accuracy of the context\n(share of its SD questions right)"
    assert ylabels[1:4] == ["", "", ""]  # only the first panel of each row
    assert all(ax.get_xlabel() == figures.ENTROPY_LABEL for ax in axes[:5])
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[4])
    colour = {}
    for ax in axes[:5]:
        for coll, label in zip(ax.collections, ["faitheval", "fineweb"], strict=True):  # sources in sorted order
            colour.setdefault(label, tuple(coll.get_facecolor()[0]))
            assert tuple(coll.get_facecolor()[0]) == colour[label]
    assert colour["faitheval"] != colour["fineweb"]
    pooled = plot.legend_texts(4)[-1]
    r = correlate(four["entropy"], four["drift_accuracy"])
    assert pooled == figures.corr_label(r, "pooled cells") and pooled.startswith("pooled cells: r=")
    assert plot.legend_texts(0)[-1].startswith("within cell: r=")
    assert plot.data.index.tolist() == list(range(len(four)))  # the frame drawn, re-indexed
    assert plot.fig._suptitle.get_text() == ("Fig. 4c: entropy vs semantic-drift accuracy per context, within each "
                                             "compressor")
    c = figures.entropy_drift_correlations(ed)
    order = [(x, y) for x, y in c[["cell", "source"]].itertuples(index=False)]
    cells = list(dict.fromkeys(ed["cell"]))  # cells in the order of the frame, sources sorted, the pooled row last
    assert order == [(cell, s) for cell in cells for s in ("all", "faitheval", "fineweb")] + [("all", "all")]


def test_fig3c_band_follows_erank_and_colours_match(run):
    files = collect.DynamicsFiles.of_run(run["out"], run["dynamics_cell"])
    dyn, samples = collect.load_dynamics(files), collect.load_checkpoint_samples(files)
    plot = figures.fig3c_erank_ko(dyn, samples, run["dynamics_cell"])
    ax = plot.fig.axes[0]
    assert ax.get_xlabel() == "effective rank of Z (post-peak checkpoints)"
    assert ax.get_ylabel() == "KO accuracy (band: IQR over question resamples)"
    assert ax.get_title().endswith(f")\n{run['dynamics_cell']}")
    bands, dots = ax.collections[0::2], ax.collections[1::2]  # band then scatter, per task
    assert len(bands) == len(dots) == 2
    assert tuple(bands[0].get_facecolor()[0][:3]) == tuple(dots[0].get_facecolor()[0][:3])
    assert tuple(dots[0].get_facecolor()[0]) != tuple(dots[1].get_facecolor()[0])
    assert dots[0].get_paths()[0].vertices.shape != dots[1].get_paths()[0].vertices.shape or \
        not np.allclose(dots[0].get_paths()[0].vertices, dots[1].get_paths()[0].vertices)  # a marker per task
    d = plot.data[plot.data["task"] == "ko_faitheval"].sort_values("erank")
    verts = bands[0].get_paths()[0].vertices
    lo_edge = verts[1:len(d) + 1]  # fill_between: the q25 edge in x order, then the q75 edge back
    assert lo_edge[:, 0].tolist() == pytest.approx(d["erank"].tolist())
    assert lo_edge[:, 1].tolist() == pytest.approx(d["q25"].tolist())
    assert verts[:, 1].max() == pytest.approx(d["q75"].max())
    assert plot.data.index.tolist() == list(range(len(plot.data)))
    none = figures.fig3c_erank_ko(None, None, None)
    assert [t.get_text() for t in none.fig.axes[0].texts] == ["no dynamics checkpoints"]
    assert none.fig.axes[0].get_title() == "Fig. 3c: effective rank vs KO accuracy"
    assert list(none.data.columns) == ["step", "erank", "accuracy", "q25", "q75", "task"]
    one_sided = samples.assign(correct=True)  # no spread at any checkpoint: every band has zero width
    flat = figures.fig3c_erank_ko(dyn, one_sided, None)
    assert (flat.data["q25"] == flat.data["q75"]).all() and "\n" not in flat.fig.axes[0].get_title()


def test_figG2_legend_encodings_and_panels(run):
    rt = collect.load_rank_truncation(run["out"], run["cells"], run["models"])
    plot = figures.figG2_rank_truncation(rt)
    axes = plot.fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["KO accuracy", "", "KO accuracy", ""]
    assert all(ax.get_xlabel() == "fraction of spectral energy kept" for ax in axes)
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[3])
    assert plot.fig._suptitle.get_text() == "Fig. G.2: KO accuracy under rank truncation of the memory"
    colors = figures.compressor_colors(rt)
    legend = plot.fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["Qwen3 0.6B", "Qwen3 4B", "LLaMA-3.2 1B", "LLaMA-3.2 3B", "ratio 4", "ratio 16", "full rank"]
    handles = legend.legend_handles
    assert [h.get_color() for h in handles[:4]] == [colors[c] for c in ("qwen-s", "qwen-l", "llama-s", "llama-l")]
    assert handles[4].get_linestyle() != handles[5].get_linestyle() and handles[4].get_color() == "k"
    assert (handles[6].get_marker(), handles[6].get_linestyle(), handles[6].get_color()) == ("*", "None", "k")
    lines = [ln for ln in axes[0].get_lines() if len(ln.get_xdata()) > 1]
    want = {(colors[c], handles[4 + rf.RATIOS.index(r)].get_linestyle())
            for c in ("qwen-s", "qwen-l", "llama-s", "llama-l") for r in rf.RATIOS if f"dec/{c}/r{r}" != rf.MISSING}
    assert {(ln.get_color(), ln.get_linestyle()) for ln in lines} == want  # colour = compressor, style = ratio
    stars = [ln for ln in axes[0].get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 7 and all(list(ln.get_xdata()) == [1.0] for ln in stars)
    first = plot.data[(plot.data["cell"] == "dec/qwen-s/r4") & (plot.data["task"] == "ko_faitheval")]
    assert first["variant"].tolist() == ["per_sample"] * 4 + ["batch"] * 4
    assert plot.data.index.tolist() == list(range(len(plot.data)))
    only_full = rt[rt["variant"] == "full"]
    none = figures.figG2_rank_truncation(only_full)
    assert [ax.get_title() for ax in none.fig.axes] == ["KO FaithEval, per_sample", "KO ConflictQA, per_sample"]


def test_compressor_colours_family_maps_darker_for_larger():
    from matplotlib.colors import rgb_to_hsv

    df = pd.DataFrame({"family": ["Q", "Q", "Q", "L", "L", "M"], "compressor": ["q4", "q1", "q8", "l3", "l1", "m"],
                       "params_b": [4.0, 1.0, 8.0, 3.0, 1.0, 2.0]})
    c = figures.compressor_colors(df)
    assert set(c) == {"q1", "q4", "q8", "l1", "l3", "m"}
    value = {k: rgb_to_hsv(np.array(v[:3]))[2] for k, v in c.items()}
    assert value["q1"] > value["q4"] > value["q8"] and value["l1"] > value["l3"]  # larger = darker
    hue = {k: rgb_to_hsv(np.array(v[:3]))[0] for k, v in c.items()}
    assert 0.5 < hue["q1"] < 0.7 and 0.5 < hue["q8"] < 0.7  # the first family: a blue map
    assert 0.0 < hue["l1"] < 0.15 and 0.0 < hue["l3"] < 0.15  # the second: an orange map
    assert 0.2 < hue["m"] < 0.45  # the third: a green map
    assert value["m"] > value["q8"]  # a family of one takes its map's lightest shade
    assert figures.compressor_colors(df.iloc[:0]) == {}


def test_save_figure_is_byte_stable_png_and_pdf(tmp_path):
    def draw():
        fig, axes = figures.new_figure(2, width=2.0, height=1.5, nrows=1)
        axes[0].plot([1, 2], [3, 4])
        return fig, axes

    fig, axes = draw()
    assert len(axes) == 2 and tuple(fig.get_size_inches()) == (4.0, 1.5)
    assert type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    first = figures.save_figure(fig, tmp_path / "f")
    second = figures.save_figure(draw()[0], tmp_path / "g")
    assert [p.name for p in first] == ["f.png", "f.pdf"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]  # the same figure, the same bytes
    png, pdf = first[0].read_bytes(), first[1].read_bytes()
    assert b"Software" not in png and b"CreationDate" not in pdf and b"ModDate" not in pdf
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (600, 225)  # 150 dpi
    single = figures.new_figure()[1]
    assert isinstance(single, list) and len(single) == 1 and tuple(single[0].figure.get_size_inches()) == (5.0, 3.6)
    grid = figures.new_figure(2, nrows=2, sharey=False)[1]
    assert not grid[0].get_shared_y_axes().joined(grid[0], grid[1])


def test_summaries_and_selections_keep_their_order_and_index():
    ent = pd.DataFrame({"cell": ["z", "z", "z", "a", "a"], "family": ["F"] * 5, "ratio": [4] * 5,
                        "size": ["1B"] * 5, "params_b": [1.0] * 5, "source": ["s"] * 5,
                        "entropy": [1.0, 2.0, math.nan, 4.0, 8.0]})
    s = figures.entropy_summary(ent)
    assert s["cell"].tolist() == ["z", "a"]  # first-appearance order, not sorted
    got = s[["n", "mean", "median", "q25", "q75"]].values.tolist()
    assert got[0] == pytest.approx([2, 1.5, 1.5, 1.25, 1.75]) and got[1] == pytest.approx([2, 6.0, 6.0, 5.0, 7.0])
    dyn = pd.DataFrame({"step": [30, 10, 20, 40], "erank": [5.0, 1.0, 6.0, 2.0]})
    post = figures.post_peak_checkpoints(dyn.set_axis([7, 8, 9, 10]))
    assert post.index.tolist() == [0, 1, 2] and post["step"].tolist() == [20, 30, 40]
    assert figures.post_peak_checkpoints(dyn.drop(columns="erank")) is None
