"""The `questions:` config section as a typed object with defaults, so every other module reads one validated shape.

The pipeline's schema validates the section, but `generate_questions` is also called directly (tests, notebooks) with
partial dicts; every key therefore has a default here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from .schema import DIMENSIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuestionSettings:
    backend: str = "openai"
    base_url: str = "https://api.deepseek.com"
    model: str = "deepseek-reasoner"
    api_key_env: str = "DEEPSEEK_API_KEY"
    prompt_version: str = "v1"
    per_context: int = 20
    unanswerable_per_context: int = 4
    temperature: float = 0.6
    max_tokens: int = 8192
    timeout_s: float = 600.0
    max_retries: int = 5
    max_attempts: int = 3
    concurrency: int = 4
    requests_per_minute: Optional[float] = None
    price_input_per_mtok: Optional[float] = None
    price_output_per_mtok: Optional[float] = None
    retry_backoff_s: float = 1.0
    min_success_fraction: float = 0.95

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

    @classmethod
    def from_cfg(cls, qcfg: dict | None) -> "QuestionSettings":
        """Build settings from the config dict; missing keys take defaults, nonsense values raise ValueError."""
        qcfg = dict(qcfg or {})
        price = qcfg.pop("price_per_mtok", None) or {}
        qcfg.pop("contexts", None)  # used by the Snakefile to size each question set, not here
        known = set(cls.__dataclass_fields__) - {"price_input_per_mtok", "price_output_per_mtok"}
        kwargs: dict[str, Any] = {k: v for k, v in qcfg.items() if k in known and v is not None}
        unknown = sorted(set(qcfg) - known)
        if unknown:
            log.warning("ignoring unknown questions settings: %s", ", ".join(unknown))
        s = cls(**kwargs, price_input_per_mtok=price.get("input"), price_output_per_mtok=price.get("output"))
        s.check()
        return s

    def check(self) -> None:
        if self.backend not in ("openai", "offline"):
            raise ValueError(f"questions.backend must be 'openai' or 'offline', got {self.backend!r}")
        if self.per_context < 1:
            raise ValueError("questions.per_context must be >= 1")
        if not 0 <= self.unanswerable_per_context <= self.per_context:
            raise ValueError("questions.unanswerable_per_context must be between 0 and per_context "
                             f"({self.unanswerable_per_context} vs {self.per_context})")
        if self.max_attempts < 1 or self.concurrency < 1 or self.max_retries < 0:
            raise ValueError("questions.max_attempts and concurrency must be >= 1, max_retries >= 0")
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            raise ValueError("questions.requests_per_minute must be > 0")
        if not 0 <= self.min_success_fraction <= 1:
            raise ValueError(f"questions.min_success_fraction must be between 0 and 1, got {self.min_success_fraction}")
