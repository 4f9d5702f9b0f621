"""What a run will ask the cluster for, before anything is submitted: jobs per rule and GPU-hours.

    python -m ctxcomp.plan                         # target `all` of config.yaml: jobs that would run now
    python -m ctxcomp.plan paper --forceall        # the whole DAG of every table and figure, done or not
    python -m ctxcomp.plan --configfile config.yaml my-cluster.yaml results/paper/eval/.../ko_faitheval.json
    python -m ctxcomp.plan paper --jobs            # and one line per GPU job
    python -m ctxcomp.plan paper --json            # machine-readable
    python -m ctxcomp.plan paper --gpu-mem 40      # memory check against 40 GB GPUs instead of slurm.gpu_mem_gb

The jobs come from Snakemake's own DAG of the Snakefile (the same one `snakemake -n` prints), and each job's
resources from the same rule definitions the Slurm profile submits with (workflow/rules/common.smk: per model from
`train_resources` / `eval_resources` in the config). GPU-hours of a job = GPUs per node x nodes x runtime / 60,
i.e. what Slurm is asked to reserve (the time limit, an upper bound on what is used). A retry after a time limit or
preemption (profiles/slurm: `retries`) asks again; that is not counted here.

Then, per training and evaluation job, the estimated peak memory per GPU (ctxcomp.memory_plan: weights,
gradients, optimizer states, activations, logits) against `slurm.gpu_mem_gb`, each job that would not fit marked,
and per training job the disk its checkpoints and final model take (ctxcomp.disk_plan), with totals. Jobs without
GPUs (the tiny preset) are estimated for the CPU and compared with their `mem_mb`.

Without --forceall only jobs that Snakemake would run are counted (outputs missing or out of date), so after a
partial run the plan shows what is left. Resources set in a profile (--set-resources / --default-resources) are not
applied; profiles/slurm sets none that change GPUs, nodes or runtimes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class PlannedJob:
    rule: str
    wildcards: dict
    gpus: int          # GPUs of the whole job (all nodes)
    nodes: int
    runtime_min: float
    cpus_per_task: int
    mem_mb: int
    partition: str | None
    threads: int = 1
    resources: dict | None = None  # every resource of the job, as the Slurm plugin sees it

    @property
    def cell(self) -> tuple[str, str, int] | None:
        """(decoder, compressor, ratio) of a per-cell job, else None."""
        wc = self.wildcards
        if {"decoder", "compressor", "ratio"} <= set(wc):
            return wc["decoder"], wc["compressor"], int(wc["ratio"])
        return None

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.runtime_min / 60.0


def job_gpus(resources: dict) -> tuple[int, int]:
    """(GPUs of the whole job, nodes) as the Slurm plugin would request them.

    `gpu` is the job's total (sbatch --gpus); `gres: gpu[:type]:N` is per node (sbatch --gres), times `nodes`.
    """
    nodes = int(resources.get("nodes") or 1)
    gres = str(resources.get("gres") or "")
    m = re.fullmatch(r"gpu(?::[\w.]+)?:(\d+)", gres)
    if m:
        return int(m.group(1)) * nodes, nodes
    if gres == "gpu":
        return nodes, nodes
    return int(resources.get("gpu") or resources.get("gpus") or 0), nodes


def dag_jobs(targets: list[str] | None = None, configfiles: list[str | Path] | None = None,
             config: dict | None = None, forceall: bool = False, workdir: str | Path | None = None,
             snakefile: str | Path | None = None) -> list[PlannedJob]:
    """The jobs of the DAG for `targets` (those that would run, or all with forceall), with their resources."""
    return dag(targets, configfiles, config, forceall, workdir, snakefile)[0]


def dag(targets: list[str] | None = None, configfiles: list[str | Path] | None = None,
        config: dict | None = None, forceall: bool = False, workdir: str | Path | None = None,
        snakefile: str | Path | None = None) -> tuple[list[PlannedJob], dict]:
    """`dag_jobs` and the workflow's config (config files and overrides merged, schema defaults set)."""
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, OutputSettings

    if workdir is None:  # like snakemake: the current directory when it holds the workflow, else this repository
        workdir = Path.cwd() if (Path.cwd() / "Snakefile").exists() else REPO_ROOT
    workdir = Path(workdir).resolve()
    snakefile = Path(snakefile or workdir / "Snakefile").resolve()
    config_settings = ConfigSettings(
        config=dict(config or {}),
        configfiles=[Path(f) if Path(f).is_absolute() else workdir / f for f in (configfiles or [])],
    )
    output = OutputSettings(quiet={Quietness.ALL, Quietness.RULES, Quietness.PROGRESS, Quietness.HOST,
                                   Quietness.REASON}, dryrun=True)
    # Snakemake writes a few lines (e.g. "Building DAG of jobs...") to stdout/stderr even when quiet: they are
    # kept back, and shown only when building the DAG fails.
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return _collect(targets, config_settings, output, forceall, workdir, snakefile)
    except BaseException:
        sys.stderr.write(sink.getvalue())
        raise


