"""Orchestration of one cell's evaluation, probes, dynamics and RAG jobs: load once, run the tasks, write results.

Every summary file carries the cell, the settings hash and the code commit; per-sample rows go beside it as
`<task>.samples.jsonl`. Files are written atomically, samples first, summary last: a summary on disk means the
whole task finished.
"""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write, provenance, read_jsonl, write_json, write_jsonl
from ..model.collate import Collator
from ..model.load import load_trained
from ..paths import samples_of
from . import tasks

log = logging.getLogger(__name__)


def _cap(records: list, n: int) -> list:
    return records[:n] if n else records


def _load(final_dir: str, compressor_dir: str | None = None, head_file: str | None = None,
          gpus: int | None = None):
    # gpus: the job's eval_resources.gpu; more than one shards compressor and decoder over them
    model, comp_tok, dec_tok, meta = load_trained(final_dir, compressor_dir=compressor_dir, head_file=head_file,
                                                  gpus=gpus)
    seg = meta["settings"]["segment"]
    collate = Collator(comp_tok, dec_tok, seg["segment_tokens"], seg["continuation_tokens"])
    return model, collate, meta


def _write_task(path: str, task: str, summary: dict, rows: list[dict], settings: dict, prov: dict) -> None:
    samples = samples_of(path)
    write_jsonl(samples, rows)
    write_json(path, {"task": task, **summary, "cell": settings["cell"], "samples": Path(samples).name,
                      "provenance": prov})
    log.info("%s: %s = %.4f (n=%d)", task, summary["metric"], summary["value"], summary["n"])


