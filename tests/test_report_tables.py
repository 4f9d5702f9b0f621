"""Table rendering: bold best per group and column, delta strings, missing cells as "—", LaTeX escaping, CSV."""
import io
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import results_fixture as rf
from ctxcomp.report import collect, tables

NAN = math.nan


def _frame(rows):
    base = {"decoder": "dec", "size": "S", "params_b": 1.0, "cell": "x"}
    cols = {t: NAN for t in collect.TASKS}
    return pd.DataFrame([{**base, **cols, **r} for r in rows])


def _md_rows(md):
    return [line for line in md.splitlines() if line.startswith("| ") and "Ratio" not in line]


def test_bold_best_and_deltas_per_family_and_ratio():
    df = _frame([
        {"ratio": 4, "family": "Q", "size": "S", "params_b": 0.6, "compressor": "q-s", "recon_fineweb": 0.412},
        {"ratio": 4, "family": "Q", "size": "L", "params_b": 4.0, "compressor": "q-l", "recon_fineweb": 0.443},
        {"ratio": 4, "family": "L", "size": "S", "params_b": 1.0, "compressor": "l-s", "recon_fineweb": 0.2},
        {"ratio": 16, "family": "Q", "size": "S", "params_b": 0.6, "compressor": "q-s", "recon_fineweb": 0.1},
    ])
    t = tables.table2(df)
    rows = _md_rows(t.md)
    assert "0.412 (\u22120.031)" in rows[0]
    assert "**0.443**" in rows[1]
    assert "**0.200**" in rows[2]  # only member of (L, 4): best of its own group
    assert "**0.100**" in rows[3]  # ratio 16 is a separate group
    assert r"0.412 ($-$0.031)" in t.tex and r"\textbf{0.443}" in t.tex
    assert "\\toprule" in t.tex and "\\midrule" in t.tex and "\\bottomrule" in t.tex


def test_missing_is_dash_never_best_never_zero():
    df = _frame([
        {"ratio": 4, "family": "Q", "size": "S", "params_b": 0.6, "compressor": "q-s", "ko_faitheval": 0.3},
        {"ratio": 4, "family": "Q", "size": "L", "params_b": 4.0, "compressor": "q-l", "ko_faitheval": NAN},
    ])
    t = tables.table2(df)
    rows = _md_rows(t.md)
    assert "**0.300**" in rows[0]
    assert rows[1].count("\u2014") == 5 and "**" not in rows[1] and "0.000" not in rows[1]
    tex_row = next(line for line in t.tex.splitlines() if line.startswith("4 & Q & L"))
    assert tex_row.count("---") == 5 and "textbf" not in tex_row
    csv = pd.read_csv(io.StringIO(t.csv))
    assert math.isnan(csv.loc[1, "ko_faitheval"]) and math.isnan(csv.loc[1, "ko_faitheval_delta"])
    assert csv.loc[0, "ko_faitheval_delta"] == 0.0
    line = t.csv.splitlines()[2]
    assert ",," in line and ",0," not in line  # empty fields, not zeros


def test_ties_are_all_bold_and_all_nan_group_has_no_best():
    df = _frame([
        {"ratio": 4, "family": "Q", "size": "S", "params_b": 0.6, "compressor": "a", "sd_fineweb": 0.5},
        {"ratio": 4, "family": "Q", "size": "L", "params_b": 4.0, "compressor": "b", "sd_fineweb": 0.5},
    ])
    best, delta = tables.best_and_delta(df, tables.TASK_COLS, ["family", "ratio"])
    assert best["sd_fineweb"].tolist() == [True, True]
    assert best["ko_faitheval"].tolist() == [False, False]
    assert delta["ko_faitheval"].isna().all()


def test_latex_and_markdown_escaping():
    assert tables.latex_escape("a_b & c%#$~^{}\\") == (r"a\_b \& c\%\#\$\textasciitilde{}\textasciicircum{}\{\}"
                                                       r"\textbackslash{}")
    df = _frame([{"ratio": 4, "family": "Fam_1&2", "size": "5%", "compressor": "c_x", "recon_fineweb": 0.5}])
    t = tables.table2(df)
    assert r"Fam\_1\&2 & 5\%" in t.tex
    assert "Fam_1&2" in t.md
    assert tables.render(df.assign(family="a|b"), [tables.Col("family", "F")], [], None, "c", "l").md.count(
        r"a\|b") == 1


def test_sort_order_from_fixture(tmp_path):
    args = rf.write_results(tmp_path / "run", rag=False)
    ev = collect.load_eval(args["out"], args["cells"], args["models"])
    t = tables.table2(ev)
    csv = pd.read_csv(io.StringIO(t.csv))
    assert csv["ratio"].tolist() == [4, 4, 4, 4, 16, 16, 16, 16]
    assert csv["compressor"].tolist() == ["qwen-s", "qwen-l", "llama-s", "llama-l"] * 2
    # the uncomputed cell is present but empty
    last = csv.iloc[-1]
    assert last["cell"] == rf.MISSING and last[list(collect.TASKS)].isna().all()
    # fixture design: larger compressor reconstructs better, smaller one answers better
    rows = _md_rows(t.md)
    assert rows[1].split("|")[4].strip().startswith("**") and rows[0].split("|")[5].strip().startswith("**")
    assert csv.loc[0, "recon_fineweb_delta"] == pytest.approx(rf.value("dec/qwen-s/r4", "recon_fineweb")
                                                              - rf.value("dec/qwen-l/r4", "recon_fineweb"))


def test_table3_best_per_decoder(tmp_path):
    args = rf.write_results(tmp_path / "run", rag=False)
    t = tables.table3(collect.load_eval(args["out"], args["ablation_cells"], args["models"]))
    rows = _md_rows(t.md)
    assert len(rows) == 6
    assert [r.split("|")[2].strip() for r in rows] == ["dec"] * 3 + ["dec_b"] * 3
    # each decoder has its own bold KO FaithEval best (the smallest Qwen compressor)
    assert sum("**" in r.split("|")[6] for r in rows) == 2


def test_rank_truncation_and_rag_tables(tmp_path):
    args = rf.write_results(tmp_path / "run")
    rt = collect.load_rank_truncation(args["out"], args["cells"], args["models"])
    t = tables.rank_truncation_table(rt)
    csv = pd.read_csv(io.StringIO(t.csv))
    assert len(csv) == 7 * 4 + 1  # 7 computed cells x (3 energies + full), 1 missing cell
    full = csv[(csv["cell"] == "dec/qwen-s/r4") & (csv["setting"] == "full")].iloc[0]
    assert full["ko_faitheval"] == pytest.approx(rf.value("dec/qwen-s/r4", "ko_faitheval"))
    assert full["ko_faitheval_delta_full"] == 0.0
    assert not any("**" in r for r in _md_rows(t.md))  # nothing bold: not a ranking
    rag = tables.rag_table(collect.load_rag(args["out"], args["cells"], args["models"]))
    assert "EM" in rag.md and "F1" in rag.md and rag.md.count("\u2014") >= 3


def test_write_table(tmp_path):
    t = tables.Rendered(md="m\n", tex="t\n", csv="c\n")
    paths = tables.write_table(tmp_path / "sub" / "tab", t)
    assert [p.name for p in paths] == ["tab.md", "tab.csv", "tab.tex"]
    assert (tmp_path / "sub" / "tab.tex").read_text() == "t\n"