def _collect(targets, config_settings, output, forceall, workdir, snakefile) -> tuple[list[PlannedJob], dict]:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import DAGSettings, ResourceSettings

    with SnakemakeApi(output) as api:
        wf_api = api.workflow(resource_settings=ResourceSettings(cores=1024, nodes=1024),
                              config_settings=config_settings, snakefile=snakefile, workdir=workdir)
        dag_api = wf_api.dag(DAGSettings(targets=set(targets or []), forceall=forceall))
        # Snakemake has no public "list the jobs" call: these two steps are what `snakemake --dag` runs first.
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=forceall, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        dag = workflow.dag
        jobs = list(dag.jobs if forceall else dag.needrun_jobs(exclude_finished=False))
        planned = []
        for job in jobs:
            res = dict(job.resources.items())
            gpus, nodes = job_gpus(res)
            planned.append(PlannedJob(
                rule=job.rule.name, wildcards=dict(job.wildcards_dict), gpus=gpus, nodes=nodes,
                runtime_min=float(res.get("runtime") or 0), cpus_per_task=int(res.get("cpus_per_task") or job.threads),
                mem_mb=int(res.get("mem_mb") or 0), partition=res.get("slurm_partition"), threads=job.threads,
                resources={k: v for k, v in res.items() if not k.startswith("_") and k != "tmpdir"}))
        cfg = dict(workflow.config)
    return planned, cfg


def summarize(jobs: list[PlannedJob]) -> dict:
    """Per rule: jobs, GPU jobs, GPUs per job (min-max), nodes (max), runtime (max) and GPU-hours; and totals."""
    rules: dict[str, dict] = OrderedDict()
    for job in sorted(jobs, key=lambda j: j.rule):
        r = rules.setdefault(job.rule, {"jobs": 0, "gpu_jobs": 0, "gpus_min": None, "gpus_max": 0, "nodes_max": 1,
                                        "runtime_max_min": 0.0, "gpu_hours": 0.0, "partitions": set()})
        r["jobs"] += 1
        r["runtime_max_min"] = max(r["runtime_max_min"], job.runtime_min)
        r["nodes_max"] = max(r["nodes_max"], job.nodes)
        if job.partition:
            r["partitions"].add(job.partition)
        if job.gpus:
            r["gpu_jobs"] += 1
            r["gpus_min"] = job.gpus if r["gpus_min"] is None else min(r["gpus_min"], job.gpus)
            r["gpus_max"] = max(r["gpus_max"], job.gpus)
            r["gpu_hours"] += job.gpu_hours
    for r in rules.values():
        r["partitions"] = sorted(r["partitions"])
    return {
        "rules": rules,
        "total_jobs": len(jobs),
        "total_gpu_jobs": sum(1 for j in jobs if j.gpus),
        "total_gpu_hours": sum(j.gpu_hours for j in jobs),
    }


