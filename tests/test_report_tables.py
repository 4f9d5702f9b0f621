"""Table rendering: bold best per group (which entries), intervals, control marks, missing cells, LaTeX, CSV."""
import io
import math

import numpy as np
import pandas as pd
import pytest

import results_fixture as rf
from ctxcomp.report import collect, compare, tables

NAN = math.nan


def _frame(rows):
    base = {"decoder": "dec", "size": "S", "params_b": 1.0, "cell": "x"}
    cols = dict.fromkeys(collect.TASKS, NAN)
    return pd.DataFrame([{**base, **cols, **r} for r in rows])


def _md_cells(md):
    """Markdown table body as a list of rows, each a list of stripped cell strings."""
    rows = [line for line in md.splitlines() if line.startswith("| ") and "Ratio" not in line]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def _col(label_count, task):
    return label_count + collect.TASKS.index(task)


def test_bold_best_per_family_and_ratio_with_intervals():
    df = _frame([
        {"ratio": 4, "family": "Q", "size": "S", "params_b": 0.6, "compressor": "q-s", "recon_fineweb": 0.412,
         "recon_fineweb_ci_low": 0.372, "recon_fineweb_ci_high": 0.452},
        {"ratio": 4, "family": "Q", "size": "L", "params_b": 4.0, "compressor": "q-l", "recon_fineweb": 0.443,
         "recon_fineweb_ci_low": 0.401, "recon_fineweb_ci_high": 0.486},
        {"ratio": 4, "family": "L", "size": "S", "params_b": 1.0, "compressor": "l-s", "recon_fineweb": 0.2},
        {"ratio": 16, "family": "Q", "size": "S", "params_b": 0.6, "compressor": "q-s", "recon_fineweb": 0.1},
    ])
    t = tables.table2(df)
    rows = _md_cells(t.md)
    c = _col(3, "recon_fineweb")
    assert [r[c] for r in rows] == ["0.41 [0.37, 0.45]", "**0.44** [0.40, 0.49]", "**0.20**", "**0.10**"]
    assert r"\textbf{0.44}\,{\scriptsize [0.40, 0.49]}" in t.tex
    assert "\\toprule" in t.tex and "\\midrule" in t.tex and "\\bottomrule" in t.tex
    csv = pd.read_csv(io.StringIO(t.csv))
    assert csv["recon_fineweb"].tolist() == [0.412, 0.443, 0.2, 0.1]  # full precision
    assert csv["recon_fineweb_delta"].tolist() == pytest.approx([0.412 - 0.443, 0.0, 0.0, 0.0])
    assert csv["recon_fineweb_ci_high"].iloc[1] == 0.486


def test_marks_go_on_exactly_the_flagged_entries_and_are_explained():
    df = _frame([
        {"ratio": 4, "family": "Q", "compressor": "a", "params_b": 0.6, "ko_faitheval": 0.6,
         "ko_faitheval_shuffled_z_distinguishable": True, "ko_faitheval_no_memory_distinguishable": False,
         "ko_faitheval_above_chance": True, "sd_fineweb": 0.5, "sd_fineweb_shuffled_z_distinguishable": False},
        {"ratio": 4, "family": "Q", "compressor": "b", "params_b": 4.0, "ko_faitheval": 0.55,
         "ko_faitheval_shuffled_z_distinguishable": False, "ko_faitheval_no_memory_distinguishable": True,
         "ko_faitheval_above_chance": False, "ko_faitheval_delta_ci_low": -0.1, "ko_faitheval_delta_ci_high": 0.01,
         "sd_fineweb": 0.4, "sd_fineweb_shuffled_z_distinguishable": True, "sd_fineweb_delta_ci_low": -0.2,
         "sd_fineweb_delta_ci_high": -0.05},
    ])
    for col in [c for c in df if c.endswith(("_distinguishable", "_above_chance"))]:
        df[col] = df[col].astype("boolean")
    df["ko_faitheval_best"] = [True, False]
    df["sd_fineweb_best"] = [True, False]
    t = tables.table2(df)
    rows = _md_cells(t.md)
    ko, sd = _col(3, "ko_faitheval"), _col(3, "sd_fineweb")
    assert rows[0][ko] == "**0.60**\u2021"           # best, but not distinguishable from the no-memory prior
    assert rows[1][ko] == "0.55\u2248\u2020\u00a7"    # ties the best, indistinguishable from shuffled Z, at chance
    assert rows[0][sd] == "**0.50**\u2020"
    assert rows[1][sd] == "0.40"                      # delta interval excludes 0 and control is beaten: no mark
    for sym in ("\u2248", "\u2020", "\u2021", "\u00a7"):
        assert any(line.startswith(f"- {sym}: ") for line in t.md.splitlines()), sym
    assert r"0.55$^{\approx\dagger\S}$" in t.tex and r"$\ddagger$: " in t.tex


def test_missing_is_dash_never_best_never_zero():
    df = _frame([
        {"ratio": 4, "family": "Q", "size": "S", "params_b": 0.6, "compressor": "q-s", "ko_faitheval": 0.3},
        {"ratio": 4, "family": "Q", "size": "L", "params_b": 4.0, "compressor": "q-l", "ko_faitheval": NAN},
    ])
    t = tables.table2(df)
    rows = _md_cells(t.md)
    assert rows[0][_col(3, "ko_faitheval")] == "**0.30**"
    assert rows[1][3:] == ["\u2014"] * 5
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
    best, delta = compare.best_and_delta(df, collect.TASKS, ["family", "ratio"])
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
    spec = tables.Spec([tables.Label("family", "F")], [], "c", "l")
    assert tables.render(df.assign(family="a|b"), spec).md.count(r"a\|b") == 1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return rf.write_results(tmp_path_factory.mktemp("tables") / "run")


