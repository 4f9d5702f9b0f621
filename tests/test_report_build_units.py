"""The report builders on a fast path: figures are drawn but saved as placeholders (rendering to PNG/PDF is tested
in test_report_figures.py and end to end in test_report_build.py), so each test can ask for exactly the files it
checks - which files are made for which request, what goes into the index and the correlation files, and what is
refused."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

import results_fixture as rf
from ctxcomp.paths import CORRELATION_FIGURES, FIGURES
from ctxcomp.report import build, figures, tables


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return rf.write_results(tmp_path_factory.mktemp("build-units") / "run")


@pytest.fixture(autouse=True)
def placeholder_saves(monkeypatch):
    """Plot.save writes `<stem>.png|.pdf` holding the figure's suptitle (and records the data it was drawn from)."""
    saved = {}

    def save(self, stem):
        stem = Path(stem)
        saved[stem.name] = self
        paths = []
        for ext in ("png", "pdf"):
            p = stem.with_name(f"{stem.name}.{ext}")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(self.fig._suptitle.get_text() if self.fig._suptitle else "")
            paths.append(p)
        return paths

    monkeypatch.setattr(figures.Plot, "save", save)
    return saved


def _files(out, names):
    return [str(Path(out) / "report" / n) for n in names]


def _made(out):
    return sorted(p.name for p in (Path(out) / "report").iterdir() if not p.name.startswith("."))


def test_only_the_requested_files_are_made(tmp_path, caplog):
    args = rf.write_results(tmp_path / "run")
    want = _files(args["out"], ["table2.md", "table2.csv", "table2.tex", "fig2_loss.png", "fig2_loss.pdf"])
    with caplog.at_level(logging.INFO, logger="ctxcomp.report.build"):
        build.build_main_report(args["out"], args["cells"], args["dynamics_cell"], args["models"], "h", outputs=want)
    assert _made(args["out"]) == ["fig2_loss.pdf", "fig2_loss.png", "table2.csv", "table2.md", "table2.tex"]
    assert "wrote table2.md, table2.csv, table2.tex" in caplog.text
    # Table 2 as the table module renders it from the same results, with the best deltas of family x ratio
    md = (Path(args["out"]) / "report" / "table2.md").read_text(encoding="utf-8")
    assert md.startswith("**Reconstruction BLEU (FineWeb) and QA accuracy") and "\u2248" in md


def test_fig2_is_drawn_at_ratio_4_or_the_smallest(tmp_path, placeholder_saves):
    args = rf.write_results(tmp_path / "run")
    out = _files(args["out"], ["fig2_loss.png", "fig2_loss.pdf"])
    build.build_main_report(args["out"], args["cells"], None, args["models"], "h", outputs=out)
    assert set(placeholder_saves["fig2_loss"].data["cell"]) == {c for c in args["cells"] if c.endswith("/r4")}
    r16 = [c for c in args["cells"] if c.endswith("/r16") and c != rf.MISSING]
    build.build_main_report(args["out"], r16, None, args["models"], "h", outputs=out)
    assert set(placeholder_saves["fig2_loss"].data["cell"]) == set(r16)  # no 4x cells: the first ratio there is
    assert "ratio 16" in (Path(args["out"]) / "report" / "fig2_loss.png").read_text()


def test_every_figure_job_draws_its_own_figure(tmp_path, placeholder_saves):
    args = rf.write_results(tmp_path / "run")
    names = [f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")] + [f"{f}.correlation.csv"
                                                                      for f in CORRELATION_FIGURES]
    build.build_main_report(args["out"], args["cells"], args["dynamics_cell"], args["models"], "h",
                            outputs=_files(args["out"], names))
    assert sorted(placeholder_saves) == sorted(FIGURES)
    for name in placeholder_saves:
        title = (Path(args["out"]) / "report" / f"{name}.png").read_text()
        if title:
            assert title.startswith({"fig1_centre": "Fig. 1", "fig2_loss": "Fig. 2", "fig4a_entropy_size": "Fig. 4a",
                                     "fig4c_entropy_drift": "Fig. 4c", "figG2_rank_truncation": "Fig. G.2"}[name])
    # the dynamics figures read the dynamics run's files; fig3c's correlations go to its CSV, at full precision
    assert set(placeholder_saves["fig3b_erank_steps"].data["series"]) == {"probe checkpoints", "training probe batch"}
    assert placeholder_saves["fig3c_erank_ko"].data["q25"].notna().all()  # with the per-question rows: a band
    corr = pd.read_csv(Path(args["out"]) / "report" / "fig3c_erank_ko.correlation.csv")
    assert corr["pearson_r"].tolist() == placeholder_saves["fig3c_erank_ko"].correlations["pearson_r"].tolist()
    assert set(placeholder_saves["fig4c_entropy_drift"].data["cell"]) == set(args["cells"]) - {rf.MISSING}
    assert set(placeholder_saves["fig4a_entropy_size"].data["cell"]) == set(args["cells"]) - {rf.MISSING}
    assert len(placeholder_saves["figG2_rank_truncation"].data) > 0
    assert set(placeholder_saves["fig3a_erank_size"].data["cell"]) == set(args["cells"]) - {rf.MISSING}


