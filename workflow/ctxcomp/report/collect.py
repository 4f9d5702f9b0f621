"""Read the pipeline's result files into pandas frames for tables and figures.

A missing file is a cell that has not been computed yet: it becomes NaN (never 0) so tables show "—" and "best"
ignores it. A file that exists but cannot be parsed raises, naming the file - a corrupt result must not look like a
missing one. Paths follow the result-file contract: `{stage}/{decoder}/{compressor}/r{ratio}/...` under `out`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import read_jsonl
from ..paths import EVAL_TASKS, KO_SETS, QSETS, RunPaths, samples_of

#: Evaluation tasks in Table 2 column order, with their column headers.
TASKS: tuple[str, ...] = EVAL_TASKS
TASK_LABELS: dict[str, str] = {
    "recon_fineweb": "Reconstr.",
    "ko_faitheval": "KO FaithEval",
    "ko_conflictqa": "KO ConflictQA",
    "sd_fineweb": "SD FineWeb",
    "sd_faitheval": "SD FaithEval",
}
KO_TASKS: tuple[str, ...] = tuple(f"ko_{s}" for s in KO_SETS)
SD_TASKS: tuple[str, ...] = tuple(f"sd_{s}" for s in QSETS)
CELL_COLUMNS: tuple[str, ...] = ("cell", "decoder", "compressor", "ratio", "family", "size", "params_b")


def parse_cell(cell: str) -> dict:
    """Split a cell path `decoder/compressor/r<ratio>` into its parts (ratio as int)."""
    parts = cell.strip("/").split("/")
    if len(parts) != 3 or not parts[2].startswith("r") or not parts[2][1:].isdigit():
        raise ValueError(f"not a cell path 'decoder/compressor/r<ratio>': {cell!r}")
    return {"decoder": parts[0], "compressor": parts[1], "ratio": int(parts[2][1:])}


def cell_path(stage: str, out: str | Path, cell: str) -> Path:
    """Directory of one cell's results for a pipeline stage (eval, probes, train, dynamics)."""
    return Path(RunPaths(str(out)).cell(stage, cell))


def read_json_or_none(path: str | Path) -> Any:
    """Parsed JSON, or None if the file does not exist; a file that exists but is not JSON raises ValueError."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg})") from exc


def read_csv_or_none(path: str | Path) -> pd.DataFrame | None:
    """A CSV as a DataFrame, or None if the file does not exist."""
    path = Path(path)
    return pd.read_csv(path) if path.exists() else None


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def cell_frame(cells: list[str], models: dict) -> pd.DataFrame:
    """One row per cell with its decoder, compressor, ratio and the compressor's family, size and params_b.

    Row order is the order of `cells`; a compressor missing from `models` gets family "?" and NaN params_b.
    """
    rows = []
    for cell in cells:
        parts = parse_cell(cell)
        meta = models.get(parts["compressor"], {})
        rows.append({"cell": cell, **parts, "family": str(meta.get("family", "?")),
                     "size": str(meta.get("size", parts["compressor"])), "params_b": _num(meta.get("params_b"))})
    return pd.DataFrame(rows, columns=list(CELL_COLUMNS))


#: Controls with a measured value, interval and a paired "distinguishable" flag (contract: task result `controls`).
CONTROLS: tuple[str, ...] = ("shuffled_z", "no_memory")
_CONTROL_FIELDS: tuple[str, ...] = ("value", "ci_low", "ci_high", "diff_ci_low", "diff_ci_high", "distinguishable")


def controls_of(task: str) -> tuple[str, ...]:
    """The controls a task's result carries: shuffled Z for every task, the no-memory prior for KO only."""
    return CONTROLS if task.startswith("ko_") else ("shuffled_z",)


def fields_of(task: str) -> tuple[str, ...]:
    """Column suffixes task_fields() adds for a task, beside the bare `<task>` value column."""
    ko = ("chance", "above_chance", "norm", "norm_ci_low", "norm_ci_high") if task.startswith("ko_") else ()
    return ("n", "ci_low", "ci_high", *(f"{c}_{f}" for c in controls_of(task) for f in _CONTROL_FIELDS), *ko,
            "resamples", "seed")


#: Every column suffix load_eval() can add for some task, in the order of the KO tasks' (the fullest) fields.
TASK_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(
    f for t in sorted(EVAL_TASKS, key=lambda t: not t.startswith("ko_")) for f in fields_of(t)))


