"""Fake but contract-conforming result files for report tests (not a conftest: import it where needed).

`write_results(out)` builds a run with 2 families x 2 sizes x 2 ratios under decoder "dec" (one cell, `MISSING`,
has no files at all), a separately trained dynamics cell, ablation cells and a LoRA-control cell, and returns what
the report builders need. The files follow the result-file contract (value, ci95, bootstrap, controls, details,
per-sample rows); every summary value is the mean of its per-sample rows, so a test can recompute it.

Designed facts a test can rely on:
- within a family and ratio the *smaller* compressor answers better and the *larger* one reconstructs better;
- `INDISTINGUISHABLE` lists (cell, task, control) whose control flag is false, `AT_CHANCE` the KO entries whose
  interval includes chance; every other flag is true and every other interval is above chance;
- context ids collide across sources ("ctx-0" is a FineWeb chunk and a FaithEval context) with different entropy
  and drift accuracy per source, so a join that ignores `source` gives wrong numbers;
- the dynamics cell's erank rises to a peak at checkpoint `PEAK_INDEX`, then falls together with KO accuracy.
"""
from __future__ import annotations

import atexit
import csv
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

MODELS = {
    "qwen-s": {"family": "Qwen3", "size": "0.6B", "params_b": 0.6},
    "qwen-l": {"family": "Qwen3", "size": "4B", "params_b": 4.0},
    "qwen-l-lora": {"family": "Qwen3", "size": "4B", "params_b": 4.0},
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
LORA_PAIRS = [(f"{DECODER}/qwen-l-lora/r16", f"{DECODER}/qwen-l/r16")]
TASKS = ["recon_fineweb", "ko_faitheval", "ko_conflictqa", "sd_fineweb", "sd_faitheval"]
SOURCES = ["fineweb", "faitheval"]
DIMENSIONS = ["main_topic", "entity_list", "coreference"]
FIGURES = ["fig1_centre", "fig2_loss", "fig3a_erank_size", "fig3b_erank_steps", "fig3c_erank_ko",
           "fig4a_entropy_size", "fig4b_entropy_steps", "fig4c_entropy_drift", "figG2_rank_truncation"]
CORRELATIONS = ["fig3c_erank_ko", "fig4c_entropy_drift"]
N_ITEMS = 200            # KO questions / reconstruction segments per cell
N_CONTEXTS = 12          # semantic-drift contexts per source
Q_PER_CONTEXT = 4        # questions per context: 3 answerable (one per dimension) + 1 unanswerable
N_CHECKPOINTS = 30
PROBE_EVERY = 20
PEAK_INDEX = 3
N_DYN_ITEMS = 50         # KO questions per task at each dynamics checkpoint
CI_HALF = 0.04
COMMIT = "c0ffee" + "0" * 34
BOOT = {"resamples": 1000, "seed": 1234}

#: (cell, task, control) entries whose control is NOT distinguishable (diff interval includes 0).
INDISTINGUISHABLE = {("dec/qwen-l/r4", "sd_fineweb", "shuffled_z"), ("dec/llama-s/r16", "ko_faitheval", "no_memory")}
#: KO entries whose interval includes chance.
AT_CHANCE = {("dec/llama-s/r16", "ko_conflictqa")}
CHANCE = 0.25


def value(cell: str, task: str) -> float:
    """The designed score for a cell and task; the files hold the nearest k / N_ITEMS (see `stored_value`)."""
    dec, comp, r = cell.split("/")
    p = MODELS[comp]["params_b"]
    ratio_pen = 0.05 * math.log2(int(r[1:]) / 4)
    dec_bonus = 0.02 if dec == "dec_b" else 0.0
    lora_pen = 0.06 if comp.endswith("-lora") else 0.0
    t = TASKS.index(task)
    if task == "recon_fineweb":
        return 0.30 + 0.05 * math.log(p + 1) - ratio_pen + dec_bonus - lora_pen
    if (cell, task) in AT_CHANCE:
        return CHANCE + 0.01
    return 0.70 - 0.04 * math.log(p + 1) - ratio_pen - 0.03 * t + dec_bonus - lora_pen


def _seed(*parts: object) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def correct_flags(cell: str, task: str, n: int) -> list[bool]:
    """round(value * n) correct answers at positions fixed by the cell (paired across cells by position)."""
    k = round(value(cell, task) * n)
    hits = set(random.Random(_seed(cell, task)).sample(range(n), k))
    return [i in hits for i in range(n)]


def stored_value(cell: str, task: str) -> float:
    """The `value` field the fixture writes for an accuracy task: the mean of its per-sample rows."""
    n = N_ITEMS if task.startswith("ko_") else N_CONTEXTS * Q_PER_CONTEXT
    return sum(correct_flags(cell, task, n)) / n


def _prov(cell: str) -> dict:
    return {"commit": COMMIT, "settings_hash": hashlib.sha256(cell.encode()).hexdigest(), "dirty": False}


def _cell(cell: str) -> dict:
    d, c, r = cell.split("/")
    return {"decoder": d, "compressor": c, "ratio": int(r[1:])}


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, allow_nan=False))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def interval(v: float, half: float = CI_HALF) -> list[float]:
    return [round(max(0.0, v - half), 6), round(min(1.0, v + half), 6)]


