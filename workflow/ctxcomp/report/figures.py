"""Figures 1-4 and G.2, one function each; every function writes `<stem>.png` and `<stem>.pdf` atomically.

Matplotlib is used through its object API with the Agg canvas (no pyplot, no global backend state), so figures
render headless inside Slurm jobs. Every figure renders even from a partial run: missing points are skipped,
an empty panel says "no data", and a correlation that cannot be computed says "n too small" in the legend.
"""
from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..io import atomic_write
from ..metrics.correlation import correlate, post_peak_mask
from ..paths import FIGURES  # noqa: F401  (re-exported: the figures this module draws)
from .collect import KO_TASKS, SD_TASKS, TASK_LABELS

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", ":", "-.")


# ------------------------------------------------------------------------------------------------------ helpers


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list]:
    """A Figure on an Agg canvas with `ncols` side-by-side axes."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
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


def corr_label(res: dict, prefix: str = "") -> str:
    """"r=…, ρ=… (n=…)" for a correlate() result; "n too small" (n < 3) or "undefined" (constant input) if NaN."""
    head = f"{prefix}: " if prefix else ""
    if math.isnan(res.get("pearson_r", math.nan)) and math.isnan(res.get("spearman_rho", math.nan)):
        why = "n too small" if res.get("n", 0) < 3 else "r undefined (constant values)"
        return f"{head}{why} (n={res.get('n', 0)})"
    return f"{head}r={res['pearson_r']:.2f}, \u03c1={res['spearman_rho']:.2f} (n={res['n']})"


def _style_maps(df: pd.DataFrame) -> tuple[dict, dict]:
    fams = list(dict.fromkeys(df["family"])) if len(df) else []
    ratios = sorted(dict.fromkeys(df["ratio"])) if len(df) else []
    return ({f: _COLORS[i % len(_COLORS)] for i, f in enumerate(fams)},
            {r: (_MARKERS[i % len(_MARKERS)], _LINESTYLES[i % len(_LINESTYLES)]) for i, r in enumerate(ratios)})


def _by_size(ax, df: pd.DataFrame, ycol: str, ylabel: str) -> None:
    """One line per (family, ratio): y against compressor params_b on a log axis."""
    colors, styles = _style_maps(df)
    drawn = False
    for (fam, ratio), g in df.groupby(["family", "ratio"], sort=False):
        g = g[np.isfinite(g["params_b"].astype(float)) & np.isfinite(g[ycol].astype(float))].sort_values("params_b")
        if g.empty:
            continue
        marker, ls = styles[ratio]
        ax.plot(g["params_b"], g[ycol], marker=marker, linestyle=ls, color=colors[fam], label=f"{fam}, ratio {ratio}")
        drawn = True
    if drawn:
        if (df["params_b"] > 0).any():
            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
            ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.legend(fontsize=7)
    else:
        no_data(ax)
    ax.set_xlabel("compressor parameters (billions, log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _steps(ax, frames: Iterable[tuple[str, pd.DataFrame | None]], ycol: str, ylabel: str) -> pd.DataFrame | None:
    """Plot ycol over step for each named frame; mark the peak of the first frame that has data. Returns it."""
    first = None
    for (name, df), color in zip(frames, itertools.cycle(_COLORS)):
        if df is None or ycol not in df or not np.isfinite(df[ycol].astype(float)).any():
            continue
        d = df[np.isfinite(df[ycol].astype(float))]
        ax.plot(d["step"], d[ycol], marker="o", markersize=3, color=color, label=name)
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
    return first


def _dyn_title(what: str, cell: str | None) -> str:
    return f"{what} during training" + (f" ({cell})" if cell else " (no dynamics cell)")


# ------------------------------------------------------------------------------------------------------ figures


def fig1_centre(eval_df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Fig. 1: reconstruction BLEU and QA accuracy (mean of the four KO/SD tasks; NaN unless all four exist)
    against compressor size - the paper's "less is more" picture, where BLEU rises with size while QA accuracy
    does not. Titles stay neutral: the figure shows whatever the run measured. Input: collect.load_eval()."""
    df = eval_df.copy()
    qa = [*KO_TASKS, *SD_TASKS]
    df["qa_mean"] = df[qa].mean(axis=1, skipna=False)
    fig, (a, b) = new_figure(2)
    _by_size(a, df, "recon_fineweb", "reconstruction BLEU (FineWeb, 0-1)")
    a.set_title("Reconstruction (FineWeb BLEU)")
    _by_size(b, df, "qa_mean", "QA accuracy (mean of KO and SD tasks)")
    b.set_title("QA accuracy (KO and SD)")
    fig.suptitle("Fig. 1: reconstruction vs QA accuracy by compressor size")
    return save_figure(fig, stem)


