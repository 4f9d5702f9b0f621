"""Best per comparison group, and each entry's difference to it with a paired bootstrap interval.

Table 2 compares compressors within family x ratio, Table 3 within decoder x ratio. All compared metrics are
higher-is-better; the best (ties: all of them) is bold, and every other entry's difference to the best is
bootstrapped on the items both were evaluated on (report.paired), so a table can mark the entries that cannot be
told apart from the best.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from . import paired


def best_and_delta(df: pd.DataFrame, keys: Sequence[str], group: Sequence[str] | None) -> tuple[pd.DataFrame,
                                                                                               pd.DataFrame]:
    """Per column: a bool frame marking the best (max, ties all best) per group, and value - best.

    NaN values are never best and have NaN delta; a group whose values are all NaN has no best.
    """
    best = pd.DataFrame(False, index=df.index, columns=list(keys))
    delta = pd.DataFrame(np.nan, index=df.index, columns=list(keys))
    for k in keys:
        vals = pd.to_numeric(df[k], errors="coerce")
        top = vals.groupby([df[g] for g in group], sort=False).transform("max") if group else (
            pd.Series(vals.max(), index=df.index))
        delta[k] = vals - top
        best[k] = vals.notna() & (vals == top)
    return best, delta


SampleLoader = Callable[[str, str], "pd.DataFrame | None"]


def add_best_deltas(df: pd.DataFrame, tasks: Sequence[str], group: Sequence[str],
                    samples: SampleLoader) -> pd.DataFrame:
    """df (load_eval) plus `<task>_best`, `<task>_delta` (value - group best) and its paired 95 % interval
    `<task>_delta_ci_low/high` (0 for a best entry; NaN when either cell has no per-sample rows).

    `samples(cell, task)` returns a cell's per-sample rows. Resamples and seed come from the entry's own
    `<task>_resamples`/`<task>_seed` columns (the result file's bootstrap block), else paired's defaults.
    """
    df = df.reset_index(drop=True).copy()
    best, delta = best_and_delta(df, tasks, group)
    cache: dict[tuple[str, str], pd.DataFrame | None] = {}

    def rows(cell: str, task: str) -> pd.DataFrame | None:
        if (cell, task) not in cache:
            cache[(cell, task)] = samples(cell, task)
        return cache[(cell, task)]

    for task in tasks:
        lo, hi = np.full(len(df), np.nan), np.full(len(df), np.nan)
        keys = [df[g] for g in group]
        for _, idx in df.groupby(keys, sort=False).groups.items():
            winners = [i for i in idx if best.at[i, task]]
            if not winners:
                continue
            top = df.at[winners[0], "cell"]
            for i in idx:
                if best.at[i, task]:
                    lo[i] = hi[i] = 0.0
                elif pd.notna(df.at[i, task]):
                    r = _boot(df, i, task)
                    d = paired.paired_delta(rows(df.at[i, "cell"], task), rows(top, task), task, *r)
                    lo[i], hi[i] = d["ci_low"], d["ci_high"]
        df[f"{task}_best"] = best[task]
        df[f"{task}_delta"] = delta[task]
        df[f"{task}_delta_ci_low"] = lo
        df[f"{task}_delta_ci_high"] = hi
    return df


def _boot(df: pd.DataFrame, i: int, task: str) -> tuple[int, int]:
    r, s = df.get(f"{task}_resamples"), df.get(f"{task}_seed")
    resamples = int(r.iat[i]) if r is not None and pd.notna(r.iat[i]) else paired.DEFAULT_RESAMPLES
    seed = int(s.iat[i]) if s is not None and pd.notna(s.iat[i]) else paired.DEFAULT_SEED
    return resamples, seed


def lora_control_frame(eval_df: pd.DataFrame, pairs: Sequence[tuple[str, str]], tasks: Sequence[str],
                       labels: dict[str, str], samples: SampleLoader) -> pd.DataFrame:
    """One row per (LoRA cell, task): the LoRA cell's value and interval, its full fine-tune twin's, and LoRA -
    full with a paired 95 % interval over the items both were evaluated on.

    eval_df: collect.load_eval() over both cells of every pair; pairs: (lora_cell, full_cell); labels: task -> header.
    """
    ev = eval_df.set_index("cell")
    rows = []
    for lora, full in pairs:
        for task in tasks:
            a, b = ev.loc[lora], ev.loc[full]
            i = int(np.flatnonzero(eval_df["cell"].to_numpy() == lora)[0])
            d = paired.paired_delta(samples(lora, task), samples(full, task), task, *_boot(eval_df, i, task))
            rows.append({"lora_cell": lora, "full_cell": full, "ratio": a["ratio"], "family": a["family"],
                         "size": a["size"], "task": task, "task_label": labels[task],
                         "lora": a[task], "lora_ci_low": a[f"{task}_ci_low"], "lora_ci_high": a[f"{task}_ci_high"],
                         "lora_n": a[f"{task}_n"], "full": b[task], "full_ci_low": b[f"{task}_ci_low"],
                         "full_ci_high": b[f"{task}_ci_high"], "full_n": b[f"{task}_n"],
                         "delta": a[task] - b[task],
                         "delta_ci_low": d["ci_low"], "delta_ci_high": d["ci_high"], "delta_n": d["n"]})
    return pd.DataFrame(rows)
