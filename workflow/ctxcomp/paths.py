"""Where every file of a run lives, and the fixed lists of tasks, question sets, figures and report files.

The one source for the Snakemake rules (workflow/rules/*.smk) and for the package (reports, evaluation, tests).
Standard library only, on purpose: the Snakefile imports it on every `snakemake` call.

Per-cell paths: without a cell they are Snakemake patterns with the wildcards `{decoder}`, `{compressor}` and
`{ratio}`; with a cell (anything with `.decoder`, `.compressor`, `.ratio`, or a "decoder/compressor/r<ratio>"
string) they are concrete. A cell lives at `<stage>/<decoder>/<compressor>/r<ratio>/` under the run's root.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Table 2 columns, in order: one evaluation job writes all of them.
EVAL_TASKS: tuple[str, ...] = ("recon_fineweb", "ko_faitheval", "ko_conflictqa", "sd_fineweb", "sd_faitheval")
#: Knowledge-overwriting sets and semantic-drift question sets (the suffixes of the ko_/sd_ tasks).
KO_SETS: tuple[str, ...] = ("faitheval", "conflictqa")
QSETS: tuple[str, ...] = ("fineweb", "faitheval")
#: QA evaluation sets prepared by rule prepare_qa.
QA_SETS: tuple[str, ...] = ("faitheval", "conflictqa", "musique")
#: Figures of the main report (each written as every FIGURE_EXTS).
FIGURES: tuple[str, ...] = ("fig1_centre", "fig2_loss", "fig3a_erank_size", "fig3b_erank_steps", "fig3c_erank_ko",
                            "fig4a_entropy_size", "fig4b_entropy_steps", "fig4c_entropy_drift",
                            "figG2_rank_truncation")
#: Figures whose correlations are also written as data: report/<figure>.correlation.csv.
CORRELATION_FIGURES: tuple[str, ...] = ("fig3c_erank_ko", "fig4c_entropy_drift")
#: Tables of the main report (each written as every TABLE_EXTS); rag_musique is added when RAG is enabled.
MAIN_TABLES: tuple[str, ...] = ("table2", "sd_breakdown", "rank_truncation", "training")
TABLE_EXTS: tuple[str, ...] = ("md", "csv", "tex")
#: Snakemake report (`snakemake --report`): the category of every report artifact, by its name before the first
#: dot; its caption is workflow/report/<name>.rst. No colons in a category: the report turns category names into
#: reStructuredText link targets, which end at a colon.
REPORT_CATEGORIES: dict[str, str] = {
    "table2": "Table 2 (main results)", "sd_breakdown": "Table 2 (semantic-drift breakdown)",
    "table3": "Table 3 (decoder ablation)", "lora_control": "LoRA control", "rank_truncation": "Rank truncation",
    "figG2_rank_truncation": "Rank truncation", "training": "Training", "rag_musique": "RAG (MuSiQue)",
    "fig1_centre": "Figure 1", "fig2_loss": "Figure 2",
    "fig3a_erank_size": "Figure 3 (effective rank)", "fig3b_erank_steps": "Figure 3 (effective rank)",
    "fig3c_erank_ko": "Figure 3 (effective rank)", "fig4a_entropy_size": "Figure 4 (entropy)",
    "fig4b_entropy_steps": "Figure 4 (entropy)", "fig4c_entropy_drift": "Figure 4 (entropy)",
    "index": "Provenance", "ablation_index": "Provenance",
}


def artifact_name(path: str | Path) -> str:
    """report/<name>.<ext...> -> <name> (the key of REPORT_CATEGORIES and of the caption file)."""
    return Path(path).name.split(".", 1)[0]
FIGURE_EXTS: tuple[str, ...] = ("png", "pdf")
CELL_WILDCARDS = "{decoder}/{compressor}/r{ratio}"
SAMPLES_SUFFIX = ".samples.jsonl"


def cell_key(cell: Any = None) -> str:
    """"decoder/compressor/r<ratio>" of a cell, or the wildcard pattern when `cell` is None."""
    if cell is None:
        return CELL_WILDCARDS
    if isinstance(cell, str):
        return cell.strip("/")
    return f"{cell.decoder}/{cell.compressor}/r{cell.ratio}"


def samples_of(result: str | Path) -> str:
    """The per-sample rows beside a summary file: `<dir>/<task>.json` -> `<dir>/<task>.samples.jsonl`."""
    p = Path(result)
    return str(p.with_name(p.stem + SAMPLES_SUFFIX))


@dataclass(frozen=True)
class RunPaths:
    """Every path under one run's root (`results/<run_name>`)."""

    root: str

    @classmethod
    def of(cls, run_name: str) -> RunPaths:
        return cls(f"results/{run_name}")

    # ------------------------------------------------------------------------------------------------ cells
    def cell(self, stage: str, cell: Any = None) -> str:
        """Directory of one cell's files for a stage: train, eval, probes or dynamics."""
        return f"{self.root}/{stage}/{cell_key(cell)}"

    def train(self, name: str, cell: Any = None) -> str:
        """train/<cell>/<name>: final, probe_checkpoints, loss.csv, dynamics.csv, summary.json, checkpoints."""
        return f"{self.cell('train', cell)}/{name}"

    def eval(self, name: str, cell: Any = None) -> str:
        """eval/<cell>/<name>, e.g. `ko_faitheval.json`, `rank_truncation.json`."""
        return f"{self.cell('eval', cell)}/{name}"

    def eval_task(self, task: str, cell: Any = None) -> str:
        return self.eval(f"{task}.json", cell)

    def probes(self, name: str, cell: Any = None) -> str:
        return f"{self.cell('probes', cell)}/{name}"

    def dynamics(self, name: str, cell: Any = None) -> str:
        """dynamics/<cell>/<name>: checkpoints.csv, checkpoints.samples.jsonl (KO at every probe checkpoint)."""
        return f"{self.cell('dynamics', cell)}/{name}"

    def dynamics_train(self, name: str, cell: Any = None) -> str:
        """dynamics/<cell>/train/<name>: the separate training run of the dynamics cell (final, probe_checkpoints,
        loss.csv, dynamics.csv, summary.json, checkpoints); the Table 2 cell itself is train/<cell>/."""
        return f"{self.cell('dynamics', cell)}/train/{name}"

    # ------------------------------------------------------------------------------------------ logs, bench
    def log(self, rule: str, key: Any = "") -> str:
        """logs/<rule>.log, or logs/<rule>/<key>.log (a cell, a wildcard pattern or a name)."""
        key = cell_key(key) if key is None or not isinstance(key, str) else key
        return f"{self.root}/logs/{rule}/{key}.log" if key else f"{self.root}/logs/{rule}.log"

    def benchmark(self, rule: str, key: Any = "") -> str:
        key = cell_key(key) if key is None or not isinstance(key, str) else key
        return f"{self.root}/benchmarks/{rule}/{key}.tsv" if key else f"{self.root}/benchmarks/{rule}.tsv"

    # ------------------------------------------------------------------------------------------------- data
    def fineweb(self, name: str) -> str:
        """data/fineweb/<name>: train.jsonl, eval.jsonl, stats.json."""
        return f"{self.root}/data/fineweb/{name}"

    def qa(self, name: str) -> str:
        """Records of one QA evaluation set (faitheval, conflictqa, musique)."""
        return f"{self.root}/data/{name}.jsonl"

    def qa_stats(self, name: str) -> str:
        return f"{self.root}/data/{name}.stats.json"

    def questions(self, qset: str) -> str:
        return f"{self.root}/questions/{qset}.jsonl"

    def question_report(self, qset: str) -> str:
        return f"{self.root}/questions/{qset}.report.json"

    @property
    def question_cache(self) -> str:
        return f"{self.root}/questions/cache"

    def question_contexts(self, qset: str) -> str:
        """The contexts a question set is asked about: the FineWeb evaluation chunks or the FaithEval records."""
        return self.fineweb("eval.jsonl") if qset == "fineweb" else self.qa(qset)

    # ---------------------------------------------------------------------------------------- tiny preset
    def tokenizer(self, tok: str) -> str:
        return f"{self.root}/tiny/tokenizers/{tok}"

    def base_model(self, model: str) -> str:
        return f"{self.root}/base/{model}"

    # ----------------------------------------------------------------------------------------------- report
    def report(self, name: str) -> str:
        return f"{self.root}/report/{name}"

    def report_table(self, prefix: str) -> list[str]:
        """The three renderings of one table: <prefix>.md, .csv, .tex."""
        return [self.report(f"{prefix}.{ext}") for ext in TABLE_EXTS]

    def figure(self, name: str) -> list[str]:
        return [self.report(f"{name}.{ext}") for ext in FIGURE_EXTS]

    def correlation(self, figure: str) -> str:
        """The correlations drawn in a figure, as data (r, p, rho, p, n and what was correlated)."""
        return self.report(f"{figure}.correlation.csv")

    def main_report_files(self, rag: bool) -> list[str]:
        """Everything rule report_main makes."""
        files = [f for table in MAIN_TABLES for f in self.report_table(table)]
        files += [f for fig in FIGURES for f in self.figure(fig)]
        files += [self.correlation(fig) for fig in CORRELATION_FIGURES]
        if rag:
            files += self.report_table("rag_musique")
        return files + [self.report("index.md")]

    def ablation_report_files(self) -> list[str]:
        """Everything rule report_ablation makes."""
        return self.report_table("table3") + [self.report("ablation_index.md")]

    def lora_control_report_files(self) -> list[str]:
        """Everything rule report_lora_control makes."""
        return self.report_table("lora_control")
