"""Figures 1-4 and G.2, one function each. Every function returns a `Plot`: the matplotlib Figure, the data frame it
was drawn from and, for the correlation figures, the correlations as data; `Plot.save` writes `<stem>.png` and
`<stem>.pdf` atomically.

Matplotlib is used through its object API with the Agg canvas (no pyplot, no global backend state), so figures
render headless inside Slurm jobs. Every figure renders even from a partial run: missing points are skipped,
an empty panel says "no data", and a correlation that cannot be computed says why in the legend.
"""
from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from scipy import stats

from ..io import atomic_write
from ..metrics.correlation import correlate, post_peak_mask
from ..paths import FIGURES  # noqa: F401  (re-exported: the figures this module draws)
from .collect import KO_TASKS, SD_TASKS, TASK_LABELS

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", ":", "-.")
#: Columns of every correlation table written beside a figure (<figure>.correlation.csv).
CORR_COLUMNS: tuple[str, ...] = ("figure", "x", "y", "subset", "cell", "source", "task", "n", "pearson_r",
                                 "pearson_p", "spearman_rho", "spearman_p")
ENTROPY_LABEL = "decoder entropy reconstructing from Z (nats/token)"
#: Fig. 3c band: the IQR of each checkpoint's KO accuracy over bootstrap resamples of its questions.
BAND_RESAMPLES = 1000
BAND_SEED = 1234


@dataclass
class Plot:
    """A drawn figure with the data it shows (one row per plotted point or box) and its correlations, if any."""

    fig: Figure
    data: pd.DataFrame
    correlations: pd.DataFrame | None = None

    def save(self, stem: str | Path) -> list[Path]:
        return save_figure(self.fig, stem)

    def legend_texts(self, ax: int = 0) -> list[str]:
        """The legend entries of one panel (what a reader sees next to the lines)."""
        leg = self.fig.axes[ax].get_legend()
        return [t.get_text() for t in leg.get_texts()] if leg else []


# ------------------------------------------------------------------------------------------------------ helpers


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.6, nrows: int = 1,
               sharey: bool = False) -> tuple[Figure, list]:
    """A Figure on an Agg canvas with nrows x ncols axes (row-major list)."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharey=sharey, squeeze=False).ravel().tolist()
    return fig, axes


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Render to PNG and PDF in memory, then write each file atomically. Metadata dates are dropped for stable bytes."""
    stem = Path(stem)
    paths = []
    for fmt, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "ModDate": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, metadata=meta)
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_write(path, "wb") as fh:
            fh.write(buf.getvalue())
        paths.append(path)
    return paths


def no_data(ax, message: str = "no data") -> None:
    """Mark an empty panel so a missing result is visible rather than an empty frame."""
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="gray")


def _p(p: float) -> str:
    return f"{p:.2g}"


def corr_label(res: dict, prefix: str = "") -> str:
    """"r=… (p=…), ρ=… (p=…), n=…" for a correlate() result; says why when it is undefined."""
    head = f"{prefix}: " if prefix else ""
    if math.isnan(res["pearson_r"]) and math.isnan(res["spearman_rho"]):  # correlate() gives both or neither
        why = "n too small" if res["n"] < 3 else "r undefined (constant values)"
        return f"{head}{why} (n={res['n']})"
    return (f"{head}r={res['pearson_r']:.2f} (p={_p(res['pearson_p'])}), "
            f"\u03c1={res['spearman_rho']:.2f} (p={_p(res['spearman_p'])}), n={res['n']}")


def corr_row(figure: str, x: str, y: str, subset: str, res: dict, **keys: object) -> dict:
    """One row of a correlation table: what was correlated (x, y, over which subset) and the statistics."""
    row = {"figure": figure, "x": x, "y": y, "subset": subset, "cell": None, "source": None, "task": None, **keys}
    row.update({k: res[k] for k in ("n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p")})
    return row


def _corr_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(CORR_COLUMNS))


