"""Tables 2 and 3, the semantic-drift breakdown, LoRA control, rank truncation, RAG and training, each rendered as
Markdown, LaTeX (booktabs) and CSV.

Formatting rules (so a partial run never misleads): a value whose result file is missing is NaN and shows as "—"
in Markdown, "---" in LaTeX and an empty field in CSV - never 0 - and is excluded from "best". Paper tables print
two decimals and the 95 % bootstrap interval, `0.71 [0.67, 0.75]`. Within each comparison group (Table 2: family x
ratio; Table 3: decoder x ratio) the best value per column is bold. Marks after a value say what it cannot be told
apart from (MARKS; explained under every table that uses them). The CSV keeps full precision and everything the
marks are computed from: value, interval, n, each control's value, interval and flag, the delta to the best and
its paired interval.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write
from .collect import CONTROLS, KO_TASKS, TASK_FIELDS, TASK_LABELS, TASKS
from .compare import best_and_delta

MINUS = "\u2212"
DASH_MD = "\u2014"
DASH_TEX = "---"
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


# --------------------------------------------------------------------------------------------------- marks
@dataclass(frozen=True)
class Mark:
    """A footnote mark: Markdown symbol, LaTeX symbol (math mode), meaning, and which entries of a column get it."""

    md: str
    tex: str
    meaning: str
    applies: Callable[[pd.DataFrame, str], pd.Series]


def _is_false(df: pd.DataFrame, col: str) -> pd.Series:
    """True where a flag column is False (NA and missing columns: not marked)."""
    if col not in df:
        return pd.Series(False, index=df.index)
    return df[col].astype("boolean").eq(False).fillna(False).astype(bool)


def _ties_best(df: pd.DataFrame, key: str) -> pd.Series:
    if f"{key}_delta_ci_high" not in df:
        return pd.Series(False, index=df.index)
    best = df.get(f"{key}_best", pd.Series(False, index=df.index)).astype(bool)
    return (pd.to_numeric(df[f"{key}_delta_ci_high"], errors="coerce") >= 0) & ~best


MARKS: dict[str, Mark] = {
    "tie": Mark("\u2248", r"\approx", "not distinguishable from the bold best of its group (paired bootstrap 95 % "
                "interval of the difference includes 0)", _ties_best),
    "shuffled_z": Mark("\u2020", r"\dagger", "not distinguishable from the shuffled-memory control (Z of another "
                       "sample; paired 95 % interval of the difference includes 0)",
                       lambda df, k: _is_false(df, f"{k}_shuffled_z_distinguishable")),
    "no_memory": Mark("\u2021", r"\ddagger", "not distinguishable from the decoder's prior without memory vectors "
                      "(paired 95 % interval of the difference includes 0)",
                      lambda df, k: _is_false(df, f"{k}_no_memory_distinguishable")),
    "chance": Mark("\u00a7", r"\S", "95 % interval includes chance (mean 1/#candidates)",
                   lambda df, k: _is_false(df, f"{k}_above_chance")),
}


@dataclass(frozen=True)
class Col:
    """A numeric column: DataFrame key, header, decimals, whether it takes part in "best", whether its interval
    (`<key>_ci_low/high`) is printed, and the MARKS it can carry."""

    key: str
    label: str
    digits: int = 2
    compare: bool = True
    interval: bool = False
    marks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Label:
    """A text column (row label)."""

    key: str
    label: str


@dataclass(frozen=True)
class Rendered:
    """One table in its three forms."""

    md: str
    tex: str
    csv: str


@dataclass
class Spec:
    """Everything `render` needs besides the rows: columns, grouping, caption, LaTeX label and the CSV layout."""

    labels: Sequence[Label]
    cols: Sequence[Col]
    caption: str
    label: str
    group: Sequence[str] | None = None
    rule_on: str | None = None          # a label key: LaTeX gets a \midrule wherever its value changes
    csv_extra: Sequence[str] = ()       # raw columns after the labels
    csv_fields: Sequence[str] = ()      # per compared/interval column: `<key>_<field>` columns that exist in df
    csv_tail: Sequence[str] = ()        # raw columns at the end
    trailing: Sequence[Label] = ()      # text columns after the numeric ones (Markdown and LaTeX)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- formatting
def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in free text (model names, family names)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _fmt(v: float, digits: int, tex: bool = False) -> str:
    s = f"{v:.{digits}f}"
    if s.startswith("-"):
        return ("$-$" if tex else MINUS) + s[1:]
    return s


def mark_frame(df: pd.DataFrame, cols: Sequence[Col]) -> pd.DataFrame:
    """Per column key: the MARKS names that apply to each row, as a list (in MARKS order)."""
    out = pd.DataFrame({c.key: [[] for _ in range(len(df))] for c in cols}, index=df.index)
    for c in cols:
        for name in MARKS:
            if name not in c.marks:
                continue
            hits = MARKS[name].applies(df, c.key) & df[c.key].notna()
            for i in df.index[hits]:
                out.at[i, c.key] = out.at[i, c.key] + [name]
    return out


def cell_text(df: pd.DataFrame, i: int, c: Col, bold: bool, marks: list[str], tex: bool) -> str:
    """One numeric entry: value (bold if best), interval when the column shows one and it exists, marks."""
    v = df.at[i, c.key]
    if pd.isna(v):
        return DASH_TEX if tex else DASH_MD
    s = _fmt(float(v), c.digits, tex)
    if bold:
        s = rf"\textbf{{{s}}}" if tex else f"**{s}**"
    if c.interval:
        lo, hi = df.get(f"{c.key}_ci_low"), df.get(f"{c.key}_ci_high")
        if lo is not None and hi is not None and pd.notna(lo.at[i]) and pd.notna(hi.at[i]):
            ci = f"[{_fmt(float(lo.at[i]), c.digits, tex)}, {_fmt(float(hi.at[i]), c.digits, tex)}]"
            s += rf"\,{{\scriptsize {ci}}}" if tex else f" {ci}"
    if marks:
        s += "$^{" + "".join(MARKS[m].tex for m in marks) + "}$" if tex else "".join(MARKS[m].md for m in marks)
    return s


def explain(spec: Spec, df: pd.DataFrame) -> list[str]:
    """The notes under a table: bold, each mark its columns can carry, missing values, missing controls."""
    notes = []
    if spec.group and any(c.compare for c in spec.cols):
        notes.append(f"Bold: best per {' × '.join(spec.group)} and column (ties: all).")
    if any(c.interval for c in spec.cols):
        notes.append("[a, b]: 95 % percentile bootstrap interval over the evaluation samples (contexts for "
                     "semantic drift).")
    used = [m for m in MARKS if any(m in c.marks for c in spec.cols)]
    for m in used:
        notes.append(f"{MARKS[m].md}: {MARKS[m].meaning}.")
    n_missing = 0
    for c in spec.cols:
        flags = [f"{c.key}_{ctl}_distinguishable" for ctl in CONTROLS if ctl in c.marks]
        flags = [f for f in flags if f in df]
        if flags:
            n_missing += int((df[c.key].notna() & df[flags].isna().any(axis=1)).sum())
    if n_missing:
        notes.append(f"{n_missing} entries have no control in their result file (older format): "
                     "those marks cannot be shown.")
    notes.append(f"{DASH_MD} = not computed.")
    return notes + list(spec.notes)


# ----------------------------------------------------------------------------------------------- rendering
def _rows(df: pd.DataFrame, spec: Spec, tex: bool) -> list[list[str]]:
    compared = [c.key for c in spec.cols if c.compare]
    best, _ = best_and_delta(df, compared, spec.group) if spec.group and compared else (None, None)
    marks = mark_frame(df, spec.cols)
    esc = latex_escape if tex else _md_escape
    out = []
    for i in range(len(df)):
        row = [esc(df.at[i, lab.key]) for lab in spec.labels]
        for c in spec.cols:
            bold = bool(best is not None and c.compare and best.at[i, c.key])
            row.append(cell_text(df, i, c, bold, marks.at[i, c.key], tex))
        out.append(row + [esc(df.at[i, lab.key]) for lab in spec.trailing])
    return out


def render_markdown(df: pd.DataFrame, spec: Spec, notes: list[str]) -> str:
    head = [_md_escape(x.label) for x in (*spec.labels, *spec.cols, *spec.trailing)]
    align = [":--"] * len(spec.labels) + ["--:"] * len(spec.cols) + [":-:"] * len(spec.trailing)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(df, spec, tex=False)]
    return f"**{_md_escape(spec.caption)}**\n\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def render_latex(df: pd.DataFrame, spec: Spec, notes: list[str]) -> str:
    colspec = "l" * len(spec.labels) + "r" * len(spec.cols) + "c" * len(spec.trailing)
    tex = ["% requires \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering", "\\small",
           f"\\begin{{tabular}}{{{colspec}}}", "\\toprule",
           " & ".join(latex_escape(x.label) for x in (*spec.labels, *spec.cols, *spec.trailing)) + " \\\\",
           "\\midrule"]
    prev = None
    for i, cells in enumerate(_rows(df, spec, tex=True)):
        if spec.rule_on is not None:
            cur = df.at[i, spec.rule_on]
            if prev is not None and cur != prev:
                tex.append("\\midrule")
            prev = cur
        tex.append(" & ".join(cells) + " \\\\")
    tex += ["\\bottomrule", "\\end{tabular}", "\\par\\smallskip\\footnotesize"]
    tex += [_tex_note(n) + " \\\\" for n in notes]
    tex += [f"\\caption{{{latex_escape(spec.caption)}}}", f"\\label{{{spec.label}}}", "\\end{table}"]
    return "\n".join(tex) + "\n"


def _tex_note(note: str) -> str:
    """A note in LaTeX: text escaped, mark symbols and typography as math/LaTeX commands."""
    out = latex_escape(note)
    for m in MARKS.values():
        out = out.replace(m.md, f"${m.tex}$")
    return out.replace("×", r"$\times$").replace(DASH_MD, "---").replace(MINUS, "$-$")


def render_csv(df: pd.DataFrame, spec: Spec) -> str:
    """Raw values, full precision: labels, csv_extra, each column with its `<key>_<field>` columns, csv_tail."""
    label_keys = [x.key for x in spec.labels]
    keys = label_keys + [k for k in spec.csv_extra if k not in label_keys]
    parts: dict[str, pd.Series] = {k: df[k] for k in keys}
    compared = [c.key for c in spec.cols if c.compare]
    _, delta = best_and_delta(df, compared, spec.group) if spec.group and compared else (None, None)
    for c in spec.cols:
        parts[c.key] = pd.to_numeric(df[c.key], errors="coerce")
        for f in spec.csv_fields:
            parts.setdefault(f"{c.key}_{f}", df[f"{c.key}_{f}"]) if f"{c.key}_{f}" in df else None
        if delta is not None and c.compare:
            parts.setdefault(f"{c.key}_delta", delta[c.key])
    for k in spec.csv_tail:
        parts[k] = df[k]
    return pd.DataFrame(parts).to_csv(index=False, lineterminator="\n")


def render(df: pd.DataFrame, spec: Spec) -> Rendered:
    """Render the rows of `df` in order as Markdown, LaTeX and CSV (see the module docstring)."""
    df = df.reset_index(drop=True)
    notes = explain(spec, df)
    return Rendered(md=render_markdown(df, spec, notes), tex=render_latex(df, spec, notes), csv=render_csv(df, spec))


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


# ------------------------------------------------------------------------------------------------- tables
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


def task_cols(tasks: Sequence[str] = TASKS, compare: bool = True) -> tuple[Col, ...]:
    """Columns of the paper's tasks: interval shown; marks: tie with the best, shuffled Z, and for KO also the
    no-memory prior and chance."""
    def marks(t: str) -> tuple[str, ...]:
        base = ("tie",) if compare else ()
        return base + (("shuffled_z", "no_memory", "chance") if t in KO_TASKS else ("shuffled_z",))
    return tuple(Col(t, TASK_LABELS[t], 2, compare, True, marks(t)) for t in tasks)


TASK_COLS: tuple[Col, ...] = task_cols()
_CSV_CELL = ("decoder", "compressor", "params_b", "cell")
#: Per task, the CSV columns beside its value: interval, controls, flags, the best flag and delta with interval.
TASK_CSV_FIELDS: tuple[str, ...] = (*TASK_FIELDS, "best", "delta", "delta_ci_low", "delta_ci_high")


def table2(eval_df: pd.DataFrame) -> Rendered:
    """Paper Table 2: rows ratio x family x size, best per (family, ratio, column) in bold.

    Input: collect.load_eval(), with compare.add_best_deltas() for the tie marks (without it: no tie marks)."""
    df = _size_order(eval_df, ["ratio"])
    spec = Spec((Label("ratio", "Ratio"), Label("family", "Family"), Label("size", "Size")), TASK_COLS,
                "Reconstruction BLEU (FineWeb) and QA accuracy by compression ratio and compressor size",
                "tab:main", group=["family", "ratio"], rule_on="ratio", csv_extra=_CSV_CELL,
                csv_fields=TASK_CSV_FIELDS)
    return render(df, spec)


def table3(eval_df: pd.DataFrame) -> Rendered:
    """Paper Table 3 (decoder ablation): rows decoder x compressor (per ratio), best per decoder x ratio in bold."""
    df = _size_order(eval_df, ["ratio", "decoder"])
    spec = Spec((Label("ratio", "Ratio"), Label("decoder", "Decoder"), Label("family", "Family"),
                 Label("size", "Size")), TASK_COLS,
                "Decoder ablation: the same compressors paired with different frozen decoders",
                "tab:decoder-ablation", group=["decoder", "ratio"], rule_on="decoder", csv_extra=_CSV_CELL,
                csv_fields=TASK_CSV_FIELDS)
    return render(df, spec)


def sd_breakdown_table(sd_df: pd.DataFrame, dims: Sequence[str]) -> Rendered:
    """Semantic drift by question kind: all, answerable, unanswerable (must abstain), normalised exact match and
    each of the dimensions, per source and cell, with intervals. Not a ranking: nothing is bold.
    Input: collect.load_sd_breakdown()."""
    df = _size_order(sd_df, ["source", "ratio"]) if len(sd_df) else sd_df
    cols = [Col("all", "All", compare=False, interval=True), Col("answerable", "Answerable", compare=False,
                                                                   interval=True),
            Col("unanswerable", "Unanswerable", compare=False, interval=True),
            Col("em", "EM (norm.)", compare=False, interval=True)]
    cols += [Col(f"dim_{d}", d.replace("_", " "), compare=False, interval=True) for d in dims]
    spec = Spec((Label("source", "Source"), Label("ratio", "Ratio"), Label("family", "Family"),
                 Label("size", "Size")), cols, "Semantic drift by question kind and dimension", "tab:sd-breakdown",
                rule_on="ratio", csv_extra=_CSV_CELL, csv_fields=("ci_low", "ci_high", "n"),
                notes=[("Unanswerable questions are correct only when the decoder abstains; EM (norm.) is the "
                        "normalised exact-match variant of the overall score.")])
    return render(df, spec)


def lora_control_table(lc_df: pd.DataFrame) -> Rendered:
    """LoRA control: each LoRA compressor beside its full fine-tune twin (same decoder and ratio), per task, and
    their difference with a paired 95 % interval. Input: one row per (pair, task) - build.lora_control_frame()."""
    df = lc_df.reset_index(drop=True).copy()
    df["excl"] = [DASH_MD if pd.isna(lo) else ("yes" if lo > 0 or hi < 0 else "no")
                  for lo, hi in zip(df["delta_ci_low"], df["delta_ci_high"])]
    spec = Spec((Label("ratio", "Ratio"), Label("family", "Family"), Label("size", "Size"),
                 Label("task_label", "Task")),
                (Col("lora", "LoRA", compare=False, interval=True),
                 Col("full", "Full FT", compare=False, interval=True),
                 Col("delta", "LoRA − full", compare=False, interval=True)),
                "LoRA against full fine-tuning of the same compressor", "tab:lora-control", rule_on="lora_cell",
                csv_extra=("lora_cell", "full_cell", "task"), csv_fields=("ci_low", "ci_high", "n"),
                csv_tail=("excludes_zero",), trailing=(Label("excl", "excludes 0"),),
                notes=[("LoRA − full: paired bootstrap 95 % interval over the items both were evaluated on; "
                        "excludes 0: yes where it does (the two fine-tunings differ), — where per-sample rows are "
                        "missing.")])
    return render(df.assign(excludes_zero=df["excl"].map({"yes": True, "no": False})), spec)


def rank_truncation_table(rt_df: pd.DataFrame) -> Rendered:
    """Rank truncation (App. G.2): rows cell x variant (per_sample | batch) x energy, plus the full-rank
    reference; KO accuracies and mean rank. Not a ranking, so nothing is bold; the CSV adds each accuracy's
    difference to the cell's full-rank value."""
    df = rt_df.reset_index(drop=True).copy()
    labels = (Label("ratio", "Ratio"), Label("family", "Family"), Label("size", "Size"),
              Label("variant", "Variant"), Label("setting", "Energy"))
    cols = (*(Col(t, TASK_LABELS[t], 2, False, True) for t in KO_TASKS), Col("mean_rank", "Mean rank", 1, False))
    full = df[df["setting"] == "full"].set_index("cell")
    tail = []
    for t in KO_TASKS:
        df[f"{t}_delta_full"] = df[t] - df["cell"].map(full[t]).astype(float)
        tail.append(f"{t}_delta_full")
    spec = Spec(labels, cols, "KO accuracy after truncating the memory to a fraction of its spectral energy",
                "tab:rank-truncation", rule_on="cell", csv_extra=("energy", *_CSV_CELL),
                csv_fields=("ci_low", "ci_high"), csv_tail=tail,
                notes=[("per_sample: each memory cut to its own top singular directions; batch: one SVD over the "
                        "batch of memories. full: no truncation.")])
    return render(df, spec)


