"""The multi-node training launch (ctxcomp.train.launch: `srun` + `torchrun` over the nodes of a Slurm job) on a real
Slurm with two nodes: the local test cluster started with `LOCAL_SLURM_NODES=2` (two slurmd on loopback, as
.ci/run does).

A 2-node job (one task per node, fake GPUs, CPU ranks over gloo) runs the tiny cell through `launch_training` with
the SLURM_* environment stripped to SLURM_JOB_ID, as the Snakemake Slurm plugin leaves it: the command must be built
from what the real `scontrol` says (node list, CPUs per task, the first node's address), both torchrun agents must
meet at that rendezvous, and DeepSpeed must train with one rank per node. The job is sent SIGTERM the way
`--signal=TERM@300` does; every rank must stop after the same step with a complete checkpoint, and a second job must
resume from it and finish.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers_tiny import ROOT, subprocess_env, tiny_env
from slurm_helpers import in_ci

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = 600         # long enough to be interrupted (about 15 steps per second here)
INTERRUPT_AT = 30   # signal once this probe step has been logged
TIMEOUT_S = 600

DRIVER = textwrap.dedent("""
    import json, os, sys
    sys.path[:0] = [{tests!r}, {pkg!r}]
    from helpers_tiny import TinyEnv
    from ctxcomp.settings import CellTrainSettings
    from ctxcomp.train import launch
    root, run, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for k in [k for k in os.environ if k.startswith("SLURM_") and k != "SLURM_JOB_ID"]:
        del os.environ[k]  # what the Slurm plugin's job step leaves
    env = TinyEnv(root)
    # keep_final_checkpoints: the first job's checkpoint is inspected after the second job has finished
    s = env.settings(engine="deepspeed", max_steps=steps, checkpoint_every=10**6, probe_every=10,
                     keep_final_checkpoints=True)
    s = CellTrainSettings.of(s)
    s = s.replace(compressor=s.compressor.replace(gpus=1, nodes=2))
    print("COMMAND " + json.dumps(launch.launch_command(s, "ARGS")), flush=True)
    launch.launch_training(s, str(env.train), str(env.probe), run, env.outputs(run), engine="deepspeed")
