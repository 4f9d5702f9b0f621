"""Orchestration of one cell's evaluation, probes, dynamics and RAG jobs: load once, run the tasks, write results.

Every summary file carries the cell, the settings hash and the code commit; per-sample rows go beside it as
`<task>.samples.jsonl`. Files are written atomically, samples first, summary last: a summary on disk means the
whole task finished.
"""
from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write, provenance, read_jsonl, write_json, write_jsonl
from ..model.collate import Collator
from ..model.load import load_trained
from ..paths import samples_of
from ..settings import CellEvalSettings
from . import tasks
from .controls import Bootstrap

log = logging.getLogger(__name__)


def _cap(records: list, n: int) -> list:
    return records[:n] if n else records


def _load(final_dir: str, compressor_dir: str | None = None, head_file: str | None = None,
          gpus: int | None = None):
    # gpus: the job's eval_resources.gpu; more than one shards compressor and decoder over them
    model, comp_tok, dec_tok, meta = load_trained(final_dir, compressor_dir=compressor_dir, head_file=head_file,
                                                  gpus=gpus)
    seg = meta["run"].segment
    collate = Collator(comp_tok, dec_tok, seg.segment_tokens, seg.continuation_tokens)
    return model, collate, meta


def _write_task(path: str, task: str, summary: dict, rows: list[dict], params: dict, prov: dict) -> None:
    samples = samples_of(path)
    write_jsonl(samples, rows)
    write_json(path, {"task": task, **summary, "cell": params["cell"], "samples": Path(samples).name,
                      "provenance": prov})
    ctrl = {k: c.get("value") for k, c in summary.get("controls", {}).items()}
    log.info("%s: %s = %s %s (n=%d), controls %s", task, summary["metric"], summary["value"], summary["ci95"],
             summary["n"], ctrl)


def evaluate_and_probe_cell(settings: CellEvalSettings | Mapping, inputs: dict[str, str],
                            outputs: dict[str, str]) -> dict:
    """Rule evaluate_cell: every evaluation task and both probes of one cell, its models loaded once.

    outputs: those of evaluate_cell, plus `probes` and `probes_samples` (probe_cell's `probes` and `samples`).
    The probes run after the tasks, so the tasks see the same seeded RNG as a job of their own.
    """
    run = CellEvalSettings.of(settings)
    loaded = _load(inputs["model"], gpus=run.gpus)
    results = evaluate_cell(run, inputs, outputs, loaded=loaded)
    probes = probe_cell(run, inputs, {"probes": outputs["probes"], "samples": outputs["probes_samples"]},
                        loaded=loaded)
    return {**results, "erank": probes["erank"], "entropy_mean": probes["entropy_mean"]}


