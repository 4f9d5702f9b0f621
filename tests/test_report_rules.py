"""The report rules in the DAG: every per-cell file the reports read or index is an input made by some job (so a
deleted result is re-made and the reports follow), the outputs are ctxcomp.paths' lists, and every artifact has a
category and a caption that renders for `snakemake --report`."""
from __future__ import annotations

import re

import jinja2
import pytest
from docutils.core import publish_parts

from ctxcomp import config as C
from ctxcomp import paths
from snakemake_helpers import ROOT, run_snakemake

TINY = ["--configfile", "config.yaml", "workflow/presets/tiny.yaml"]


def _jobs(text: str) -> list[dict]:
    """Job blocks of a dry run: rule name, input and output file lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        job = {"rule": m.group(1), "input": [], "output": []}
        for key in ("input", "output"):
            f = re.search(rf"^\s+{key}: (.*)$", block, re.M)
            job[key] = f.group(1).split(", ") if f else []
        jobs.append(job)
    return jobs


@pytest.fixture(scope="module")
def dag():
    proc = run_snakemake(["paper", "-n", "--forceall", "--nolock", *TINY], cwd=ROOT)
    return _jobs(proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def cfg():
    return C.load_config(ROOT / "config.yaml", ROOT / "workflow/presets/tiny.yaml")


def _one(dag, rule):
    jobs = [j for j in dag if j["rule"] == rule]
    assert len(jobs) == 1, rule
    return jobs[0]


def test_report_main_reads_every_per_cell_file_and_the_dynamics_run(dag, cfg):
    P = paths.RunPaths(C.outdir(cfg))
    inputs = set(_one(dag, "report_main")["input"])
    made = {f for j in dag for f in j["output"]}
    for cell in C.main_cells(cfg):
        want = [P.eval_task(t, cell) for t in paths.EVAL_TASKS]
        want += [paths.samples_of(f) for f in want]
        want += [P.eval("rank_truncation.json", cell), P.eval("rag_musique.json", cell),
                 paths.samples_of(P.eval("rag_musique.json", cell)), P.probes("probes.json", cell),
                 P.probes("entropy.samples.jsonl", cell), P.train("loss.csv", cell), P.train("summary.json", cell)]
        assert set(want) <= inputs, sorted(set(want) - inputs)
        assert set(want) <= made, sorted(set(want) - made)  # each one re-made by its job when deleted
    dyn = C.dynamics_cell(cfg)
    assert P.dynamics("checkpoints.csv", dyn) in inputs
    probe = _one(dag, "probe_dynamics")
    assert set(probe["output"]) <= inputs  # whatever the dynamics probe writes (per-question rows too)
    assert any(f.endswith("dynamics.csv") and f in probe["input"] for f in inputs)


def test_targets_list_what_the_reports_read(dag):
    """Snakemake re-plans a job for a missing input of the target, not for a missing intermediate file: the
    targets must list every file the reports read, so a deleted result is re-made and its report follows."""
    target = set(_one(dag, "paper")["input"])
    assert set(_one(dag, "report_main")["input"]) <= target
    assert set(_one(dag, "report_ablation")["input"]) <= target
    assert set(_one(dag, "report_main")["output"]) <= target


def test_per_sample_files_are_outputs_of_evaluate_cell(dag, cfg):
    P = paths.RunPaths(C.outdir(cfg))
    evals = {tuple(j["output"][:1]): j for j in dag if j["rule"] == "evaluate_cell"}
    assert len(evals) == len(C.all_cells(cfg))
    for job in evals.values():
        outs = set(job["output"])
        for task in paths.EVAL_TASKS:
            summary = next(f for f in outs if f.endswith(f"/{task}.json"))
            assert paths.samples_of(summary) in outs
        rag = next(f for f in outs if f.endswith("/rag_musique.json"))
        assert paths.samples_of(rag) in outs
    abl = set(_one(dag, "report_ablation")["input"])
    for cell in C.ablation_cells(cfg):
        assert paths.samples_of(P.eval_task("sd_faitheval", cell)) in abl


def test_report_outputs_are_the_paths_lists(dag, cfg):
    P = paths.RunPaths(C.outdir(cfg))
    assert _one(dag, "report_main")["output"] == P.main_report_files(rag=True)
    assert _one(dag, "report_ablation")["output"] == P.ablation_report_files()


def _all_report_files(P):
    return P.main_report_files(rag=True) + P.ablation_report_files() + P.lora_control_report_files()


def test_every_artifact_has_a_category_and_a_caption_that_renders(cfg):
    P = paths.RunPaths(C.outdir(cfg))
    names = {paths.artifact_name(f) for f in _all_report_files(P)}
    assert names == set(paths.REPORT_CATEGORIES)
    env = jinja2.Environment()

    class Smk:  # what Snakemake passes to a caption template
        config = cfg

    for name in sorted(names) + ["workflow"]:
        assert ":" not in paths.REPORT_CATEGORIES.get(name, "")  # would end the rst link target Snakemake adds
        rst = (ROOT / "workflow" / "report" / f"{name}.rst").read_text()
        text = env.from_string(rst).render(snakemake=Smk)
        html = publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})
        assert len(html["body"]) > 100, name
    assert f"probed every {cfg['dynamics']['probe_every']} steps" in env.from_string(
        (ROOT / "workflow/report/fig3b_erank_steps.rst").read_text()).render(snakemake=Smk).replace("\n", " ")


def test_lora_control_target_without_config_fails_with_a_message(tmp_path, cfg):
    """The tiny preset (like config.yaml) has a lora_control section: an overlay empties it (schema: empty = none).
    Both the target and the report rule's own input name the missing section (tests/test_hostile_dag.py plans the
    control with the section)."""
    none = tmp_path / "no_lora_control.yaml"
    none.write_text("lora_control: {compressors: [], ratios: []}\n")
    report = paths.RunPaths(C.outdir(cfg)).lora_control_report_files()[0]
    for target in ("lora_control", report):
        proc = run_snakemake([target, "-n", "--nolock", *TINY, str(none)], cwd=ROOT, check=False)
        assert proc.returncode != 0, target
        assert "config has no `lora_control` section" in proc.stdout + proc.stderr, target