""")


def _two_nodes() -> str | None:
    out = subprocess.run(["sinfo", "-h", "-p", "gpu", "-o", "%D"], capture_output=True, text=True, timeout=30)
    nodes = sum(int(x) for x in out.stdout.split() if x.isdigit())
    if nodes >= 2:
        return None
    return (f"the `gpu` partition has {nodes} node(s), 2 are needed: restart the test cluster with "
            "`sudo LOCAL_SLURM_NODES=2 bash workflow/tools/local-slurm/start.sh`")


def _sacct(job: str) -> dict[str, dict[str, str]]:
    out = subprocess.run(["sacct", "-P", "-n", "-j", job, "-o", "JobID,NodeList,NTasks,State,ExitCode"],
                         capture_output=True, text=True, timeout=60).stdout
    return {r.split("|")[0]: dict(zip(("nodes", "ntasks", "state", "exit"), r.split("|")[1:]))
            for r in out.splitlines() if r}


def _submit(work: Path, env_root: Path, name: str, steps: int, interrupt: bool) -> dict:
    log = work / f"{name}.log"
    cmd = ["sbatch", "--parsable", "-p", "gpu", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
           "--cpus-per-task=1", "--mem=2000", "-t", "15", "-J", f"ctxcomp-mn-{name}", "-o", str(log),
           "--wrap", f"{sys.executable} {work / 'driver.py'} {env_root} {work / 'run'} {steps}"]
    env = subprocess_env()
    job = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, timeout=60).stdout.strip()
    deadline, signalled = time.time() + TIMEOUT_S, False
    try:
        while time.time() < deadline:
            state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
            if not state.strip():
                break
            text = log.read_text(errors="replace") if log.exists() else ""
            if interrupt and not signalled and f"probe @{INTERRUPT_AT}:" in text:
                subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=30)
                signalled = True
            time.sleep(0.5)
        else:
            pytest.fail(f"job {job} still running after {TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    for _ in range(30):  # accounting lags the end of the job by a moment
        acct = _sacct(job)
        if acct.get(job, {}).get("state", "RUNNING") not in ("RUNNING", "PENDING", ""):
            break
        time.sleep(1)
    return {"job": job, "log": log.read_text(errors="replace"), "acct": acct, "signalled": signalled}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    reason = _two_nodes()
    if reason:
        if in_ci():
            pytest.fail(f"CI=true and this test needs two Slurm nodes, but {reason}", pytrace=False)
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("multinode")
    # the session's tiny models: built here unless an earlier module of the session built them elsewhere
    env_root = tiny_env(work / "env").root
    (work / "driver.py").write_text(DRIVER.format(tests=str(ROOT / "tests"), pkg=str(ROOT / "workflow")))
    first = _submit(work, env_root, "first", STEPS, interrupt=True)
    second = _submit(work, env_root, "second", STEPS, interrupt=False)
    return {"work": work, "first": first, "second": second}


def _node_addr(node: str) -> str:
    out = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)["NodeAddr"]


def test_command_is_built_from_the_real_allocation(runs):
    run = runs["first"]
    cmd = json.loads(re.search(r"^COMMAND (.*)$", run["log"], re.M).group(1))
    nodes = run["acct"][run["job"]]["nodes"]
    first = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True,
                           check=True).stdout.split()[0]
    assert cmd[:10] == ["srun", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1",
                        "--cpus-per-task", "1"]  # CPUs per task asked from scontrol: the plugin strips them
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == f"{_node_addr(first)}:29511"
    assert cmd[cmd.index("--rdzv-id") + 1] == run["job"]
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--nproc-per-node") + 1] == "1"


def test_one_rank_per_node_meets_at_the_rendezvous(runs):
    run = runs["first"]
    step = run["acct"][f"{run['job']}.0"]  # the srun step: one torchrun agent per node
    assert step["ntasks"] == "2" and len(subprocess.run(["scontrol", "show", "hostnames", step["nodes"]],
                                                        capture_output=True, text=True).stdout.split()) == 2
    assert "DeepSpeed ZeRO-2 on 2 rank(s)" in run["log"], run["log"][-3000:]


def test_sigterm_stops_every_rank_after_the_same_step_with_a_complete_checkpoint(runs):
    run = runs["first"]
    assert run["signalled"], run["log"][-3000:]
    stops = re.findall(r"rank(\d) WARNING ctxcomp.train.loop: stopping after step (\d+)", run["log"])
    assert sorted(r for r, _ in stops) == ["0", "1"] and len({s for _, s in stops}) == 1, stops
    step = int(stops[0][1])
    ckpt = runs["work"] / "run" / "checkpoints" / f"step_{step:08d}"
    assert (ckpt / "COMPLETE").exists()
    assert sorted(p.name for p in ckpt.glob("rng_rank*.pt")) == ["rng_rank00000.pt", "rng_rank00001.pt"]
    assert len(list(ckpt.glob("zero_pp_rank_*_optim_states.pt"))) == 2
    assert run["acct"][run["job"]]["state"] == "FAILED"  # so that Snakemake retries it


def test_a_second_job_resumes_from_the_checkpoint_and_finishes(runs):
    first, second = runs["first"], runs["second"]
    step = int(re.search(r"stopping after step (\d+)", first["log"]).group(1))
    assert re.search(rf"rank0 INFO ctxcomp.train.loop: resumed from step {step}\b", second["log"]), \
        second["log"][-3000:]
    assert second["acct"][second["job"]]["state"] == "COMPLETED", second["log"][-3000:]
    summary = json.loads((runs["work"] / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == STEPS and summary["engine"] == "deepspeed"
    assert os.path.isdir(runs["work"] / "run" / "final")