def interval(obj: Any) -> tuple[float, float]:
    """(low, high) of a contract `ci95` pair; NaN, NaN when it is missing or null."""
    if isinstance(obj, (list, tuple)) and len(obj) == 2:
        return _num(obj[0]), _num(obj[1])
    return math.nan, math.nan


def _flag(x: Any) -> Any:
    """A contract boolean as True/False, anything else (missing, null) as pandas NA."""
    return bool(x) if isinstance(x, bool) else pd.NA


def value_of(x: Any) -> float:
    """A number, or the `value` of a contract {"value", "ci95", ...} object (older files store bare numbers)."""
    return _num(x.get("value")) if isinstance(x, dict) else _num(x)


def task_fields(res: dict | None, task: str) -> dict:
    """One task result flattened to `<task>` (value) and `<task>_<field>` for each of fields_of(task).

    `above_chance` (KO) is True when the 95 % interval lies above chance, NA when either is unknown. A result in
    the older format (no ci95/controls) gives NaN/NA for those fields, never a guess.
    """
    res = res or {}
    lo, hi = interval(res.get("ci95"))
    out: dict[str, Any] = {task: _num(res.get("value")), f"{task}_n": _num(res.get("n")),
                           f"{task}_ci_low": lo, f"{task}_ci_high": hi}
    controls = res.get("controls") or {}
    for name in controls_of(task):
        c = controls.get(name) or {}
        c_lo, c_hi = interval(c.get("ci95"))
        d_lo, d_hi = interval(c.get("diff_ci95"))
        out.update({f"{task}_{name}_value": _num(c.get("value")), f"{task}_{name}_ci_low": c_lo,
                    f"{task}_{name}_ci_high": c_hi, f"{task}_{name}_diff_ci_low": d_lo,
                    f"{task}_{name}_diff_ci_high": d_hi, f"{task}_{name}_distinguishable": _flag(
                        c.get("distinguishable"))})
    if task.startswith("ko_"):
        details = res.get("details") or {}
        chance = value_of(controls["chance"]) if "chance" in controls else _num(details.get("chance"))
        out[f"{task}_chance"] = chance
        out[f"{task}_above_chance"] = pd.NA if math.isnan(chance) or math.isnan(lo) else bool(lo > chance)
        norm = details.get("accuracy_norm")
        n_lo, n_hi = interval(norm.get("ci95")) if isinstance(norm, dict) else (math.nan, math.nan)
        out.update({f"{task}_norm": value_of(norm), f"{task}_norm_ci_low": n_lo, f"{task}_norm_ci_high": n_hi})
    boot = res.get("bootstrap") or {}
    out.update({f"{task}_resamples": _num(boot.get("resamples")), f"{task}_seed": _num(boot.get("seed"))})
    return out


def eval_result(out: str | Path, cell: str, task: str) -> dict | None:
    """The summary JSON of one task of one cell, or None when it has not been computed."""
    return read_json_or_none(cell_path("eval", out, cell) / f"{task}.json")


def load_eval(out: str | Path, cells: list[str], models: dict) -> pd.DataFrame:
    """cell_frame plus, per task, its value (0-1), interval, controls and flags (task_fields); NaN where missing."""
    df = cell_frame(cells, models)
    rows = []
    for cell in cells:
        row: dict[str, Any] = {}
        for task in TASKS:
            row.update(task_fields(eval_result(out, cell, task), task))
        rows.append(row)
    extra = pd.DataFrame(rows, index=df.index)
    for col in extra.columns:
        if col.endswith(("_distinguishable", "_above_chance")):
            extra[col] = extra[col].astype("boolean")
        elif col.endswith(("_n", "_resamples", "_seed")):
            extra[col] = extra[col].astype("Int64")
    return pd.concat([df, extra], axis=1)


def load_samples(out: str | Path, cell: str, task: str) -> pd.DataFrame | None:
    """Per-sample rows of one task (eval/<cell>/<task>.samples.jsonl), None when the file does not exist."""
    path = Path(samples_of(cell_path("eval", out, cell) / f"{task}.json"))
    if not path.exists():
        return None
    return pd.DataFrame(read_jsonl(path))


#: The semantic-drift breakdown parts of a result's `details`, in table order (contract).
SD_PARTS: tuple[str, ...] = ("answerable", "unanswerable", "em")


