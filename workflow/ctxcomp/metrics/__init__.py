"""Pure metric functions: BLEU, effective rank, vocabulary entropy, QA scoring, correlations, rank truncation.

Each function documents its definition and direction; none reads files or touches global state.
"""
import importlib
from typing import Any

# Submodule of each public name. Imported on first use: scipy (correlations) alone costs most of a second, and
# every rule script pays its imports once per job.
_WHERE = {
    "corpus_bleu": "bleu", "sentence_bleu": "bleu",
    "correlate": "correlation", "post_peak": "correlation", "post_peak_mask": "correlation",
    "chunked_entropy": "entropy", "entropy_from_logits": "entropy",
    "effective_rank": "erank", "erank_from_singular_values": "erank", "singular_values": "erank",
    "ABSTENTIONS": "qa", "ABSTENTION_PHRASES": "qa", "accuracy": "qa", "contains_answer": "qa",
    "drift_correct": "qa", "exact_match": "qa", "f1": "qa",
    "is_abstention": "qa", "max_over_golds": "qa", "normalize_answer": "qa",
    "truncate_energy": "truncation",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ABSTENTIONS", "ABSTENTION_PHRASES", "accuracy", "chunked_entropy", "contains_answer", "correlate",
    "corpus_bleu", "drift_correct", "effective_rank",
    "entropy_from_logits", "erank_from_singular_values", "exact_match", "f1", "is_abstention", "max_over_golds",
    "normalize_answer", "post_peak", "post_peak_mask", "sentence_bleu", "singular_values", "truncate_energy",
]