def _with_deltas(run, cells, group):
    ev = collect.load_eval(run["out"], cells, run["models"])
    return compare.add_best_deltas(ev, collect.TASKS, group, lambda c, t: collect.load_samples(run["out"], c, t))


def test_table2_from_fixture_order_bold_and_marks(run):
    t = tables.table2(_with_deltas(run, run["cells"], ["family", "ratio"]))
    csv = pd.read_csv(io.StringIO(t.csv))
    assert csv["ratio"].tolist() == [4, 4, 4, 4, 16, 16, 16, 16]
    assert csv["compressor"].tolist() == ["qwen-s", "qwen-l", "llama-s", "llama-l"] * 2
    last = csv.iloc[-1]
    assert last["cell"] == rf.MISSING and last[list(collect.TASKS)].isna().all()
    rows = _md_cells(t.md)
    # fixture design: larger compressor reconstructs better, smaller one answers better (bold = which entries)
    bold = {(csv.at[i, "cell"], task) for i in range(len(csv)) for task in collect.TASKS
            if rows[i][_col(3, task)].startswith("**")}
    want = set()
    for fam in (("qwen-s", "qwen-l"), ("llama-s", "llama-l")):
        for r in rf.RATIOS:
            present = [c for c in fam if f"dec/{c}/r{r}" != rf.MISSING]
            want.add((f"dec/{present[-1]}/r{r}", "recon_fineweb"))
            want |= {(f"dec/{present[0]}/r{r}", t) for t in collect.TASKS[1:]}
    assert bold == want
    # control marks exactly where the fixture's flags are false
    marks = {(csv.at[i, "cell"], task, sym) for i in range(len(csv)) for task in collect.TASKS
             for sym in "\u2020\u2021\u00a7" if sym in rows[i][_col(3, task)]}
    sym = {"shuffled_z": "\u2020", "no_memory": "\u2021"}
    assert marks == {(c, t, sym[k]) for c, t, k in rf.INDISTINGUISHABLE} | {(c, t, "\u00a7") for c, t in rf.AT_CHANCE}
    # delta to the best equals the difference of the stored values
    i = csv.index[csv["cell"] == "dec/qwen-l/r4"][0]
    assert csv.at[i, "ko_faitheval_delta"] == pytest.approx(rf.stored_value("dec/qwen-l/r4", "ko_faitheval")
                                                            - rf.stored_value("dec/qwen-s/r4", "ko_faitheval"))
    assert csv.at[i, "ko_faitheval_delta_ci_low"] < csv.at[i, "ko_faitheval_delta"] < csv.at[
        i, "ko_faitheval_delta_ci_high"]


def test_tie_mark_follows_the_paired_interval(run):
    ev = _with_deltas(run, run["cells"], ["family", "ratio"])
    t = tables.table2(ev)
    csv = pd.read_csv(io.StringIO(t.csv))
    rows = _md_cells(t.md)
    for i in range(len(csv)):
        for task in collect.TASKS:
            hi = csv.at[i, f"{task}_delta_ci_high"]
            tie = bool(pd.notna(hi) and hi >= 0 and not csv.at[i, f"{task}_best"])
            assert ("\u2248" in rows[i][_col(3, task)]) == tie, (csv.at[i, "cell"], task)


def test_table3_bold_is_per_decoder_and_ratio(run):
    t = tables.table3(_with_deltas(run, run["ablation_cells"], ["decoder", "ratio"]))
    rows = _md_cells(t.md)
    assert [r[1] for r in rows] == ["dec"] * 3 + ["dec_b"] * 3
    csv = pd.read_csv(io.StringIO(t.csv))
    for task in collect.TASKS:
        bold = [csv.at[i, "cell"] for i in range(len(rows)) if rows[i][_col(4, task)].startswith("**")]
        want = []
        for dec in ("dec", "dec_b"):  # one group per decoder (one ratio): the maximum over all its compressors
            cells = [c for c in run["ablation_cells"] if c.startswith(dec + "/")]
            score = {c: stored(c, task) for c in cells}
            want += [c for c in cells if score[c] == max(score.values())]
        assert sorted(bold) == sorted(want), task
    assert sorted(bold) != sorted(run["ablation_cells"])


def stored(cell, task):
    """The fixture's stored headline value (reconstruction BLEU recomputed with sacrebleu)."""
    if task == "recon_fineweb":
        from sacrebleu.metrics import BLEU
        refs, hyps = rf.recon_texts(cell)
        return BLEU().corpus_score(hyps, [refs]).score / 100
    return rf.stored_value(cell, task)


def test_old_format_results_say_controls_are_missing(tmp_path):
    cell = "dec/qwen-s/r4"
    (tmp_path / "eval" / cell).mkdir(parents=True)
    (tmp_path / "eval" / cell / "ko_faitheval.json").write_text('{"value": 0.5, "n": 10}')
    t = tables.table2(collect.load_eval(tmp_path, [cell], rf.MODELS))
    assert "1 entries have no control in their result file" in t.md
    assert _md_cells(t.md)[0][_col(3, "ko_faitheval")] == "**0.50**"