def evaluate_cell(settings: dict, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    """All Table-2 measurements of one cell plus rank truncation."""
    ev = settings["evaluate"]
    bs, max_seg, cap = ev["batch_size"], settings["segment"].get("max_segments", 4), ev.get("max_records", 0)
    torch.manual_seed(settings["seed"])
    model, collate, meta = _load(inputs["model"], gpus=settings.get("gpus"))
    prov = provenance(settings)
    prov["model_settings_hash"] = meta["provenance"].get("settings_hash")
    results: dict[str, float] = {}
    t0 = time.time()

    summary, rows = tasks.reconstruction(model, collate, _cap(read_jsonl(inputs["fineweb"]), cap), bs,
                                         ev["recon_max_new_tokens"])
    _write_task(outputs["recon_fineweb"], "recon_fineweb", summary, rows, settings, prov)
    results["recon_fineweb"] = summary["value"]

    ko = {name: _cap(read_jsonl(inputs[name]), cap) for name in ("faitheval", "conflictqa")}
    for name, recs in ko.items():
        summary, rows = tasks.knowledge_overwriting(model, collate, recs, bs, max_seg)
        _write_task(outputs[f"ko_{name}"], f"ko_{name}", summary, rows, settings, prov)
        results[f"ko_{name}"] = summary["value"]

    for name in ("fineweb", "faitheval"):
        qrows = read_jsonl(inputs[f"sd_{name}"])
        summary, rows = tasks.semantic_drift(model, collate, qrows, bs, max_seg, ev["answer_max_new_tokens"])
        _write_task(outputs[f"sd_{name}"], f"sd_{name}", summary, rows, settings, prov)
        results[f"sd_{name}"] = summary["value"]

    if "rag" in outputs:
        results["rag_musique"] = rag_cell(settings, inputs, outputs["rag"], loaded=(model, collate))["em"]

    trunc = tasks.rank_truncation(model, collate, ko, ev.get("truncation_energy", [0.5, 0.9, 0.99]), bs, max_seg)
    write_json(outputs["truncation"], {**trunc, "cell": settings["cell"], "provenance": prov})
    log.info("evaluated %s in %.1f s: %s", settings["cell"], time.time() - t0, results)
    return results


def probe_cell(settings: dict, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    """erank of Z over a FineWeb batch; teacher-forced entropy per FineWeb chunk and per FaithEval context."""
    from .probes import probe_batch

    ev = settings["evaluate"]
    model, collate, meta = _load(inputs["model"], gpus=settings.get("gpus"))
    device = next(model.parameters()).device
    fineweb = read_jsonl(inputs["fineweb"])
    faith = [{"id": r["id"], "text": r["context"]} for r in read_jsonl(inputs["faitheval"])]
    cap = ev.get("max_records", 0)
    sets = {"fineweb": _cap(fineweb, cap), "faitheval": _cap(faith, cap)}
    k = ev["probe_batch_size"]
    er_batch = collate(fineweb[:k])
    er = probe_batch(model, {key: v.to(device) if torch.is_tensor(v) else v for key, v in er_batch.items()},
                     ev.get("entropy_vocab_chunk", 16384))
    rows = []
    for source, recs in sets.items():
        for r in tasks.batches(len(recs), ev["batch_size"]):
            chunk = [recs[i] for i in r]
            b = collate(chunk)  # entropy of reconstructing each text's first segment from its memory
            res = probe_batch(model, {key: v.to(device) if torch.is_tensor(v) else v for key, v in b.items()},
                              ev.get("entropy_vocab_chunk", 16384))
            rows += [{"context_id": c["id"], "source": source, "entropy": e, "n_tokens": n}
                     for c, e, n in zip(chunk, res["entropy"], res["n_tokens"])]
    by_source = {s: sum(r["entropy"] for r in rows if r["source"] == s) / max(1, sum(r["source"] == s for r in rows))
                 for s in sets}
    write_jsonl(outputs["samples"], rows)
    out = {"erank": er["erank"], "erank_batch": er["batch"], "erank_shape": list(er["z"].shape),
           "entropy_mean": sum(r["entropy"] for r in rows) / max(1, len(rows)), "entropy_by_source": by_source,
           "cell": settings["cell"], "provenance": provenance(settings)}
    write_json(outputs["probes"], out)
    return out


def probe_dynamics(settings: dict, inputs: dict[str, str], out_csv: str) -> list[dict]:
    """Knowledge-overwriting accuracy at every probe checkpoint of the dynamics cell, beside its erank/entropy."""
    ev = settings["evaluate"]
    cap, bs = ev.get("max_records", 0), ev["batch_size"]
    max_seg = settings["segment"].get("max_segments", 4)
    probes = {int(r["step"]): r for r in csv.DictReader(open(inputs["dynamics"]))}
    ckpts = sorted(p for p in Path(inputs["probe_checkpoints"]).glob("step_*") if p.is_dir())
    if not ckpts:
        raise FileNotFoundError(f"{inputs['probe_checkpoints']}: no probe checkpoints (was this cell trained with "
                                "dynamics probes?)")
    ko = {name: _cap(read_jsonl(inputs[name]), cap) for name in ("faitheval", "conflictqa")}
    rows = []
    for p in ckpts:
        step = int(p.name.split("_")[1])
        comp_dir = p / "compressor_lora" if (p / "compressor_lora").exists() else p / "compressor"
        model, collate, _ = _load(inputs["model"], compressor_dir=str(comp_dir), head_file=str(p / "head.pt"),
                                 gpus=settings.get("gpus"))
        row: dict[str, Any] = {"step": step, "erank": float(probes.get(step, {}).get("erank", "nan")),
                               "entropy": float(probes.get(step, {}).get("entropy", "nan"))}
        for name, recs in ko.items():
            row[f"ko_{name}"] = tasks.knowledge_overwriting(model, collate, recs, bs, max_seg)[0]["value"]
        rows.append(row)
        log.info("dynamics @%d: %s", step, row)
    with atomic_write(out_csv, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["step", "erank", "entropy", "ko_faitheval", "ko_conflictqa"])
        w.writeheader()
        w.writerows(rows)
    return rows


def rag_cell(settings: dict, inputs: dict[str, str], out_json: str, loaded: tuple | None = None) -> dict:
    """Downstream RAG on MuSiQue (EM/F1) with compressed retrieved passages."""
    from .rag import musique_rag

    ev = settings["evaluate"]
    model, collate = loaded if loaded else _load(inputs["model"], gpus=settings.get("gpus"))[:2]
    recs = _cap(read_jsonl(inputs["musique"]), ev.get("max_records", 0))
    summary, rows = musique_rag(model, collate, recs, ev.get("rag", {}).get("top_k", 5), ev["batch_size"],
                                ev["answer_max_new_tokens"])
    samples = samples_of(out_json)
    write_jsonl(samples, rows)
    write_json(out_json, {**summary, "cell": settings["cell"], "provenance": provenance(settings)})
    return summary
