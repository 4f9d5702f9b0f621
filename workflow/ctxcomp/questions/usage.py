"""Thread-safe tallies of requests, cache hits, tokens and cost for the run report."""
from __future__ import annotations

import threading

from .settings import QuestionSettings


def reply_tokens(usage: dict | None) -> dict:
    """prompt/completion/reasoning tokens from an OpenAI-style usage block (reasoning is part of completion)."""
    usage = usage or {}
    details = usage.get("completion_tokens_details") or {}
    return {
        "prompt": int(usage.get("prompt_tokens") or 0),
        "completion": int(usage.get("completion_tokens") or 0),
        "reasoning": int(details.get("reasoning_tokens") or usage.get("reasoning_tokens") or 0),
    }


class Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests_sent = 0  # HTTP requests, retries included
        self.retries = 0
        self.cache_hits = 0
        self.tokens = {"prompt": 0, "completion": 0, "reasoning": 0}  # spent by this run
        self.tokens_cached = {"prompt": 0, "completion": 0, "reasoning": 0}  # paid for by an earlier run

    def request(self, retry: bool = False) -> None:
        with self._lock:
            self.requests_sent += 1
            self.retries += int(retry)

    def reply(self, usage: dict | None, cached: bool) -> None:
        tokens = reply_tokens(usage)
        with self._lock:
            if cached:
                self.cache_hits += 1
            target = self.tokens_cached if cached else self.tokens
            for k, v in tokens.items():
                target[k] += v

    @staticmethod
    def cost(tokens: dict, s: QuestionSettings) -> float | None:
        """USD at the configured per-million-token prices; None when prices are not configured."""
        price = s.price_per_mtok
        if price is None or (price.input is None and price.output is None):
            return None
        return round((tokens["prompt"] * (price.input or 0.0) + tokens["completion"] * (price.output or 0.0)) / 1e6,
                     9)
