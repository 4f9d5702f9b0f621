"""ctxcomp.plan: jobs per rule and GPU-hours from Snakemake's DAG, checked against the config by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ctxcomp import plan

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def gpu_hours(res: dict) -> float:
    return res["gpu"] * res.get("nodes", 1) * res["runtime"] / 60


def hand_sum(cells: list[tuple[str, str, int]], dynamics: bool = True) -> float:
    """Training + evaluate_cell (evaluation and probes) per cell, plus the dynamics run (train_dynamics +
    probe_dynamics) once: all from config.yaml."""
    models = CONFIG["models"]
    total = 0.0
    for _dec, comp, _ratio in cells:
        total += gpu_hours(models[comp]["train_resources"]) + gpu_hours(models[comp]["eval_resources"])
    if dynamics:
        dyn = models[CONFIG["dynamics"]["compressor"]]
        total += gpu_hours(dyn["train_resources"]) + gpu_hours(dyn["eval_resources"])
    return total


MAIN = [(CONFIG["decoder"], c, r) for c in CONFIG["compressors"] for r in CONFIG["ratios"]]
ABL = CONFIG["ablation"]
ABLATION = [(d, c, r) for d in ABL["decoders"] for c in ABL["compressors"] for r in ABL["ratios"]]


@pytest.fixture(scope="module")
def all_plan():
    return plan.summarize(plan.dag_jobs(["all"], forceall=True))


@pytest.fixture(scope="module")
def paper_jobs():
    return plan.dag_jobs(["paper"], forceall=True)


def test_all_has_27_training_jobs_and_the_hand_summed_gpu_hours(all_plan):
    rules = all_plan["rules"]
    assert rules["train_compressor"]["jobs"] == 27 == len(MAIN)
    assert rules["evaluate_cell"]["jobs"] == 27 and "probe_cell" not in rules
    assert rules["probe_dynamics"]["jobs"] == 1
    assert all_plan["total_gpu_hours"] == pytest.approx(hand_sum(MAIN))


def test_paper_has_33_training_jobs_and_the_hand_summed_gpu_hours(paper_jobs):
    summary = plan.summarize(paper_jobs)
    assert summary["rules"]["train_compressor"]["jobs"] == 33 == len(MAIN) + len(ABLATION)
    assert summary["rules"]["evaluate_cell"]["jobs"] == 33
    assert summary["total_gpu_hours"] == pytest.approx(hand_sum(MAIN + ABLATION))
    train = sum(gpu_hours(CONFIG["models"][c]["train_resources"]) for _d, c, _r in MAIN + ABLATION)
    assert summary["rules"]["train_compressor"]["gpu_hours"] == pytest.approx(train)


def test_job_counts_agree_with_snakemake_dry_run(paper_jobs):
    from snakemake_helpers import dry_run

    counts = dry_run(["paper"], extra=["--forceall"])
    summary = plan.summarize(paper_jobs)
    assert {rule: r["jobs"] for rule, r in summary["rules"].items()} == {k: v for k, v in counts.items()
                                                                         if k != "total"}
    assert summary["total_jobs"] == counts["total"]


def test_multi_node_job_counts_gpus_on_every_node(paper_jobs):
    big = [j for j in paper_jobs if j.rule == "train_compressor" and j.wildcards["compressor"] == "llama3.2-90b"]
    res = CONFIG["models"]["llama3.2-90b"]["train_resources"]
    assert len(big) == 3 and res["nodes"] == 2
    for job in big:
        assert (job.gpus, job.nodes) == (res["gpu"] * res["nodes"], res["nodes"])
        assert job.gpu_hours == pytest.approx(gpu_hours(res))


def test_cpu_rules_have_no_gpu_hours(paper_jobs):
    for job in paper_jobs:
        if job.rule in {"prepare_fineweb", "prepare_qa", "generate_questions", "report_main", "report_ablation"}:
            assert job.gpus == 0 and job.partition == "cpu", job


def test_a_single_cell_target():
    target = "results/paper/eval/llama3-8b-instruct/qwen3-4b/r16/ko_faitheval.json"
    summary = plan.summarize(plan.dag_jobs([target], forceall=True))
    assert summary["rules"]["train_compressor"]["jobs"] == 1
    assert summary["rules"]["evaluate_cell"]["jobs"] == 1
    assert "probe_cell" not in summary["rules"]
    res = CONFIG["models"]["qwen3-4b"]
    assert summary["total_gpu_hours"] == pytest.approx(gpu_hours(res["train_resources"])
                                                       + gpu_hours(res["eval_resources"]))


def test_without_forceall_only_jobs_that_would_run_are_counted(tmp_path):
    # a run name with no results yet: everything would run, as with --forceall
    fresh = plan.summarize(plan.dag_jobs(["paper"], config={"run_name": f"plan-test-{tmp_path.name}"}))
    assert fresh["rules"]["train_compressor"]["jobs"] == 33


def test_finished_jobs_are_left_out_of_the_plan(tmp_path):
    """Run two jobs of the tiny preset for real in a copy of the repository: the plan then counts exactly those
    two jobs fewer, and every other rule as before."""
    from ctxcomp.paths import RunPaths
    from snakemake_helpers import copy_repo, run_snakemake

    work = copy_repo(tmp_path)
    configs = ["config.yaml", "workflow/presets/tiny.yaml"]
    before = plan.summarize(plan.dag_jobs(["paper"], configs, workdir=work))["rules"]
    run = RunPaths.of("tiny")
    done = [run.tokenizer("qwen-bpe"), run.qa("faitheval")]
    run_snakemake(["--configfile", *configs, "--cores", "1", *done], cwd=work, timeout=600)
    assert all((work / f).exists() for f in done)
    after = plan.summarize(plan.dag_jobs(["paper"], configs, workdir=work))["rules"]
    dropped = {rule: before[rule]["jobs"] - after.get(rule, {"jobs": 0})["jobs"] for rule in before}
    assert {rule: n for rule, n in dropped.items() if n} == {"train_tokenizer": 1, "prepare_qa": 1}
    assert plan.summarize(plan.dag_jobs(["paper"], configs, workdir=work, forceall=True))["rules"] == before


def test_tiny_preset_asks_for_no_gpus():
    summary = plan.summarize(plan.dag_jobs(["paper"], ["config.yaml", "workflow/presets/tiny.yaml"],
                                           forceall=True))
    assert summary["total_gpu_hours"] == 0
    assert summary["rules"]["train_compressor"]["jobs"] == 6 * 3 + 2 * 3


def test_cli_table_and_json(capsys):
    assert plan.main(["paper", "--forceall"]) == 0
    table = capsys.readouterr().out
    assert "train_compressor" in table and "GPU-hours" in table
    total_line = next(line for line in table.splitlines() if line.startswith("total"))
    assert f"{hand_sum(MAIN + ABLATION):,.1f}" in total_line

    assert plan.main(["all", "--forceall", "--json", "--jobs"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rules"]["train_compressor"]["jobs"] == 27
    assert data["total_gpu_hours"] == pytest.approx(hand_sum(MAIN))
    assert sum(j["gpu_hours"] for j in data["jobs"]) == pytest.approx(data["total_gpu_hours"])


@pytest.mark.parametrize("resources,expected", [
    ({"gpu": 4, "nodes": 1}, (4, 1)),
    ({"gpu": 0}, (0, 1)),
    ({}, (0, 1)),
    ({"gres": "gpu:8", "nodes": 2}, (16, 2)),
    ({"gres": "gpu:a100:8", "nodes": 2}, (16, 2)),
    ({"gres": "gpu", "nodes": 1}, (1, 1)),
    ({"gres": "nvme:1"}, (0, 1)),
])
def test_job_gpus(resources, expected):
    assert plan.job_gpus(resources) == expected
