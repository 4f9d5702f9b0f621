"""Semantic-drift question generation: DeepSeek-R1 (any OpenAI-compatible endpoint) or an offline heuristic writes
per-context questions over seven dimensions, validated against the context, cached, and reported.

The package itself exports only the question vocabulary (`schema`), so that readers of question sets (evaluation,
reports) import no client code; the generator is `ctxcomp.questions.run.generate_questions`.
"""
from .schema import DIMENSIONS, UNANSWERABLE

__all__ = ["DIMENSIONS", "UNANSWERABLE"]
