"""profiles/slurm and the per-rule resources, as the installed Slurm executor plugin turns them into sbatch flags.

No cluster needed: the sbatch command lines are built with the plugin's own functions (get_submit_command,
set_gres_string) from the resources of the jobs in Snakemake's DAG. tests/test_slurm_pipeline.py submits for real.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ctxcomp import plan
from ctxcomp.train import launch

ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())

slurm_plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
from snakemake_executor_plugin_slurm.submit_string import get_submit_command  # noqa: E402
from snakemake_executor_plugin_slurm.utils import set_gres_string  # noqa: E402
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra  # noqa: E402
from snakemake_executor_plugin_slurm_jobstep import get_gpu_setting, get_node_setting  # noqa: E402


class Res(dict):
    """The two ways the plugin reads resources: .get() and attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def fake_job(job: plan.PlannedJob, extra: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(resources=Res({**job.resources, **(extra or {})}), threads=job.threads, name=job.rule,
                           is_group=lambda: False)


def sbatch(job: plan.PlannedJob, extra: dict | None = None) -> str:
    j = fake_job(job, extra)
    params = {"run_uuid": "uuid", "slurm_logfile": "x.log", "comment_str": f"rule_{job.rule}", "account": "",
              "partition": f" -p {j.resources['slurm_partition']}", "workdir": "/w"}
    settings = SimpleNamespace(requeue=PROFILE.get("slurm-requeue", False), no_requeue=False, qos=None,
                               reservation=None)
    return get_submit_command(j, params, settings=settings) + set_gres_string(j)


def evaluated_slurm_extra(rule: str) -> str:
    # A profile value is a Python expression (the inner quotes make it a string), as Snakemake evaluates it.
    return eval(PROFILE["set-resources"][rule]["slurm_extra"])  # noqa: S307


@pytest.fixture(scope="module")
def jobs():
    return plan.dag_jobs(["paper"], forceall=True)


def pick(jobs, rule, compressor=None):
    return next(j for j in jobs if j.rule == rule and (compressor is None or j.wildcards["compressor"] == compressor))


# --------------------------------------------------------------------------------------------------------- profile


def test_profile_basics():
    assert PROFILE["executor"] == "slurm"
    assert PROFILE["retries"] >= 1  # a timed-out / preempted training job is resubmitted and resumes
    assert PROFILE["jobs"] >= 27 and PROFILE["latency-wait"] >= 30
    assert PROFILE.get("slurm-requeue") is True
    # partitions, account, GPU model and constraint live in config.yaml's `slurm:` section only
    set_here = set(PROFILE.get("default-resources") or {})
    for rule_resources in (PROFILE.get("set-resources") or {}).values():
        set_here |= set(rule_resources)
    assert not set_here & {"slurm_partition", "slurm_account", "gpu_model", "constraint", "gpu", "gres", "nodes"}
    assert not {"slurm-qos", "slurm-reservation"} & set(PROFILE)


def test_warning_signal_reaches_sbatch_through_the_plugin_checks(jobs):
    extra = evaluated_slurm_extra("train_compressor")
    assert extra == "--signal=TERM@300"
    job = fake_job(pick(jobs, "train_compressor"), {"slurm_extra": extra})
    validate_slurm_extra(job)  # raises on options the plugin manages itself
    assert " --signal=TERM@300" in sbatch(pick(jobs, "train_compressor"), {"slurm_extra": extra})


def test_profile_dry_run():
    from snakemake_helpers import job_counts, run_snakemake

    proc = run_snakemake(["--profile", "profiles/slurm", "-n", "--quiet", "rules", "--nolock", "paper", "--forceall"])
    assert job_counts(proc.stdout + proc.stderr)["train_compressor"] == 33


# ------------------------------------------------------------------------------------------------ sbatch mapping


@pytest.mark.parametrize("compressor", ["qwen3-0.6b", "qwen3-4b", "qwen3-32b"])
def test_single_node_training(jobs, compressor):
    res = CONFIG["models"][compressor]["train_resources"]
    cmd = sbatch(pick(jobs, "train_compressor", compressor))
    for flag in (f"-p {CONFIG['slurm']['gpu_partition']}", f"-t {res['runtime']}", f"--mem {res['mem_mb']}",
                 "--nodes=1", f"--cpus-per-task={res['cpus_per_task']}", f"--gpus={res['gpu']}", "--requeue"):
        assert f" {flag}" in cmd, (flag, cmd)
    assert "--gres" not in cmd and "--ntasks" not in cmd and " -A " not in cmd


def test_multi_node_training_asks_for_gpus_on_every_node(jobs):
    res = CONFIG["models"]["llama3.2-90b"]["train_resources"]
    job = pick(jobs, "train_compressor", "llama3.2-90b")
    cmd = sbatch(job)
    for flag in (f"--nodes={res['nodes']}", f"--ntasks={res['nodes']}", f"--gres=gpu:{res['gpu']}",
                 f"--cpus-per-task={res['cpus_per_task']}", f"--mem {res['mem_mb']}", f"-t {res['runtime']}"):
        assert f" {flag}" in cmd, (flag, cmd)
    assert "--gpus" not in cmd and "--ntasks-per-gpu" not in cmd
    # `mpi` makes the jobstep plugin run the job's Snakemake in the batch step (no `srun -n1` around it), so that
    # ctxcomp.train.launch can start one torchrun per node with srun
    assert "mpi" in job.resources


@pytest.mark.parametrize("rule", ["evaluate_cell", "probe_dynamics"])
def test_evaluation_asks_for_its_eval_gpus(jobs, rule):
    for job in (j for j in jobs if j.rule == rule):
        res = CONFIG["models"][job.wildcards["compressor"]]["eval_resources"]
        cmd = sbatch(job)
        assert f" --gpus={res['gpu']}" in cmd and f" -p {CONFIG['slurm']['gpu_partition']}" in cmd, cmd
        # inside the job, the plugin's srun step gets the same GPUs
        assert get_gpu_setting(fake_job(job)) == f"--gpus={res['gpu']}"
        assert get_node_setting(fake_job(job)) == "--nodes=1"


@pytest.mark.parametrize("rule", ["prepare_fineweb", "prepare_qa", "generate_questions", "report_main",
                                  "report_ablation"])
def test_cpu_rules_ask_for_no_gpu(jobs, rule):
    cmd = sbatch(pick(jobs, rule))
    assert f" -p {CONFIG['slurm']['cpu_partition']}" in cmd and " --ntasks=1" in cmd, cmd
    assert "gpu" not in cmd.replace(f"rule_{rule}", "")


def test_gpu_model_constraint_and_account_from_the_config():
    jobs = plan.dag_jobs(["paper"], config={"slurm": {"gpu_model": "a100", "constraint": "ib", "account": "proj42",
                                                      "gpu_partition": "a100q", "cpu_partition": "short"}},
                         forceall=True)
    single = pick(jobs, "train_compressor", "qwen3-0.6b")
    assert " --gpus=a100:4" in sbatch(single) and " -C ib" in sbatch(single)
    assert single.resources["slurm_account"] == "proj42" and single.partition == "a100q"
    multi = sbatch(pick(jobs, "train_compressor", "llama3.2-90b"))
    assert " --gres=gpu:a100:8" in multi and "--gpus" not in multi
    cpu = pick(jobs, "prepare_fineweb")
    assert cpu.partition == "short" and "gpu_model" not in cpu.resources


# ------------------------------------------------------------------------------------- multi-node launch in a job


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """A `scontrol` that knows one job, 123, on nodes gpu[01-02] with 64 CPUs per task."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "show job" ]; then\n'
        '  [ "$4" = 123 ] || exit 1\n'
        '  echo "JobId=123 JobName=x ReqNodeList=(null) NodeList=gpu[01-02] NumNodes=2 CPUs/Task=64"\n'
        'elif [ "$1 $2" = "show hostnames" ]; then\n'
        '  [ "$3" = "gpu[01-02]" ] && printf "gpu01\\ngpu02\\n" || echo "$3"\n'
        "else exit 2; fi\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def _run_of(compressor: str):
    """The training settings of a config.yaml cell (Llama-3.2-90B: 8 GPUs x 2 nodes; Qwen3-0.6B: 4 GPUs, 1 node)."""
    from ctxcomp.config import Cell, load_config
    from ctxcomp.settings import CellTrainSettings

    cfg = load_config(ROOT / "config.yaml")
    return CellTrainSettings.for_cell(cfg, Cell(cfg["decoder"], compressor, 16))


SETTINGS_90B = _run_of("llama3.2-90b")
assert (SETTINGS_90B.compressor.gpus, SETTINGS_90B.compressor.nodes) == (8, 2)


def test_multi_node_launch_asks_slurm_when_the_plugin_stripped_the_environment(fake_scontrol):
    # what the jobstep plugin leaves of SLURM_*: the job id only
    cmd = launch.launch_command(SETTINGS_90B, "args.json", env={"SLURM_JOB_ID": "123"})
    assert cmd[:10] == ["srun", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1",
                        "--cpus-per-task", "64"]
    assert cmd[10:14] == [sys.executable, "-u", "-m", "torch.distributed.run"]
    i = cmd.index("--nproc-per-node")
    assert cmd[i + 1] == "8"
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "gpu01:29511"
    assert cmd[cmd.index("--rdzv-id") + 1] == "123"
    assert cmd[-2:] == ["--args", "args.json"]


def test_multi_node_launch_uses_the_environment_when_present(fake_scontrol):
    env = {"SLURM_JOB_ID": "999", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_CPUS_PER_TASK": "16"}
    cmd = launch.launch_command(SETTINGS_90B, "a.json", env=env)  # job 999 is unknown to scontrol: not asked
    assert cmd[cmd.index("--cpus-per-task") + 1] == "16"
    assert cmd[cmd.index("--rdzv-endpoint") + 1].startswith("gpu01:")


def test_multi_node_launch_outside_slurm_fails_clearly(fake_scontrol):
    with pytest.raises(RuntimeError, match="Slurm allocation"):
        launch.launch_command(SETTINGS_90B, "a.json", env={})


def test_single_node_launch_is_unchanged():
    cmd = launch.launch_command(_run_of("qwen3-0.6b"), "a.json", env={})
    assert cmd[3:6] == ["deepspeed.launcher.runner", "--num_gpus", "4"]


# ------------------------------------------------------------------------------------------- local-slurm scripts


@pytest.mark.parametrize("script", ["start.sh", "stop.sh"])
def test_local_slurm_scripts_parse(script):
    path = ROOT / "workflow/tools/local-slurm" / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