def load_sd_breakdown(out: str | Path, cells: list[str], models: dict) -> tuple[pd.DataFrame, list[str]]:
    """One row per (cell, source): overall value, answerable, unanswerable, normalised exact match and each
    dimension, every one with `_ci_low`, `_ci_high` and `_n` (NaN where missing). Also returns the dimensions
    in the order the result files list them (the "unanswerable" dimension is the `unanswerable` part)."""
    base = cell_frame(cells, models)
    rows, dims = [], {}
    for _, meta in base.iterrows():
        for task in SD_TASKS:
            res = eval_result(out, meta["cell"], task) or {}
            details = res.get("details") or {}
            row = {**meta.to_dict(), "source": task.split("_", 1)[1], "task": task}
            parts = {"all": res, **{p: details.get(p) for p in SD_PARTS}}
            if parts["answerable"] is None and "answerable_accuracy" in details:  # older format: bare numbers
                parts.update(answerable=details["answerable_accuracy"], unanswerable=details["unanswerable_accuracy"])
            for dim, v in (details.get("per_dimension") or {}).items():
                if dim != "unanswerable":
                    dims.setdefault(dim, None)
                    parts[f"dim_{dim}"] = v
            for key, v in parts.items():
                d = v if isinstance(v, dict) else {"value": v}
                lo, hi = interval(d.get("ci95"))
                row.update({key: value_of(v), f"{key}_ci_low": lo, f"{key}_ci_high": hi, f"{key}_n": _num(d.get("n"))})
            rows.append(row)
    df = pd.DataFrame(rows)
    for col in ["all", *SD_PARTS, *(f"dim_{d}" for d in dims)]:
        for c in (col, f"{col}_ci_low", f"{col}_ci_high", f"{col}_n"):
            if c not in df:
                df[c] = math.nan
    return df, list(dims)


def load_probes(out: str | Path, cells: list[str], models: dict) -> pd.DataFrame:
    """cell_frame plus erank, erank_batch, entropy_mean and entropy_<source> from probes.json (NaN if missing)."""
    df = cell_frame(cells, models)
    recs = [read_json_or_none(cell_path("probes", out, c) / "probes.json") or {} for c in cells]
    for key in ("erank", "erank_batch", "entropy_mean"):
        df[key] = [_num(r.get(key)) for r in recs]
    sources = sorted({s for r in recs for s in (r.get("entropy_by_source") or {})})
    for src in sources:
        df[f"entropy_{src}"] = [_num((r.get("entropy_by_source") or {}).get(src)) for r in recs]
    return df


def load_losses(out: str | Path, cells: list[str]) -> dict[str, pd.DataFrame]:
    """Training loss curves (train/<cell>/loss.csv) by cell; cells without the file are left out."""
    curves = {}
    for cell in cells:
        df = read_csv_or_none(cell_path("train", out, cell) / "loss.csv")
        if df is not None and len(df):
            curves[cell] = df
    return curves


#: Rank-truncation variants (contract): an SVD per sample's memory, or one over the batch of memories.
TRUNCATION_VARIANTS: tuple[str, ...] = ("per_sample", "batch")


def load_rank_truncation(out: str | Path, cells: list[str], models: dict) -> pd.DataFrame:
    """One row per (cell, variant, energy) plus a `full` row per cell (variant "full", energy NaN), KO accuracies
    (value, and `_ci_low`/`_ci_high` when the file has intervals) and the mean kept rank.

    A result row without `variant` is a per-sample truncation (the older format). A cell without
    rank_truncation.json contributes one all-NaN "full" row so the table still lists it.
    """
    base = cell_frame(cells, models).set_index("cell")
    rows = []

    def accs(r: dict) -> dict:
        out_ = {}
        for t in KO_TASKS:
            lo, hi = interval(r.get(t).get("ci95")) if isinstance(r.get(t), dict) else (math.nan, math.nan)
            out_.update({t: value_of(r.get(t)), f"{t}_ci_low": lo, f"{t}_ci_high": hi})
        return out_

    for cell in cells:
        res = read_json_or_none(cell_path("eval", out, cell) / "rank_truncation.json") or {}
        meta = base.loc[cell].to_dict()
        rows.append({"cell": cell, **meta, "variant": "full", "setting": "full", "energy": math.nan,
                     **accs(res.get("full_rank") or {}), "mean_rank": math.nan})
        for r in res.get("results", []):
            e = _num(r.get("energy"))
            rows.append({"cell": cell, **meta, "variant": str(r.get("variant", res.get("variant", "per_sample"))),
                         "setting": f"{e:g}", "energy": e, **accs(r), "mean_rank": _num(r.get("mean_rank"))})
    cols = list(CELL_COLUMNS) + ["variant", "setting", "energy",
                                 *(f"{t}{s}" for t in KO_TASKS for s in ("", "_ci_low", "_ci_high")), "mean_rank"]
    df = pd.DataFrame(rows, columns=cols)
    # per cell: each variant's energies ascending (variants in contract order), the full-rank reference last
    order = {v: i for i, v in enumerate(TRUNCATION_VARIANTS)}
    df["_v"] = df["variant"].map(lambda v: len(order) + 1 if v == "full" else order.get(v, len(order)))
    df["_o"] = df["energy"].fillna(np.inf)
    df["_c"] = df["cell"].map({c: i for i, c in enumerate(cells)})
    return df.sort_values(["_c", "_v", "_o"], kind="stable").drop(columns=["_v", "_o", "_c"]).reset_index(drop=True)


