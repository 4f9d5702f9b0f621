"""The paper's per-cell measurements, each a function of (model, data) returning a summary and per-sample rows.

Every summary holds the headline number (`value`, 0-1), its 95 % percentile bootstrap interval over the task's
units (`ci95`, `bootstrap`) and, with `controls=True`, what it must beat (`controls`, see evaluate/controls.py):
- reconstruction: corpus BLEU/100 of greedy reconstructions against the text the compressor read; unit = segment;
  control shuffled_z (a segment decoded from another segment's memory);
- knowledge overwriting: each candidate scored by its summed log-probability after the KO prompt (and by the mean
  per token, `details.accuracy_norm`); correct when the argmax is the counterfactual (context) answer; unit =
  question; controls shuffled_z, no_memory (the decoder's prior) and chance;
- semantic drift: a greedy answer per question after the answer prompt (evaluate/prompts.py; the decoder's chat
  template where it has one), up to the first newline; an answerable question is right when the answer contains
  the gold span (normalised, whole words; EM in `details.em`), an unanswerable one when the answer abstains in
  words (metrics/qa.py); the headline is the accuracy over all questions (the paper's number), with answerable,
  unanswerable and per-dimension accuracies in `details`; unit = context (its questions are resampled together);
  control shuffled_z (another context's memory, derangement over contexts).
Numbers that cannot be computed (no rows) are None, never NaN.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..metrics import bleu as bleu_m
from ..metrics import bootstrap as bs
from ..metrics import qa as qa_m
from ..model.collate import CLEAN_UP, Collator
from ..model.compressor import ContextCompressor
from ..questions.schema import ALL_DIMENSIONS
from . import controls as ctl
from .decoding import batches, compress_texts, generate_shared, greedy_generate, score_candidates
from .prompts import answer_prompt_ids, ko_prompt_ids, prompt_kind

log = logging.getLogger(__name__)


def _progress(it, desc: str):
    return tqdm(it, desc=desc, mininterval=10, leave=False)


def _decode(tok: Any, ids: Sequence[int]) -> str:
    return tok.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=CLEAN_UP)


def compress_segments(model: ContextCompressor, collate: Collator, segs: Sequence[list[int]],
                      batch_size: int) -> list[torch.Tensor]:
    """The memory (M, d) of each given segment of compressor ids."""
    device = next(model.parameters()).device
    zs: list[torch.Tensor] = []
    for r in batches(len(segs), batch_size):
        ids, mask = collate.compressor_tensors([segs[j] for j in r])
        zs.extend(model.compress(ids.to(device), mask.to(device)))
    return zs


compress_segments = torch.no_grad()(compress_segments)  # not a decorator: mutmut skips decorated functions


def _permuted(zs: Sequence[torch.Tensor], perm: list[int] | None) -> list[torch.Tensor] | None:
    return None if perm is None else [zs[j] for j in perm]


# ------------------------------------------------------------------------------------------------ reconstruction
def reconstruction(model: ContextCompressor, collate: Collator, records: Sequence[dict], batch_size: int,
                   max_new_tokens: int, *, boot: ctl.Bootstrap | None = None,
                   controls: bool = False) -> tuple[dict, list[dict]]:
    """Greedy reconstruction of each FineWeb segment (L compressor tokens of the chunk window) from its memory;
    corpus BLEU with reference = exactly the text the compressor read."""
    boot = boot or ctl.Bootstrap()
    dec_tok = collate.dec_tok
    splits = [collate.window_split(x["text"], x.get("continuation", "")) for x in records]
    refs = [t for _, t, _ in splits]
    zs = compress_segments(model, collate, [s for s, _, _ in splits], batch_size)
    perm = ctl.derangement(len(records), boot.seed) if controls else None

    def generate(memories: Sequence[torch.Tensor], desc: str) -> list[str]:
        out = []
        for r in _progress(batches(len(memories), batch_size), desc):
            ids = greedy_generate(model, [memories[i] for i in r], [[] for _ in r], max_new_tokens,
                                  dec_tok.eos_token_id, "reconstruct")
            out += [(_decode(dec_tok, t), len(t)) for t in ids]
        return out

    hyps = generate(zs, "reconstruct")
    shuffled = generate(_permuted(zs, perm), "reconstruct (shuffled Z)") if perm else None
    rows = []
    for k, (rec, ref, (hyp, n_new)) in enumerate(zip(records, refs, hyps)):
        row = {"id": rec["id"], "reference": ref, "hypothesis": hyp, "sentence_bleu": bleu_m.sentence_bleu(hyp, ref),
               "new_tokens": n_new, "segment_tokens": len(splits[k][0])}
        if shuffled:
            row["shuffled_z"] = {"z_of": records[perm[k]]["id"], "hypothesis": shuffled[k][0],
                                 "sentence_bleu": bleu_m.sentence_bleu(shuffled[k][0], ref)}
        rows.append(row)
    return reconstruction_summary(rows, boot, controls), rows


reconstruction = torch.no_grad()(reconstruction)  # not a decorator: mutmut skips decorated functions


def reconstruction_summary(rows: Sequence[dict], boot: ctl.Bootstrap, controls: bool) -> dict:
    """The reconstruction summary recomputed from its per-segment rows (reference, hypothesis[, shuffled_z])."""
    refs = [r["reference"] for r in rows]
    stats = bs.bleu_unit_stats([r["hypothesis"] for r in rows], refs)
    corpus = bleu_m.corpus_bleu([r["hypothesis"] for r in rows], refs) if rows else {"signature": None,
                                                                                      "score_100": None}
    out = {"metric": "bleu", **ctl.headline(stats, bs.bleu_from_stats, boot, "sample"), "n": len(rows)}
    if controls:
        ctrl = bs.bleu_unit_stats([r["shuffled_z"]["hypothesis"] for r in rows], refs) \
            if rows and "shuffled_z" in rows[0] else None
        out["controls"] = {"shuffled_z": ctl.versus(stats, ctrl, bs.bleu_from_stats, boot)}
    out["details"] = {"signature": corpus["signature"], "score_100": corpus["score_100"],
                      "mean_sentence_bleu": float(np.mean([r["sentence_bleu"] for r in rows])) if rows else None}
    return out


# ----------------------------------------------------------------------------------------- knowledge overwriting
def score_questions(model: ContextCompressor, memories: Sequence[torch.Tensor], prompts: Sequence[list[int]],
               cands: Sequence[list[list[int]]], batch_size: int, desc: str) -> list[list[tuple[float, int]]]:
    """Candidate scores of every question; questions are batched in order of prefix length (less padding)."""
    order = sorted(range(len(prompts)), key=lambda i: (memories[i].shape[0] + len(prompts[i]), i))
    out: list[list[tuple[float, int]]] = [[] for _ in prompts]
    for b in _progress(batches(len(order), batch_size), desc):
        idx = [order[k] for k in b]
        res = score_candidates(model, [memories[i] for i in idx], [prompts[i] for i in idx], [cands[i] for i in idx],
                               max_rows=4 * batch_size)
        for i, r in zip(idx, res):
            out[i] = r
    return out


def _choice(scores: Sequence[tuple[float, int]], correct: int) -> dict:
    s_sum = [s for s, _ in scores]
    s_norm = [s / max(k, 1) for s, k in scores]
    pred_sum = max(range(len(s_sum)), key=s_sum.__getitem__)
    pred_norm = max(range(len(s_norm)), key=s_norm.__getitem__)
    others = [s for j, s in enumerate(s_sum) if j != correct]
    return {"loglik_sum": s_sum, "loglik_norm": s_norm, "pred_sum": pred_sum, "pred_norm": pred_norm,
            "correct": pred_sum == correct, "correct_norm": pred_norm == correct,
            "margin": s_sum[correct] - max(others) if others else None}


def knowledge_overwriting(model: ContextCompressor, collate: Collator, records: Sequence[dict], batch_size: int,
                          max_segments: int, zs: Sequence[torch.Tensor] | None = None, *,
                          boot: ctl.Bootstrap | None = None, controls: bool = False) -> tuple[dict, list[dict]]:
    """Multiple choice from the compressed counterfactual context; accuracy = argmax is the context's answer.

    `margin` per row: log-likelihood of the context answer minus the best other candidate (> 0 iff correct).
    """
    boot = boot or ctl.Bootstrap()
    tok = collate.dec_tok
    if zs is None:
        zs = compress_texts(model, collate, [r["context"] for r in records], max_segments, batch_size)
    prompts = [ko_prompt_ids(tok, r["question"]) for r in records]
    cands = [[tok(" " + c.strip(), add_special_tokens=False)["input_ids"] for c in r["candidates"]] for r in records]
    main = score_questions(model, zs, prompts, cands, batch_size, "knowledge")
    rows = [{"id": r["id"], "correct_index": r["correct_index"], **_choice(s, r["correct_index"]),
             "memory_vectors": int(zs[i].shape[0])} for i, (r, s) in enumerate(zip(records, main))]
    if controls:
        perm = ctl.derangement(len(records), boot.seed)
        if perm:
            shuf = score_questions(model, _permuted(zs, perm), prompts, cands, batch_size, "knowledge (shuffled Z)")
            for i, (row, s) in enumerate(zip(rows, shuf)):
                c = _choice(s, row["correct_index"])
                row["shuffled_z"] = {"z_of": records[perm[i]]["id"], "pred": c["pred_sum"], "correct": c["correct"]}
        prior = score_questions(model, [z[:0] for z in zs], prompts, cands, batch_size, "knowledge (no memory)")
        for row, s in zip(rows, prior):
            c = _choice(s, row["correct_index"])
            row["no_memory"] = {"pred": c["pred_sum"], "correct": c["correct"], "loglik_sum": c["loglik_sum"]}
    return ko_summary(rows, [len(r["candidates"]) for r in records], boot, controls), rows


knowledge_overwriting = torch.no_grad()(knowledge_overwriting)  # not a decorator: mutmut skips decorated functions


def ko_summary(rows: Sequence[dict], n_candidates: Sequence[int], boot: ctl.Bootstrap, controls: bool) -> dict:
    """The knowledge-overwriting summary recomputed from its per-question rows."""
    stats = bs.flag_stats([r["correct"] for r in rows])
    out = {"metric": "accuracy", **ctl.headline(stats, bs.ratio, boot, "sample"), "n": len(rows)}
    if controls:
        entries = {}
        for name in ("shuffled_z", "no_memory"):
            ctrl = bs.flag_stats([r[name]["correct"] for r in rows]) if rows and name in rows[0] else None
            entries[name] = ctl.versus(stats, ctrl, bs.ratio, boot)
        out["controls"] = {**entries, "chance": ctl.chance(n_candidates)}
    norm = bs.interval(bs.flag_stats([r["correct_norm"] for r in rows]), bs.ratio, boot.resamples, boot.seed)
    out["details"] = {"accuracy_norm": norm, "chance": ctl.chance(n_candidates)["value"],
                      "memory_vectors_mean": float(np.mean([r["memory_vectors"] for r in rows])) if rows else None}
    return out


# ---------------------------------------------------------------------------------------------- semantic drift
def _stop_ids(model: ContextCompressor, tok: Any) -> set[int]:
    """EOS, the decoder's own end-of-turn ids (set by the model loader where known) and the newline token."""
    stop = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    stop |= set(getattr(model, "decoder_eos_ids", ()) or ())
    return stop | set(tok("\n", add_special_tokens=False)["input_ids"])


