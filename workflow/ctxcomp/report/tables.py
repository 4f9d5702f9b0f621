"""Tables 2 and 3, rank truncation and RAG, each rendered as Markdown, LaTeX (booktabs) and CSV.

Formatting rules (so a partial run never misleads): a value whose result file is missing is NaN and shows as "—"
in Markdown, "---" in LaTeX and an empty field in CSV - never 0 - and is excluded from "best". Within each
comparison group (Table 2: family x ratio; Table 3: decoder x ratio) the best value per column is bold and every
other value shows its difference to that best, e.g. `0.412 (−0.031)`. All compared metrics are higher-is-better.
The CSV carries the raw numbers and one `<column>_delta` column per metric, without any formatting.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..io import atomic_write
from .collect import KO_TASKS, TASK_LABELS, TASKS

MINUS = "\u2212"
DASH_MD = "\u2014"
DASH_TEX = "---"
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


@dataclass(frozen=True)
class Col:
    """A table column: the DataFrame key, its header, decimals, and whether it takes part in "best"/deltas."""

    key: str
    label: str
    digits: int = 3
    compare: bool = True


@dataclass(frozen=True)
class Rendered:
    """One table in its three forms."""

    md: str
    tex: str
    csv: str


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in free text (model names, family names)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}"


def _fmt_delta(d: float, digits: int, tex: bool) -> str:
    s = f"{d:+.{digits}f}"
    if s[0] == "-":
        return ("$-$" if tex else MINUS) + s[1:]
    return s


def best_and_delta(df: pd.DataFrame, cols: Sequence[Col], group: Sequence[str] | None) -> tuple[pd.DataFrame,
                                                                                                pd.DataFrame]:
    """Per compared column: a bool frame marking the best (max, ties all best) per group and value - best deltas.

    NaN values are never best and have NaN delta; a group whose values are all NaN has no best.
    """
    best = pd.DataFrame(False, index=df.index, columns=[c.key for c in cols])
    delta = pd.DataFrame(np.nan, index=df.index, columns=[c.key for c in cols])
    for c in cols:
        if not c.compare:
            continue
        vals = pd.to_numeric(df[c.key], errors="coerce")
        top = vals.groupby([df[g] for g in group], sort=False).transform("max") if group else (
            pd.Series(vals.max(), index=df.index))
        delta[c.key] = vals - top
        best[c.key] = vals.notna() & (vals == top)
    return best, delta


def render(df: pd.DataFrame, labels: Sequence[Col], cols: Sequence[Col], group: Sequence[str] | None,
           caption: str, label: str, csv_extra: Sequence[str] = (), rule_on: str | None = None,
           csv_tail: Sequence[str] = ()) -> Rendered:
    """Render rows of `df` in order: `labels` are text columns, `cols` numeric ones (compared within `group`).

    `rule_on`: a label key; LaTeX gets a \\midrule and Markdown nothing extra wherever its value changes.
    `csv_extra` / `csv_tail`: further raw columns for the CSV only, before / after the metric columns.
    """
    df = df.reset_index(drop=True)
    best, delta = best_and_delta(df, cols, group)

    def cell_text(i: int, c: Col, tex: bool) -> str:
        v = df.at[i, c.key]
        if pd.isna(v):
            return DASH_TEX if tex else DASH_MD
        s = _fmt(float(v), c.digits)
        if not c.compare:
            return s
        if best.at[i, c.key]:
            return rf"\textbf{{{s}}}" if tex else f"**{s}**"
        d = delta.at[i, c.key]
        return s if pd.isna(d) else f"{s} ({_fmt_delta(float(d), c.digits, tex)})"

    # Markdown
    head = [_md_escape(c.label) for c in (*labels, *cols)]
    md = ["| " + " | ".join(head) + " |", "|" + "|".join([":--"] * len(labels) + ["--:"] * len(cols)) + "|"]
    for i in range(len(df)):
        cells = [_md_escape(df.at[i, c.key]) for c in labels] + [cell_text(i, c, False) for c in cols]
        md.append("| " + " | ".join(cells) + " |")
    md_text = f"**{_md_escape(caption)}**\n\n" + "\n".join(md) + "\n"
    if group and any(c.compare for c in cols):
        md_text += (f"\nBold: best per {' × '.join(group)} and column; other entries show the difference to it. "
                    f"{DASH_MD} = not computed.\n")
    else:
        md_text += f"\n{DASH_MD} = not computed.\n"

    # LaTeX
    spec = "l" * len(labels) + "r" * len(cols)
    tex = ["% requires \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering", f"\\begin{{tabular}}{{{spec}}}",
           "\\toprule", " & ".join(latex_escape(c.label) for c in (*labels, *cols)) + " \\\\", "\\midrule"]
    prev = None
    for i in range(len(df)):
        if rule_on is not None:
            cur = df.at[i, rule_on]
            if prev is not None and cur != prev:
                tex.append("\\midrule")
            prev = cur
        cells = [latex_escape(df.at[i, c.key]) for c in labels] + [cell_text(i, c, True) for c in cols]
        tex.append(" & ".join(cells) + " \\\\")
    tex += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
            "\\end{table}"]

    # CSV: raw values, delta per compared column, no formatting
    keys = [c.key for c in labels] + [k for k in csv_extra if k not in {c.key for c in labels}]
    out = df[keys].copy()
    for c in cols:
        out[c.key] = pd.to_numeric(df[c.key], errors="coerce")
    for c in cols:
        if c.compare and group:
            out[f"{c.key}_delta"] = delta[c.key]
    for k in csv_tail:
        out[k] = df[k]
    return Rendered(md=md_text, tex="\n".join(tex) + "\n", csv=out.to_csv(index=False, lineterminator="\n"))


def write_table(stem: str | Path, table: Rendered) -> list[Path]:
    """Write `<stem>.md`, `<stem>.csv`, `<stem>.tex` atomically; returns the three paths."""
    stem = Path(stem)
    paths = []
    for ext, text in (("md", table.md), ("csv", table.csv), ("tex", table.tex)):
        path = stem.with_name(f"{stem.name}.{ext}")
        with atomic_write(path, encoding="utf-8") as fh:
            fh.write(text)
        paths.append(path)
    return paths


def _size_order(df: pd.DataFrame, first: Sequence[str]) -> pd.DataFrame:
    """Sort by the `first` keys, family in first-appearance order, then params_b (NaN last), then compressor."""
    df = df.copy()
    fam_order = {f: i for i, f in enumerate(dict.fromkeys(df["family"]))}
    dec_order = {d: i for i, d in enumerate(dict.fromkeys(df["decoder"]))}
    df["_fam"] = df["family"].map(fam_order)
    df["_dec"] = df["decoder"].map(dec_order)
    df["_p"] = df["params_b"].fillna(np.inf)
    keys = [{"decoder": "_dec"}.get(k, k) for k in first] + ["_fam", "_p", "compressor"]
    return df.sort_values(keys, kind="stable").drop(columns=["_fam", "_dec", "_p"]).reset_index(drop=True)


TASK_COLS: tuple[Col, ...] = tuple(Col(t, TASK_LABELS[t]) for t in TASKS)
_CSV_CELL = ("decoder", "compressor", "params_b", "cell")


def table2(eval_df: pd.DataFrame) -> Rendered:
    """Paper Table 2: rows ratio x family x size, best per (family, ratio, column) in bold. Input: load_eval()."""
    df = _size_order(eval_df, ["ratio"])
    labels = (Col("ratio", "Ratio"), Col("family", "Family"), Col("size", "Size"))
    return render(df, labels, TASK_COLS, ["family", "ratio"],
                  caption="Reconstruction BLEU (FineWeb) and QA accuracy by compression ratio and compressor size",
                  label="tab:main", csv_extra=_CSV_CELL, rule_on="ratio")


def table3(eval_df: pd.DataFrame) -> Rendered:
    """Paper Table 3 (decoder ablation): rows decoder x compressor (per ratio), best per decoder in bold."""
    df = _size_order(eval_df, ["ratio", "decoder"])
    labels = (Col("ratio", "Ratio"), Col("decoder", "Decoder"), Col("family", "Family"), Col("size", "Size"))
    return render(df, labels, TASK_COLS, ["decoder", "ratio"],
                  caption="Decoder ablation: the same compressors paired with different frozen decoders",
                  label="tab:decoder-ablation", csv_extra=_CSV_CELL, rule_on="decoder")


def rank_truncation_table(rt_df: pd.DataFrame) -> Rendered:
    """Rank truncation (App. G.2): rows cell x energy (plus the full-rank reference), KO accuracies and mean rank.

    Not a ranking, so nothing is bold; the CSV adds each accuracy's difference to the cell's full-rank value.
    """
    df = rt_df.reset_index(drop=True).copy()
    labels = (Col("ratio", "Ratio"), Col("family", "Family"), Col("size", "Size"), Col("setting", "Energy"))
    cols = (*(Col(t, TASK_LABELS[t], compare=False) for t in KO_TASKS), Col("mean_rank", "Mean rank", 1, False))
    full = df[df["setting"] == "full"].set_index("cell")
    tail = []
    for t in KO_TASKS:
        df[f"{t}_delta_full"] = df[t] - df["cell"].map(full[t]).astype(float)
        tail.append(f"{t}_delta_full")
    return render(df, labels, cols, None, caption="KO accuracy after truncating the memory to a fraction of its "
                  "spectral energy", label="tab:rank-truncation", csv_extra=("energy", *_CSV_CELL), rule_on="cell",
                  csv_tail=tail)


def rag_table(rag_df: pd.DataFrame) -> Rendered:
    """RAG on MuSiQue: EM and F1 per cell (best per family x ratio in bold), n questions. Input: load_rag()."""
    df = _size_order(rag_df, ["ratio"])
    labels = (Col("ratio", "Ratio"), Col("family", "Family"), Col("size", "Size"))
    cols = (Col("em", "EM"), Col("f1", "F1"), Col("n", "n", 0, False))
    return render(df, labels, cols, ["family", "ratio"], caption="Retrieval-augmented QA on MuSiQue from "
                  "compressed passages", label="tab:rag-musique", csv_extra=_CSV_CELL, rule_on="ratio")


def training_table(train_df: pd.DataFrame) -> Rendered:
    """Training per cell: final L_re and L_nt, and the control that shows Z carries the segment's content:
    L_re with each sample's own memory vs with memories shuffled across the batch (gap > 0: Z is read).
    Not a ranking, so nothing is bold. Input: load_training()."""
    df = _size_order(train_df, ["decoder", "ratio"])
    labels = (Col("decoder", "Decoder"), Col("ratio", "Ratio"), Col("family", "Family"), Col("size", "Size"))
    cols = (Col("steps", "Steps", 0, False), Col("final_loss_re", "L_re", 3, False),
            Col("final_loss_nt", "L_nt", 3, False), Col("loss_own_z", "L_re own Z", 4, False),
            Col("loss_shuffled_z", "L_re shuffled Z", 4, False), Col("gap", "Gap", 4, False))
    return render(df, labels, cols, None, caption="Training losses and the shuffled-memory control",
                  label="tab:training", csv_extra=_CSV_CELL, rule_on="ratio")