def test_sd_breakdown_matches_the_per_sample_rows(run):
    sd, dims = collect.load_sd_breakdown(run["out"], run["cells"], run["models"])
    assert dims == rf.DIMENSIONS
    t = tables.sd_breakdown_table(sd, dims)
    csv = pd.read_csv(io.StringIO(t.csv))
    assert len(csv) == 2 * len(run["cells"])
    cell, task = "dec/llama-s/r4", "sd_faitheval"
    rows = rf.sd_rows(cell, task)
    got = csv[(csv["cell"] == cell) & (csv["source"] == "faitheval")].iloc[0]
    ans = [r["correct"] for r in rows if r["answerable"]]
    assert got["answerable"] == pytest.approx(sum(ans) / len(ans)) and got["answerable_n"] == len(ans)
    ent = [r["correct"] for r in rows if r["dimension"] == "entity_list"]
    assert got["dim_entity_list"] == pytest.approx(sum(ent) / len(ent))
    assert got["all"] == pytest.approx(rf.stored_value(cell, task))
    header = t.md.splitlines()[2]
    assert "Answerable" in header and "Unanswerable" in header and "entity list" in header


def _lora_control_table(run):
    """The LoRA-control table of the fixture run's first pair."""
    lora, full = rf.LORA_PAIRS[0]
    ev = collect.load_eval(run["out"], [lora, full], run["models"])
    frame = compare.lora_control_frame(ev, rf.LORA_PAIRS, collect.TASKS, collect.TASK_LABELS,
                                       lambda c, t: collect.load_samples(run["out"], c, t))
    return tables.lora_control_table(frame)


def test_lora_control_difference_and_its_interval(run):
    lora, full = rf.LORA_PAIRS[0]
    t = _lora_control_table(run)
    csv = pd.read_csv(io.StringIO(t.csv))
    assert csv["task"].tolist() == list(collect.TASKS)
    ko = csv[csv["task"] == "ko_faitheval"].iloc[0]
    assert ko["delta"] == pytest.approx(rf.stored_value(lora, "ko_faitheval") - rf.stored_value(full, "ko_faitheval"))
    # independent check of the paired interval: normal approximation over the per-question differences
    d = np.array(rf.correct_flags(lora, "ko_faitheval", rf.N_ITEMS), float) - np.array(
        rf.correct_flags(full, "ko_faitheval", rf.N_ITEMS), float)
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert ko["delta_ci_low"] == pytest.approx(d.mean() - 1.96 * se, abs=0.015)
    assert ko["delta_ci_high"] == pytest.approx(d.mean() + 1.96 * se, abs=0.015)
    assert bool(ko["excludes_zero"]) == (ko["delta_ci_low"] > 0 or ko["delta_ci_high"] < 0)
    recon = csv[csv["task"] == "recon_fineweb"].iloc[0]
    assert recon["delta_ci_high"] < 0 and bool(recon["excludes_zero"])  # the LoRA twin reconstructs worse
    rows = _md_cells(t.md)
    assert rows[0][3] == "Reconstr." and rows[0][-1] == "yes"


def test_rank_truncation_table_has_variants(run):
    rt = collect.load_rank_truncation(run["out"], run["cells"], run["models"])
    t = tables.rank_truncation_table(rt)
    csv = pd.read_csv(io.StringIO(t.csv))
    assert len(csv) == 7 * 7 + 1  # 7 computed cells x (2 variants x 3 energies + full), 1 missing cell
    one = csv[csv["cell"] == "dec/qwen-s/r4"]
    assert one["variant"].tolist() == ["per_sample"] * 3 + ["batch"] * 3 + ["full"]
    full = one[one["setting"] == "full"].iloc[0]
    assert full["ko_faitheval"] == pytest.approx(rf.stored_value("dec/qwen-s/r4", "ko_faitheval"))
    batch = one[(one["variant"] == "batch") & (one["energy"] == 0.9)].iloc[0]
    assert batch["ko_faitheval_delta_full"] == pytest.approx(full["ko_faitheval"] * (0.9 * 0.5 - 1), abs=1e-6)
    assert not any("**" in c for r in _md_cells(t.md) for c in r)  # nothing bold: not a ranking


def test_training_table_numbers(run):
    tr = collect.load_training(run["out"], run["cells"], run["models"])
    t = tables.training_table(tr)
    csv = pd.read_csv(io.StringIO(t.csv)).set_index("cell")
    cell = "dec/llama-s/r16"
    k = 0.1 * (rf._seed(cell) % 5)
    assert csv.at[cell, "steps"] == 120
    assert csv.at[cell, "final_loss_re"] == pytest.approx(1.2 + k)
    assert csv.at[cell, "loss_own_z"] == pytest.approx(2.1 + k)
    assert csv.at[cell, "loss_shuffled_z"] == pytest.approx(3.0 + k)
    assert csv.at[cell, "gap"] == pytest.approx(0.9)
    assert csv.loc[rf.MISSING, ["steps", "gap"]].isna().all()
    row = next(r for r in _md_cells(t.md) if r[:4] == ["dec", "16", "LLaMA-3.2", "1B"])
    assert row[4:] == ["120", f"{1.2 + k:.3f}", "0.900", f"{2.1 + k:.4f}", f"{3.0 + k:.4f}", "0.9000"]


def test_rag_table(run):
    rag = tables.rag_table(collect.load_rag(run["out"], run["cells"], run["models"]))
    assert "EM" in rag.md and "F1" in rag.md and rag.md.count("\u2014") >= 3


def test_write_table(tmp_path):
    t = tables.Rendered(md="m\n", tex="t\n", csv="c\n")
    paths = tables.write_table(tmp_path / "sub" / "tab", t)
    assert [p.name for p in paths] == ["tab.md", "tab.csv", "tab.tex"]
    assert (tmp_path / "sub" / "tab.tex").read_text() == "t\n"


