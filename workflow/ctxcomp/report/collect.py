"""Read the pipeline's result files into pandas frames for tables and figures.

A missing file is a cell that has not been computed yet: it becomes NaN (never 0) so tables show "—" and "best"
ignores it. A file that exists but cannot be parsed raises, naming the file - a corrupt result must not look like a
missing one. Paths follow the result-file contract: `{stage}/{decoder}/{compressor}/r{ratio}/...` under `out`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import read_jsonl
from ..paths import EVAL_TASKS, KO_SETS, QSETS, RunPaths

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


def load_eval(out: str | Path, cells: list[str], models: dict) -> pd.DataFrame:
    """cell_frame plus one column per task (its `value`, 0-1) and `<task>_n`; NaN where the file is missing."""
    df = cell_frame(cells, models)
    for task in TASKS:
        vals, ns = [], []
        for cell in cells:
            res = read_json_or_none(cell_path("eval", out, cell) / f"{task}.json")
            vals.append(_num(res.get("value")) if res else math.nan)
            ns.append(_num(res.get("n")) if res else math.nan)
        df[task] = vals
        df[f"{task}_n"] = ns
    return df


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


def load_rank_truncation(out: str | Path, cells: list[str], models: dict) -> pd.DataFrame:
    """One row per (cell, energy) plus a `full` row per cell (energy NaN, setting "full"), KO accuracies, mean rank.

    A cell without rank_truncation.json contributes one all-NaN "full" row so the table still lists it.
    """
    base = cell_frame(cells, models).set_index("cell")
    rows = []
    for cell in cells:
        res = read_json_or_none(cell_path("eval", out, cell) / "rank_truncation.json")
        meta = base.loc[cell].to_dict()
        full = (res or {}).get("full_rank") or {}
        rows.append({"cell": cell, **meta, "setting": "full", "energy": math.nan,
                     **{t: _num(full.get(t)) for t in KO_TASKS}, "mean_rank": math.nan})
        for r in (res or {}).get("results", []):
            e = _num(r.get("energy"))
            rows.append({"cell": cell, **meta, "setting": f"{e:g}", "energy": e,
                         **{t: _num(r.get(t)) for t in KO_TASKS}, "mean_rank": _num(r.get("mean_rank"))})
    cols = list(CELL_COLUMNS) + ["setting", "energy", *KO_TASKS, "mean_rank"]
    df = pd.DataFrame(rows, columns=cols)
    # energies ascending, the full-rank reference last
    df["_o"] = df["energy"].fillna(np.inf)
    df["_c"] = df["cell"].map({c: i for i, c in enumerate(cells)})
    return df.sort_values(["_c", "_o"], kind="stable").drop(columns=["_o", "_c"]).reset_index(drop=True)


def load_dynamics(out: str | Path, cell: str | None) -> pd.DataFrame | None:
    """Probe checkpoints of the dynamics cell (dynamics/<cell>/checkpoints.csv: step, erank, entropy, KO accs)."""
    if not cell:
        return None
    df = read_csv_or_none(cell_path("dynamics", out, cell) / "checkpoints.csv")
    return df.sort_values("step").reset_index(drop=True) if df is not None and len(df) else None


def load_train_dynamics(out: str | Path, cell: str | None) -> pd.DataFrame | None:
    """Erank/entropy of the probe batch logged during training (train/<cell>/dynamics.csv: step, erank, entropy)."""
    if not cell:
        return None
    df = read_csv_or_none(cell_path("train", out, cell) / "dynamics.csv")
    return df.sort_values("step").reset_index(drop=True) if df is not None and len(df) else None


def load_entropy_drift(out: str | Path, cells: list[str]) -> pd.DataFrame:
    """Per-context entropy joined with per-context drift accuracy, over all cells.

    Entropy rows come from probes/<cell>/entropy.samples.jsonl ({context_id, source, entropy, n_tokens}); drift
    accuracy is the mean `correct` over the questions of that context in eval/<cell>/sd_<source>.samples.jsonl. The
    join is on (cell, source, context_id), since context ids are only unique within a source. Columns: cell,
    source, context_id, entropy, n_tokens, drift_accuracy, n_questions.
    """
    cols = ["cell", "source", "context_id", "entropy", "n_tokens", "drift_accuracy", "n_questions"]
    frames = []
    for cell in cells:
        ent_path = cell_path("probes", out, cell) / "entropy.samples.jsonl"
        if not ent_path.exists():
            continue
        ent = pd.DataFrame(read_jsonl(ent_path))
        if ent.empty:
            continue
        drift = []
        for task in SD_TASKS:
            p = cell_path("eval", out, cell) / f"{task}.samples.jsonl"
            if p.exists():
                rows = read_jsonl(p)
                if rows:
                    d = pd.DataFrame(rows)
                    d["source"] = task.split("_", 1)[1]
                    drift.append(d)
        if not drift:
            continue
        d = pd.concat(drift, ignore_index=True)
        d["correct"] = d["correct"].astype(float)
        agg = d.groupby(["source", "context_id"], as_index=False).agg(
            drift_accuracy=("correct", "mean"), n_questions=("correct", "size"))
        ent["context_id"] = ent["context_id"].astype(str)
        agg["context_id"] = agg["context_id"].astype(str)
        j = ent.merge(agg, on=["source", "context_id"], how="inner")
        j["cell"] = cell
        if "n_tokens" not in j:
            j["n_tokens"] = np.nan
        frames.append(j[cols])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


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
