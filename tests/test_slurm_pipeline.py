"""The pipeline on a real Slurm cluster through profiles/slurm, end to end.

One cell of the tiny preset (tests/fixtures/slurm-tiny.yaml: training and evaluation tagged `gpu: 1`) runs in a
temporary copy of the repository: `snakemake --profile profiles/slurm <eval json> <report>`, 14 Slurm jobs on the
`cpu` and `gpu` partitions. While the training job runs, the test sends it SIGTERM the way Slurm's
`--signal=TERM@300` does (to the job steps, not the batch shell): the trainer must checkpoint and exit, the
profile's `retries` must resubmit the job, and the second attempt must resume from the checkpoint.

Needs a running Slurm with partitions `cpu` and `gpu` and GPU GRES (real or fake), e.g. the local test cluster:
    sudo bash workflow/tools/local-slurm/start.sh && python -m pytest tests/test_slurm_pipeline.py -v
Skipped when there is no Slurm (no `sinfo`, or `sinfo` does not answer), failed instead under CI=true. About 3
minutes on 2 CPU cores.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from snakemake_helpers import copy_repo, snakemake_cmd

# Without a Slurm these tests skip, and under CI=true they fail (tests/conftest.py, tests/slurm_helpers.py).
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RUN = "results/tiny-slurm"
CELL = "tiny-llama-dec/tiny-qwen-s/r16"
CONFIGS = ["config.yaml", "workflow/presets/tiny.yaml", "tests/fixtures/slurm-tiny.yaml"]
TARGETS = [f"{RUN}/eval/{CELL}/ko_faitheval.json", f"{RUN}/report/index.md"]
EVAL_TASKS = ["recon_fineweb", "ko_faitheval", "ko_conflictqa", "sd_fineweb", "sd_faitheval"]
GPU_RULES = {"train_compressor", "train_dynamics", "evaluate_cell", "probe_dynamics"}
CPU_RULES = {"train_tokenizer", "pretrain_base", "prepare_fineweb", "prepare_qa", "generate_questions", "report_main"}
TRAIN_LOG = f"{RUN}/logs/train_compressor/{CELL}.log"
INTERRUPT_AFTER = "step_00000040"  # signal the trainer once this checkpoint is written (of 120 steps)
TIMEOUT_S = 900


@dataclass
class SlurmRun:
    work: Path
    returncode: int
    output: str
    elapsed_s: float
    interrupted_job: str | None

    def slurm_jobs(self) -> dict[str, list[str]]:
        """Slurm job ids per rule, from the plugin's log layout
        .snakemake/slurm_logs/rule_<rule>/<wildcards>/<id>.log."""
        jobs: dict[str, list[str]] = {}
        for log in (self.work / ".snakemake/slurm_logs").glob("rule_*/**/*.log"):
            rule = log.relative_to(self.work / ".snakemake/slurm_logs").parts[0].removeprefix("rule_")
            jobs.setdefault(rule, []).append(log.stem)
        return {rule: sorted(ids, key=int) for rule, ids in jobs.items()}


def _train_job_id(work: Path) -> str | None:
    logs = sorted((work / ".snakemake/slurm_logs/rule_train_compressor").glob("*/*.log"), key=lambda p: int(p.stem))
    return logs[-1].stem if logs else None


def _interrupt_training(work: Path, proc: subprocess.Popen, deadline: float) -> str | None:
    """Wait until the trainer has written its step-40 checkpoint, then SIGTERM the job's steps (as --signal does)."""
    train_log = work / TRAIN_LOG
    while time.time() < deadline and proc.poll() is None:
        if train_log.exists() and INTERRUPT_AFTER in train_log.read_text(errors="replace"):
            job = _train_job_id(work)
            if job is None:
                return None
            subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=30)
            return job
        if (work / f"{RUN}/train/{CELL}/summary.json").exists():
            return None  # finished before it could be interrupted
        time.sleep(0.3)
    return None


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> SlurmRun:
    work = copy_repo(tmp_path_factory.mktemp("slurm-repo"))
    cmd = snakemake_cmd() + [
        "--profile", "profiles/slurm", "--configfile", *CONFIGS,
        # faster turn-around on a test cluster than the profile's production values
        "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--jobs", "4",
        *TARGETS,
    ]
    log_path = work / "snakemake-slurm.log"
    start = time.time()
    deadline = start + TIMEOUT_S
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    interrupted = None
    try:
        interrupted = _interrupt_training(work, proc, deadline)
        rc = proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # Snakemake cancels its Slurm jobs on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        pytest.fail(f"the Slurm run took more than {TIMEOUT_S} s:\n{log_path.read_text()[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
        run_id = re.search(r"SLURM run ID: (\S+)", log_path.read_text())
        if run_id:  # never leave jobs of this run behind
            subprocess.run(["scancel", "--name", run_id.group(1)], capture_output=True, timeout=30)
    return SlurmRun(work, rc, log_path.read_text(), time.time() - start, interrupted)