def test_no_dynamics_cell_gives_empty_dynamics_figures_and_a_header_only_correlation_file(tmp_path,
                                                                                        placeholder_saves):
    args = rf.write_results(tmp_path / "run")
    out = _files(args["out"], ["fig3c_erank_ko.png", "fig3c_erank_ko.pdf", "fig3c_erank_ko.correlation.csv",
                               "fig4b_entropy_steps.png", "fig4b_entropy_steps.pdf"])
    build.build_main_report(args["out"], args["cells"], None, args["models"], "h", outputs=out)
    assert placeholder_saves["fig3c_erank_ko"].data.empty and placeholder_saves["fig4b_entropy_steps"].data.empty
    text = (Path(args["out"]) / "report" / "fig3c_erank_ko.correlation.csv").read_text()
    assert text == ",".join(figures.CORR_COLUMNS) + "\n"


def test_outputs_none_makes_everything_and_rag_only_when_a_cell_has_it(tmp_path):
    args = rf.write_results(tmp_path / "rag")
    build.build_main_report(args["out"], args["cells"], args["dynamics_cell"], args["models"], "h")
    assert _made(args["out"]) == sorted(Path(p).name for p in args["main_outputs"])
    plain = rf.write_results(tmp_path / "plain", rag=False)
    build.build_main_report(plain["out"], plain["cells"], plain["dynamics_cell"], plain["models"], "h")
    assert _made(plain["out"]) == sorted(Path(p).name for p in rf.main_outputs(Path(plain["out"]), rag=False))
    index = (Path(plain["out"]) / "report" / "index.md").read_text(encoding="utf-8")
    assert index.startswith("# Main report\n") and "- Config hash: `h`" in index
    assert "| `report/table2.md` |" in index and "rag_musique" not in index


def test_unknown_and_unmade_outputs_are_errors(run, monkeypatch):
    with pytest.raises(ValueError, match=r"cannot make requested report file\(s\): \[.*report/table9\.md'\]"):
        build.build_main_report(run["out"], run["cells"], None, run["models"], "h",
                                outputs=_files(run["out"], ["table2.md", "table9.md"]))
    with pytest.raises(ValueError, match=r"table2\.md"):
        build.build_ablation_report(run["out"], run["ablation_cells"], run["models"], "h",
                                    outputs=_files(run["out"], ["table2.md"]))
    with pytest.raises(ValueError, match=r"table3\.md"):
        build.build_lora_control_report(run["out"], run["lora_pairs"], run["models"],
                                        outputs=_files(run["out"], ["table3.md"]))
    # a builder that reports a file it did not write: the rule must fail, not succeed with a stale file
    monkeypatch.setattr(tables, "write_table", lambda stem, table: [Path(f"{stem}.md")])
    with pytest.raises(RuntimeError, match=r"report file\(s\) not produced: \[.*table2\.csv.*table2\.tex"):
        build.build_main_report(run["out"], run["cells"], None, run["models"], "h",
                                outputs=_files(run["out"], ["table2.md", "table2.csv", "table2.tex"]))


def test_ablation_and_lora_reports(tmp_path):
    args = rf.write_results(tmp_path / "run")
    build.build_ablation_report(args["out"], args["ablation_cells"], args["models"], "cfgA")
    assert _made(args["out"]) == ["ablation_index.md", "table3.csv", "table3.md", "table3.tex"]
    abl = (Path(args["out"]) / "report" / "ablation_index.md").read_text(encoding="utf-8")
    assert abl.startswith("# Decoder ablation report\n") and "`cfgA`" in abl and "| `report/table3.csv` |" in abl
    csv = pd.read_csv(Path(args["out"]) / "report" / "table3.csv")
    assert csv["decoder"].tolist() == ["dec"] * 3 + ["dec_b"] * 3  # grouped per decoder (bold per decoder x ratio)
    assert csv.groupby("decoder")["recon_fineweb_best"].sum().tolist() == [1, 1]
    only = tmp_path / "only"
    only_args = rf.write_results(only)
    build.build_ablation_report(only_args["out"], only_args["ablation_cells"], only_args["models"], "c",
                                outputs=_files(only_args["out"], ["ablation_index.md"]))
    assert _made(only_args["out"]) == ["ablation_index.md"]  # the index alone, listing no table
    assert "table3" not in (only / "report" / "ablation_index.md").read_text()
    build.build_lora_control_report(args["out"], [list(p) for p in args["lora_pairs"]], args["models"])
    lc = pd.read_csv(Path(args["out"]) / "report" / "lora_control.csv")
    lora, full = args["lora_pairs"][0]
    assert set(lc["lora_cell"]) == {lora} and set(lc["full_cell"]) == {full} and len(lc) == 5
    assert lc.loc[lc["task"] == "ko_faitheval", "lora"].iloc[0] == pytest.approx(rf.stored_value(lora,
                                                                                               "ko_faitheval"))


def test_write_correlations_full_precision(tmp_path):
    frame = pd.DataFrame([dict.fromkeys(figures.CORR_COLUMNS) | {"pearson_r": 1 / 3, "n": 7}])
    path = build.write_correlations(tmp_path / "c.csv", frame)
    assert path == tmp_path / "c.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(figures.CORR_COLUMNS) and "0.3333333333333333" in lines[1]