def _control(cell: str, task: str, name: str, v: float) -> dict:
    """A control measured at v - 0.2 (distinguishable) or v - 0.01 (not), with a matching diff interval."""
    same = (cell, task, name) in INDISTINGUISHABLE
    c = v - (0.01 if same else 0.2)
    diff = [-0.03, 0.05] if same else [0.15, 0.25]
    return {"value": c, "ci95": interval(c), "diff_ci95": diff, "distinguishable": not same}


def _summary(cell: str, task: str, v: float, n: int, unit: str, details: dict) -> dict:
    controls = {"shuffled_z": _control(cell, task, "shuffled_z", v)}
    if task.startswith("ko_"):
        controls["no_memory"] = _control(cell, task, "no_memory", v)
        controls["chance"] = {"value": CHANCE}
    ci = interval(v, 0.02 if task.startswith("recon") else CI_HALF)
    if (cell, task) in AT_CHANCE:
        ci = [CHANCE - 0.04, v + 0.04]
    return {"task": task, "metric": "bleu" if task.startswith("recon") else "accuracy", "value": v, "n": n,
            "ci95": ci, "bootstrap": {**BOOT, "unit": unit}, "controls": controls, "details": details,
            "cell": _cell(cell), "samples": f"{task}.samples.jsonl", "provenance": _prov(cell)}


def recon_texts(cell: str) -> tuple[list[str], list[str]]:
    """References and reconstructions: item i is verbatim unless the cell's dice drop some of its words."""
    rng = random.Random(_seed(cell, "recon"))
    keep = value(cell, "recon_fineweb")
    refs, hyps = [], []
    for i in range(N_ITEMS):
        words = [f"w{i}x{j}" for j in range(12)]
        refs.append(" ".join(words))
        hyps.append(" ".join(w if rng.random() < keep + 0.3 else "zz" for w in words))
    return refs, hyps


def sd_rows(cell: str, task: str) -> list[dict]:
    src = task.split("_", 1)[1]
    flags = correct_flags(cell, task, N_CONTEXTS * Q_PER_CONTEXT)
    rows = []
    for i in range(N_CONTEXTS):
        for q in range(Q_PER_CONTEXT):
            answerable = q < len(DIMENSIONS)
            rows.append({"context_id": f"ctx-{i}", "qid": f"{src}-{i}-{q}",
                         "dimension": DIMENSIONS[q] if answerable else "unanswerable", "answerable": answerable,
                         "question": "?", "gold": "x" if answerable else None, "prediction": "x",
                         "correct": flags[i * Q_PER_CONTEXT + q]})
    return rows


def _acc(flags: list[bool]) -> dict:
    v = sum(flags) / len(flags)
    return {"value": v, "ci95": interval(v, 0.1), "n": len(flags)}


def entropy_of(cell: str, source: str, i: int) -> float:
    """Designed per-context entropy: FaithEval contexts sit 1 nat above FineWeb chunks of the same id."""
    return 2.0 + 0.1 * i + 0.05 * (_seed(cell) % 4) + (1.0 if source == "faitheval" else 0.0)


