"""The `questions:` config section as a typed object, so every other module reads one validated shape.

Defaults come from the schema only: `generate_questions` (the pipeline, tests, notebooks) builds the settings with
`QuestionSettings.from_partial`, which validates the mapping against the `questions` subschema and fills its
defaults; an unknown key, a missing required key or a bad value is a ConfigError naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..config import ConfigError
from ..settings import _Section, build
from .schema import DIMENSIONS


@dataclass(frozen=True)
class Prices(_Section):
    """`questions.price_per_mtok`: USD per million prompt / completion tokens (None: not known)."""

    input: float | None
    output: float | None


@dataclass(frozen=True)
class QuestionSettings(_Section):
    SECTION: ClassVar[str] = "questions"
    backend: Literal["openai", "offline"]
    base_url: str
    model: str
    api_key_env: str
    prompt_version: str
    per_context: int
    unanswerable_per_context: int
    temperature: float
    max_tokens: int
    timeout_s: float
    max_retries: int
    max_attempts: int
    min_success_fraction: float
    concurrency: int
    requests_per_minute: float | None
    retry_backoff_s: float
    price_per_mtok: Prices | None

    def __post_init__(self) -> None:
        if self.unanswerable_per_context > self.per_context:  # the one check across keys the schema cannot make
            raise ConfigError(f"config error at 'questions.unanswerable_per_context': {self.unanswerable_per_context} "
                              f"is more than per_context={self.per_context}")

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> QuestionSettings:
        """Strictly from a validated `questions` mapping; `contexts` (how many contexts each set asks about) is
        read by the Snakefile, not here."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "contexts"}
        return build(cls, data, "questions" if path is None else path)

    @property
    def n_answerable(self) -> int:
        return self.per_context - self.unanswerable_per_context

    @property
    def needs_full_coverage(self) -> bool:
        """Every dimension must appear once only when there are enough answerable slots for all of them."""
        return self.n_answerable >= len(DIMENSIONS)

    @property
    def sampling(self) -> dict:
        """The request parameters that change the reply (and hence belong in the cache key)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    @property
    def model_label(self) -> str:
        return self.model if self.backend == "openai" else "offline-heuristic"