def _answer_text(tok: Any, ids: Sequence[int]) -> str:
    return _decode(tok, ids).split("\n", 1)[0].strip()


def semantic_drift(model: ContextCompressor, collate: Collator, question_rows: Sequence[dict], batch_size: int,
                   max_segments: int, max_new_tokens: int, *, boot: ctl.Bootstrap | None = None,
                   controls: bool = False) -> tuple[dict, list[dict]]:
    """Answers generated from [Z; answer prompt]; see the module docstring for the scoring."""
    boot = boot or ctl.Bootstrap()
    tok = collate.dec_tok
    ok = [r for r in question_rows if r.get("status") == "ok" and r.get("questions")]
    seg_lists = [collate.comp_segments(r["context"], max_segments) for r in ok]
    zs = compress_texts(model, collate, [r["context"] for r in ok], max_segments, batch_size)
    read = [qa_m.normalize_answer(" ".join(collate.segment_text(s) for s in segs)) for segs in seg_lists]
    items = [(i, q) for i, r in enumerate(ok) for q in r["questions"]]
    prompts = [answer_prompt_ids(tok, q["question"]) for _, q in items]
    owner = [i for i, _ in items]
    stop = _stop_ids(model, tok)
    answers = generate_shared(model, zs, prompts, owner, max_new_tokens, stop, "continue", batch_size)
    perm = ctl.derangement(len(ok), boot.seed) if controls else None
    shuffled = generate_shared(model, _permuted(zs, perm), prompts, owner, max_new_tokens, stop, "continue",
                               batch_size) if perm else None
    rows = []
    for k, ((i, q), ids) in enumerate(zip(items, answers)):
        pred = _answer_text(tok, ids)
        gold = q["answer"]
        row = {"context_id": ok[i]["context_id"], "qid": q["qid"], "dimension": q["dimension"],
               "answerable": q["answerable"], "question": q["question"], "gold": gold, "prediction": pred,
               "correct": qa_m.drift_correct(pred, gold, q["answerable"]),
               "em": bool(qa_m.exact_match(pred, gold)) if q["answerable"] else qa_m.is_abstention(pred),
               "abstained": qa_m.is_abstention(pred),
               "gold_in_memory_text": (f" {qa_m.normalize_answer(gold)} " in f" {read[i]} ") if gold else None,
               "segments": len(seg_lists[i])}
        if shuffled:
            spred = _answer_text(tok, shuffled[k])
            row["shuffled_z"] = {"z_of": ok[perm[i]]["context_id"], "prediction": spred,
                                 "correct": qa_m.drift_correct(spred, gold, q["answerable"])}
        rows.append(row)
    summary = drift_summary(rows, boot, controls)
    summary["details"].update({"contexts": len(ok), "failed_contexts": len(question_rows) - len(ok),
                               "prompt": prompt_kind(tok)})
    return summary, rows