def write_cell(out: Path, cell: str, rag: bool = True) -> None:
    """All result files of one cell."""
    ev, pr, tr = out / "eval" / cell, out / "probes" / cell, out / "train" / cell
    refs, hyps = recon_texts(cell)
    from sacrebleu.metrics import BLEU  # the reference implementation of the headline number
    bleu = BLEU().corpus_score(hyps, [refs]).score / 100
    _jsonl(ev / "recon_fineweb.samples.jsonl", [{"id": f"seg-{i}", "reference": r, "hypothesis": h}
                                                for i, (r, h) in enumerate(zip(refs, hyps))])
    _json(ev / "recon_fineweb.json", _summary(cell, "recon_fineweb", bleu, N_ITEMS, "sample",
                                              {"score_100": 100 * bleu}))
    for task in ("ko_faitheval", "ko_conflictqa"):
        flags = correct_flags(cell, task, N_ITEMS)
        v = sum(flags) / N_ITEMS
        _jsonl(ev / f"{task}.samples.jsonl", [{"id": f"q{i}", "correct": c, "correct_norm": c, "margin": 1.0}
                                              for i, c in enumerate(flags)])
        _json(ev / f"{task}.json", _summary(cell, task, v, N_ITEMS, "sample",
                                            {"accuracy_norm": {"value": v, "ci95": interval(v)}}))
    for task in ("sd_fineweb", "sd_faitheval"):
        rows = sd_rows(cell, task)
        _jsonl(ev / f"{task}.samples.jsonl", rows)
        flags = [r["correct"] for r in rows]
        per_dim = {d: _acc([r["correct"] for r in rows if r["dimension"] == d]) for d in DIMENSIONS}
        per_dim["unanswerable"] = _acc([r["correct"] for r in rows if not r["answerable"]])
        details = {"answerable": _acc([r["correct"] for r in rows if r["answerable"]]),
                   "unanswerable": per_dim["unanswerable"], "per_dimension": per_dim,
                   "em": {"value": sum(flags) / len(flags) - 0.01, "ci95": interval(sum(flags) / len(flags))}}
        _json(ev / f"{task}.json", _summary(cell, task, sum(flags) / len(flags), len(flags), "context", details))
    energies = [0.5, 0.9, 0.99]
    ko = {t: stored_value(cell, t) for t in ("ko_faitheval", "ko_conflictqa")}
    _json(ev / "rank_truncation.json", {
        "energies": energies,
        "results": [{"variant": variant, "energy": e, **{t: round(v * e * scale, 6) for t, v in ko.items()},
                     "mean_rank": 4 * e * scale} for variant, scale in (("per_sample", 1.0), ("batch", 0.5))
                    for e in energies],
        "full_rank": dict(ko), "cell": _cell(cell), "provenance": _prov(cell)})
    if rag:
        _json(ev / "rag_musique.json", {"em": 0.2, "f1": 0.3 + 0.01 * (_seed(cell) % 7), "n": 24,
                                        "cell": _cell(cell), "provenance": _prov(cell)})
        _jsonl(ev / "rag_musique.samples.jsonl", [{"id": "m0", "em": 0.0, "f1": 0.3}])
    p = MODELS[_cell(cell)["compressor"]]["params_b"]
    ent = [{"context_id": f"ctx-{i}", "source": src, "entropy": entropy_of(cell, src, i), "n_tokens": 64,
            "segments": 1 + (i % 2)} for src in SOURCES for i in range(N_CONTEXTS)]
    _jsonl(pr / "entropy.samples.jsonl", ent)
    by_src = {s: sum(r["entropy"] for r in ent if r["source"] == s) / N_CONTEXTS for s in SOURCES}
    _json(pr / "probes.json", {"erank": 10.0 / (1 + p), "erank_batch": 16, "erank_shape": [16, 8, 32],
                               "entropy_mean": sum(r["entropy"] for r in ent) / len(ent), "entropy_by_source": by_src,
                               "cell": _cell(cell), "provenance": _prov(cell)})
    k = 0.1 * (_seed(cell) % 5)
    _csv(tr / "loss.csv", ["step", "loss", "loss_re", "loss_nt", "lr", "grad_norm", "tokens_per_s", "elapsed_s"],
         [[s, loss_at(cell, s), 3 / (1 + s / 20) + k, 2 / (1 + s / 20), 1e-3, 1.0, 1000.0, s * 0.1]
          for s in range(0, 121, 10)])
    _json(tr / "summary.json", {"steps": 120, "final_loss": 2.1, "final_loss_re": 1.2 + k, "final_loss_nt": 0.9,
                                "cell": _cell(cell), "provenance": _prov(cell),
                                "shuffle_gap": {"loss_own_z": 2.1 + k, "loss_shuffled_z": 3.0 + k, "gap": 0.9}})


def loss_at(cell: str, step: int) -> float:
    """Total training loss of a cell at a step (loss.csv)."""
    return 5 / (1 + step / 20) + 0.1 * (_seed(cell) % 5)


def dyn_erank(k: int) -> float:
    """erank at checkpoint k: rises to the peak at PEAK_INDEX, then falls linearly."""
    return 10.0 - abs(k - PEAK_INDEX) * (1.0 if k < PEAK_INDEX else 0.2)


