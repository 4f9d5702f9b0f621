"""The rank-truncation table prints each truncated KO accuracy with its bootstrap interval, as the CSV holds it."""
import io

import pandas as pd

import results_fixture as rf
from ctxcomp.report import collect, tables


def test_rank_truncation_rows_show_their_intervals(tmp_path):
    run = rf.write_results(tmp_path / "run")
    rt = collect.load_rank_truncation(run["out"], run["cells"], run["models"])
    cut = rt["setting"] != "full"
    for task in ("ko_faitheval", "ko_conflictqa"):  # intervals as a run with bootstrap rows stores them
        rt.loc[cut, f"{task}_ci_low"] = rt.loc[cut, task] - 0.031
        rt.loc[cut, f"{task}_ci_high"] = rt.loc[cut, task] + 0.047
    t = tables.rank_truncation_table(rt)
    csv = pd.read_csv(io.StringIO(t.csv))
    cut = csv[(csv["setting"] != "full") & csv["ko_faitheval_ci_low"].notna()]
    assert len(cut) > 3
    md = t.md
    for _, r in cut.iterrows():
        for task in ("ko_faitheval", "ko_conflictqa"):
            if pd.notna(r[f"{task}_ci_low"]):
                assert f"{r[task]:.2f} [{r[f'{task}_ci_low']:.2f}, {r[f'{task}_ci_high']:.2f}]" in md