def _style_maps(df: pd.DataFrame) -> tuple[dict, dict]:
    fams = list(dict.fromkeys(df["family"])) if len(df) else []
    ratios = sorted(dict.fromkeys(df["ratio"])) if len(df) else []
    return ({f: _COLORS[i % len(_COLORS)] for i, f in enumerate(fams)},
            {r: (_MARKERS[i % len(_MARKERS)], _LINESTYLES[i % len(_LINESTYLES)]) for i, r in enumerate(ratios)})


def _log_size_axis(ax, df: pd.DataFrame) -> None:
    if (pd.to_numeric(df["params_b"], errors="coerce") > 0).any():
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="both", labelsize=7)
    ax.set_xlabel("compressor parameters (billions, log scale)")


def _finite(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    ok = np.ones(len(df), dtype=bool)
    for c in cols:
        ok &= np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float))
    return df[ok]


def _by_size(ax, df: pd.DataFrame, ycol: str, ylabel: str) -> pd.DataFrame:
    """One line per (family, ratio): y against compressor params_b on a log axis. Returns the plotted points."""
    colors, styles = _style_maps(df)
    drawn = []
    for (fam, ratio), g in df.groupby(["family", "ratio"], sort=False):
        g = _finite(g, "params_b", ycol).sort_values("params_b")
        if g.empty:
            continue
        marker, ls = styles[ratio]
        ax.plot(g["params_b"], g[ycol], marker=marker, linestyle=ls, color=colors[fam], label=f"{fam}, ratio {ratio}")
        drawn.append(g)
    if drawn:
        _log_size_axis(ax, df)
        ax.legend(fontsize=7)
    else:
        no_data(ax)
        ax.set_xlabel("compressor parameters (billions, log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    cols = ["cell", "family", "ratio", "size", "params_b", ycol]
    return pd.concat(drawn, ignore_index=True)[cols] if drawn else pd.DataFrame(columns=cols)


def _steps(ax, frames: Iterable[tuple[str, pd.DataFrame | None]], ycol: str, ylabel: str) -> pd.DataFrame:
    """Plot ycol over step for each named frame; mark the peak of the first frame that has data."""
    first, drawn = None, []
    for (name, df), color in zip(frames, itertools.cycle(_COLORS)):
        if df is None or ycol not in df or not np.isfinite(df[ycol].astype(float)).any():
            continue
        d = _finite(df, ycol)
        ax.plot(d["step"], d[ycol], marker="o", markersize=3, color=color, label=name)
        drawn.append(d[["step", ycol]].assign(series=name))
        if first is None:
            first = d
            peak = d.loc[d[ycol].astype(float).idxmax()]
            ax.axvline(peak["step"], color=color, linestyle=":", alpha=0.7, label=f"peak at step {int(peak['step'])}")
    if first is None:
        no_data(ax)
    else:
        ax.legend(fontsize=7)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return pd.concat(drawn, ignore_index=True) if drawn else pd.DataFrame(columns=["step", ycol, "series"])


def _dyn_title(what: str, cell: str | None) -> str:
    return f"{what} during training" + (f" ({cell})" if cell else " (no dynamics cell)")


# ------------------------------------------------------------------------------------------------------ figures


def fig1_data(eval_df: pd.DataFrame) -> pd.DataFrame:
    """Per cell: reconstruction BLEU (0-1) and QA accuracy = mean of the four KO/SD tasks (NaN unless all four)."""
    df = eval_df[["cell", "family", "ratio", "size", "params_b", "recon_fineweb"]].copy()
    df["qa_mean"] = eval_df[[*KO_TASKS, *SD_TASKS]].mean(axis=1, skipna=False)
    return df


def fig1_centre(eval_df: pd.DataFrame) -> Plot:
    """Fig. 1 (centre): reconstruction BLEU (dashed) and QA accuracy (solid, mean of KO and SD tasks) against
    compressor size, one colour per family, on shared axes (0-1) - one panel per compression ratio. The paper's
    "less is more" picture is BLEU rising with size while QA accuracy does not; titles stay neutral.
    Input: collect.load_eval()."""
    df = fig1_data(eval_df)
    ratios = sorted(dict.fromkeys(df["ratio"])) or [None]
    fig, axes = new_figure(len(ratios), width=4.2, sharey=True)
    colors, _ = _style_maps(df)
    drawn = []
    for ax, ratio in zip(axes, ratios):
        any_line = False
        for fam, g in df[df["ratio"] == ratio].groupby("family", sort=False):
            for col, ls in (("recon_fineweb", "--"), ("qa_mean", "-")):
                pts = _finite(g, "params_b", col).sort_values("params_b")
                if len(pts):
                    ax.plot(pts["params_b"], pts[col], linestyle=ls, marker="o", color=colors[fam])
                    drawn.append(pts[["cell", "family", "ratio", "size", "params_b", col]].rename(
                        columns={col: "value"}).assign(series=col))
                    any_line = True
        if any_line:
            _log_size_axis(ax, df)
        else:
            no_data(ax)
        ax.set_title(f"ratio {ratio}" if ratio is not None else "")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (0-1)")
    handles = [Line2D([], [], color=c, label=f) for f, c in colors.items()]
    handles += [Line2D([], [], color="k", linestyle="--", label="reconstruction BLEU (FineWeb)"),
                Line2D([], [], color="k", linestyle="-", label="QA accuracy (mean of KO and SD)")]
    axes[-1].legend(handles=handles, fontsize=7)
    fig.suptitle("Fig. 1: reconstruction vs QA accuracy by compressor size")
    cols = ["cell", "family", "ratio", "size", "params_b", "value", "series"]
    return Plot(fig, pd.concat(drawn, ignore_index=True)[cols] if drawn else pd.DataFrame(columns=cols))


def fig2_loss(losses: dict[str, pd.DataFrame], cells_df: pd.DataFrame, ratio: int = 4) -> Plot:
    """Fig. 2: total training loss (L_re + L_nt as trained, loss.csv `loss`) at one ratio (4x in the paper), one
    panel per family, one line per compressor size.

    Per-step losses follow the batch (every cell sees the same data order), so each curve is a centred rolling mean
    over about 1/20 of the run, which keeps the differences between sizes visible.
    """
    cells = cells_df[cells_df["ratio"] == ratio] if len(cells_df) else cells_df
    fams = list(dict.fromkeys(cells["family"])) or ["(none)"]
    fig, axes = new_figure(len(fams), width=4.5, height=3.6, sharey=True)
    longest = max((len(df) for df in losses.values()), default=1)
    window = max(1, longest // 20)
    drawn = []
    for ax, fam in zip(axes, fams):
        g = cells[cells["family"] == fam].sort_values("params_b")
        any_line = False
        for (_, row), color in zip(g.iterrows(), itertools.cycle(_COLORS)):
            df = losses.get(row["cell"])
            if df is None or "loss" not in df or not np.isfinite(df["loss"].astype(float)).any():
                continue
            d = _finite(df, "loss")
            smooth = d["loss"].astype(float).rolling(window, center=True, min_periods=1).mean()
            ax.plot(d["step"], smooth, color=color, linewidth=1.2, label=str(row["size"]))
            drawn.append(pd.DataFrame({"cell": row["cell"], "family": fam, "size": row["size"], "step": d["step"],
                                       "loss": d["loss"].astype(float), "loss_smooth": smooth}))
            any_line = True
        if any_line:
            ax.legend(title="compressor", fontsize=7, title_fontsize=7)
        else:
            no_data(ax)
        ax.set_title(fam)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("total training loss (L_re + L_nt)")
    fig.suptitle(f"Fig. 2: training loss at ratio {ratio} (rolling mean over {window} steps)")
    cols = ["cell", "family", "size", "step", "loss", "loss_smooth"]
    return Plot(fig, pd.concat(drawn, ignore_index=True)[cols] if drawn else pd.DataFrame(columns=cols))


def fig3a_erank_size(probes_df: pd.DataFrame) -> Plot:
    """Fig. 3a: effective rank of the memory against compressor size, per family and ratio (probes.json)."""
    fig, (ax,) = new_figure()
    data = _by_size(ax, probes_df, "erank", "effective rank of memory Z")
    ax.set_title("Fig. 3a: effective rank vs compressor size")
    return Plot(fig, data)


def fig3b_erank_steps(dyn_df: pd.DataFrame | None, train_dyn_df: pd.DataFrame | None, cell: str | None) -> Plot:
    """Fig. 3b: effective rank over training steps of the dynamics run (probe checkpoints, and the training-time
    probe batch when logged); the dotted line marks the peak."""
    fig, (ax,) = new_figure()
    data = _steps(ax, [("probe checkpoints", dyn_df), ("training probe batch", train_dyn_df)], "erank",
                  "effective rank")
    ax.set_title(_dyn_title("Fig. 3b: effective rank", cell), fontsize=9)
    return Plot(fig, data)


def accuracy_iqr(samples: pd.DataFrame | None, task: str, resamples: int = BAND_RESAMPLES,
                 seed: int = BAND_SEED) -> pd.DataFrame:
    """Per checkpoint step: KO accuracy from the per-question rows and the 25th/75th percentiles of its bootstrap
    distribution over questions (percentile bootstrap at 50 % confidence = the IQR), seeded."""
    cols = ["step", "accuracy", "q25", "q75", "n_questions"]
    if samples is None or not len(samples):
        return pd.DataFrame(columns=cols)
    rows = []
    for step, g in samples[samples["task"] == task].groupby("step", sort=True):
        x = g["correct"].astype(float).to_numpy()
        if len(x) > 1 and np.ptp(x) > 0:
            res = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=0.5, method="percentile",
                                  rng=np.random.default_rng(seed), vectorized=True)
            q25, q75 = float(res.confidence_interval.low), float(res.confidence_interval.high)
        else:
            q25 = q75 = float(x.mean()) if len(x) else math.nan
        rows.append({"step": step, "accuracy": float(x.mean()), "q25": q25, "q75": q75, "n_questions": len(x)})
    return pd.DataFrame(rows, columns=cols)


def post_peak_checkpoints(dyn_df: pd.DataFrame | None) -> pd.DataFrame | None:
    """The probe checkpoints at or after the effective-rank peak (the paper's Fig. 3c selection)."""
    if dyn_df is None or "erank" not in dyn_df:
        return None
    return dyn_df[post_peak_mask(dyn_df["step"], dyn_df["erank"])].sort_values("step").reset_index(drop=True)


def fig3c_erank_ko(dyn_df: pd.DataFrame | None, samples: pd.DataFrame | None, cell: str | None) -> Plot:
    """Fig. 3c: effective rank vs KO accuracy over the checkpoints at or after the erank peak
    (dynamics/<cell>/checkpoints.csv), Pearson r and Spearman rho with p-values and n per task in the legend.

    Band (our choice, the paper does not define it): at each checkpoint, the interquartile range of its KO accuracy
    over bootstrap resamples of the questions (checkpoints.samples.jsonl), drawn against erank - how much of the
    checkpoint-to-checkpoint movement is question-sampling noise. No per-question rows: no band.
    """
    fig, (ax,) = new_figure(width=5.6, height=4.0)
    d = post_peak_checkpoints(dyn_df)
    drawn, corrs = [], []
    if d is not None and len(d):
        for task, color, marker in zip(KO_TASKS, _COLORS, _MARKERS):
            if task not in d:
                continue
            res = correlate(d["erank"], d[task])
            corrs.append(corr_row("fig3c_erank_ko", "erank", task, "post-peak checkpoints", res, cell=cell, task=task))
            pts = _finite(d, "erank", task)
            band = accuracy_iqr(samples, task).set_index("step")
            pts = pts.assign(q25=pts["step"].map(band["q25"]) if len(band) else math.nan,
                             q75=pts["step"].map(band["q75"]) if len(band) else math.nan)
            order = pts.sort_values("erank")
            ok = order["q25"].notna() & order["q75"].notna()
            if ok.any():
                ax.fill_between(order.loc[ok, "erank"], order.loc[ok, "q25"], order.loc[ok, "q75"], color=color,
                                alpha=0.2, linewidth=0)
            ax.scatter(pts["erank"], pts[task], color=color, marker=marker, label=corr_label(res, TASK_LABELS[task]))
            drawn.append(pts[["step", "erank", task, "q25", "q75"]].rename(columns={task: "accuracy"}).assign(
                task=task))
    if drawn:
        ax.legend(fontsize=6.5, loc="best")
        steps = d["step"].to_numpy()
        ax.set_title(f"Fig. 3c: effective rank vs KO accuracy, {len(d)} post-peak checkpoints (steps "
                     f"{int(steps.min())}-{int(steps.max())})" + (f"\n{cell}" if cell else "") +
                     ("" if any(x["q25"].notna().any() for x in drawn) else ", no per-question rows: no band"),
                     fontsize=8)
    else:
        no_data(ax, "no dynamics checkpoints")
        ax.set_title("Fig. 3c: effective rank vs KO accuracy", fontsize=9)
    ax.set_xlabel("effective rank of Z (post-peak checkpoints)")
    ax.set_ylabel("KO accuracy (band: IQR over question resamples)")
    ax.grid(alpha=0.3)
    cols = ["step", "erank", "accuracy", "q25", "q75", "task"]
    return Plot(fig, pd.concat(drawn, ignore_index=True)[cols] if drawn else pd.DataFrame(columns=cols),
                _corr_frame(corrs))


def entropy_summary(ent: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, source): n contexts, mean, median and quartiles of the per-context entropy (what 4a draws)."""
    cols = ["cell", "family", "ratio", "size", "params_b", "source", "n", "mean", "median", "q25", "q75"]
    if not len(ent):
        return pd.DataFrame(columns=cols)
    e = _finite(ent, "entropy")
    g = e.groupby(["cell", "family", "ratio", "size", "params_b", "source"], sort=False)["entropy"]
    out = g.agg(n="size", mean="mean", median="median", q25=lambda x: x.quantile(0.25),
                q75=lambda x: x.quantile(0.75)).reset_index()
    return out[cols]


def fig4a_entropy_size(ent: pd.DataFrame) -> Plot:
    """Fig. 4a: the distribution over contexts of the decoder's teacher-forced entropy per compressor (box:
    quartiles, whiskers 1.5 IQR, triangle: mean), one row of panels per source, one panel per ratio; boxes in
    family order, sizes ascending. Input: collect.load_entropy_samples()."""
    summary = entropy_summary(ent)
    sources = list(dict.fromkeys(summary["source"])) or ["(none)"]
    ratios = sorted(dict.fromkeys(summary["ratio"])) or [None]
    fig, axes = new_figure(len(ratios), width=4.2, height=3.2, nrows=len(sources), sharey=True)
    colors, _ = _style_maps(summary)
    for r_i, src in enumerate(sources):
        for c_i, ratio in enumerate(ratios):
            ax = axes[r_i * len(ratios) + c_i]
            s = summary[(summary["source"] == src) & (summary["ratio"] == ratio)]
            s = s.assign(_f=s["family"].map({f: i for i, f in enumerate(colors)})).sort_values(["_f", "params_b"])
            if s.empty:
                no_data(ax)
            else:
                data = [_finite(ent[(ent["cell"] == c) & (ent["source"] == src)], "entropy")["entropy"].to_numpy()
                        for c in s["cell"]]
                bp = ax.boxplot(data, positions=range(len(data)), widths=0.6, showmeans=True, patch_artist=True,
                                medianprops={"color": "k"})
                for patch, fam in zip(bp["boxes"], s["family"]):
                    patch.set_facecolor(colors[fam])
                    patch.set_alpha(0.5)
                ax.set_xticks(range(len(data)), [f"{f}\n{z}\nn={n}" for f, z, n in
                                                 zip(s["family"], s["size"], s["n"])], fontsize=6)
            ax.set_title(f"{src}, ratio {ratio}", fontsize=8)
            ax.grid(alpha=0.3, axis="y")
            if c_i == 0:
                ax.set_ylabel(ENTROPY_LABEL, fontsize=7)
    fig.suptitle("Fig. 4a: entropy distribution over contexts by compressor size")
    return Plot(fig, summary)


def fig4b_entropy_steps(dyn_df: pd.DataFrame | None, train_dyn_df: pd.DataFrame | None, cell: str | None) -> Plot:
    """Fig. 4b: the decoder's entropy over training steps of the dynamics run."""
    fig, (ax,) = new_figure()
    data = _steps(ax, [("probe checkpoints", dyn_df), ("training probe batch", train_dyn_df)], "entropy",
                  ENTROPY_LABEL)
    ax.set_title(_dyn_title("Fig. 4b: entropy", cell), fontsize=9)
    return Plot(fig, data)