def _task_csv_columns(task):
    """The CSV columns of one task, written out from the result-file contract (value, interval, n, each
    control's value/interval/paired difference/flag, KO's chance and length-normalised accuracy, the bootstrap
    settings) and the table's own comparison (best flag, delta to the best and its paired interval)."""
    controls = ["shuffled_z", "no_memory"] if task.startswith("ko_") else ["shuffled_z"]
    cols = [task, f"{task}_n", f"{task}_ci_low", f"{task}_ci_high"]
    for c in controls:
        cols += [f"{task}_{c}_{f}" for f in ("value", "ci_low", "ci_high", "diff_ci_low", "diff_ci_high",
                                             "distinguishable")]
    if task.startswith("ko_"):
        cols += [f"{task}_{f}" for f in ("chance", "above_chance", "norm", "norm_ci_low", "norm_ci_high")]
    return cols + [f"{task}_{f}" for f in ("resamples", "seed", "best", "delta", "delta_ci_low", "delta_ci_high")]


def _header(md):
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("| "))
    return lines[i], lines[i + 1]


def _midrules(tex):
    return tex.count("\\midrule")


def test_table2_and_table3_layout_caption_label_and_csv_columns(run):
    t = tables.table2(_with_deltas(run, run["cells"], ["family", "ratio"]))
    assert _header(t.md) == ("| Ratio | Family | Size | Reconstr. | KO FaithEval | KO ConflictQA | SD FineWeb | "
                             "SD FaithEval |", "|:--|:--|:--|--:|--:|--:|--:|--:|")
    assert t.md.startswith("**Reconstruction BLEU (FineWeb) and QA accuracy by compression ratio and compressor "
                           "size**\n")
    assert "\\caption{Reconstruction BLEU (FineWeb) and QA accuracy by compression ratio and compressor size}" in t.tex
    assert "\\label{tab:main}" in t.tex and "\\begin{tabular}{lllrrrrr}" in t.tex
    assert _midrules(t.tex) == 2  # under the header, and where the ratio changes from 4 to 16
    assert "- Bold: best per family × ratio and column (ties: all)." in t.md
    head = pd.read_csv(io.StringIO(t.csv)).columns.tolist()
    assert head == ["ratio", "family", "size", "decoder", "compressor", "params_b", "cell",
                    *(c for task in collect.TASKS for c in _task_csv_columns(task))]
    csv = pd.read_csv(io.StringIO(t.csv)).set_index("cell")
    cell = "dec/qwen-l/r16"
    assert csv.at[cell, "ko_conflictqa_n"] == rf.N_ITEMS and csv.at[cell, "ko_conflictqa_seed"] == 1234
    assert csv.at[cell, "ko_conflictqa_resamples"] == 1000 and csv.at[cell, "ko_conflictqa_chance"] == rf.CHANCE
    assert csv.at[cell, "ko_conflictqa_no_memory_diff_ci_low"] == 0.15
    assert csv.at[cell, "ko_conflictqa_norm"] == pytest.approx(rf.stored_value(cell, "ko_conflictqa"))
    assert csv.at[cell, "sd_fineweb_shuffled_z_value"] == pytest.approx(rf.stored_value(cell, "sd_fineweb") - 0.2)

    t3 = tables.table3(_with_deltas(run, run["ablation_cells"], ["decoder", "ratio"]))
    assert _header(t3.md)[0] == ("| Ratio | Decoder | Family | Size | Reconstr. | KO FaithEval | KO ConflictQA | "
                                 "SD FineWeb | SD FaithEval |")
    assert t3.md.startswith("**Decoder ablation: the same compressors paired with different frozen decoders**")
    assert "\\label{tab:decoder-ablation}" in t3.tex and _midrules(t3.tex) == 2  # where the decoder changes
    assert "- Bold: best per decoder × ratio and column (ties: all)." in t3.md
    head3 = pd.read_csv(io.StringIO(t3.csv)).columns.tolist()
    assert head3 == ["ratio", "decoder", "family", "size", "compressor", "params_b", "cell",
                     *(c for task in collect.TASKS for c in _task_csv_columns(task))]


def test_secondary_tables_layout_caption_label_and_notes(run):
    sd, dims = collect.load_sd_breakdown(run["out"], run["cells"], run["models"])
    t = tables.sd_breakdown_table(sd, dims)
    assert _header(t.md)[0] == ("| Source | Ratio | Family | Size | All | Answerable | Unanswerable | EM (norm.) | "
                                "main topic | entity list | coreference |")
    assert t.md.startswith("**Semantic drift by question kind and dimension**") and "\\label{tab:sd-breakdown}" in t.tex
    assert _midrules(t.tex) == 4  # header; ratio 4 -> 16 within each source and at the change of source
    assert "Unanswerable questions are correct only when the decoder abstains" in t.md and "Bold" not in t.md
    assert pd.read_csv(io.StringIO(t.csv)).columns[:12].tolist() == [
        "source", "ratio", "family", "size", "decoder", "compressor", "params_b", "cell", "all", "all_ci_low",
        "all_ci_high", "all_n"]

    rt = tables.rank_truncation_table(collect.load_rank_truncation(run["out"], run["cells"], run["models"]))
    assert _header(rt.md)[0] == ("| Ratio | Family | Size | Variant | Energy | KO FaithEval | KO ConflictQA | "
                                 "Mean rank |")
    assert rt.md.startswith("**KO accuracy after truncating the memory to a fraction of its spectral energy**")
    assert "\\label{tab:rank-truncation}" in rt.tex and _midrules(rt.tex) == len(run["cells"])  # one per cell change
    assert "per_sample: each memory cut to its own top singular directions" in rt.md
    row = next(r for r in _md_cells(rt.md) if r[:5] == ["4", "Qwen3", "0.6B", "batch", "0.9"])
    assert row[-1] == f"{4 * 0.9 * 0.5:.1f}"  # mean rank, one decimal

    rag = tables.rag_table(collect.load_rag(run["out"], run["cells"], run["models"]))
    assert _header(rag.md) == ("| Ratio | Family | Size | EM | F1 | n |", "|:--|:--|:--|--:|--:|--:|")
    assert rag.md.startswith("**Retrieval-augmented QA on MuSiQue from compressed passages**")
    assert "\\label{tab:rag-musique}" in rag.tex and _midrules(rag.tex) == 2
    rows = _md_cells(rag.md)
    f1 = {c: 0.3 + 0.01 * (rf._seed(c) % 7) for c in run["cells"] if c != rf.MISSING}
    for r, cell in zip(rows, pd.read_csv(io.StringIO(rag.csv))["cell"]):
        if cell == rf.MISSING:
            assert r[3:] == ["\u2014"] * 3
            continue
        fam = [c for c in f1 if rf.MODELS[c.split("/")[1]]["family"] == rf.MODELS[cell.split("/")[1]]["family"]
               and c.split("/")[2] == cell.split("/")[2]]
        best = f1[cell] == max(f1[c] for c in fam)
        assert r[3:] == ["**0.20**", f"**{f1[cell]:.2f}**" if best else f"{f1[cell]:.2f}", "24"], cell

    tr = tables.training_table(collect.load_training(run["out"], run["cells"], run["models"]))
    assert _header(tr.md)[0] == ("| Decoder | Ratio | Family | Size | Steps | L_re | L_nt | L_re own Z | "
                                 "L_re shuffled Z | Gap |")
    assert tr.md.startswith("**Training losses and the shuffled-memory control**") and "\\label{tab:training}" in tr.tex
    assert _midrules(tr.tex) == 2 and "Gap = L_re with shuffled Z − L_re with own Z" in tr.md
    assert "**" not in "".join(sum(_md_cells(tr.md), [])) and "_delta" not in tr.csv  # not a ranking
    assert "Gap = L\\_re with shuffled Z $-$ L\\_re with own Z" in tr.tex


