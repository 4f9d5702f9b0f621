"""Fake but well-formed result files for report tests (not a conftest: import it where needed).

`write_results(out)` builds a run with 2 families x 2 sizes x 2 ratios under decoder "dec" (one cell, `MISSING`,
has no files at all), a dynamics cell, ablation cells, and returns what the report builders need. Values are
chosen so that "best" is known: within a family and ratio the *smaller* compressor has higher QA accuracy and the
*larger* one higher reconstruction BLEU (the paper's paradox), except where a test says otherwise.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

MODELS = {
    "qwen-s": {"family": "Qwen3", "size": "0.6B", "params_b": 0.6},
    "qwen-l": {"family": "Qwen3", "size": "4B", "params_b": 4.0},
    "llama-s": {"family": "LLaMA-3.2", "size": "1B", "params_b": 1.0},
    "llama-l": {"family": "LLaMA-3.2", "size": "3B", "params_b": 3.0},
    "dec": {"family": "LLaMA-3", "size": "8B", "params_b": 8.0},
    "dec_b": {"family": "Qwen3", "size": "8B", "params_b": 8.0},
}
COMPRESSORS = ["qwen-s", "qwen-l", "llama-s", "llama-l"]
RATIOS = [4, 16]
DECODER = "dec"
MAIN_CELLS = [f"{DECODER}/{c}/r{r}" for c in COMPRESSORS for r in RATIOS]
MISSING = f"{DECODER}/llama-l/r16"
DYNAMICS_CELL = f"{DECODER}/qwen-s/r16"
ABLATION_CELLS = [f"{d}/{c}/r16" for d in ("dec", "dec_b") for c in ("qwen-s", "qwen-l", "llama-s")]
TASKS = ["recon_fineweb", "ko_faitheval", "ko_conflictqa", "sd_fineweb", "sd_faitheval"]
FIGURES = ["fig1_centre", "fig2_loss", "fig3a_erank_size", "fig3b_erank_steps", "fig3c_erank_ko",
           "fig4a_entropy_size", "fig4b_entropy_steps", "fig4c_entropy_drift", "figG2_rank_truncation"]
N_CONTEXTS = 6
COMMIT = "c0ffee" + "0" * 34


def value(cell: str, task: str) -> float:
    """The fixture's deterministic score for a cell and task (0-1)."""
    dec, comp, r = cell.split("/")
    p = MODELS[comp]["params_b"]
    ratio_pen = 0.05 * math.log2(int(r[1:]) / 4)
    dec_bonus = 0.02 if dec == "dec_b" else 0.0
    t = TASKS.index(task)
    if task == "recon_fineweb":
        return round(0.30 + 0.05 * math.log(p + 1) - ratio_pen + dec_bonus, 6)
    return round(0.70 - 0.04 * math.log(p + 1) - ratio_pen - 0.03 * t + dec_bonus, 6)


def _prov(cell: str) -> dict:
    return {"commit": COMMIT, "settings_hash": hashlib.sha256(cell.encode()).hexdigest(), "dirty": False}


