"""Build the main and the ablation report from result files; the entry points of the report rules.

Each builder makes exactly the files Snakemake expects (`outputs`): it refuses a path it does not know how to
make and raises if an expected file was not produced, so a rule can never "succeed" with a stale artifact.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ..paths import FIGURES, TABLE_EXTS, RunPaths
from . import collect, figures, tables
from .index import write_index

log = logging.getLogger(__name__)


def _resolve(paths: list[str | Path]) -> set[Path]:
    return {Path(p).resolve() for p in paths}


def _table_files(report: Path, prefix: str) -> list[Path]:
    return [report / f"{prefix}.{ext}" for ext in TABLE_EXTS]


def main_report_files(out: str | Path, rag: bool) -> list[Path]:
    """The files build_main_report can make (the workflow's main_report_outputs(): ctxcomp.paths)."""
    return [Path(p) for p in RunPaths(str(out)).main_report_files(rag)]


def ablation_report_files(out: str | Path) -> list[Path]:
    """The files build_ablation_report makes."""
    return [Path(p) for p in RunPaths(str(out)).ablation_report_files()]


def _check_outputs(expected: set[Path], known: list[Path]) -> None:
    unknown = expected - _resolve(known)
    if unknown:
        raise ValueError(f"cannot make requested report file(s): {sorted(map(str, unknown))}")


def _check_made(expected: set[Path], made: list[Path]) -> None:
    missing = {p for p in expected if p not in _resolve(made) or not p.exists()}
    if missing:
        raise RuntimeError(f"report file(s) not produced: {sorted(map(str, missing))}")


def build_main_report(out: str, cells: list[str], dynamics_cell: str | None, models: dict, config_hash: str,
                      outputs: list[str] | None = None) -> None:
    """Table 2, rank truncation, RAG (if requested), Figures 1-4 and G.2, and index.md under `out`/report.

    outputs: the files the rule declares; None means all of main_report_files() (RAG when any cell has
    rag_musique.json). The RAG table is made iff it is among `outputs`.
    """
    report = Path(out) / "report"
    if outputs is None:
        rag = bool(collect.load_rag(out, cells, models)["present"].any())
        outputs = [str(p) for p in main_report_files(out, rag)]
    wanted = _resolve(outputs)
    _check_outputs(wanted, main_report_files(out, rag=True))
    want = lambda p: p.resolve() in wanted  # noqa: E731

    ev = collect.load_eval(out, cells, models)
    probes = collect.load_probes(out, cells, models)
    rt = collect.load_rank_truncation(out, cells, models)
    dyn = collect.load_dynamics(out, dynamics_cell)
    tdyn = collect.load_train_dynamics(out, dynamics_cell)

    jobs: list[tuple[list[Path], Callable[[], list[Path]]]] = [
        (_table_files(report, "table2"), lambda: tables.write_table(report / "table2", tables.table2(ev))),
        (_table_files(report, "rank_truncation"),
         lambda: tables.write_table(report / "rank_truncation", tables.rank_truncation_table(rt))),
        (_table_files(report, "training"), lambda: tables.write_table(
            report / "training", tables.training_table(collect.load_training(out, cells, models)))),
        (_table_files(report, "rag_musique"), lambda: tables.write_table(
            report / "rag_musique", tables.rag_table(collect.load_rag(out, cells, models)))),
    ]
    fig_jobs: dict[str, Callable[[Path], list[Path]]] = {
        "fig1_centre": lambda s: figures.fig1_centre(ev, s),
        "fig2_loss": lambda s: figures.fig2_loss(collect.load_losses(out, cells), ev, s),
        "fig3a_erank_size": lambda s: figures.fig3a_erank_size(probes, s),
        "fig3b_erank_steps": lambda s: figures.fig3b_erank_steps(dyn, tdyn, dynamics_cell, s),
        "fig3c_erank_ko": lambda s: figures.fig3c_erank_ko(dyn, dynamics_cell, s),
        "fig4a_entropy_size": lambda s: figures.fig4a_entropy_size(probes, s),
        "fig4b_entropy_steps": lambda s: figures.fig4b_entropy_steps(dyn, tdyn, dynamics_cell, s),
        "fig4c_entropy_drift": lambda s: figures.fig4c_entropy_drift(collect.load_entropy_drift(out, cells), s),
        "figG2_rank_truncation": lambda s: figures.figG2_rank_truncation(rt, s),
    }
    assert set(fig_jobs) == set(FIGURES), sorted(set(fig_jobs) ^ set(FIGURES))
    for name, fn in fig_jobs.items():
        stem = report / name
        jobs.append(([stem.with_name(f"{name}.png"), stem.with_name(f"{name}.pdf")], lambda fn=fn, s=stem: fn(s)))

    made: list[Path] = []
    for files, job in jobs:
        if any(want(f) for f in files):
            made += job()
            log.info("wrote %s", ", ".join(p.name for p in files))
    index = report / "index.md"
    if want(index):
        made.append(write_index(index, "Main report", out, made, config_hash, collect.provenance_rows(out, cells)))
        log.info("wrote %s", index)
    _check_made(wanted, made)


def build_ablation_report(out: str, cells: list[str], models: dict, config_hash: str,
                          outputs: list[str] | None = None) -> None:
    """Table 3 (decoder ablation) and ablation_index.md under `out`/report; outputs as in build_main_report."""
    report = Path(out) / "report"
    if outputs is None:
        outputs = [str(p) for p in ablation_report_files(out)]
    wanted = _resolve(outputs)
    _check_outputs(wanted, ablation_report_files(out))
    made: list[Path] = []
    if any(p.resolve() in wanted for p in _table_files(report, "table3")):
        made += tables.write_table(report / "table3", tables.table3(collect.load_eval(out, cells, models)))
        log.info("wrote table3")
    index = report / "ablation_index.md"
    if index.resolve() in wanted:
        made.append(write_index(index, "Decoder ablation report", out, made, config_hash,
                                collect.provenance_rows(out, cells)))
    _check_made(wanted, made)