def test_lora_control_table_layout(run):
    lora, full = rf.LORA_PAIRS[0]
    t = _lora_control_table(run)
    assert _header(t.md) == ("| Ratio | Family | Size | Task | LoRA | Full FT | LoRA − full | excludes 0 |",
                             "|:--|:--|:--|:--|--:|--:|--:|:-:|")
    assert t.md.startswith("**LoRA against full fine-tuning of the same compressor**")
    assert "\\label{tab:lora-control}" in t.tex and "\\begin{tabular}{llllrrrc}" in t.tex
    assert "LoRA − full: paired bootstrap 95 % interval over the items both were evaluated on" in t.md
    head = pd.read_csv(io.StringIO(t.csv)).columns.tolist()
    assert head == ["ratio", "family", "size", "task_label", "lora_cell", "full_cell", "task",
                    "lora", "lora_ci_low", "lora_ci_high", "lora_n", "full", "full_ci_low", "full_ci_high", "full_n",
                    "delta", "delta_ci_low", "delta_ci_high", "delta_n", "excludes_zero"]
    csv = pd.read_csv(io.StringIO(t.csv)).set_index("task")
    assert csv.at["ko_faitheval", "lora_n"] == csv.at["ko_faitheval", "full_n"] == csv.at["ko_faitheval", "delta_n"]
    assert csv.at["ko_faitheval", "lora_n"] == rf.N_ITEMS
    assert csv.at["sd_fineweb", "delta_n"] == rf.N_CONTEXTS  # paired over contexts
    assert csv.at["ko_faitheval", "full"] == pytest.approx(rf.stored_value(full, "ko_faitheval"))
    assert csv.at["ko_faitheval", "lora_ci_low"] == pytest.approx(rf.stored_value(lora, "ko_faitheval") - rf.CI_HALF)
    assert (csv["ratio"] == 16).all() and (csv["size"] == "4B").all() and (csv["family"] == "Qwen3").all()
    assert csv.index.tolist() == list(collect.TASKS)


def test_add_best_deltas_per_group_against_stored_values(run):
    ev = collect.load_eval(run["out"], run["cells"], run["models"])
    ev.index = [f"row{i}" for i in range(len(ev))]  # a frame with its own index: the result is positional
    out = compare.add_best_deltas(ev, collect.TASKS, ["family", "ratio"],
                                  lambda c, t: collect.load_samples(run["out"], c, t))
    assert out.index.tolist() == list(range(len(ev))) and "index" not in out.columns
    out = out.set_index("cell")
    for task in collect.TASKS:
        for fam in (("qwen-s", "qwen-l"), ("llama-s", "llama-l")):
            for r in rf.RATIOS:
                cells = [f"dec/{c}/r{r}" for c in fam if f"dec/{c}/r{r}" != rf.MISSING]
                score = {c: stored(c, task) for c in cells}
                top = max(score.values())
                for c in cells:
                    assert bool(out.at[c, f"{task}_best"]) == (score[c] == top), (c, task)
                    assert out.at[c, f"{task}_delta"] == pytest.approx(score[c] - top), (c, task)
                    if score[c] == top:
                        assert (out.at[c, f"{task}_delta_ci_low"], out.at[c, f"{task}_delta_ci_high"]) == (0, 0)
    assert not out.loc[rf.MISSING, [f"{t}_best" for t in collect.TASKS]].any()
    assert out.loc[rf.MISSING, [f"{t}_delta_ci_low" for t in collect.TASKS]].isna().all()
    # a non-best entry: the paired interval of its difference to its group's best, by a normal approximation
    a, b = "dec/qwen-l/r4", "dec/qwen-s/r4"
    d = np.array(rf.correct_flags(a, "ko_faitheval", rf.N_ITEMS), float) - np.array(
        rf.correct_flags(b, "ko_faitheval", rf.N_ITEMS), float)
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert out.at[a, "ko_faitheval_delta_ci_low"] == pytest.approx(d.mean() - 1.96 * se, abs=0.015)
    assert out.at[a, "ko_faitheval_delta_ci_high"] == pytest.approx(d.mean() + 1.96 * se, abs=0.015)