def evaluate_cell(settings: CellEvalSettings | Mapping, inputs: dict[str, str], outputs: dict[str, str],
                  loaded: tuple | None = None) -> dict:
    """All Table-2 measurements of one cell, each with its interval and controls, plus rank truncation.

    loaded: (model, collate, meta) of this cell from `_load`, when the caller has loaded it already."""
    run = CellEvalSettings.of(settings)
    params = run.to_dict()  # the rule's params: what the results' provenance records and hashes
    ev = run.evaluate
    bs, max_seg, cap = ev.batch_size, run.segment.max_segments, ev.max_records
    torch.manual_seed(run.seed)
    model, collate, meta = loaded or _load(inputs["model"], gpus=run.gpus)
    prov = provenance(params)
    prov["model_settings_hash"] = meta["provenance"].get("settings_hash")
    results: dict[str, float] = {}
    t0 = time.time()
    boot = Bootstrap.of(run)

    summary, rows = tasks.reconstruction(model, collate, _cap(read_jsonl(inputs["fineweb"]), cap), bs,
                                         ev.recon_max_new_tokens, boot=boot, controls=True)
    _write_task(outputs["recon_fineweb"], "recon_fineweb", summary, rows, params, prov)
    results["recon_fineweb"] = summary["value"]

    ko = {name: _cap(read_jsonl(inputs[name]), cap) for name in ("faitheval", "conflictqa")}
    for name, recs in ko.items():
        summary, rows = tasks.knowledge_overwriting(model, collate, recs, bs, max_seg, boot=boot, controls=True)
        _write_task(outputs[f"ko_{name}"], f"ko_{name}", summary, rows, params, prov)
        results[f"ko_{name}"] = summary["value"]

    for name in ("fineweb", "faitheval"):
        qrows = read_jsonl(inputs[f"sd_{name}"])
        summary, rows = tasks.semantic_drift(model, collate, qrows, bs, max_seg, ev.answer_max_new_tokens,
                                             boot=boot, controls=True)
        _write_task(outputs[f"sd_{name}"], f"sd_{name}", summary, rows, params, prov)
        results[f"sd_{name}"] = summary["value"]

    if "rag" in outputs:
        results["rag_musique"] = rag_cell(run, inputs, outputs["rag"], loaded=(model, collate))["em"]

    trunc = tasks.rank_truncation(model, collate, ko, list(ev.truncation_energy), bs, max_seg, boot)
    write_json(outputs["truncation"], {**trunc, "cell": params["cell"], "provenance": prov})
    log.info("evaluated %s in %.1f s: %s", run.cell.path, time.time() - t0, results)
    return results


def probe_cell(settings: CellEvalSettings | Mapping, inputs: dict[str, str], outputs: dict[str, str],
               loaded: tuple | None = None) -> dict:
    """erank of Z over a FineWeb batch; teacher-forced entropy per FineWeb chunk and per FaithEval context.

    A context's entropy covers the segments its semantic-drift questions are answered from: the first
    `segment.max_segments` compressor segments of the same text (the FineWeb chunk text, the FaithEval context),
    each reconstructed from its own memory, token-weighted over the segments (rows carry `segments`).
    loaded: as for evaluate_cell.
    """
    from .probes import context_entropy, probe_batch

    run = CellEvalSettings.of(settings)
    ev = run.evaluate
    model, collate, meta = loaded or _load(inputs["model"], gpus=run.gpus)
    device = next(model.parameters()).device
    fineweb = read_jsonl(inputs["fineweb"])
    faith = [{"id": r["id"], "text": r["context"]} for r in read_jsonl(inputs["faitheval"])]
    cap = ev.max_records
    sets = {"fineweb": _cap(fineweb, cap), "faitheval": _cap(faith, cap)}
    k = ev.probe_batch_size
    er_batch = collate(fineweb[:k])
    er = probe_batch(model, {key: v.to(device) if torch.is_tensor(v) else v for key, v in er_batch.items()},
                     ev.entropy_vocab_chunk)
    max_seg = run.segment.max_segments
    rows = []
    for source, recs in sets.items():
        res = context_entropy(model, collate, [r["text"] for r in recs], max_seg, ev.batch_size,
                              ev.entropy_vocab_chunk)
        rows += [{"context_id": c["id"], "source": source, "entropy": e, "n_tokens": n, "segments": s}
                 for c, (e, n, s) in zip(recs, res)]
    by_source = {s: sum(r["entropy"] for r in rows if r["source"] == s) / max(1, sum(r["source"] == s for r in rows))
                 for s in sets}
    write_jsonl(outputs["samples"], rows)
    out = {"erank": er["erank"], "erank_batch": er["batch"], "erank_shape": list(er["z"].shape),
           "entropy_mean": sum(r["entropy"] for r in rows) / max(1, len(rows)), "entropy_by_source": by_source,
           "max_segments": max_seg, "cell": run.to_dict()["cell"], "provenance": provenance(run.to_dict())}
    write_json(outputs["probes"], out)
    return out


DYNAMICS_COLUMNS = ["step", "erank", "entropy", "ko_faitheval", "ko_conflictqa"]


