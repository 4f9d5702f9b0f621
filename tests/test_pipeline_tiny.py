"""The tiny preset end to end (README command 1) in a copy of the repository, then what a re-run would do."""
from __future__ import annotations

import csv
import json
import math
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from ctxcomp.paths import RunPaths
from snakemake_helpers import TINY_RUN, BackgroundSnakemake, copy_repo, job_counts, run_snakemake

pytestmark = pytest.mark.slow

FIGURES = ["fig1_centre", "fig2_loss", "fig3a_erank_size", "fig3b_erank_steps", "fig3c_erank_ko",
           "fig4a_entropy_size", "fig4b_entropy_steps", "fig4c_entropy_drift", "figG2_rank_truncation"]
TABLES = ["table2", "sd_breakdown", "table3", "rank_truncation", "rag_musique", "training"]


def start_tiny_run(base: Path) -> BackgroundSnakemake:
    """README command 1 in a copy of the repository under `base`, started now, collected by the fixture."""
    repo = copy_repo(base / "repo")
    return BackgroundSnakemake(["--profile", "profiles/tiny", "paper"], cwd=repo, log=base / "snakemake.log")


@pytest.fixture(scope="module")
def tiny_run(request, tmp_path_factory) -> Path:
    # started by conftest.py when the session collected this module: it runs beside the other tests
    run = request.config.stash.get(TINY_RUN, None) or start_tiny_run(tmp_path_factory.mktemp("tiny"))
    return run.wait()


