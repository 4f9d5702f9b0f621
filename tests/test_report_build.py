"""End to end on the results fixture: every report file is produced, well-formed and indexed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import results_fixture as rf
from ctxcomp.report import (
    build_ablation_report,
    build_lora_control_report,
    build_main_report,
    collect,
    figures,
    main_report_files,
)
from ctxcomp.report.index import sha256_file

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    args = rf.write_results(tmp_path_factory.mktemp("build") / "results" / "run")
    build_main_report(out=args["out"], cells=args["cells"], dynamics_cell=args["dynamics_cell"],
                      models=args["models"], config_hash="cfg123", outputs=args["main_outputs"])
    build_ablation_report(out=args["out"], cells=args["ablation_cells"], models=args["models"],
                          config_hash="cfg123", outputs=args["ablation_outputs"])
    build_lora_control_report(out=args["out"], pairs=args["lora_pairs"], models=args["models"],
                              outputs=args["lora_outputs"])
    return args


def test_all_outputs_exist_and_are_well_formed(built):
    report = Path(built["out"]) / "report"
    expected = {Path(p) for p in built["main_outputs"] + built["ablation_outputs"] + built["lora_outputs"]}
    assert {p for p in report.iterdir() if not p.name.startswith(".")} == expected  # exactly those, no temp files
    for p in expected:
        data = p.read_bytes()
        assert data, p
        if p.suffix == ".png":
            assert data.startswith(PNG), p
        elif p.suffix == ".pdf":
            assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:], p
        elif p.suffix == ".csv":
            assert len(pd.read_csv(p)) > 0, p


def test_correlation_files_are_the_figures_correlations(built):
    """fig3c/fig4c correlation CSVs hold exactly what the figures' legends were made from, at full precision."""
    report = Path(built["out"]) / "report"
    files = collect.DynamicsFiles.of_run(built["out"], built["dynamics_cell"])
    want = figures.fig3c_erank_ko(collect.load_dynamics(files), collect.load_checkpoint_samples(files),
                                  built["dynamics_cell"]).correlations
    got = pd.read_csv(report / "fig3c_erank_ko.correlation.csv")
    assert list(got.columns) == list(figures.CORR_COLUMNS)
    assert got["pearson_r"].tolist() == want["pearson_r"].tolist() and got["n"].tolist() == [27, 27]
    c4 = pd.read_csv(report / "fig4c_entropy_drift.correlation.csv")
    assert set(c4.loc[c4["subset"] == "cell", "cell"]) == set(built["cells"]) - {rf.MISSING}


def test_outputs_match_workflow_list(built):
    got = [str(p) for p in main_report_files(built["out"], rag=True)]
    assert got == built["main_outputs"]


def test_index_lists_artifacts_and_provenance(built):
    report = Path(built["out"]) / "report"
    index = (report / "index.md").read_text()
    assert "`cfg123`" in index and "Report commit" in index
    for p in built["main_outputs"]:
        p = Path(p)
        if p.name == "index.md":
            continue
        row = f"| `report/{p.name}` | {p.stat().st_size} | `{sha256_file(p)[:12]}` |"
        assert row in index
    assert f"| `{rf.MISSING}` | (no result files) |" in index
    assert rf.COMMIT[:12] in index
    abl = (report / "ablation_index.md").read_text()
    assert "`report/table3.md`" in abl and "dec_b/qwen-s/r16" in abl and "`report/table2.md`" not in abl


def test_table2_shows_missing_cell(built):
    md = (Path(built["out"]) / "report" / "table2.md").read_text()
    last = [line for line in md.splitlines() if line.startswith("| 16 | LLaMA-3.2 | 3B")][0]
    assert last.count("\u2014") == 5


def test_lora_control_table_is_built(built):
    md = (Path(built["out"]) / "report" / "lora_control.md").read_text()
    assert "| 16 | Qwen3 | 4B | Reconstr. |" in md and "LoRA − full" in md
    csv = pd.read_csv(Path(built["out"]) / "report" / "lora_control.csv")
    assert set(csv["lora_cell"]) == {rf.LORA_PAIRS[0][0]} and set(csv["full_cell"]) == {rf.LORA_PAIRS[0][1]}