def format_summary(summary: dict, jobs: list[PlannedJob] | None = None, title: str = "") -> str:
    rows = [("rule", "jobs", "GPU jobs", "GPUs/job", "nodes", "max time", "GPU-hours", "partition")]
    for name, r in summary["rules"].items():
        gpus = "-" if not r["gpu_jobs"] else (str(r["gpus_max"]) if r["gpus_min"] == r["gpus_max"]
                                              else f"{r['gpus_min']}-{r['gpus_max']}")
        rows.append((name, str(r["jobs"]), str(r["gpu_jobs"]), gpus, str(r["nodes_max"]),
                     _hours(r["runtime_max_min"]), f"{r['gpu_hours']:,.1f}", ",".join(r["partitions"]) or "-"))
    rows.append(("total", str(summary["total_jobs"]), str(summary["total_gpu_jobs"]), "", "", "",
                 f"{summary['total_gpu_hours']:,.1f}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title] if title else []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if i == 0 or i == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("GPU-hours = GPUs per node x nodes x runtime / 60 per job: the time limits requested, retries not "
                 "counted.")
    if jobs:
        lines.append("")
        lines.append("GPU jobs:")
        for j in sorted((j for j in jobs if j.gpus), key=lambda j: (j.rule, sorted(j.wildcards.items()))):
            wc = ", ".join(f"{k}={v}" for k, v in j.wildcards.items())
            lines.append(f"  {j.rule:<18} {wc:<60} {j.gpus:>3} GPU x {_hours(j.runtime_min):>6} "
                         f"= {j.gpu_hours:9,.1f} GPU-h")
    return "\n".join(lines)


def _hours(minutes: float) -> str:
    return f"{minutes / 60:.0f} h" if minutes >= 120 else f"{minutes:.0f} min"


# ------------------------------------------------------------------------------------------ memory and disk


def _mem(n: float | None, unit: int) -> str:
    return "-" if n is None else f"{n / unit:.1f}"


def resource_plan(jobs: list[PlannedJob], cfg: dict, gpu_mem_gb: float | None = None) -> dict:
    """Per training/evaluation job: memory estimate (per GPU, or per job on CPU) and fit; per training job: disk."""
    from .config import Cell
    from .disk_plan import disk_estimate
    from .memory_plan import eval_estimate, train_estimate

    cap = float(gpu_mem_gb or cfg["slurm"]["gpu_mem_gb"])  # the schema fills slurm.gpu_mem_gb
    rows, disk = [], []
    for job in sorted((j for j in jobs if j.cell), key=lambda j: (j.rule, j.cell)):
        cell = Cell(*job.cell)
        device = "cuda" if job.gpus else "cpu"
        training, dynamics = job.rule.startswith("train_"), job.rule == "train_dynamics"
        est = train_estimate(cfg, cell, device, dynamics) if training else eval_estimate(cfg, cell, device)
        capacity = cap if job.gpus else job.mem_mb / 1024
        need = est.needed_gib() if job.gpus else est.peak_gib()
        row = {"rule": job.rule, "cell": cell.path, "device": device, "gpus": job.gpus, "nodes": job.nodes,
               "estimate": est.as_dict(), "needed_gib": need, "capacity_gib": capacity, "fits": need <= capacity,
               "host_fits": not est.host_bytes or est.host_bytes <= job.mem_mb * 2**20}
        if est.alt_peak_bytes is not None and job.gpus:
            row["alt_fits"] = est.needed_gib(est.alt_peak_bytes) <= capacity
        rows.append(row)
        if training:
            disk.append({"rule": job.rule, "cell": cell.path, **disk_estimate(cfg, cell, device, dynamics).as_dict()})
    return {"gpu_mem_gb": cap, "jobs": rows, "disk": disk,
            "not_fitting": [f"{r['rule']} {r['cell']}" for r in rows if not (r["fits"] and r["host_fits"])],
            "disk_total_after_bytes": sum(d["after_bytes"] for d in disk),
            "disk_total_peak_bytes": sum(d["peak_bytes"] for d in disk)}


def format_resources(res: dict) -> str:
    cap = res["gpu_mem_gb"]
    big = max((r["estimate"]["peak_bytes"] for r in res["jobs"]), default=0) >= 2**30
    unit, uname = (2**30, "GiB") if big else (2**20, "MiB")
    lines = ["", (f"Memory per GPU, estimated ({uname}; ctxcomp.memory_plan). GPU jobs must fit slurm.gpu_mem_gb = "
                  f"{cap:g} GiB with {_reserve_note()}; CPU jobs (no GPU) are compared with their mem_mb.")]
    head = ("rule", "cell", "GPUs", "engine", "weights", "grads", "optim", "activ", "logits", "trans", "peak",
            "need", "of", "fit", "peak, ckpt toggled")
    table = [head]
    for r in res["jobs"]:
        e, p = r["estimate"], r["estimate"]["parts"]
        weights = sum(v for k, v in p.items() if k.startswith("weights") or k == "autocast_copies")
        activ = sum(p.get(k, 0) for k in ("act_compressor", "act_head", "act_decoder"))
        fit = ("ok" if r["fits"] else "NO") + ("" if r["host_fits"] else " (host RAM: NO)")
        alt = ""
        if e["alt_peak_bytes"] is not None:
            alt = f"{_mem(e['alt_peak_bytes'], unit)} ({'ok' if r.get('alt_fits', True) else 'NO'})"
        grads = p.get("grads")
        cols = [weights, grads, p.get("optimizer"), activ if e["kind"] == "train" else None, p.get("act_logits"),
                p.get("transient"), e["peak_bytes"], r["needed_gib"] * 2**30]
        table.append((r["rule"], r["cell"], str(r["gpus"]) if r["gpus"] else "cpu", e["engine"],
                      *(_mem(c, unit) for c in cols), f"{r['capacity_gib'] * 2**30 / unit:.0f}", fit, alt))
    lines += _columns(table)
    bad = res["not_fitting"]
    lines.append(f"{len(bad)} of {len(res['jobs'])} jobs would not fit" + (": " + ", ".join(bad) if bad else "."))
    notes = sorted({n for r in res["jobs"] for n in r["estimate"]["notes"]})
    if notes:
        lines.append("Notes: " + "; ".join(notes) + ".")
    if res["disk"]:
        du, dname = (1e9, "GB") if res["disk_total_peak_bytes"] >= 1e9 else (1e6, "MB")
        lines += ["", (f"Disk per training job ({dname}, 1 {dname} = {du:.0e} bytes; ctxcomp.disk_plan): one "
                       "resumable checkpoint, kept x (keep + 1 while a new one is written), final model (+ probe "
                       "checkpoints).")]
        table = [("rule", "cell", "checkpoint", "keep", "final", "probes", "peak", "after")]
        for d in res["disk"]:
            table.append((d["rule"], d["cell"], _gb(d["checkpoint_bytes"], du), str(d["keep"]),
                          _gb(d["final_bytes"], du), _gb(d["probe_bytes"], du), _gb(d["peak_bytes"], du),
                          _gb(d["after_bytes"], du)))
        table.append(("total", "", "", "", "", "", _gb(res["disk_total_peak_bytes"], du),
                      _gb(res["disk_total_after_bytes"], du)))
        lines += _columns(table)
        lines.append("peak: all checkpoints of a running job; total peak = every job at its peak at once (upper "
                     "bound); after: what stays once the job is done (checkpoints dropped unless "
                     "train.keep_final_checkpoints).")
    return "\n".join(lines)


def _reserve_note() -> str:
    from .memory_plan import FRAGMENTATION, RESERVE_GIB

    return f"need = peak x {1 + FRAGMENTATION:g} (allocator slack) + {RESERVE_GIB:g} GiB (CUDA context, NCCL)"


def _gb(n: int, unit: float) -> str:
    return f"{n / unit:,.1f}"


def _columns(table: list[tuple]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out = []
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctxcomp.plan", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", help="rules or files, as for snakemake (default: the Snakefile's `all`)")
    p.add_argument("--configfile", nargs="+", default=None, metavar="FILE",
                   help="config files, as for snakemake (default: the Snakefile's config.yaml)")
    p.add_argument("--config", nargs="+", default=None, metavar="KEY=VALUE", help="config overrides, as for snakemake")
    p.add_argument("--forceall", "-F", action="store_true", help="count every job of the DAG, done or not")
    p.add_argument("--directory", "-d", default=None,
                   help="the workflow directory (default: the current one if it has a Snakefile, else this repository)")
    p.add_argument("--jobs", action="store_true", help="also list every GPU job")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--gpu-mem", type=float, default=None, metavar="GB",
                   help="GPU memory to check against (default: slurm.gpu_mem_gb of the config)")
    p.add_argument("--no-resources", action="store_true", help="skip the memory and disk estimates")
    args = p.parse_args(argv)

    overrides = {}
    if args.config:
        from snakemake.cli import parse_config

        overrides = parse_config(args.config)
    jobs, cfg = dag(args.targets, args.configfile, overrides, forceall=args.forceall, workdir=args.directory)
    summary = summarize(jobs)
    res = None if args.no_resources else resource_plan(jobs, cfg, args.gpu_mem)
    if args.json:
        out = dict(summary, targets=args.targets or ["all"], forceall=args.forceall)
        if args.jobs:
            out["jobs"] = [dict(asdict(j), gpu_hours=j.gpu_hours) for j in jobs]
        if res is not None:
            out["resources"] = res
        print(json.dumps(out, indent=2))
    else:
        what = " ".join(args.targets) or "all"
        scope = "every job of the DAG" if args.forceall else "jobs that would run now"
        conf = " ".join(args.configfile) if args.configfile else "config.yaml"
        print(format_summary(summary, jobs if args.jobs else None,
                             title=f"Plan for `{what}` with {conf} ({scope}):"))
        if res is not None:
            print(format_resources(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