def test_bootstrap_settings_come_from_each_result_file(run):
    """The paired intervals use the resamples and seed the LoRA cell's own result file names (not the defaults,
    and not those of its twin)."""
    from ctxcomp.report import paired

    lora, full = rf.LORA_PAIRS[0]
    ev = collect.load_eval(run["out"], [full, lora], run["models"])  # the twin first: positions must not matter
    ev["ko_faitheval_resamples"] = pd.array([900, 300], dtype="Int64")
    ev["ko_faitheval_seed"] = pd.array([1, 77], dtype="Int64")
    samples = lambda c, t: collect.load_samples(run["out"], c, t)  # noqa: E731
    frame = compare.lora_control_frame(ev, rf.LORA_PAIRS, ["ko_faitheval"], collect.TASK_LABELS, samples)
    want = paired.accuracy_delta(samples(lora, "ko_faitheval"), samples(full, "ko_faitheval"), "ko_faitheval",
                                 resamples=300, seed=77)
    assert (frame.at[0, "delta_ci_low"], frame.at[0, "delta_ci_high"]) == (want["ci_low"], want["ci_high"])
    default = paired.accuracy_delta(samples(lora, "ko_faitheval"), samples(full, "ko_faitheval"), "ko_faitheval")
    assert (want["ci_low"], want["ci_high"]) != (default["ci_low"], default["ci_high"])
    deltas = compare.add_best_deltas(ev, ["ko_faitheval"], ["family", "ratio"], samples).set_index("cell")
    worse = lora if rf.stored_value(lora, "ko_faitheval") < rf.stored_value(full, "ko_faitheval") else full
    seed, res = (77, 300) if worse == lora else (1, 900)
    other = full if worse == lora else lora
    want = paired.accuracy_delta(samples(worse, "ko_faitheval"), samples(other, "ko_faitheval"), "ko_faitheval",
                                 resamples=res, seed=seed)
    assert deltas.at[worse, "ko_faitheval_delta_ci_low"] == want["ci_low"]


def test_task_columns_and_fields_spec():
    """Table 2's columns, written out: header, two decimals, the interval, and the marks each column can carry
    (README: ≈ every column, † every column, ‡ and § knowledge overwriting only); without comparison no ≈."""
    ko, other = ("tie", "shuffled_z", "no_memory", "chance"), ("tie", "shuffled_z")
    want = [tables.Col("recon_fineweb", "Reconstr.", 2, True, True, other),
            tables.Col("ko_faitheval", "KO FaithEval", 2, True, True, ko),
            tables.Col("ko_conflictqa", "KO ConflictQA", 2, True, True, ko),
            tables.Col("sd_fineweb", "SD FineWeb", 2, True, True, other),
            tables.Col("sd_faitheval", "SD FaithEval", 2, True, True, other)]
    assert list(tables.task_cols()) == want == list(tables.TASK_COLS)
    plain = tables.task_cols(["ko_faitheval", "sd_fineweb"], compare=False)
    assert plain == (tables.Col("ko_faitheval", "KO FaithEval", 2, False, True, ko[1:]),
                     tables.Col("sd_fineweb", "SD FineWeb", 2, False, True, other[1:]))
    ctl = ("value", "ci_low", "ci_high", "diff_ci_low", "diff_ci_high", "distinguishable")
    assert collect.fields_of("ko_conflictqa") == (
        "n", "ci_low", "ci_high", *(f"shuffled_z_{f}" for f in ctl), *(f"no_memory_{f}" for f in ctl),
        "chance", "above_chance", "norm", "norm_ci_low", "norm_ci_high", "resamples", "seed")
    assert collect.fields_of("sd_faitheval") == ("n", "ci_low", "ci_high", *(f"shuffled_z_{f}" for f in ctl),
                                                 "resamples", "seed")


def _lora_frame(intervals):
    rows = []
    for k, (lo, hi) in enumerate(intervals):
        rows.append({"lora_cell": f"d/l{k // 2}/r16", "full_cell": f"d/f{k // 2}/r16", "ratio": 16, "family": "F",
                     "size": f"{k // 2}B", "task": "ko_x", "task_label": f"T{k}", "lora": 0.5, "lora_ci_low": 0.4,
                     "lora_ci_high": 0.6, "lora_n": 10, "full": 0.5 - (lo + hi) / 2, "full_ci_low": 0.3,
                     "full_ci_high": 0.7, "full_n": 10, "delta": (lo + hi) / 2, "delta_ci_low": lo,
                     "delta_ci_high": hi, "delta_n": 10})
    return pd.DataFrame(rows, index=[10 + i for i in range(len(rows))])


def test_lora_control_excludes_zero_only_when_the_interval_does():
    t = tables.lora_control_table(_lora_frame([(0.0, 0.1), (-0.1, 0.0), (0.01, 0.2), (-0.2, -0.01), (NAN, NAN)]))
    rows = _md_cells(t.md)
    assert [r[-1] for r in rows] == ["no", "no", "yes", "yes", "\u2014"]  # an end at exactly 0 includes it
    csv = pd.read_csv(io.StringIO(t.csv))
    assert csv["excludes_zero"].tolist()[:4] == [False, False, True, True] and pd.isna(csv["excludes_zero"].iloc[4])
    mid = (0.01 + 0.2) / 2
    assert rows[2][4:7] == ["0.50 [0.40, 0.60]", f"{0.5 - mid:.2f} [0.30, 0.70]", f"{mid:.2f} [0.01, 0.20]"]
    assert rows[4][6] == "\u2014" and not any("**" in c for r in rows for c in r)  # not a ranking
    assert _midrules(t.tex) == 1 + 2  # header, then where the LoRA cell changes (three pairs)