semantic_drift = torch.no_grad()(semantic_drift)  # not a decorator: mutmut skips decorated functions


def _by_context(rows: Sequence[dict], control: bool = False) -> np.ndarray:
    """(contexts, 2) stats of correct flags, of the model or of its shuffled-Z control."""
    flags = [r["shuffled_z"]["correct"] if control else r["correct"] for r in rows]
    return bs.cluster_stats(flags, [r["context_id"] for r in rows])


def _part(rows: Sequence[dict], boot: ctl.Bootstrap, key: str = "correct") -> dict:
    flags = [r[key] for r in rows]
    return {**bs.interval(bs.cluster_stats(flags, [r["context_id"] for r in rows]), bs.ratio, boot.resamples,
                          boot.seed), "n": len(rows)}


def drift_summary(rows: Sequence[dict], boot: ctl.Bootstrap, controls: bool) -> dict:
    """The semantic-drift summary recomputed from its per-question rows (cluster bootstrap over contexts)."""
    stats = _by_context(rows)
    out = {"metric": "accuracy", **ctl.headline(stats, bs.ratio, boot, "context"), "n": len(rows)}
    if controls:
        has = bool(rows) and "shuffled_z" in rows[0]
        out["controls"] = {"shuffled_z": ctl.versus(stats, _by_context(rows, control=True) if has else None, bs.ratio,
                                                    boot)}
    dims = {d: _part([r for r in rows if r["dimension"] == d], boot) for d in ALL_DIMENSIONS}
    dims.update({d: _part([r for r in rows if r["dimension"] == d], boot)
                 for d in sorted({r["dimension"] for r in rows}) if d not in dims})
    gold_seen = [r["gold_in_memory_text"] for r in rows if r["answerable"] and r["gold_in_memory_text"] is not None]
    out["details"] = {
        "answerable": _part([r for r in rows if r["answerable"]], boot),
        "unanswerable": _part([r for r in rows if not r["answerable"]], boot),
        "per_dimension": dims,
        "em": {k: v for k, v in _part(rows, boot, "em").items() if k != "n"},
        "abstention_rate": float(np.mean([r["abstained"] for r in rows])) if rows else None,
        "answerable_gold_in_memory_text": float(np.mean(gold_seen)) if gold_seen else None,
    }
    return out


