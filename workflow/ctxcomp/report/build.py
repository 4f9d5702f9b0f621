"""Build the main and the ablation report from result files; the entry points of the report rules.

Each builder makes exactly the files Snakemake expects (`outputs`): it refuses a path it does not know how to
make and raises if an expected file was not produced, so a rule can never "succeed" with a stale artifact.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..io import atomic_write
from ..paths import CORRELATION_FIGURES, FIGURE_EXTS, FIGURES, TABLE_EXTS, RunPaths
from . import collect, compare, figures, tables
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


def write_correlations(path: Path, frame: pd.DataFrame) -> Path:
    """A figure's correlations as CSV (figures.CORR_COLUMNS, full precision), written atomically."""
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write(frame.to_csv(index=False, lineterminator="\n"))
    return path


def build_main_report(out: str, cells: list[str], dynamics_cell: str | None, models: dict, config_hash: str,
                      outputs: list[str] | None = None, dynamics_files: list[str] | None = None,
                      note: str = "") -> None:
    """Table 2, the semantic-drift breakdown, rank truncation, training, RAG (if requested), Figures 1-4 and G.2
    with their correlation data, and index.md under `out`/report.

    outputs: the files the rule declares; None means all of main_report_files() (RAG when any cell has
    rag_musique.json). The RAG table is made iff it is among `outputs`. dynamics_files: the dynamics run's files
    as the rule's inputs name them (collect.DynamicsFiles.from_paths); None: the contract's paths under `out`.
    """
    report = Path(out) / "report"
    if outputs is None:
        rag = bool(collect.load_rag(out, cells, models)["present"].any())
        outputs = [str(p) for p in main_report_files(out, rag)]
    wanted = _resolve(outputs)
    _check_outputs(wanted, main_report_files(out, rag=True))
    want = lambda p: p.resolve() in wanted  # noqa: E731
    dfiles = (collect.DynamicsFiles.from_paths(dynamics_files) if dynamics_files is not None
              else collect.DynamicsFiles.of_run(out, dynamics_cell))
    samples = lambda cell, task: collect.load_samples(out, cell, task)  # noqa: E731

    ev = collect.load_eval(out, cells, models)
    probes = collect.load_probes(out, cells, models)
    rt = collect.load_rank_truncation(out, cells, models)
    dyn, tdyn = collect.load_dynamics(dfiles), collect.load_train_dynamics(dfiles)
    ratios = sorted(dict.fromkeys(ev["ratio"]))

    jobs: list[tuple[list[Path], Callable[[], list[Path]]]] = [
        (_table_files(report, "table2"), lambda: tables.write_table(report / "table2", tables.table2(
            compare.add_best_deltas(ev, collect.TASKS, ["family", "ratio"], samples)))),
        (_table_files(report, "sd_breakdown"), lambda: tables.write_table(
            report / "sd_breakdown", tables.sd_breakdown_table(*collect.load_sd_breakdown(out, cells, models)))),
        (_table_files(report, "rank_truncation"),
         lambda: tables.write_table(report / "rank_truncation", tables.rank_truncation_table(rt))),
        (_table_files(report, "training"), lambda: tables.write_table(
            report / "training", tables.training_table(collect.load_training(out, cells, models)))),
        (_table_files(report, "rag_musique"), lambda: tables.write_table(
            report / "rag_musique", tables.rag_table(collect.load_rag(out, cells, models)))),
    ]
    fig_jobs: dict[str, Callable[[], figures.Plot]] = {
        "fig1_centre": lambda: figures.fig1_centre(ev),
        "fig2_loss": lambda: figures.fig2_loss(collect.load_losses(out, cells), ev,
                                               4 if 4 in ratios or not ratios else ratios[0]),
        "fig3a_erank_size": lambda: figures.fig3a_erank_size(probes),
        "fig3b_erank_steps": lambda: figures.fig3b_erank_steps(dyn, tdyn, dynamics_cell),
        "fig3c_erank_ko": lambda: figures.fig3c_erank_ko(dyn, collect.load_checkpoint_samples(dfiles),
                                                         dynamics_cell),
        "fig4a_entropy_size": lambda: figures.fig4a_entropy_size(collect.load_entropy_samples(out, cells, models)),
        "fig4b_entropy_steps": lambda: figures.fig4b_entropy_steps(dyn, tdyn, dynamics_cell),
        "fig4c_entropy_drift": lambda: figures.fig4c_entropy_drift(collect.load_entropy_drift(out, cells, models)),
        "figG2_rank_truncation": lambda: figures.figG2_rank_truncation(rt),
    }
    assert set(fig_jobs) == set(FIGURES), sorted(set(fig_jobs) ^ set(FIGURES))
    for name, fn in fig_jobs.items():
        files = [report / f"{name}.{ext}" for ext in FIGURE_EXTS]
        corr = report / f"{name}.correlation.csv" if name in CORRELATION_FIGURES else None
        jobs.append((files + ([corr] if corr else []), lambda fn=fn, name=name, corr=corr: _figure(fn, report / name,
                                                                                                   corr)))

    made: list[Path] = []
    for files, job in jobs:
        if any(want(f) for f in files):
            made += job()
            log.info("wrote %s", ", ".join(p.name for p in files))
    index = report / "index.md"
    if want(index):
        made.append(write_index(index, "Main report", out, made, config_hash, collect.provenance_rows(out, cells),
                                note=note))
        log.info("wrote %s", index)
    _check_made(wanted, made)