def _sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """Partition, state and allocated TRES per job: from sacct, else (no accounting) from scontrol."""
    proc = subprocess.run(["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids),
                           "-o", "JobID,Partition,State,ExitCode,AllocTRES"],
                          capture_output=True, text=True, timeout=60)
    rows = {}
    if proc.returncode == 0:
        for line in proc.stdout.splitlines():
            job, partition, state, exit_code, tres = line.split("|")
            rows[job] = {"partition": partition, "state": state.split()[0], "exit": exit_code, "tres": tres}
    for job in job_ids:  # scontrol knows finished jobs for MinJobAge seconds
        if job not in rows:
            out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True,
                                 timeout=60).stdout
            fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
            rows[job] = {"partition": fields.get("Partition", ""), "state": fields.get("JobState", ""),
                         "exit": fields.get("ExitCode", ""), "tres": fields.get("TRES", "")}
    return rows


def test_pipeline_completes_on_slurm(slurm_run):
    assert slurm_run.returncode == 0, slurm_run.output[-6000:]
    print(f"Slurm run: {slurm_run.elapsed_s:.0f} s")
    for task in EVAL_TASKS:
        data = json.loads((slurm_run.work / f"{RUN}/eval/{CELL}/{task}.json").read_text())
        assert data, task
    report = slurm_run.work / f"{RUN}/report"
    assert (report / "index.md").stat().st_size > 0
    assert (report / "table2.csv").read_text().count("\n") >= 2  # header + the one cell


def test_every_rule_ran_as_a_slurm_job(slurm_run):
    jobs = slurm_run.slurm_jobs()
    assert set(jobs) == GPU_RULES | CPU_RULES, jobs
    assert sum(len(v) for v in jobs.values()) == 15, jobs  # 14 jobs + the interrupted training's retry


def test_gpu_rules_asked_for_a_gpu_and_cpu_rules_did_not(slurm_run):
    jobs = slurm_run.slurm_jobs()
    acct = _sacct([j for ids in jobs.values() for j in ids])
    for rule, ids in jobs.items():
        for job in ids:
            row = acct[job]
            if rule in GPU_RULES:
                assert row["partition"] == "gpu" and "gres/gpu=1" in row["tres"], (rule, job, row)
            else:
                assert row["partition"] == "cpu" and "gres/gpu" not in row["tres"], (rule, job, row)


def test_training_job_asks_for_a_warning_signal(slurm_run):
    train_logs = list((slurm_run.work / ".snakemake/slurm_logs/rule_train_compressor").glob("*/*.log"))
    assert train_logs
    for log in train_logs:  # the job's resources, as Snakemake prints them in the Slurm log
        assert re.search(r"slurm_extra='?--signal=TERM@300", log.read_text()), log


def test_interrupted_training_checkpoints_and_resumes(slurm_run):
    assert slurm_run.interrupted_job, "the training finished before the test could signal it"
    ids = slurm_run.slurm_jobs()["train_compressor"]
    assert ids[0] == slurm_run.interrupted_job and len(ids) == 2, ids
    # attempt 1: Snakemake in the job step waited for the trainer (graceful on SIGTERM), which checkpointed and
    # exited 75 (EXIT_PREEMPTED); the job failed and the profile's `retries` resubmitted it
    first = next((slurm_run.work / ".snakemake/slurm_logs/rule_train_compressor").glob(f"*/{ids[0]}.log")).read_text()
    assert "Will exit after finishing currently running jobs" in first, first[-3000:]
    assert "returned non-zero exit status 75" in first, first[-3000:]
    assert "Trying to restart job" in slurm_run.output
    acct = _sacct(ids)
    assert acct[ids[0]]["state"] == "FAILED" and acct[ids[1]]["state"] == "COMPLETED", acct
    # attempt 2 resumed from the checkpoint written on the signal, after step 40 (Snakemake clears the rule's log
    # when a job starts, so only the second attempt's lines are left there)
    resumed = re.search(r"resumed from step (\d+)", (slurm_run.work / TRAIN_LOG).read_text())
    assert resumed and 40 < int(resumed.group(1)) < 120, resumed
    # nothing of the first attempt is lost: the training-time probe log holds every probe step, the one before the
    # signal (40) included (the Table 2 cell keeps no probe checkpoints: the separate dynamics run does)
    probed = (slurm_run.work / f"{RUN}/train/{CELL}/dynamics.csv").read_text().strip().splitlines()
    assert [int(line.split(",")[0]) for line in probed[1:]] == [40, 80, 120], probed
    dynamics = (slurm_run.work / f"{RUN}/dynamics/{CELL}/checkpoints.csv").read_text().strip().splitlines()
    assert len(dynamics) == 1 + 3, dynamics  # header + one row per probe checkpoint