def _margin(row: dict) -> float:
    """Log-likelihood of the context's answer minus the best other candidate (> 0: the memory wins)."""
    scores, k = row["loglik_sum"], row["correct_index"]
    others = [s for j, s in enumerate(scores) if j != k]
    return float(scores[k] - max(others)) if others else float("nan")


def probe_dynamics(settings: CellEvalSettings | Mapping, inputs: dict[str, str], outputs: dict[str, str]
                   ) -> list[dict]:
    """Knowledge-overwriting accuracy at every probe checkpoint of the dynamics run, beside its erank/entropy.

    outputs: `checkpoints` (CSV, one row per probe checkpoint: step, erank, entropy, ko_faitheval, ko_conflictqa)
    and `samples` (JSONL rows {step, task, id, correct, margin}); samples first, the CSV last."""
    run = CellEvalSettings.of(settings)
    cap, bs = run.evaluate.max_records, run.evaluate.batch_size
    max_seg = run.segment.max_segments
    with open(inputs["dynamics"], newline="") as fh:
        probes = {int(r["step"]): r for r in csv.DictReader(fh)}
    ckpts = sorted(p for p in Path(inputs["probe_checkpoints"]).glob("step_*") if p.is_dir())
    if not ckpts:
        raise FileNotFoundError(f"{inputs['probe_checkpoints']}: no probe checkpoints (was this run trained with "
                                "train.keep_probe_checkpoints, i.e. as the dynamics run?)")
    unprobed = [p.name for p in ckpts if int(p.name.split("_")[1]) not in probes]
    if unprobed:
        raise ValueError(f"{inputs['dynamics']}: no erank/entropy row for probe checkpoint(s) {unprobed[:5]} of "
                         f"{inputs['probe_checkpoints']} (outputs of different runs?)")
    ko = {name: _cap(read_jsonl(inputs[name]), cap) for name in ("faitheval", "conflictqa")}
    rows, samples = [], []
    for p in ckpts:
        step = int(p.name.split("_")[1])
        comp_dir = p / "compressor_lora" if (p / "compressor_lora").exists() else p / "compressor"
        model, collate, _ = _load(inputs["model"], compressor_dir=str(comp_dir), head_file=str(p / "head.pt"),
                                  gpus=run.gpus)
        row: dict[str, Any] = {"step": step, "erank": float(probes[step]["erank"]),
                               "entropy": float(probes[step]["entropy"])}
        for name, recs in ko.items():
            summary, per = tasks.knowledge_overwriting(model, collate, recs, bs, max_seg)
            row[f"ko_{name}"] = summary["value"]
            samples += [{"step": step, "task": f"ko_{name}", "id": r["id"], "correct": bool(r["correct"]),
                         "margin": _margin(r)} for r in per]
        rows.append(row)
        log.info("dynamics @%d: %s", step, row)
        del model
    write_jsonl(outputs["samples"], samples)
    with atomic_write(outputs["checkpoints"], newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=DYNAMICS_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return rows


def rag_cell(settings: CellEvalSettings | Mapping, inputs: dict[str, str], out_json: str,
             loaded: tuple | None = None) -> dict:
    """Downstream RAG on MuSiQue (EM/F1) with compressed retrieved passages."""
    from .rag import musique_rag

    run = CellEvalSettings.of(settings)
    ev = run.evaluate
    model, collate = loaded if loaded else _load(inputs["model"], gpus=run.gpus)[:2]
    recs = _cap(read_jsonl(inputs["musique"]), ev.max_records)
    boot = Bootstrap.of(run)
    summary, rows = musique_rag(model, collate, recs, ev.rag.top_k, ev.batch_size, ev.answer_max_new_tokens,
                                boot.resamples, boot.seed)
    samples = samples_of(out_json)
    write_jsonl(samples, rows)
    write_json(out_json, {**summary, "cell": run.to_dict()["cell"], "provenance": provenance(run.to_dict())})
    return summary
