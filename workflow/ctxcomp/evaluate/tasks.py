"""The paper's per-cell measurements, each a function of (model, data) returning a summary and per-sample rows.

Prompts (ours; the paper does not print them): after the memory and the <continue> marker the decoder reads
    "Question: {question}\nAnswer:"
Knowledge overwriting scores each candidate " {candidate}" by its summed log-probability after that prompt (and by
the mean per token, stored as `accuracy_norm`); the prediction is the argmax, correct when it is the counterfactual
(context) answer. Semantic drift generates greedily after the same prompt, up to the first newline.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Sequence

import torch
from tqdm import tqdm

from ..metrics import bleu as bleu_m
from ..metrics import qa as qa_m
from ..model.collate import Collator
from ..model.compressor import ContextCompressor
from .decoding import batches, compress_texts, greedy_generate, score_continuations

log = logging.getLogger(__name__)
PROMPT = "Question: {question}\nAnswer:"


def _prompt_ids(tok: Any, question: str) -> list[int]:
    return tok(PROMPT.format(question=question.strip()), add_special_tokens=False)["input_ids"]


def _progress(it, desc: str):
    return tqdm(it, desc=desc, mininterval=10, leave=False)


# ------------------------------------------------------------------------------------------------ reconstruction
@torch.no_grad()
def reconstruction(model: ContextCompressor, collate: Collator, records: Sequence[dict], batch_size: int,
                   max_new_tokens: int) -> tuple[dict, list[dict]]:
    """Greedy reconstruction of each FineWeb segment from its memory; BLEU(reference=original, hypothesis=output)."""
    dec_tok = collate.dec_tok
    refs, hyps, rows = [], [], []
    for r in _progress(batches(len(records), batch_size), "reconstruct"):
        recs = [records[i] for i in r]
        segs = [collate.comp_segments(x["text"])[0] for x in recs]
        texts = [collate.segment_text(s) for s in segs]
        zs = compress_texts(model, collate, texts, 1, batch_size)
        out = greedy_generate(model, zs, [[] for _ in recs], max_new_tokens, dec_tok.eos_token_id, "reconstruct")
        for rec, ref, ids in zip(recs, texts, out):
            hyp = dec_tok.decode(ids, skip_special_tokens=True)
            refs.append(ref)
            hyps.append(hyp)
            rows.append({"id": rec["id"], "reference": ref, "hypothesis": hyp,
                         "sentence_bleu": bleu_m.sentence_bleu(hyp, ref), "new_tokens": len(ids)})
    corpus = bleu_m.corpus_bleu(hyps, refs)
    summary = {"metric": "bleu", "value": corpus["score"], "n": len(rows),
               "details": {"signature": corpus["signature"], "score_100": corpus["score_100"],
                           "mean_sentence_bleu": sum(r["sentence_bleu"] for r in rows) / max(1, len(rows))}}
    return summary, rows


# ----------------------------------------------------------------------------------------- knowledge overwriting
@torch.no_grad()
def knowledge_overwriting(model: ContextCompressor, collate: Collator, records: Sequence[dict], batch_size: int,
                          max_segments: int, zs: Sequence[torch.Tensor] | None = None) -> tuple[dict, list[dict]]:
    """Multiple choice from the compressed counterfactual context; accuracy = argmax is the context's answer."""
    tok = collate.dec_tok
    if zs is None:
        zs = compress_texts(model, collate, [r["context"] for r in records], max_segments, batch_size)
    pairs = [(i, j) for i, r in enumerate(records) for j in range(len(r["candidates"]))]
    prompts = [_prompt_ids(tok, r["question"]) for r in records]
    scores: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for b in _progress(batches(len(pairs), batch_size), "knowledge"):
        chunk = [pairs[k] for k in b]
        conts = [tok(" " + records[i]["candidates"][j].strip(), add_special_tokens=False)["input_ids"]
                 for i, j in chunk]
        lp, n = score_continuations(model, [zs[i] for i, _ in chunk], [prompts[i] for i, _ in chunk], conts)
        for (i, _), s, k in zip(chunk, lp, n):
            scores[i].append((s, k))
    rows, hits_sum, hits_norm = [], [], []
    for i, r in enumerate(records):
        s_sum = [s for s, _ in scores[i]]
        s_norm = [s / max(k, 1) for s, k in scores[i]]
        pred_sum = max(range(len(s_sum)), key=s_sum.__getitem__)
        pred_norm = max(range(len(s_norm)), key=s_norm.__getitem__)
        hits_sum.append(pred_sum == r["correct_index"])
        hits_norm.append(pred_norm == r["correct_index"])
        rows.append({"id": r["id"], "correct_index": r["correct_index"], "loglik_sum": s_sum, "loglik_norm": s_norm,
                     "pred_sum": pred_sum, "pred_norm": pred_norm, "correct": hits_sum[-1],
                     "correct_norm": hits_norm[-1], "memory_vectors": int(zs[i].shape[0])})
    summary = {"metric": "accuracy", "value": qa_m.accuracy(hits_sum), "n": len(rows),
               "details": {"accuracy_sum": qa_m.accuracy(hits_sum), "accuracy_norm": qa_m.accuracy(hits_norm),
                           "chance": sum(1 / len(r["candidates"]) for r in records) / max(1, len(records))}}
    return summary, rows