@dataclass(frozen=True)
class DynamicsFiles:
    """The dynamics run's files the report reads (contract: dynamics/<cell>/...); None: not part of this run."""

    checkpoints: Path | None = None   # checkpoints.csv: step, erank, entropy, ko_faitheval, ko_conflictqa
    samples: Path | None = None       # checkpoints.samples.jsonl: step, task, id, correct, margin
    train: Path | None = None         # train/dynamics.csv: erank/entropy of the training-time probe batch

    @classmethod
    def of_run(cls, out: str | Path, cell: str | None) -> DynamicsFiles:
        """The contract's paths for a dynamics cell of the run under `out`."""
        if not cell:
            return cls()
        p = RunPaths(str(out))
        ck = Path(p.dynamics("checkpoints.csv", cell))
        return cls(ck, Path(samples_of(ck)), Path(p.dynamics("train/dynamics.csv", cell)))

    @classmethod
    def from_paths(cls, paths: list[str | Path]) -> DynamicsFiles:
        """Pick the three files out of a rule's input list by their names."""
        by = {Path(p).name: Path(p) for p in paths}
        ck = by.get("checkpoints.csv")
        return cls(ck, by.get(Path(samples_of(ck)).name) if ck else None, by.get("dynamics.csv"))


def _sorted_csv(path: Path | None) -> pd.DataFrame | None:
    df = read_csv_or_none(path) if path else None
    return df.sort_values("step").reset_index(drop=True) if df is not None and len(df) else None


def load_dynamics(files: DynamicsFiles) -> pd.DataFrame | None:
    """Probe checkpoints of the dynamics run (checkpoints.csv: step, erank, entropy, KO accuracies)."""
    return _sorted_csv(files.checkpoints)


def load_train_dynamics(files: DynamicsFiles) -> pd.DataFrame | None:
    """Erank/entropy of the probe batch logged during training (train/dynamics.csv: step, erank, entropy)."""
    return _sorted_csv(files.train)


def load_checkpoint_samples(files: DynamicsFiles) -> pd.DataFrame | None:
    """Per-question KO rows at each probe checkpoint (step, task, id, correct, margin); None if not written."""
    if not files.samples or not Path(files.samples).exists():
        return None
    df = pd.DataFrame(read_jsonl(files.samples))
    return df if len(df) else None


def load_entropy_samples(out: str | Path, cells: list[str], models: dict) -> pd.DataFrame:
    """Per-context entropy rows of every cell (probes/<cell>/entropy.samples.jsonl) with the cell's metadata."""
    base = cell_frame(cells, models).set_index("cell")
    frames = []
    for cell in cells:
        path = cell_path("probes", out, cell) / "entropy.samples.jsonl"
        rows = read_jsonl(path) if path.exists() else []
        if rows:
            d = pd.DataFrame(rows)
            for k, v in base.loc[cell].items():
                d[k] = v
            d["cell"] = cell
            frames.append(d)
    cols = [*CELL_COLUMNS, "source", "context_id", "entropy", "n_tokens"]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    for c in cols:
        if c not in df:
            df[c] = math.nan
    return df[cols + [c for c in df.columns if c not in cols]]