def default_panel_ratio(ratios: Sequence[int]) -> int | None:
    """The ratio whose cells get their own panels in Fig. 4c: 16 (the paper's) if present, else the middle one."""
    ratios = sorted({int(r) for r in ratios})
    if not ratios:
        return None
    return 16 if 16 in ratios else ratios[len(ratios) // 2]


def entropy_drift_correlations(ed_df: pd.DataFrame) -> pd.DataFrame:
    """Within-cell per-context correlations of entropy with drift accuracy: every cell with sources pooled and per
    source, then all cells pooled (the secondary, between-model view)."""
    rows = []
    x, y = "entropy", "drift_accuracy"
    for cell, g in ed_df.groupby("cell", sort=False):
        rows.append(corr_row("fig4c_entropy_drift", x, y, "cell", correlate(g[x], g[y]), cell=cell, source="all"))
        for src, h in g.groupby("source", sort=True):
            rows.append(corr_row("fig4c_entropy_drift", x, y, "cell, source", correlate(h[x], h[y]), cell=cell,
                                 source=src))
    if len(ed_df):
        rows.append(corr_row("fig4c_entropy_drift", x, y, "all cells pooled", correlate(ed_df[x], ed_df[y]),
                             cell="all", source="all"))
    return _corr_frame(rows)


def fig4c_entropy_drift(ed_df: pd.DataFrame, ratio: int | None = None) -> Plot:
    """Fig. 4c: per context, the decoder's entropy against the share of its semantic-drift questions answered
    right (collect.load_entropy_drift()), within one model as in the paper: one panel per compressor at `ratio`
    (default_panel_ratio), sources in colours, r/rho with p and n of that cell in the legend; the last panel pools
    every cell of the run (a between-model view, secondary). Every cell's correlations go to `correlations`."""
    corrs = entropy_drift_correlations(ed_df)
    ratio = default_panel_ratio(ed_df["ratio"]) if ratio is None and len(ed_df) else ratio
    panel = ed_df[ed_df["ratio"] == ratio] if len(ed_df) else ed_df
    fam_order = {f: i for i, f in enumerate(dict.fromkeys(ed_df["family"]))} if len(ed_df) else {}
    cells = list(dict.fromkeys(panel.assign(_f=panel["family"].map(fam_order)).sort_values(
        ["_f", "params_b"], kind="stable")["cell"])) if len(panel) else []
    n = len(cells) + 1
    ncols = min(n, 4)
    fig, axes = new_figure(ncols, width=3.6, height=3.2, nrows=math.ceil(n / ncols), sharey=True)
    src_colors = dict(zip(sorted(dict.fromkeys(ed_df["source"])) if len(ed_df) else [], _COLORS))
    by_cell = corrs.set_index(["cell", "source"]) if len(corrs) else None
    for ax, cell in zip(axes, cells + ["all"]):
        g = ed_df if cell == "all" else panel[panel["cell"] == cell]
        for src, h in g.groupby("source", sort=True):
            ax.scatter(h["entropy"], h["drift_accuracy"], s=10, alpha=0.5, color=src_colors[src], label=src)
        if len(g):
            res = by_cell.loc[(cell, "all")].to_dict()
            ax.plot([], [], " ", label=corr_label(res, "pooled cells" if cell == "all" else "within cell"))
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
            meta = g.iloc[0]
            ax.set_title("all cells pooled (between models)" if cell == "all"
                         else f"{meta['family']} {meta['size']}, ratio {meta['ratio']}", fontsize=8)
        else:
            no_data(ax)
        ax.set_xlabel(ENTROPY_LABEL, fontsize=6.5)
        ax.grid(alpha=0.3)
    for ax in axes[len(cells) + 1:]:
        ax.set_visible(False)
    for i in range(0, len(axes), ncols):
        axes[i].set_ylabel("drift accuracy of the context\n(share of its SD questions right)", fontsize=7)
    fig.suptitle("Fig. 4c: entropy vs semantic-drift accuracy per context, within each compressor")
    return Plot(fig, ed_df.reset_index(drop=True), corrs)


def compressor_colors(df: pd.DataFrame) -> dict[str, tuple]:
    """A colour per compressor: one colour map per family (first-appearance order), darker for larger sizes."""
    maps = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
    out = {}
    if not len(df):
        return out
    from matplotlib import colormaps

    for f_i, (_, g) in enumerate(df.groupby("family", sort=False)):
        comps = list(dict.fromkeys(g.sort_values("params_b", kind="stable")["compressor"]))
        cmap = colormaps[maps[f_i % len(maps)]]
        for k, comp in enumerate(comps):
            out[comp] = cmap(0.45 + 0.5 * (k / max(1, len(comps) - 1)))
    return out


def figG2_rank_truncation(rt_df: pd.DataFrame) -> Plot:
    """Fig. G.2: KO accuracy vs the fraction of spectral energy kept (collect.load_rank_truncation()); one row of
    panels per truncation variant (per_sample: each memory's own SVD; batch: one SVD over the batch), one panel
    per KO set. Lines: compressor in colour (family colour map, darker = larger), ratio in line style; the star at
    1.0 is the untruncated (full-rank) accuracy."""
    variants = [v for v in dict.fromkeys(rt_df["variant"]) if v != "full"] if len(rt_df) else []
    variants = variants or ["per_sample"]
    fig, axes = new_figure(len(KO_TASKS), width=4.2, height=3.2, nrows=len(variants), sharey=True)
    colors = compressor_colors(rt_df)
    _, styles = _style_maps(rt_df)
    drawn = []
    for r_i, variant in enumerate(variants):
        for t_i, task in enumerate(KO_TASKS):
            ax = axes[r_i * len(KO_TASKS) + t_i]
            any_line = False
            for cell, g in rt_df.groupby("cell", sort=False):
                pts = _finite(g[g["variant"] == variant], "energy", task).sort_values("energy")
                full = _finite(g[g["setting"] == "full"], task)
                line = pd.concat([pts[["energy", task]], full[[task]].assign(energy=1.0)], ignore_index=True)
                if line.empty:
                    continue
                comp, ratio = g["compressor"].iloc[0], g["ratio"].iloc[0]
                ax.plot(line["energy"], line[task], color=colors.get(comp), linestyle=styles[ratio][1], marker="o",
                        markersize=2.5, linewidth=1)
                if len(full):
                    ax.plot([1.0], [full[task].iloc[0]], marker="*", markersize=7, color=colors.get(comp))
                drawn.append(line.rename(columns={task: "accuracy"}).assign(cell=cell, variant=variant, task=task))
                any_line = True
            if not any_line:
                no_data(ax)
            ax.set_title(f"{TASK_LABELS[task]}, {variant}", fontsize=8)
            ax.set_xlabel("fraction of spectral energy kept")
            ax.grid(alpha=0.3)
            if t_i == 0:
                ax.set_ylabel("KO accuracy")
    if len(rt_df):
        meta = rt_df.drop_duplicates("compressor")
        handles = [Line2D([], [], color=colors[c], label=f"{f} {z}") for c, f, z in
                   zip(meta["compressor"], meta["family"], meta["size"])]
        handles += [Line2D([], [], color="k", linestyle=styles[r][1], label=f"ratio {r}") for r in styles]
        handles.append(Line2D([], [], color="k", marker="*", linestyle="", label="full rank"))
        fig.legend(handles=handles, loc="outside right upper", fontsize=7)
    fig.suptitle("Fig. G.2: KO accuracy under rank truncation of the memory")
    cols = ["cell", "variant", "energy", "accuracy", "task"]
    return Plot(fig, pd.concat(drawn, ignore_index=True)[cols] if drawn else pd.DataFrame(columns=cols))
