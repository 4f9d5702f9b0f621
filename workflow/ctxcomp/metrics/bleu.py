"""Reconstruction BLEU (paper Table 2, "Reconstr."): how much of the original segment survives compression.

Definition: sacreBLEU corpus BLEU with default settings (13a tokenizer, exponential smoothing, n-gram order 4),
reference = the original text, hypothesis = the decoder's reconstruction from the memory Z. Direction: higher is
better (1.0 = verbatim reconstruction). Scores are reported on a 0-1 scale (sacreBLEU's score / 100) next to the
raw 0-100 score and sacreBLEU's signature, so the number can be reproduced with the `sacrebleu` command line.
"""
from __future__ import annotations

from sacrebleu.metrics import BLEU


def corpus_bleu(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU of reconstructions (`hypotheses`) against originals (`references`), one reference each.

    Returns {"score": BLEU/100 in [0, 1], "score_100": sacreBLEU's score, "signature": sacreBLEU's signature
    string, "n": number of segments}. Higher is better.
    """
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    metric = BLEU()
    result = metric.corpus_score(hypotheses, [references])
    return {
        "score": float(result.score) / 100.0,
        "score_100": float(result.score),
        "signature": str(metric.get_signature()),
        "n": len(hypotheses),
    }


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """Sentence BLEU on the 0-1 scale (sacreBLEU, effective order as its sentence-level default). Higher is better.

    Used for per-sample diagnostics only; the headline number is always `corpus_bleu`.
    """
    metric = BLEU(effective_order=True)
    return float(metric.sentence_score(hypothesis, [reference]).score) / 100.0