def test_sd_breakdown_and_rank_truncation_show_intervals(run):
    sd, dims = collect.load_sd_breakdown(run["out"], run["cells"], run["models"])
    t = tables.sd_breakdown_table(sd, dims)
    csv = pd.read_csv(io.StringIO(t.csv))
    i = csv.index[(csv["cell"] == "dec/qwen-s/r4") & (csv["source"] == "fineweb")][0]
    row = _md_cells(t.md)[i]
    for k, col in enumerate(["all", "answerable", "unanswerable", "em", *(f"dim_{d}" for d in dims)]):
        v, lo, hi = csv.at[i, col], csv.at[i, f"{col}_ci_low"], csv.at[i, f"{col}_ci_high"]
        assert row[4 + k] == f"{v:.2f} [{lo:.2f}, {hi:.2f}]", col
    assert "- Unanswerable questions are correct only when the decoder abstains; EM (norm.) is the normalised " \
           "exact-match variant of the overall score." in t.md.splitlines()
    empty = tables.sd_breakdown_table(pd.DataFrame(columns=sd.columns), dims)  # no rows yet: a header only
    assert _md_cells(empty.md) == []
    rt = collect.load_rank_truncation(run["out"], run["cells"], run["models"])
    t = tables.rank_truncation_table(rt.set_axis([f"r{i}" for i in range(len(rt))]))
    csv = pd.read_csv(io.StringIO(t.csv))
    assert [c for c in csv.columns if c.startswith("ko_faitheval")] == [
        "ko_faitheval", "ko_faitheval_ci_low", "ko_faitheval_ci_high", "ko_faitheval_delta_full"]
    full = csv[(csv["cell"] == "dec/qwen-s/r4") & (csv["setting"] == "full")].iloc[0]
    assert full["ko_faitheval_delta_full"] == 0.0 and pd.isna(full["ko_faitheval_ci_low"])
    assert "- per_sample: each memory cut to its own top singular directions; batch: one SVD over the batch of " \
           "memories. full: no truncation." in t.md.splitlines()


