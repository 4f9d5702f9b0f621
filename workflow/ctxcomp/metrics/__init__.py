"""Pure metric functions: BLEU, effective rank, vocabulary entropy, QA scoring, correlations, rank truncation.

Each function documents its definition and direction; none reads files or touches global state.
"""
from .bleu import corpus_bleu, sentence_bleu
from .correlation import correlate, post_peak, post_peak_mask
from .entropy import chunked_entropy, entropy_from_logits
from .erank import effective_rank, erank_from_singular_values, singular_values
from .qa import (ABSTENTIONS, accuracy, drift_correct, exact_match, f1, is_abstention, max_over_golds,
                 normalize_answer)
from .truncation import truncate_energy

__all__ = [
    "ABSTENTIONS", "accuracy", "chunked_entropy", "correlate", "corpus_bleu", "drift_correct", "effective_rank",
    "entropy_from_logits", "erank_from_singular_values", "exact_match", "f1", "is_abstention", "max_over_golds",
    "normalize_answer", "post_peak", "post_peak_mask", "sentence_bleu", "singular_values", "truncate_energy",
]