# ---------------------------------------------------------------------------------------------- semantic drift
@torch.no_grad()
def semantic_drift(model: ContextCompressor, collate: Collator, question_rows: Sequence[dict], batch_size: int,
                   max_segments: int, max_new_tokens: int) -> tuple[dict, list[dict]]:
    """Answers generated from [Z; question]; exact match for answerable questions, abstention for the others."""
    tok = collate.dec_tok
    ok = [r for r in question_rows if r.get("status") == "ok" and r.get("questions")]
    zs = compress_texts(model, collate, [r["context"] for r in ok], max_segments, batch_size)
    items = [(i, q) for i, r in enumerate(ok) for q in r["questions"]]
    newline = set(tok("\n", add_special_tokens=False)["input_ids"])
    rows = []
    for b in _progress(batches(len(items), batch_size), "drift"):
        chunk = [items[k] for k in b]
        out = greedy_generate(model, [zs[i] for i, _ in chunk], [_prompt_ids(tok, q["question"]) for _, q in chunk],
                              max_new_tokens, tok.eos_token_id, "continue")
        for (i, q), ids in zip(chunk, out):
            cut = next((k for k, t in enumerate(ids) if t in newline), len(ids))
            pred = tok.decode(ids[:cut], skip_special_tokens=True).strip()
            rows.append({"context_id": ok[i]["context_id"], "qid": q["qid"], "dimension": q["dimension"],
                         "answerable": q["answerable"], "question": q["question"], "gold": q["answer"],
                         "prediction": pred, "correct": qa_m.drift_correct(pred, q["answer"], q["answerable"])})
    by_dim: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_dim[r["dimension"]].append(r["correct"])
    ans = [r["correct"] for r in rows if r["answerable"]]
    unans = [r["correct"] for r in rows if not r["answerable"]]
    summary = {"metric": "accuracy", "value": qa_m.accuracy([r["correct"] for r in rows]) if rows else float("nan"),
               "n": len(rows),
               "details": {"per_dimension": {d: qa_m.accuracy(v) for d, v in sorted(by_dim.items())},
                           "answerable_accuracy": qa_m.accuracy(ans) if ans else float("nan"),
                           "unanswerable_accuracy": qa_m.accuracy(unans) if unans else float("nan"),
                           "contexts": len(ok), "failed_contexts": len(question_rows) - len(ok)}}
    return summary, rows


# ---------------------------------------------------------------------------------------------- rank truncation
@torch.no_grad()
def rank_truncation(model: ContextCompressor, collate: Collator, datasets: dict[str, Sequence[dict]],
                    energies: Sequence[float], batch_size: int, max_segments: int) -> dict:
    """Knowledge overwriting re-scored with each memory truncated to its top singular directions (App. G.2)."""
    from ..metrics.truncation import truncate_energy

    full, results = {}, []
    zs = {name: compress_texts(model, collate, [r["context"] for r in recs], max_segments, batch_size)
          for name, recs in datasets.items()}
    for name, recs in datasets.items():
        full[f"ko_{name}"] = knowledge_overwriting(model, collate, recs, batch_size, max_segments, zs[name])[0]["value"]
    for e in energies:
        row: dict[str, Any] = {"energy": e}
        ranks = []
        for name, recs in datasets.items():
            cut = []
            for z in zs[name]:
                zt, k = truncate_energy(z.float(), e)
                cut.append(zt.to(z.dtype))
                ranks.append(float(k))
            row[f"ko_{name}"] = knowledge_overwriting(model, collate, recs, batch_size, max_segments, cut)[0]["value"]
        row["mean_rank"] = sum(ranks) / max(1, len(ranks))
        results.append(row)
    return {"energies": list(energies), "results": results, "full_rank": full}
