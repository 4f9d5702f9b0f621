"""Start a cell's training with the right launcher for the job's resources.

- 1 process (CPU, or one GPU with the torch engine): train in this process.
- 1 node, several GPUs: `deepspeed --num_gpus G worker.py ...` (the DeepSpeed launcher sets ranks).
- several nodes: `srun --nodes N --ntasks-per-node 1 torchrun --nnodes N --nproc-per-node G ...` inside the Slurm
  allocation, rendezvous on the first node of $SLURM_JOB_NODELIST (at its NodeAddr).
Inside a launcher (WORLD_SIZE already set) every rank calls `train_cell` directly.

On a machine without CUDA, `gpus: N` (N > 1) starts N CPU ranks (DS_ACCELERATOR=cpu, gloo), each with its share of
the CPU threads: the same code path as a multi-GPU job, testable on a laptop.

Signals: the launcher runs in its own session, and SIGTERM / SIGUSR1 / SIGINT received by this process are passed
straight to the training ranks (not through the DeepSpeed launcher, whose handler kills ranks 30 s after passing a
SIGTERM on). The ranks agree on the step, checkpoint, and exit 75; this process then exits 75 as well, after every
rank has gone.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..settings import CellTrainSettings
from .engine import choose_engine

log = logging.getLogger(__name__)
WORKER = Path(__file__).with_name("worker.py")
RANK_EXIT_TIMEOUT_S = 1800  # after a stop signal: time the ranks get to finish the step and checkpoint


def launch_command(run: CellTrainSettings, args_file: str, env: dict | None = None) -> list[str]:
    """The command that starts every rank of a multi-process run (pure, so it can be tested)."""
    env = dict(os.environ if env is None else env)
    gpus, nodes = max(1, run.compressor.gpus), run.compressor.nodes
    worker = [str(WORKER), "--args", args_file]
    if nodes <= 1:
        # `python -m deepspeed.launcher.runner` is the `deepspeed` script, without relying on PATH. On CPU
        # (DS_ACCELERATOR=cpu) --num_gpus N starts N ranks just the same.
        return [sys.executable, "-u", "-m", "deepspeed.launcher.runner", "--num_gpus", str(gpus),
                "--master_port", env.get("CTXCOMP_MASTER_PORT", "29511"), *worker]
    # Multi-node: one torchrun agent per node, started with srun inside the job's allocation. The Slurm plugin
    # runs such a job's Snakemake in the batch step (resources `mpi`/`tasks`, see common.smk) with every SLURM_*
    # variable but SLURM_JOB_ID removed, so the node list and CPUs per task are asked from Slurm when missing.
    job = slurm_job_info(env)
    first = subprocess.run(["scontrol", "show", "hostnames", job["nodelist"]], capture_output=True, text=True,
                           check=True).stdout.split()[0]
    master = node_address(first)
    srun = ["srun", "--nodes", str(nodes), "--ntasks", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    if job.get("cpus_per_task"):  # srun does not inherit sbatch's --cpus-per-task (Slurm >= 22.05)
        srun += ["--cpus-per-task", str(job["cpus_per_task"])]
    return [*srun, sys.executable, "-u", "-m", "torch.distributed.run", "--nnodes", str(nodes),
            "--nproc-per-node", str(gpus), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{master}:{env.get('CTXCOMP_MASTER_PORT', '29511')}",
            "--rdzv-id", env.get("SLURM_JOB_ID", "ctxcomp"), *worker]


def slurm_job_info(env: dict) -> dict:
    """Node list and CPUs per task of the Slurm job this process runs in: from the environment, else `scontrol`."""
    info = {"nodelist": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
            "cpus_per_task": env.get("SLURM_CPUS_PER_TASK")}
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if (not info["nodelist"] or not info["cpus_per_task"]) and job_id:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                             check=True).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        info["nodelist"] = info["nodelist"] or fields.get("NodeList")
        info["cpus_per_task"] = info["cpus_per_task"] or fields.get("CPUs/Task")
    if not info["nodelist"] or info["nodelist"] == "(null)":
        raise RuntimeError("a multi-node training job must run inside a Slurm allocation "
                           "(neither SLURM_JOB_NODELIST nor SLURM_JOB_ID is set)")
    cpus = str(info["cpus_per_task"] or "")
    info["cpus_per_task"] = int(cpus) if cpus.isdigit() and int(cpus) > 0 else None
    return info


def node_address(node: str) -> str:
    """The address Slurm reaches `node` at (its NodeAddr), which other nodes can connect to even where the node
    name is not a resolvable host name; the name itself when Slurm does not say."""
    proc = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True, check=False)
    fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f) if proc.returncode == 0 else {}
    addr = fields.get("NodeAddr", "")
    return addr if addr and addr != "(null)" else node


def launch_env(run: CellTrainSettings, env: dict | None = None, cuda: bool | None = None) -> dict[str, str]:
    """Environment of the launcher and its ranks: on CPU, the DeepSpeed CPU accelerator and a thread share each."""
    env = dict(os.environ if env is None else env)
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        ranks = max(1, run.compressor.gpus) * max(1, run.compressor.nodes)
        threads = int(env.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        env["DS_ACCELERATOR"] = "cpu"
        env["OMP_NUM_THREADS"] = str(max(1, threads // ranks))
    return env


def _rank_processes(launcher_pid: int) -> list[Any]:
    """The worker processes under the launcher (same node); the launcher itself when none is found (srun)."""
    import psutil

    try:
        root = psutil.Process(launcher_pid)
        kids = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    launchers = ("deepspeed.launcher", "torch.distributed.run", "torchrun", "srun")
    ranks = []
    for p in kids:
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        # the launchers' own command lines name the worker script too
        if any(part.endswith(WORKER.name) for part in cmd) and not any(x in part for part in cmd for x in launchers):
            ranks.append(p)
    return ranks or [root]


def run_launcher(cmd: list[str], env: dict[str, str]) -> int:
    """Run the launcher, pass stop signals to the ranks, and wait until every rank has exited."""
    import psutil

    from .loop import EXIT_PREEMPTED

    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.Popen(cmd, env=env, stdout=sys.stdout, stderr=sys.stderr, start_new_session=True)
    seen: dict[int, Any] = {}
    got: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        got.append(signum)
        targets = _rank_processes(proc.pid)
        log.warning("received signal %d: passing it to %d training process(es)", signum, len(targets))
        for p in targets:
            seen[p.pid] = p
            try:
                p.send_signal(signum)
            except psutil.Error:
                pass

    stops = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    old = {}
    for sig in stops:
        try:
            old[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread
            pass
    try:
        rc = proc.wait()
        if got:  # the launcher may go before its ranks (e.g. Slurm signalled it too): wait for the ranks
            psutil.wait_procs([p for p in seen.values() if p.pid != proc.pid], timeout=RANK_EXIT_TIMEOUT_S)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got and rc != 0:
        return EXIT_PREEMPTED
    return rc


def launch_training(settings: CellTrainSettings | Mapping, train_path: str, probe_path: str, run_dir: str,
                    outputs: dict, engine: str | None = None) -> dict | None:
    """Train one run (`settings`: the rule's params with their runtime keys, or the built settings) in this
    process, or start its ranks with the launcher its resources need."""
    run = CellTrainSettings.of(settings)
    name = choose_engine(run, engine)
    distributed_parent = name == "deepspeed" and "WORLD_SIZE" not in os.environ and run.compressor.multi_process
    if not distributed_parent:
        from .loop import train_cell

        return train_cell(run, train_path, probe_path, run_dir, outputs, engine=name)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    args_file = str(Path(run_dir) / "launch_args.json")
    Path(args_file).write_text(json.dumps({"settings": run.to_dict(), "train_path": train_path,
                                           "probe_path": probe_path, "run_dir": run_dir, "outputs": outputs,
                                           "engine": name}, indent=2))
    env = launch_env(run)
    cmd = launch_command(run, args_file, env)
    log.info("launching: %s", shlex.join(cmd))
    rc = run_launcher(cmd, env)
    if rc:
        raise SystemExit(rc)
    return None