def test_dynamics_files_come_from_the_rule_inputs(tmp_path):
    """The builder reads the dynamics files the rule names, wherever they are (here: not at the contract paths)."""
    args = rf.write_results(tmp_path / "run", rag=False)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    src = Path(args["out"]) / "dynamics" / args["dynamics_cell"]
    for f in ("checkpoints.csv", "checkpoints.samples.jsonl", "train/dynamics.csv"):
        (src / f).rename(moved / Path(f).name)
    out = [str(Path(args["out"]) / "report" / f"fig3c_erank_ko.{e}") for e in ("png", "pdf", "correlation.csv")]
    build_main_report(out=args["out"], cells=args["cells"], dynamics_cell=args["dynamics_cell"],
                      models=args["models"], config_hash="h", outputs=out,
                      dynamics_files=[str(moved / n) for n in ("checkpoints.csv", "checkpoints.samples.jsonl",
                                                               "dynamics.csv")])
    assert pd.read_csv(out[2])["n"].tolist() == [27, 27]


def test_unknown_output_is_refused(built):
    bogus = str(Path(built["out"]) / "report" / "fig9_nothing.png")
    with pytest.raises(ValueError, match="fig9_nothing"):
        build_main_report(out=built["out"], cells=built["cells"], dynamics_cell=None, models=built["models"],
                          config_hash="x", outputs=[bogus])


def test_minimal_run_without_dynamics_or_rag(tmp_path):
    """One computed cell, no dynamics cell, RAG not requested: every figure still renders, no RAG table is made."""
    out = tmp_path / "results" / "mini"
    cell = "dec/qwen-s/r4"
    rf.write_cell(out, cell, rag=False)
    outputs = rf.main_outputs(out, rag=False)
    build_main_report(out=str(out), cells=[cell, "dec/qwen-l/r4"], dynamics_cell=None, models=rf.MODELS,
                      config_hash="h", outputs=outputs)
    for p in outputs:
        assert Path(p).stat().st_size > 0
    assert not (out / "report" / "rag_musique.md").exists()
    # Relative paths (as Snakemake passes them) resolve to the same files.
    (out / "report" / "table2.md").unlink()
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        build_main_report(out="results/mini", cells=[cell], dynamics_cell=None, models=rf.MODELS, config_hash="h",
                          outputs=["results/mini/report/table2.md", "results/mini/report/table2.csv",
                                   "results/mini/report/table2.tex"])
    finally:
        os.chdir(cwd)
    assert (out / "report" / "table2.md").exists()


_RUNNER = """
import json, runpy, sys
from types import SimpleNamespace
a = json.loads(sys.argv[2])
smk = SimpleNamespace(params=SimpleNamespace(**a["params"]), input=SimpleNamespace(**a["input"]), output=a["output"],
                      log=[a["log"]], threads=1)
runpy.run_path(sys.argv[1], init_globals={"snakemake": smk}, run_name="__main__")
"""


def _run_script(script: str, params: dict, output: list[str], log: Path, inputs: dict | None = None) -> None:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "workflow"), os.environ.get("PYTHONPATH", "")])}
    arg = json.dumps({"params": params, "input": inputs or {}, "output": output, "log": str(log)})
    subprocess.run([sys.executable, "-c", _RUNNER, str(repo / "workflow" / "scripts" / script), arg], env=env,
                   check=True, timeout=120)


def test_scripts_run_with_snakemake_object(tmp_path):
    """The rule scripts pass the rule's params and outputs through (tables only, to stay fast)."""
    args = rf.write_results(tmp_path / "run", rag=False)
    report = Path(args["out"]) / "report"
    main_out = [str(report / f"table2.{e}") for e in ("md", "csv", "tex")]
    _run_script("report_main.py", {"out": args["out"], "cells": args["cells"], "dynamics_cell": args["dynamics_cell"],
                                   "models": args["models"], "config_hash": "h1", "note": ""}, main_out,
                tmp_path / "main.log",
                {"dynamics": []})
    _run_script("report_ablation.py", {"out": args["out"], "cells": args["ablation_cells"], "models": args["models"],
                                       "config_hash": "h2", "note": "A preset note."}, args["ablation_outputs"],
                tmp_path / "abl.log")
    _run_script("report_lora_control.py", {"out": args["out"], "pairs": [list(p) for p in args["lora_pairs"]],
                                           "models": args["models"]}, args["lora_outputs"], tmp_path / "lora.log")
    assert all(Path(p).exists() for p in main_out + args["ablation_outputs"] + args["lora_outputs"])
    assert "`h2`" in (report / "ablation_index.md").read_text()
    assert "\n> A preset note.\n" in (report / "ablation_index.md").read_text()
    assert "wrote" in (tmp_path / "main.log").read_text()
