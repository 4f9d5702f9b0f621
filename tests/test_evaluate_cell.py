"""Evaluation wiring on a saved (untrained) tiny cell: evaluate_and_probe_cell and rag_cell write the contract's
files, and every number in them is recomputed here from the per-sample files with independent tools."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sacrebleu
import torch

from ctxcomp.config import Cell, eval_settings, load_config
from ctxcomp.data import load_conflictqa, load_faitheval, load_musique
from ctxcomp.evaluate import cell as cell_m
from ctxcomp.io import read_jsonl, write_jsonl
from ctxcomp.metrics.entropy import entropy_from_logits
from ctxcomp.model.collate import Collator, pad_id_of, right_pad
from ctxcomp.model.load import build_for_training, load_trained, save_trained
from ctxcomp.paths import EVAL_TASKS
from ctxcomp.settings import CellTrainSettings
from helpers_tiny import ROOT, c4_texts, chunk_records, tiny_env

N = 6


def _strict(path: Path) -> dict:
    """JSON without NaN/Infinity (json.loads would accept them)."""
    def no(c):
        raise AssertionError(f"{path}: {c} in JSON")
    return json.loads(path.read_text(), parse_constant=no)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    env = tiny_env()
    base = tmp_path_factory.mktemp("cell")
    s = env.settings(ratio=8)
    s["segment"].update({"segment_tokens": 32, "continuation_tokens": 16, "max_segments": 2})
    torch.manual_seed(0)
    model, comp_tok, dec_tok = build_for_training(CellTrainSettings.of(s), torch.device("cpu"), torch.float32)
    save_trained(model, comp_tok, dec_tok, base / "final", {"settings": s, "provenance": {"settings_hash": "x"}})
    cfg = load_config(ROOT / "config.yaml", ROOT / "workflow" / "presets" / "tiny.yaml")
    es = eval_settings(cfg, Cell("tiny-llama-dec", "tiny-qwen-s", 8))
    es["segment"] = s["segment"]
    es["evaluate"].update({"max_records": N, "bootstrap_resamples": 200, "truncation_energy": [0.5, 1.0],
                           "batch_size": 4, "probe_batch_size": 4, "recon_max_new_tokens": 12,
                           "answer_max_new_tokens": 6})
    texts = c4_texts(400)
    inputs = {"model": str(base / "final")}
    inputs["fineweb"] = str(base / "fineweb.jsonl")
    write_jsonl(inputs["fineweb"], chunk_records(texts[300:], 200, 120)[:N])
    faith = load_faitheval({"source": "jsonl", "path": "workflow/data/faitheval/test.jsonl", "max_records": N})[0]
    cqa = load_conflictqa({"source": "jsonl", "path": "workflow/data/conflictqa", "parts": ["strategyQA"],
                           "max_records": N})[0]
    mus = load_musique({"source": "jsonl", "path": "workflow/data/musique", "max_records": 3})[0]
    for name, recs in (("faitheval", faith), ("conflictqa", cqa), ("musique", mus)):
        inputs[name] = str(base / f"{name}.jsonl")
        write_jsonl(inputs[name], recs)
    for qset, ctxs in (("fineweb", [(r["id"], r["text"]) for r in read_jsonl(inputs["fineweb"])][:3]),
                       ("faitheval", [(r["id"], r["context"]) for r in faith][:3])):
        rows = [{"context_id": cid, "source": qset, "context": ctx, "status": "ok", "reason": None, "questions": [
            {"qid": f"{cid}-q0", "dimension": "main_topic", "question": "What is it about?",
             "answer": ctx.split()[2], "answerable": True},
            {"qid": f"{cid}-q1", "dimension": "entity_list", "question": "Which name comes first?",
             "answer": ctx.split()[0], "answerable": True},
            {"qid": f"{cid}-q2", "dimension": "unanswerable", "question": "Who paid for it?", "answer": None,
             "answerable": False}]} for cid, ctx in ctxs]
        inputs[f"sd_{qset}"] = str(base / f"sd_{qset}.jsonl")
        write_jsonl(inputs[f"sd_{qset}"], rows)
    out = base / "eval"
    outputs = {t: str(out / f"{t}.json") for t in EVAL_TASKS}
    outputs.update({"truncation": str(out / "rank_truncation.json"), "rag": str(out / "rag_musique.json")})
    probes = {"probes": str(base / "probes" / "probes.json"), "samples": str(base / "probes" / "entropy.samples.jsonl")}
    # the rule's entry: the tasks and the probes from one load of the cell
    results = cell_m.evaluate_and_probe_cell(es, inputs, {**outputs, "probes": probes["probes"],
                                                          "probes_samples": probes["samples"]})
    return {"settings": es, "inputs": inputs, "out": out, "results": results, "probes": probes, "faith": faith}


def test_every_task_file_follows_the_contract(run):
    for task in EVAL_TASKS:
        res = _strict(run["out"] / f"{task}.json")
        assert res["task"] == task and res["samples"] == f"{task}.samples.jsonl"
        assert res["bootstrap"] == {"resamples": 200, "seed": run["settings"]["seed"],
                                    "unit": "context" if task.startswith("sd_") else "sample"}
        lo, hi = res["ci95"]
        assert lo <= res["value"] <= hi
        want = {"shuffled_z", "no_memory", "chance"} if task.startswith("ko_") else {"shuffled_z"}
        assert set(res["controls"]) == want
        for name in want - {"chance"}:
            c = res["controls"][name]
            assert set(c) == {"value", "ci95", "diff_ci95", "distinguishable"}
            assert c["distinguishable"] == (c["diff_ci95"][0] > 0)
        assert run["results"][task] == res["value"]


def test_numbers_recomputed_from_samples(run):
    out = run["out"]
    rec = _strict(out / "recon_fineweb.json")
    rows = read_jsonl(out / "recon_fineweb.samples.jsonl")
    refs = [r["reference"] for r in rows]
    assert rec["value"] == pytest.approx(sacrebleu.corpus_bleu([r["hypothesis"] for r in rows], [refs]).score / 100)
    shuf = sacrebleu.corpus_bleu([r["shuffled_z"]["hypothesis"] for r in rows], [refs]).score / 100
    assert rec["controls"]["shuffled_z"]["value"] == pytest.approx(shuf)
    for task in ("ko_faitheval", "ko_conflictqa"):
        res, rows = _strict(out / f"{task}.json"), read_jsonl(out / f"{task}.samples.jsonl")
        assert len(rows) == res["n"] == N
        for r in rows:
            assert r["pred_sum"] == max(range(len(r["loglik_sum"])), key=r["loglik_sum"].__getitem__)
            assert r["correct"] == (r["pred_sum"] == r["correct_index"])
            assert r["shuffled_z"]["z_of"] != r["id"]
        assert res["value"] == pytest.approx(sum(r["correct"] for r in rows) / N)
        for name in ("shuffled_z", "no_memory"):
            assert res["controls"][name]["value"] == pytest.approx(sum(r[name]["correct"] for r in rows) / N)
        assert res["details"]["accuracy_norm"]["value"] == pytest.approx(sum(r["correct_norm"] for r in rows) / N)
    faith = run["faith"]
    ko = _strict(out / "ko_faitheval.json")
    assert ko["controls"]["chance"]["value"] == pytest.approx(sum(1 / len(r["candidates"]) for r in faith) / N)
    # the prior does not depend on the context: the no-memory prediction of a question is the argmax of its own
    # candidate log-likelihoods without memory
    for r in read_jsonl(out / "ko_faitheval.samples.jsonl"):
        ll = r["no_memory"]["loglik_sum"]
        assert r["no_memory"]["pred"] == max(range(len(ll)), key=ll.__getitem__)
    for task in ("sd_fineweb", "sd_faitheval"):
        res, rows = _strict(out / f"{task}.json"), read_jsonl(out / f"{task}.samples.jsonl")
        assert res["n"] == len(rows) == 9 and res["value"] == pytest.approx(sum(r["correct"] for r in rows) / 9)
        d = res["details"]
        assert d["answerable"]["n"] == 6 and d["unanswerable"]["n"] == 3
        assert d["unanswerable"]["value"] == pytest.approx(
            sum(r["correct"] for r in rows if not r["answerable"]) / 3)
        assert set(d["per_dimension"]) >= {"main_topic", "entity_list", "unanswerable"} and d["prompt"] == "plain"
        assert all(r["shuffled_z"]["z_of"] != r["context_id"] for r in rows)


def test_rank_truncation_variants(run):
    rt = _strict(run["out"] / "rank_truncation.json")
    assert rt["variants"] == ["per_sample", "batch"]
    assert [(r["variant"], r["energy"]) for r in rt["results"]] == [
        ("per_sample", 0.5), ("per_sample", 1.0), ("batch", 0.5), ("batch", 1.0)]
    full = rt["full_rank"]
    for r in rt["results"]:
        if r["energy"] == 1.0:  # every direction kept: the same memories, the same accuracy
            assert r["ko_faitheval"] == full["ko_faitheval"] and r["ko_conflictqa"] == full["ko_conflictqa"]
        assert r["mean_rank"] == pytest.approx((r["rank_faitheval"] + r["rank_conflictqa"]) / 2)
    half = {r["variant"]: r for r in rt["results"] if r["energy"] == 0.5}
    full_rows = {r["variant"]: r for r in rt["results"] if r["energy"] == 1.0}
    assert half["batch"]["rank_faitheval"] < full_rows["batch"]["rank_faitheval"]
    assert half["per_sample"]["rank_faitheval"] < full_rows["per_sample"]["rank_faitheval"]


def test_rag_file(run):
    res = _strict(run["out"] / "rag_musique.json")
    rows = read_jsonl(run["out"] / "rag_musique.samples.jsonl")
    assert res["n"] == len(rows) == 3 and res["top_k"] == 3
    assert res["em"] == pytest.approx(sum(r["em"] for r in rows) / 3)
    assert res["f1"] == pytest.approx(sum(r["f1"] for r in rows) / 3)
    assert all(len(r["retrieved"]) == 3 for r in rows)


def test_probe_entropy_covers_the_drift_segments(run):
    es, inputs = run["settings"], run["inputs"]
    probes = _strict(Path(run["probes"]["probes"]))
    rows = read_jsonl(run["probes"]["samples"])
    assert len(rows) == 2 * N and {r["source"] for r in rows} == {"fineweb", "faitheval"}
    assert probes["entropy_mean"] == pytest.approx(sum(r["entropy"] for r in rows) / len(rows))
    model, comp_tok, dec_tok, meta = load_trained(inputs["model"], device=torch.device("cpu"), dtype=torch.float32)
    L, max_seg = es["segment"]["segment_tokens"], es["segment"]["max_segments"]
    collate = Collator(comp_tok, dec_tok, L, es["segment"]["continuation_tokens"])
    faith_text = {r["id"]: r["context"] for r in run["faith"]}
    for r in rows:
        if r["source"] == "faitheval":
            n_ids = len(comp_tok(faith_text[r["context_id"]], add_special_tokens=False)["input_ids"])
            assert r["segments"] == min(max_seg, math.ceil(n_ids / L))
    # independent reference for one FaithEval context: full-softmax entropy of each segment's reconstruction from
    # its own memory, token-weighted
    r = next(r for r in rows if r["source"] == "faitheval" and r["segments"] == 2)
    ids = comp_tok(faith_text[r["context_id"]], add_special_tokens=False)["input_ids"]
    tot, cnt = 0.0, 0
    for k in range(2):
        seg = ids[k * L:(k + 1) * L]
        cids, cmask = collate.compressor_tensors([seg])
        re_ids, re_mask = right_pad([collate.dec_ids(collate.segment_text(seg), collate.max_recon, eos=True)],
                                    pad_id_of(dec_tok))
        with torch.no_grad():
            z = model.compress(cids, cmask)
            pre = model.prefix(z, "reconstruct")
            logits = model.target_logits(pre, torch.ones(pre.shape[:2], dtype=torch.long), re_ids, re_mask)
        h = entropy_from_logits(logits.double())[0]
        tot += float(h.sum())
        cnt += int(re_mask.sum())
    assert r["n_tokens"] == cnt and r["entropy"] == pytest.approx(tot / cnt, rel=1e-4)