def load_entropy_drift(out: str | Path, cells: list[str], models: dict | None = None) -> pd.DataFrame:
    """Per-context entropy joined with per-context drift accuracy, over all cells.

    Entropy rows come from probes/<cell>/entropy.samples.jsonl ({context_id, source, entropy, n_tokens}); drift
    accuracy is the mean `correct` over the questions of that context in eval/<cell>/sd_<source>.samples.jsonl. The
    join is on (cell, source, context_id): context ids are only unique within a source. Columns: the cell's
    metadata (cell_frame), source, context_id, entropy, n_tokens, drift_accuracy, n_questions.
    """
    cols = [*CELL_COLUMNS, "source", "context_id", "entropy", "n_tokens", "drift_accuracy", "n_questions"]
    ent = load_entropy_samples(out, cells, models or {})
    frames = []
    for cell, e in ent.groupby("cell", sort=False):
        drift = []
        for task in SD_TASKS:
            d = load_samples(out, cell, task)
            if d is not None and len(d):
                drift.append(d.assign(source=task.split("_", 1)[1]))
        if not drift:
            continue
        d = pd.concat(drift, ignore_index=True)
        d["correct"] = d["correct"].astype(float)
        d["context_id"] = d["context_id"].astype(str)
        agg = d.groupby(["source", "context_id"], as_index=False).agg(
            drift_accuracy=("correct", "mean"), n_questions=("correct", "size"))
        e = e.assign(context_id=e["context_id"].astype(str))
        dup = e.duplicated(["source", "context_id"], keep=False)
        if dup.any():
            first = e.loc[dup, ["source", "context_id"]].iloc[0].tolist()
            raise ValueError(f"{cell_path('probes', out, cell) / 'entropy.samples.jsonl'}: {int(dup.sum())} rows "
                             f"share a (source, context_id), e.g. {first}")
        frames.append(e.merge(agg, on=["source", "context_id"], how="inner", validate="one_to_one"))
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def load_rag(out: str | Path, cells: list[str], models: dict) -> pd.DataFrame:
    """cell_frame plus em, f1, n from eval/<cell>/rag_musique.json (NaN if missing) and a `present` flag."""
    df = cell_frame(cells, models)
    recs = [read_json_or_none(cell_path("eval", out, c) / "rag_musique.json") for c in cells]
    df["present"] = [r is not None for r in recs]
    for key in ("em", "f1", "n"):
        df[key] = [_num((r or {}).get(key)) for r in recs]
    return df


def load_training(out: str | Path, cells: list[str], models: dict) -> pd.DataFrame:
    """cell_frame plus steps, final losses and the shuffled-memory control from train/<cell>/summary.json."""
    df = cell_frame(cells, models)
    recs = [read_json_or_none(cell_path("train", out, c) / "summary.json") or {} for c in cells]
    for key in ("steps", "final_loss_re", "final_loss_nt"):
        df[key] = [_num(r.get(key)) for r in recs]
    for key in ("loss_own_z", "loss_shuffled_z", "gap"):
        df[key] = [_num((r.get("shuffle_gap") or {}).get(key)) for r in recs]
    return df


#: Result files whose provenance the index reports, relative to a cell's stage directory.
PROVENANCE_FILES: tuple[tuple[str, str], ...] = (
    *(("eval", f"{t}.json") for t in TASKS),
    ("eval", "rank_truncation.json"), ("eval", "rag_musique.json"), ("probes", "probes.json"),
    ("train", "summary.json"),
)


def provenance_rows(out: str | Path, cells: list[str]) -> pd.DataFrame:
    """settings_hash and commit of every existing result file of each cell (from its `provenance` block).

    A cell with no result file at all gets one row with file None, so the index shows it as not computed.
    """
    rows = []
    for cell in cells:
        start = len(rows)
        for stage, name in PROVENANCE_FILES:
            res = read_json_or_none(cell_path(stage, out, cell) / name)
            if res is None:
                continue
            prov = (res.get("provenance") or {}) if isinstance(res, dict) else {}
            rows.append({"cell": cell, "file": f"{stage}/{name}", "settings_hash": prov.get("settings_hash"),
                         "commit": prov.get("commit"), "dirty": prov.get("dirty")})
        if len(rows) == start:
            rows.append({"cell": cell, "file": None, "settings_hash": None, "commit": None, "dirty": None})
    return pd.DataFrame(rows, columns=["cell", "file", "settings_hash", "commit", "dirty"])