def test_every_table_and_figure(tiny_run):
    rep = tiny_run / "results/tiny/report"
    for name in TABLES:
        for ext in ("md", "csv", "tex"):
            assert (rep / f"{name}.{ext}").stat().st_size > 0
    for fig in FIGURES:
        assert (rep / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (rep / f"{fig}.pdf").read_bytes()[:5] == b"%PDF-"
    for fig in ("fig3c_erank_ko", "fig4c_entropy_drift"):
        rows = list(csv.DictReader(open(rep / f"{fig}.correlation.csv")))
        assert rows and all(int(r["n"]) >= 1 for r in rows), fig
    index = (rep / "index.md").read_text()
    assert "table2.md" in index and "fig2_loss.png" in index and "fig3c_erank_ko.correlation.csv" in index


def test_snakemake_report_holds_every_table_and_figure(tiny_run):
    """`snakemake --report report.zip`: a browsable page (rule graph, runtimes) with every report artifact inside,
    each listed with its caption."""
    run_snakemake(["--profile", "profiles/tiny", "paper", "--report", "report.zip"], cwd=tiny_run)
    with zipfile.ZipFile(tiny_run / "report.zip") as z:
        names = z.namelist()
        html = z.read("report/report.html").decode()
    p = RunPaths("results/tiny")
    for f in p.main_report_files(rag=True) + p.ablation_report_files():
        name = Path(f).name
        stored = [n for n in names if n.startswith("report/data/raw/") and n.endswith("/" + name)]
        assert len(stored) == 1, name
        assert z_bytes(tiny_run / "report.zip", stored[0]) == (tiny_run / f).read_bytes(), name
        assert f'"name": "{name}"' in html, name
    for text in ("Table 2 (main results)", "Figure 3 (effective rank)", "Provenance", "report_main",
                 "train_compressor", "bootstrap"):
        assert text in html, text


def z_bytes(archive: Path, member: str) -> bytes:
    with zipfile.ZipFile(archive) as z:
        return z.read(member)


def test_table2_has_every_cell(tiny_run):
    rows = list(csv.DictReader(open(tiny_run / "results/tiny/report/table2.csv")))
    assert len(rows) == 18  # 6 compressors x 3 ratios
    tasks = ["recon_fineweb", "ko_faitheval", "ko_conflictqa", "sd_fineweb", "sd_faitheval"]
    for row in rows:
        for task in tasks:  # the result-file contract: value, n, interval and the shuffled-Z control everywhere
            for field in ("", "_n", "_ci_low", "_ci_high", "_shuffled_z_distinguishable", "_best", "_delta"):
                assert row[task + field] != "", (row["cell"], task + field)
        for task in tasks[1:3]:
            for field in ("_no_memory_distinguishable", "_chance", "_above_chance"):
                assert row[task + field] != "", (row["cell"], task + field)


def test_cell_results_are_consistent(tiny_run):
    out = tiny_run / "results/tiny"
    cell = "tiny-llama-dec/tiny-qwen-m/r16"
    ko = json.loads((out / f"eval/{cell}/ko_faitheval.json").read_text())
    samples = [json.loads(line) for line in open(out / f"eval/{cell}/ko_faitheval.samples.jsonl")]
    assert ko["n"] == len(samples) > 0
    assert ko["value"] == pytest.approx(sum(s["correct"] for s in samples) / len(samples))
    assert ko["provenance"]["settings_hash"]
    probes = json.loads((out / f"probes/{cell}/probes.json").read_text())
    assert 1.0 <= probes["erank"] <= probes["erank_batch"]
    assert math.isfinite(probes["entropy_mean"]) and probes["entropy_mean"] > 0


def test_memory_carries_information(tiny_run):
    """Shuffling Z across the batch must hurt reconstruction: the mean gap over the cells is positive."""
    gaps = [json.loads(p.read_text())["shuffle_gap"]["gap"]
            for p in (tiny_run / "results/tiny/train").glob("*/*/r*/summary.json")]
    assert len(gaps) == 24
    assert sum(gaps) / len(gaps) > 0


def test_dynamics_checkpoints(tiny_run):
    """One row per probe checkpoint of the separate dynamics run: every `dynamics.probe_every` steps of its
    `max_steps` (the preset's values) and the last step."""
    dyn = yaml.safe_load((tiny_run / "workflow/presets/tiny.yaml").read_text())["dynamics"]
    steps, every = dyn["max_steps"], dyn["probe_every"]
    rows = list(csv.DictReader(open(tiny_run / "results/tiny/dynamics/tiny-llama-dec/tiny-qwen-s/r16/checkpoints.csv")))
    assert [int(r["step"]) for r in rows] == sorted(set(range(every, steps + 1, every)) | {steps})
    assert len(rows) >= 8  # enough points for the post-peak correlation of Fig. 3c


def test_rerun_is_a_no_op(tiny_run):
    proc = run_snakemake(["--profile", "profiles/tiny", "paper", "-n"], cwd=tiny_run)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_a_deleted_per_sample_file_is_remade_and_the_reports_follow(tiny_run):
    """Deleting one cell's per-sample rows makes `paper` plan that cell's evaluation and the main report again
    (the cell is not in the ablation, so Table 3 stays); nothing else."""
    cell = "tiny-llama-dec/tiny-llama-m/r64"
    path = tiny_run / "results/tiny/eval" / cell / "sd_faitheval.samples.jsonl"
    keep = path.with_name("kept.jsonl")
    shutil.copy2(path, keep)
    path.unlink()
    try:
        proc = run_snakemake(["--profile", "profiles/tiny", "paper", "-n", "--quiet", "rules"], cwd=tiny_run)
        counts = job_counts(proc.stdout + proc.stderr)
        assert counts == {"evaluate_cell": 1, "report_main": 1, "paper": 1, "total": 3}, counts
    finally:
        shutil.copy2(keep, path)  # same bytes and times: the run is complete again
        keep.unlink()
    proc = run_snakemake(["--profile", "profiles/tiny", "paper", "-n"], cwd=tiny_run)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_editing_one_cell_reruns_only_that_cell(tiny_run):
    preset = tiny_run / "workflow/presets/tiny.yaml"
    cfg = yaml.safe_load(preset.read_text())
    cfg["train"]["cell_overrides"] = {"tiny-llama-m/64": {"lr": 5.0e-4}}
    preset.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_snakemake(["--profile", "profiles/tiny", "paper", "-n", "--quiet", "rules"], cwd=tiny_run)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train_compressor"] == 1
    assert counts["evaluate_cell"] == 1 and "probe_dynamics" not in counts
    assert "pretrain_base" not in counts and "prepare_fineweb" not in counts