# ---------------------------------------------------------------------------------------------- rank truncation
def rank_truncation(model: ContextCompressor, collate: Collator, datasets: dict[str, Sequence[dict]],
                    energies: Sequence[float], batch_size: int, max_segments: int,
                    boot: ctl.Bootstrap | None = None) -> dict:
    """Knowledge overwriting re-scored with each memory truncated to its top singular directions (App. G.2).

    Two variants (rows carry `variant`, see metrics/truncation.py):
    - "per_sample": each memory Z_i (M·S_i x d) is cut by ITS OWN SVD to the smallest k reaching the energy share;
    - "batch": every segment memory (M x d, flattened to M·d) of the evaluation set is stacked into Z_batch, the
      matrix the effective rank is measured on, and each is projected onto Z_batch's top-k right-singular vectors.
    Per dataset the row holds the accuracy (`ko_<set>`), its interval (`ko_<set>_ci95`) and the kept rank
    (`rank_<set>`: mean k over memories per_sample, the shared k for batch); `mean_rank` averages them.
    """
    from ..metrics.truncation import batch_basis, energy_rank, project, truncate_energy

    boot = boot or ctl.Bootstrap()
    zs = {name: compress_texts(model, collate, [r["context"] for r in recs], max_segments, batch_size)
          for name, recs in datasets.items()}

    def ko(name: str, memories: Sequence[torch.Tensor]) -> dict:
        summary = knowledge_overwriting(model, collate, datasets[name], batch_size, max_segments, memories,
                                        boot=boot)[0]
        return {"value": summary["value"], "ci95": summary["ci95"]}

    M = model.num_memory
    flat = {name: [z.reshape(-1, M * z.shape[-1]) for z in zs[name]] for name in datasets}  # (S_i, M·d)
    basis = {name: batch_basis(torch.cat(flat[name], dim=0)) for name in datasets}
    full = {f"ko_{name}": ko(name, zs[name])["value"] for name in datasets}
    results = []
    for variant in ("per_sample", "batch"):
        for e in energies:
            row: dict[str, Any] = {"variant": variant, "energy": e}
            for name in datasets:
                if variant == "per_sample":
                    cut, ranks = [], []
                    for z in zs[name]:
                        zt, k = truncate_energy(z.float(), e)
                        cut.append(zt.to(z.dtype))
                        ranks.append(float(k))
                    rank = sum(ranks) / max(1, len(ranks))
                else:
                    s, vh = basis[name]
                    k = energy_rank(s, e)
                    cut = [project(f, vh, k).reshape(z.shape) for f, z in zip(flat[name], zs[name])]
                    rank = float(k)
                res = ko(name, cut)
                row[f"ko_{name}"], row[f"ko_{name}_ci95"], row[f"rank_{name}"] = res["value"], res["ci95"], rank
            row["mean_rank"] = sum(row[f"rank_{n}"] for n in datasets) / max(1, len(datasets))
            results.append(row)
    return {"energies": list(energies), "variants": ["per_sample", "batch"], "results": results, "full_rank": full}


rank_truncation = torch.no_grad()(rank_truncation)  # not a decorator: mutmut skips decorated functions