def _figure(make: Callable[[], figures.Plot], stem: Path, corr: Path | None) -> list[Path]:
    plot = make()
    paths = plot.save(stem)
    if corr is not None:
        paths.append(write_correlations(corr, plot.correlations if plot.correlations is not None
                                        else pd.DataFrame(columns=list(figures.CORR_COLUMNS))))
    return paths


def build_ablation_report(out: str, cells: list[str], models: dict, config_hash: str,
                          outputs: list[str] | None = None, note: str = "") -> None:
    """Table 3 (decoder ablation) and ablation_index.md under `out`/report; outputs and note as in
    build_main_report."""
    report = Path(out) / "report"
    if outputs is None:
        outputs = [str(p) for p in ablation_report_files(out)]
    wanted = _resolve(outputs)
    _check_outputs(wanted, ablation_report_files(out))
    made: list[Path] = []
    if any(p.resolve() in wanted for p in _table_files(report, "table3")):
        ev = compare.add_best_deltas(collect.load_eval(out, cells, models), collect.TASKS, ["decoder", "ratio"],
                                     lambda cell, task: collect.load_samples(out, cell, task))
        made += tables.write_table(report / "table3", tables.table3(ev))
        log.info("wrote table3")
    index = report / "ablation_index.md"
    if index.resolve() in wanted:
        made.append(write_index(index, "Decoder ablation report", out, made, config_hash,
                                collect.provenance_rows(out, cells), note=note))
    _check_made(wanted, made)


def build_lora_control_report(out: str, pairs: list[tuple[str, str]], models: dict,
                              outputs: list[str] | None = None) -> None:
    """report/lora_control.{md,csv,tex}: each LoRA cell beside its full fine-tune twin (pairs: (lora, full))."""
    report = Path(out) / "report"
    known = [Path(p) for p in RunPaths(str(out)).lora_control_report_files()]
    wanted = _resolve(outputs if outputs is not None else known)
    _check_outputs(wanted, known)
    pairs = [(str(a), str(b)) for a, b in pairs]
    cells = list(dict.fromkeys(c for pair in pairs for c in pair))
    frame = compare.lora_control_frame(collect.load_eval(out, cells, models), pairs, collect.TASKS,
                                       collect.TASK_LABELS, lambda cell, task: collect.load_samples(out, cell, task))
    made = tables.write_table(report / "lora_control", tables.lora_control_table(frame))
    log.info("wrote lora_control")
    _check_made(wanted, made)