def test_tables_are_utf8_whatever_the_locale(tmp_path):
    """A node with LANG=C (ASCII) still writes the dash, the marks and the minus sign as UTF-8."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys; from ctxcomp.report import tables; "
            "tables.write_table(sys.argv[1], "
            "tables.Rendered(md='\\u2014 \\u2248\\n', tex='\\u2212\\n', csv='\\u2020\\n'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8"))}
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0",
               PYTHONPATH=os.pathsep.join([str(root / "workflow"), env.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "t")], env=env, check=True, timeout=120)
    assert (tmp_path / "t.md").read_bytes() == "\u2014 \u2248\n".encode()
    assert (tmp_path / "t.tex").read_bytes() == "\u2212\n".encode()
    assert (tmp_path / "t.csv").read_bytes() == "\u2020\n".encode()


def test_one_small_table_in_full():
    """Markdown, LaTeX and CSV of a two-group table, written out by hand: layout, minus signs, interval, marks,
    bold, missing value, notes and their LaTeX escapes."""
    df = pd.DataFrame({"ratio": [4, 4, 16], "family": ["A", "B_2", "A"], "x": [-0.25, 0.5, NAN],
                       "x_ci_low": [-0.5, 0.25, NAN], "x_ci_high": [0.0, 0.75, NAN],
                       "x_shuffled_z_distinguishable": pd.array([False, True, pd.NA], dtype="boolean")})
    spec = tables.Spec([tables.Label("ratio", "Ratio"), tables.Label("family", "Family")],
                       [tables.Col("x", "X", 2, True, True, ("shuffled_z",))], "Cap & more", "tab:x",
                       group=["ratio"], rule_on="ratio", notes=["Extra 50% note \u00d7 more"])
    t = tables.render(df.set_axis([7, 3, 5]), spec)
    dagger = tables.MARKS["shuffled_z"].meaning
    assert t.md == (
        "**Cap & more**\n\n"
        "| Ratio | Family | X |\n"
        "|:--|:--|--:|\n"
        "| 4 | A | \u22120.25 [\u22120.50, 0.00]\u2020 |\n"
        "| 4 | B_2 | **0.50** [0.25, 0.75] |\n"
        "| 16 | A | \u2014 |\n\n"
        "- Bold: best per ratio and column (ties: all).\n"
        "- [a, b]: 95 % percentile bootstrap interval over the evaluation samples (contexts for semantic drift).\n"
        f"- \u2020: {dagger}.\n"
        "- \u2014 = not computed.\n"
        "- Extra 50% note \u00d7 more\n")
    assert t.tex == (
        "% requires \\usepackage{booktabs}\n"
        "\\begin{table}[t]\n"
        "\\centering\n"
        "\\small\n"
        "\\begin{tabular}{llr}\n"
        "\\toprule\n"
        "Ratio & Family & X \\\\\n"
        "\\midrule\n"
        "4 & A & $-$0.25\\,{\\scriptsize [$-$0.50, 0.00]}$^{\\dagger}$ \\\\\n"
        "4 & B\\_2 & \\textbf{0.50}\\,{\\scriptsize [0.25, 0.75]} \\\\\n"
        "\\midrule\n"
        "16 & A & --- \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
        "\\par\\smallskip\\footnotesize\n"
        "Bold: best per ratio and column (ties: all). \\\\\n"
        "[a, b]: 95 \\% percentile bootstrap interval over the evaluation samples (contexts for semantic drift). \\\\\n"
        f"$\\dagger$: {tables.latex_escape(dagger)}. \\\\\n"
        "--- = not computed. \\\\\n"
        "Extra 50\\% note $\\times$ more \\\\\n"
        "\\caption{Cap \\& more}\n"
        "\\label{tab:x}\n"
        "\\end{table}\n")
    assert t.csv == "ratio,family,x,x_delta\n4,A,-0.25,-0.75\n4,B_2,0.5,0.0\n16,A,,\n"


def test_tie_mark_at_zero_and_without_best_flags():
    df = _frame([
        {"ratio": 4, "family": "Q", "compressor": "a", "params_b": 0.6, "ko_faitheval": 0.6},
        {"ratio": 4, "family": "Q", "compressor": "b", "params_b": 4.0, "ko_faitheval": 0.5,
         "ko_faitheval_delta_ci_high": 0.0},    # the interval of the difference ends at 0: it includes 0
        {"ratio": 4, "family": "Q", "compressor": "c", "params_b": 8.0, "ko_faitheval": 0.4,
         "ko_faitheval_delta_ci_high": -1e-9}])
    rows = _md_cells(tables.table2(df).md)  # no ko_faitheval_best column: the tie mark needs only the interval
    c = _col(3, "ko_faitheval")
    assert [r[c] for r in rows] == ["**0.60**", "0.50\u2248", "0.40"]
    flagged = df.assign(ko_faitheval_best=[False, True, False])  # an entry flagged best is never "tied"
    assert [r[c] for r in _md_cells(tables.table2(flagged).md)][1] == "0.50"
    assert not tables._ties_best(flagged, "ko_faitheval").iloc[1]
    assert tables._ties_best(df.drop(columns="ko_faitheval_delta_ci_high", errors="ignore"), "ko_faitheval").tolist() \
        == [False, False, False]


def test_table3_decoders_in_first_appearance_order():
    df = _frame([
        {"ratio": 16, "decoder": "z-dec", "family": "Q", "compressor": "a", "params_b": 4.0, "recon_fineweb": 0.2},
        {"ratio": 16, "decoder": "a-dec", "family": "Q", "compressor": "a", "params_b": 4.0, "recon_fineweb": 0.3},
        {"ratio": 16, "decoder": "z-dec", "family": "Q", "compressor": "b", "params_b": 1.0, "recon_fineweb": 0.1}])
    rows = _md_cells(tables.table3(df).md)
    assert [(r[1], r[3]) for r in rows] == [("z-dec", "S"), ("z-dec", "S"), ("a-dec", "S")]
    assert [r[4] for r in rows] == ["0.10", "**0.20**", "**0.30**"]  # sizes ascending within a decoder


def test_flag_columns_read_false_only_where_false():
    df = pd.DataFrame({"f": pd.array([True, False, pd.NA], dtype="boolean"), "g": [True, False, None]})
    assert tables._is_false(df, "f").tolist() == [False, True, False]
    assert tables._is_false(df, "g").tolist() == [False, True, False]
    assert tables._is_false(df.set_axis([5, 6, 7]), "missing").tolist() == [False, False, False]
    assert tables._is_false(df.set_axis([5, 6, 7]), "missing").index.tolist() == [5, 6, 7]


def test_best_and_delta_without_groups_and_with_a_group_of_nothing():
    df = pd.DataFrame({"g": ["a", "a", "b", "b"], "v": [0.2, 0.5, 0.9, 0.1]}, index=[9, 8, 7, 6])
    best, delta = compare.best_and_delta(df, ["v"], None)  # one group: the whole frame
    assert best["v"].tolist() == [False, False, True, False] and best.index.tolist() == [9, 8, 7, 6]
    assert delta["v"].tolist() == pytest.approx([-0.7, -0.4, 0.0, -0.8])
    assert delta["v"].dtype == float and best["v"].dtype == bool
    rows = {"ko_x": [True, False, True, True]}
    samples = lambda cell, task: pd.DataFrame({"id": ["q0", "q1", "q2", "q3"],  # noqa: E731
                                               "correct": rows[task] if cell != "c2" else [True] * 4})
    ev = pd.DataFrame({"cell": ["c0", "c1", "c2", "c3"], "fam": ["A", "A", "B", "B"],
                       "ko_x": [NAN, NAN, 1.0, 0.75]})  # group A has no values: no best, no interval
    out = compare.add_best_deltas(ev, ["ko_x"], ["fam"], samples)
    assert out["ko_x_best"].tolist() == [False, False, True, False]
    assert out["ko_x_delta_ci_low"].dtype == float and out["ko_x_delta_ci_low"].iloc[:2].isna().all()
    assert out["ko_x_delta_ci_low"].iloc[2] == 0.0 and out["ko_x_delta_ci_high"].iloc[2] == 0.0
    assert np.isfinite(out["ko_x_delta_ci_low"].iloc[3])  # group B is still compared after the empty group A


def test_bootstrap_defaults_when_the_result_file_names_none():
    from ctxcomp.report import paired

    ev = pd.DataFrame({"ko_x_resamples": pd.array([pd.NA, 300], dtype="Int64"),
                       "ko_x_seed": pd.array([pd.NA, 5], dtype="Int64")})
    assert compare._boot(ev, 0, "ko_x") == (paired.DEFAULT_RESAMPLES, paired.DEFAULT_SEED)
    assert compare._boot(ev, 1, "ko_x") == (300, 5)
    assert compare._boot(pd.DataFrame({"x": [1]}), 0, "ko_x") == (paired.DEFAULT_RESAMPLES, paired.DEFAULT_SEED)
