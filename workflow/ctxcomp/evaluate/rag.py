"""Downstream RAG on MuSiQue with compressed passages: retrieve, compress each passage, answer from the memories.

Retrieval is lexical and deterministic (idf-weighted overlap of normalised question and passage words within the
question's own 20 candidate paragraphs), so differences between cells come from compression alone. The decoder
answers after the memories of the retrieved passages (concatenated in rank order) with the semantic-drift answer
prompt (evaluate/prompts.py), up to the first newline; EM and F1 are SQuAD's, best over the gold aliases.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from ..metrics import bootstrap as bs
from ..metrics import qa as qa_m
from ..model.collate import CLEAN_UP, Collator
from ..model.compressor import ContextCompressor
from .decoding import batches, compress_texts, greedy_generate
from .prompts import answer_prompt_ids, prompt_kind


def retrieve(question: str, passages: Sequence[dict], k: int) -> list[int]:
    """Indices of the k passages with the highest idf-weighted word overlap with the question (ties: input order).

    score(p) = sum over distinct normalised question words w in p of log((n + 1) / (df(w) + 0.5)), n passages,
    df(w) = passages containing w (titles included).
    """
    docs = [set(qa_m.normalize_answer(f"{p.get('title', '')} {p['text']}").split()) for p in passages]
    df = Counter(w for d in docs for w in d)
    n = len(docs)
    q = set(qa_m.normalize_answer(question).split())
    scores = [sum(math.log((n + 1) / (df[w] + 0.5)) for w in q & d) for d in docs]
    return sorted(range(n), key=lambda i: (-scores[i], i))[:k]


def musique_rag(model: ContextCompressor, collate: Collator, records: Sequence[dict], top_k: int, batch_size: int,
                max_new_tokens: int, resamples: int = bs.DEFAULT_RESAMPLES, seed: int = 0) -> tuple[dict, list[dict]]:
    """EM/F1 of answers from the compressed top-k passages; supporting_recall = retrieved supporting passages over
    all supporting passages. Summary intervals: percentile bootstrap over questions."""
    tok = collate.dec_tok
    rows, zs, picks = [], [], []
    for r in records:
        idx = retrieve(r["question"], r["passages"], top_k)
        texts = [f"{r['passages'][i].get('title', '')}. {r['passages'][i]['text']}" for i in idx]
        zs.append(torch.cat(compress_texts(model, collate, texts, 1, batch_size), dim=0))
        picks.append(idx)
    newline = set(tok("\n", add_special_tokens=False)["input_ids"])
    for b in batches(len(records), batch_size):
        out = greedy_generate(model, [zs[i] for i in b],
                              [answer_prompt_ids(tok, records[i]["question"]) for i in b], max_new_tokens,
                              tok.eos_token_id, "continue")
        for i, ids in zip(b, out):
            cut = next((k for k, t in enumerate(ids) if t in newline), len(ids))
            pred = tok.decode(ids[:cut], skip_special_tokens=True,
                              clean_up_tokenization_spaces=CLEAN_UP).split("\n", 1)[0].strip()
            r = records[i]
            support = [j for j, p in enumerate(r["passages"]) if p.get("is_supporting")]
            rows.append({"id": r["id"], "prediction": pred, "answers": r["answers"], "retrieved": picks[i],
                         "supporting_retrieved": len(set(support) & set(picks[i])),
                         "em": qa_m.max_over_golds(qa_m.exact_match, pred, r["answers"]),
                         "f1": qa_m.max_over_golds(qa_m.f1, pred, r["answers"])})
    n = max(1, len(rows))
    em = bs.interval(bs.flag_stats([r["em"] for r in rows]), bs.ratio, resamples, seed)
    f1 = bs.interval(bs.flag_stats([r["f1"] for r in rows]), bs.ratio, resamples, seed)
    summary = {"em": sum(r["em"] for r in rows) / n, "f1": sum(r["f1"] for r in rows) / n, "n": len(rows),
               "em_ci95": em["ci95"], "f1_ci95": f1["ci95"], "top_k": top_k, "prompt": prompt_kind(tok),
               "supporting_recall": sum(r["supporting_retrieved"] for r in rows) /
               max(1, sum(sum(bool(p.get("is_supporting")) for p in rec["passages"]) for rec in records))}
    return summary, rows


musique_rag = torch.no_grad()(musique_rag)  # not a decorator: mutmut skips decorated functions