def dyn_correct(task: str, k: int) -> list[bool]:
    """KO correctness at checkpoint k: accuracy follows erank after the peak (plus a task offset)."""
    acc = 0.3 + 0.04 * dyn_erank(k) + (0.05 if task == "ko_faitheval" else 0.0)
    n_right = round(acc * N_DYN_ITEMS)
    hits = set(random.Random(_seed(task, k)).sample(range(N_DYN_ITEMS), n_right))
    return [i in hits for i in range(N_DYN_ITEMS)]


def write_dynamics(out: Path, cell: str, n_checkpoints: int = N_CHECKPOINTS, samples: bool = True) -> None:
    """The separate dynamics run: dynamics/<cell>/{checkpoints.csv, checkpoints.samples.jsonl, train/...}."""
    d = out / "dynamics" / cell
    rows, trows, srows = [], [], []
    for k in range(n_checkpoints):
        step = PROBE_EVERY * (k + 1)
        accs = {}
        for task in ("ko_faitheval", "ko_conflictqa"):
            flags = dyn_correct(task, k)
            accs[task] = sum(flags) / len(flags)
            srows += [{"step": step, "task": task, "id": f"q{i}", "correct": c, "margin": 1.0 if c else -1.0}
                      for i, c in enumerate(flags)]
        rows.append([step, dyn_erank(k), 4.0 - step / 1000, accs["ko_faitheval"], accs["ko_conflictqa"]])
        trows.append([step, dyn_erank(k) + 0.5, 4.1 - step / 1000])
    _csv(d / "checkpoints.csv", ["step", "erank", "entropy", "ko_faitheval", "ko_conflictqa"], rows)
    if samples:
        _jsonl(d / "checkpoints.samples.jsonl", srows)
    _csv(d / "train" / "dynamics.csv", ["step", "erank", "entropy"], trows)
    _csv(d / "train" / "loss.csv", ["step", "loss", "loss_re", "loss_nt"],
         [[s, 5 / (1 + s / 20), 3 / (1 + s / 20), 2 / (1 + s / 20)] for s in range(0, 601, 20)])


def report_files(out: Path, rag: bool = True) -> list[str]:
    """The main report files, as ctxcomp.paths.RunPaths.main_report_files() lists them."""
    r = out / "report"
    tables = ("table2", "sd_breakdown", "rank_truncation", "training")
    names = [f"{p}.{e}" for p in tables for e in ("md", "csv", "tex")]
    names += [f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")]
    names += [f"{f}.correlation.csv" for f in CORRELATIONS]
    names += [f"rag_musique.{e}" for e in ("md", "csv", "tex")] if rag else []
    return [str(r / n) for n in names + ["index.md"]]


main_outputs = report_files


def ablation_outputs(out: Path) -> list[str]:
    r = out / "report"
    return [str(r / f"table3.{e}") for e in ("md", "csv", "tex")] + [str(r / "ablation_index.md")]


def lora_outputs(out: Path) -> list[str]:
    return [str(out / "report" / f"lora_control.{e}") for e in ("md", "csv", "tex")]


#: One written copy of the fake run per (rag, n_checkpoints) in this process: later calls copy it, which is much
#: cheaper than recomputing every file (each mutant of the mutation benchmark runs in a fork of a process that has
#: already written it once).
_TEMPLATES: dict[tuple[bool, int], Path] = {}


def _template(rag: bool, n_checkpoints: int) -> Path:
    key = (rag, n_checkpoints)
    if key not in _TEMPLATES or not _TEMPLATES[key].is_dir():
        root = Path(tempfile.mkdtemp(prefix="ctxcomp-results-fixture-"))
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(root, ignore_errors=True))
        cells = MAIN_CELLS + ABLATION_CELLS + [c for pair in LORA_PAIRS for c in pair]
        for cell in dict.fromkeys(cells):
            if cell != MISSING:
                write_cell(root, cell, rag=rag)
        write_dynamics(root, DYNAMICS_CELL, n_checkpoints)
        _TEMPLATES[key] = root
    return _TEMPLATES[key]


def write_results(out: Path, rag: bool = True, n_checkpoints: int = N_CHECKPOINTS) -> dict:
    """Write the whole fake run under `out` and return builder arguments and expected outputs."""
    out = Path(out)
    shutil.copytree(_template(rag, n_checkpoints), out, dirs_exist_ok=True)
    return {"out": str(out), "cells": list(MAIN_CELLS), "dynamics_cell": DYNAMICS_CELL, "models": dict(MODELS),
            "ablation_cells": list(ABLATION_CELLS), "lora_pairs": list(LORA_PAIRS),
            "main_outputs": main_outputs(out, rag), "ablation_outputs": ablation_outputs(out),
            "lora_outputs": lora_outputs(out)}