def fig2_loss(losses: dict[str, pd.DataFrame], cells_df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Fig. 2: training curves of the reconstruction loss L_re and next-token loss L_nt per cell (train loss.csv).

    Per-step losses follow the batch (every cell sees the same data order), so each curve is a centred rolling mean
    over about 1/20 of the run, which keeps the differences between cells visible.
    """
    fig, axes = new_figure(2, height=4.0)
    longest = max((len(df) for df in losses.values()), default=1)
    window = max(1, longest // 20)
    meta = cells_df.set_index("cell") if len(cells_df) else None
    colors = {c: _COLORS[i % len(_COLORS)] for i, c in enumerate(dict.fromkeys(cells_df.get("compressor", [])))}
    _, styles = _style_maps(cells_df)
    for ax, col, name in ((axes[0], "loss_re", "L_re (reconstruction)"), (axes[1], "loss_nt", "L_nt (next token)")):
        drawn = False
        for cell, df in losses.items():
            if col not in df or not np.isfinite(df[col].astype(float)).any():
                continue
            if meta is not None and cell in meta.index:
                comp, ratio = meta.at[cell, "compressor"], meta.at[cell, "ratio"]
                color, ls = colors.get(comp, "k"), styles.get(ratio, ("o", "-"))[1]
                label = f"{comp}, r{ratio}"
            else:
                color, ls, label = None, "-", cell
            d = df[np.isfinite(df[col].astype(float))]
            smooth = d[col].astype(float).rolling(window, center=True, min_periods=1).mean()
            ax.plot(d["step"], smooth, color=color, linestyle=ls, linewidth=1, label=label)
            drawn = True
        if drawn:
            ax.legend(fontsize=6, ncol=2)
        else:
            no_data(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{name} loss")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Fig. 2: training losses per cell (rolling mean over {window} steps)")
    return save_figure(fig, stem)


def fig3a_erank_size(probes_df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Fig. 3a: effective rank of the memory against compressor size, per family and ratio (probes.json)."""
    fig, (ax,) = new_figure()
    _by_size(ax, probes_df, "erank", "effective rank of memory Z")
    ax.set_title("Fig. 3a: effective rank vs compressor size")
    return save_figure(fig, stem)


def fig3b_erank_steps(dyn_df: pd.DataFrame | None, train_dyn_df: pd.DataFrame | None, cell: str | None,
                      stem: str | Path) -> list[Path]:
    """Fig. 3b: effective rank over training steps of the dynamics cell (probe checkpoints, and the training-time
    probe batch when logged); the dotted line marks the peak."""
    fig, (ax,) = new_figure()
    _steps(ax, [("probe checkpoints", dyn_df), ("training probe batch", train_dyn_df)], "erank", "effective rank")
    ax.set_title(_dyn_title("Fig. 3b: effective rank", cell), fontsize=9)
    return save_figure(fig, stem)


def fig3c_erank_ko(dyn_df: pd.DataFrame | None, cell: str | None, stem: str | Path) -> list[Path]:
    """Fig. 3c: effective rank vs KO accuracy over the checkpoints at or after the erank peak, with Pearson r and
    Spearman rho per task in the legend (dynamics/<cell>/checkpoints.csv)."""
    fig, (ax,) = new_figure()
    drawn = False
    if dyn_df is not None and "erank" in dyn_df:
        d = dyn_df[post_peak_mask(dyn_df["step"], dyn_df["erank"])]
        for task, color, marker in zip(KO_TASKS, _COLORS, _MARKERS):
            if task not in d:
                continue
            res = correlate(d["erank"], d[task])
            ok = np.isfinite(d["erank"].astype(float)) & np.isfinite(d[task].astype(float))
            ax.scatter(d.loc[ok, "erank"], d.loc[ok, task], color=color, marker=marker,
                       label=corr_label(res, TASK_LABELS[task]))
            drawn = True
    if drawn:
        ax.legend(fontsize=7)
    else:
        no_data(ax, "no dynamics checkpoints")
    ax.set_xlabel("effective rank (post-peak checkpoints)")
    ax.set_ylabel("KO accuracy")
    ax.set_title(f"Fig. 3c: effective rank vs KO accuracy{f' ({cell})' if cell else ''}", fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(fig, stem)


def fig4a_entropy_size(probes_df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Fig. 4a: the decoder's mean teacher-forced entropy against compressor size, per family and ratio."""
    fig, (ax,) = new_figure()
    _by_size(ax, probes_df, "entropy_mean", "vocabulary entropy (nats)")
    ax.set_title("Fig. 4a: entropy vs compressor size")
    return save_figure(fig, stem)


def fig4b_entropy_steps(dyn_df: pd.DataFrame | None, train_dyn_df: pd.DataFrame | None, cell: str | None,
                        stem: str | Path) -> list[Path]:
    """Fig. 4b: vocabulary entropy over training steps of the dynamics cell."""
    fig, (ax,) = new_figure()
    _steps(ax, [("probe checkpoints", dyn_df), ("training probe batch", train_dyn_df)], "entropy",
           "vocabulary entropy (nats)")
    ax.set_title(_dyn_title("Fig. 4b: entropy", cell), fontsize=9)
    return save_figure(fig, stem)


def fig4c_entropy_drift(ed_df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Fig. 4c: per-context entropy vs per-context drift accuracy (collect.load_entropy_drift()), one colour per
    source, with r/rho per source and pooled in the legend."""
    fig, (ax,) = new_figure()
    if len(ed_df):
        for (src, g), color in zip(ed_df.groupby("source", sort=True), _COLORS):
            ax.scatter(g["entropy"], g["drift_accuracy"], s=12, alpha=0.6, color=color,
                       label=corr_label(correlate(g["entropy"], g["drift_accuracy"]), str(src)))
        ax.plot([], [], " ", label=corr_label(correlate(ed_df["entropy"], ed_df["drift_accuracy"]), "all"))
        ax.legend(fontsize=7)
    else:
        no_data(ax)
    ax.set_xlabel("compressor entropy of the context (nats)")
    ax.set_ylabel("drift accuracy of the context (SD questions)")
    ax.set_title("Fig. 4c: entropy vs semantic-drift accuracy")
    ax.grid(alpha=0.3)
    return save_figure(fig, stem)


def figG2_rank_truncation(rt_df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Fig. G.2: KO accuracy vs the fraction of spectral energy kept (collect.load_rank_truncation()); the
    full-rank accuracy of each cell is the dashed line in its colour."""
    fig, axes = new_figure(2)
    cells = list(dict.fromkeys(rt_df["cell"])) if len(rt_df) else []
    colors = {c: _COLORS[i % len(_COLORS)] for i, c in enumerate(cells)}
    for ax, task in zip(axes, KO_TASKS):
        drawn = False
        for cell, g in rt_df.groupby("cell", sort=False):
            pts = g[g["setting"] != "full"].sort_values("energy")
            pts = pts[np.isfinite(pts[task].astype(float))]
            label = f"{g['compressor'].iloc[0]}, r{g['ratio'].iloc[0]}"
            if len(pts):
                ax.plot(pts["energy"], pts[task], marker="o", color=colors[cell], label=label)
                drawn = True
            full = g.loc[g["setting"] == "full", task].astype(float)
            if len(full) and np.isfinite(full.iloc[0]):
                ax.axhline(full.iloc[0], color=colors[cell], linestyle="--", linewidth=0.8,
                           label=None if len(pts) else f"{label} (full rank)")
                drawn = True
        if drawn:
            ax.legend(fontsize=6)
        else:
            no_data(ax)
        ax.set_xlabel("fraction of spectral energy kept")
        ax.set_ylabel(f"{TASK_LABELS[task]} accuracy")
        ax.set_title(TASK_LABELS[task])
        ax.grid(alpha=0.3)
    fig.suptitle("Fig. G.2: KO accuracy under rank truncation (dashed: full rank)")
    return save_figure(fig, stem)
