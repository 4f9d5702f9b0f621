"""Start a cell's training with the right launcher for the job's resources.

- 1 process (CPU, or one GPU with the torch engine): train in this process.
- 1 node, several GPUs: `deepspeed --num_gpus G worker.py ...` (the DeepSpeed launcher sets ranks).
- several nodes: `srun --nodes N --ntasks-per-node 1 torchrun --nnodes N --nproc-per-node G ...` inside the Slurm
  allocation, rendezvous on the first node of $SLURM_JOB_NODELIST.
Inside a launcher (WORLD_SIZE already set) every rank calls `train_cell` directly.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from .engine import choose_engine

log = logging.getLogger(__name__)
WORKER = Path(__file__).with_name("worker.py")


def launch_command(settings: dict, args_file: str, env: dict | None = None) -> list[str]:
    """The command that starts every rank of a multi-process run (pure, so it can be tested)."""
    env = dict(os.environ if env is None else env)
    comp = settings["compressor"]
    gpus, nodes = max(1, int(comp.get("gpus", 1))), int(comp.get("nodes", 1))
    worker = [str(WORKER), "--args", args_file]
    if nodes <= 1:
        return ["deepspeed", "--num_gpus", str(gpus), "--master_port", env.get("CTXCOMP_MASTER_PORT", "29511"),
                *worker]
    nodelist = env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise RuntimeError(f"a {nodes}-node training job must run inside a Slurm allocation (SLURM_JOB_NODELIST unset)")
    master = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                            check=True).stdout.split()[0]
    return ["srun", "--nodes", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1",
            "torchrun", "--nnodes", str(nodes), "--nproc-per-node", str(gpus), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{master}:{env.get('CTXCOMP_MASTER_PORT', '29511')}",
            "--rdzv-id", env.get("SLURM_JOB_ID", "ctxcomp"), *worker]


def launch_training(settings: dict, train_path: str, probe_path: str, run_dir: str, outputs: dict,
                    log_path: str | None = None, engine: str | None = None) -> dict | None:
    name = choose_engine(settings, engine)
    distributed_parent = name == "deepspeed" and "WORLD_SIZE" not in os.environ and (
        settings["compressor"].get("gpus", 0) > 1 or settings["compressor"].get("nodes", 1) > 1)
    if not distributed_parent:
        from .loop import train_cell

        return train_cell(settings, train_path, probe_path, run_dir, outputs, engine=name)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    args_file = str(Path(run_dir) / "launch_args.json")
    Path(args_file).write_text(json.dumps({"settings": settings, "train_path": train_path, "probe_path": probe_path,
                                           "run_dir": run_dir, "outputs": outputs, "engine": name}, indent=2))
    cmd = launch_command(settings, args_file)
    log.info("launching: %s", shlex.join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr)
    if proc.returncode:
        raise SystemExit(proc.returncode)
    return None
