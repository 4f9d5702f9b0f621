"""What a run will ask the cluster for, before anything is submitted: jobs per rule and GPU-hours.

    python -m ctxcomp.plan                         # target `all` of config.yaml: jobs that would run now
    python -m ctxcomp.plan paper --forceall        # the whole DAG of every table and figure, done or not
    python -m ctxcomp.plan --configfile config.yaml my-cluster.yaml results/paper/eval/.../ko_faitheval.json
    python -m ctxcomp.plan paper --jobs            # and one line per GPU job
    python -m ctxcomp.plan paper --json            # machine-readable

The jobs come from Snakemake's own DAG of the Snakefile (the same one `snakemake -n` prints), and each job's
resources from the same rule definitions the Slurm profile submits with (workflow/rules/common.smk: per model from
`train_resources` / `eval_resources` in the config). GPU-hours of a job = GPUs per node x nodes x runtime / 60,
i.e. what Slurm is asked to reserve (the time limit, an upper bound on what is used). A retry after a time limit or
preemption (profiles/slurm: `retries`) asks again; that is not counted here.

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


def _collect(targets, config_settings, output, forceall, workdir, snakefile) -> list[PlannedJob]:
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
    return planned


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
    args = p.parse_args(argv)

    overrides = {}
    if args.config:
        from snakemake.cli import parse_config

        overrides = parse_config(args.config)
    jobs = dag_jobs(args.targets, args.configfile, overrides, forceall=args.forceall, workdir=args.directory)
    summary = summarize(jobs)
    if args.json:
        out = dict(summary, targets=args.targets or ["all"], forceall=args.forceall)
        if args.jobs:
            out["jobs"] = [dict(asdict(j), gpu_hours=j.gpu_hours) for j in jobs]
        print(json.dumps(out, indent=2))
    else:
        what = " ".join(args.targets) or "all"
        scope = "every job of the DAG" if args.forceall else "jobs that would run now"
        conf = " ".join(args.configfile) if args.configfile else "config.yaml"
        print(format_summary(summary, jobs if args.jobs else None,
                             title=f"Plan for `{what}` with {conf} ({scope}):"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