def _cell(cell: str) -> dict:
    d, c, r = cell.split("/")
    return {"decoder": d, "compressor": c, "ratio": int(r[1:])}


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_cell(out: Path, cell: str, rag: bool = True) -> None:
    """All result files of one cell."""
    ev, pr, tr = out / "eval" / cell, out / "probes" / cell, out / "train" / cell
    seed = sum(map(ord, cell))
    for task in TASKS:
        details: dict = {}
        if task.startswith("ko_"):
            details = {"accuracy_sum": value(cell, task), "accuracy_norm": value(cell, task)}
        elif task.startswith("sd_"):
            details = {"per_dimension": {"entity": value(cell, task)}, "answerable_accuracy": value(cell, task),
                       "unanswerable_accuracy": value(cell, task)}
        else:
            details = {"signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
                       "score_100": 100 * value(cell, task)}
        _json(ev / f"{task}.json", {"task": task, "metric": "bleu" if task.startswith("recon") else "accuracy",
                                    "value": value(cell, task), "n": 24, "details": details, "cell": _cell(cell),
                                    "provenance": _prov(cell)})
    for task, src in (("sd_fineweb", "fineweb"), ("sd_faitheval", "faitheval")):
        rows = []
        for i in range(N_CONTEXTS):
            for q in range(2):
                rows.append({"context_id": f"{src}-{i}", "qid": f"{src}-{i}-{q}", "dimension": "entity",
                             "answerable": q == 0, "question": "?", "gold": "x" if q == 0 else None,
                             "prediction": "x", "correct": bool((i + q + seed) % 3)})
        _jsonl(ev / f"{task}.samples.jsonl", rows)
    energies = [0.5, 0.9, 0.99]
    _json(ev / "rank_truncation.json", {
        "energies": energies,
        "results": [{"energy": e, "ko_faitheval": round(value(cell, "ko_faitheval") * e, 6),
                     "ko_conflictqa": round(value(cell, "ko_conflictqa") * e, 6), "mean_rank": 4 * e}
                    for e in energies],
        "full_rank": {"ko_faitheval": value(cell, "ko_faitheval"), "ko_conflictqa": value(cell, "ko_conflictqa")},
        "cell": _cell(cell), "provenance": _prov(cell)})
    if rag:
        _json(ev / "rag_musique.json", {"em": 0.2, "f1": 0.3 + 0.01 * (seed % 7), "n": 24, "cell": _cell(cell),
                                        "provenance": _prov(cell)})
    p = MODELS[_cell(cell)["compressor"]]["params_b"]
    k = 0.1 * (seed % 5)
    _json(pr / "probes.json", {"erank": 10.0 / (1 + p), "erank_batch": 16, "entropy_mean": 3.0 - 0.3 * p,
                               "entropy_by_source": {"fineweb": 3.1 - 0.3 * p, "faitheval": 2.9 - 0.3 * p},
                               "cell": _cell(cell), "provenance": _prov(cell)})
    _jsonl(pr / "entropy.samples.jsonl",
           [{"context_id": f"{src}-{i}", "source": src, "entropy": 2.0 + 0.1 * i + 0.05 * ((seed + i) % 4),
             "n_tokens": 64} for src in ("fineweb", "faitheval") for i in range(N_CONTEXTS)])
    _csv(tr / "loss.csv", ["step", "loss", "loss_re", "loss_nt", "lr", "grad_norm", "tokens_per_s", "elapsed_s"],
         [[s, 5 / (1 + s / 20) + k, 3 / (1 + s / 20) + k, 2 / (1 + s / 20), 1e-3, 1.0, 1000.0, s * 0.1]
          for s in range(0, 121, 10)])
    _json(tr / "summary.json", {"steps": 120, "final_loss": 2.1, "cell": _cell(cell), "provenance": _prov(cell),
                                "shuffle_gap": {"loss_own_z": 2.1, "loss_shuffled_z": 3.0, "gap": 0.9}})


def write_dynamics(out: Path, cell: str, n_checkpoints: int = 8) -> None:
    """Probe checkpoints with an erank that rises, peaks at step 60, then falls together with KO accuracy."""
    rows, trows = [], []
    for k in range(n_checkpoints):
        step = 20 * k
        er = 10 - abs(step - 60) / 10
        rows.append([step, er, 4.0 - step / 100, 0.3 + 0.03 * er, 0.2 + 0.02 * er + 0.001 * k])
        trows.append([step, er + 0.5, 4.1 - step / 100])
    _csv(out / "dynamics" / cell / "checkpoints.csv", ["step", "erank", "entropy", "ko_faitheval", "ko_conflictqa"],
         rows)
    _csv(out / "train" / cell / "dynamics.csv", ["step", "erank", "entropy"], trows)


def main_outputs(out: Path, rag: bool = True) -> list[str]:
    """The main report files, as the workflow's main_report_outputs() lists them."""
    r = out / "report"
    names = [f"{p}.{e}" for p in ("table2", "rank_truncation", "training") for e in ("md", "csv", "tex")]
    names += [f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")]
    names += [f"rag_musique.{e}" for e in ("md", "csv", "tex")] if rag else []
    return [str(r / n) for n in names + ["index.md"]]


def ablation_outputs(out: Path) -> list[str]:
    r = out / "report"
    return [str(r / f"table3.{e}") for e in ("md", "csv", "tex")] + [str(r / "ablation_index.md")]


def write_results(out: Path, rag: bool = True, n_checkpoints: int = 8) -> dict:
    """Write the whole fake run under `out` and return builder arguments and expected outputs."""
    out = Path(out)
    for cell in dict.fromkeys(MAIN_CELLS + ABLATION_CELLS):
        if cell != MISSING:
            write_cell(out, cell, rag=rag)
    write_dynamics(out, DYNAMICS_CELL, n_checkpoints)
    return {"out": str(out), "cells": list(MAIN_CELLS), "dynamics_cell": DYNAMICS_CELL, "models": dict(MODELS),
            "ablation_cells": list(ABLATION_CELLS), "main_outputs": main_outputs(out, rag),
            "ablation_outputs": ablation_outputs(out)}
