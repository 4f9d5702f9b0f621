"""Semantic-drift question generation: DeepSeek-R1 (any OpenAI-compatible endpoint) or an offline heuristic writes
per-context questions over seven dimensions, validated against the context, cached, and reported."""
from .run import generate_questions
from .schema import DIMENSIONS, UNANSWERABLE

__all__ = ["generate_questions", "DIMENSIONS", "UNANSWERABLE"]