def rag_table(rag_df: pd.DataFrame) -> Rendered:
    """RAG on MuSiQue: EM and F1 per cell (best per family x ratio in bold), n questions. Input: load_rag()."""
    df = _size_order(rag_df, ["ratio"])
    spec = Spec((Label("ratio", "Ratio"), Label("family", "Family"), Label("size", "Size")),
                (Col("em", "EM"), Col("f1", "F1"), Col("n", "n", 0, False)),
                "Retrieval-augmented QA on MuSiQue from compressed passages", "tab:rag-musique",
                group=["family", "ratio"], rule_on="ratio", csv_extra=_CSV_CELL)
    return render(df, spec)


def training_table(train_df: pd.DataFrame) -> Rendered:
    """Training per cell: final L_re and L_nt, and the control that shows Z carries the segment's content:
    L_re with each sample's own memory vs with memories shuffled across the batch (gap > 0: Z is read).
    Not a ranking, so nothing is bold. Input: load_training()."""
    df = _size_order(train_df, ["decoder", "ratio"])
    labels = (Label("decoder", "Decoder"), Label("ratio", "Ratio"), Label("family", "Family"), Label("size", "Size"))
    cols = (Col("steps", "Steps", 0, False), Col("final_loss_re", "L_re", 3, False),
            Col("final_loss_nt", "L_nt", 3, False), Col("loss_own_z", "L_re own Z", 4, False),
            Col("loss_shuffled_z", "L_re shuffled Z", 4, False), Col("gap", "Gap", 4, False))
    spec = Spec(labels, cols, "Training losses and the shuffled-memory control", "tab:training", rule_on="ratio",
                csv_extra=_CSV_CELL, notes=[("Gap = L_re with shuffled Z − L_re with own Z on held-out segments "
                                             "(> 0: the decoder reads the memory).")])
    return render(df, spec)
