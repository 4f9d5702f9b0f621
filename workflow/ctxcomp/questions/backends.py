"""Where replies come from: an OpenAI-compatible endpoint (DeepSeek, vLLM, SGLang, Ollama) or the offline heuristic.

Both return the same `Reply`, and both replies go through the same parsing and validation, so the tiny preset and the
tests exercise the code path that the paid run uses.

The endpoint client is built with `max_retries=0` and the configured `timeout`; the retry loop (429, 408/409, 5xx,
timeouts and dropped connections, exponential backoff honouring Retry-After) lives here instead so that every HTTP
attempt waits for the shared rate limiter and is counted in the report.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .cache import ReplyCache, request_key
from .ratelimit import RateLimiter
from .settings import QuestionSettings
from .usage import Tally

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 120.0
#: A shorter "key" is no secret (a local server's placeholder such as `x`): replacing it would mangle ordinary text.
MIN_SECRET_LEN = 8


class EndpointError(RuntimeError):
    """No usable reply for a request (HTTP error after retries, timeout, no choices): that context fails, the run
    goes on."""


@dataclass
class Reply:
    content: str
    reasoning_content: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    usage: dict = field(default_factory=dict)
    cached: bool = False

    def record(self) -> dict:
        out = asdict(self)
        out.pop("cached")
        return out


class Backend(Protocol):
    def complete(self, messages: list[dict], context: dict) -> Reply: ...

    def close(self) -> None: ...


def read_api_key(s: QuestionSettings) -> str:
    """The key from the environment variable named by `api_key_env`; it is only ever handed to the client."""
    key = os.environ.get(s.api_key_env, "").strip()
    if not key:
        raise RuntimeError(f"questions.backend is 'openai' but environment variable {s.api_key_env} "
                           "(named by questions.api_key_env) is not set: export it with the endpoint's API key "
                           "(any non-empty value for a local server that ignores keys)")
    if len(key) < MIN_SECRET_LEN:
        log.warning("%s holds a %d-character value: treated as a placeholder, not as a secret to redact",
                    s.api_key_env, len(key))
    return key


def secret_of(key: str | None) -> str | None:
    """The key as a secret to redact, or None when it is too short to be one."""
    return key if key and len(key) >= MIN_SECRET_LEN else None


def redact(text: str, secret: str | None) -> str:
    """Remove the key from text that may carry it: error reasons (some error bodies echo request headers), log
    lines, provenance. Never applied to result data; a value shorter than MIN_SECRET_LEN is not a secret."""
    secret = secret_of(secret)
    return text.replace(secret, "***") if secret and text else text


class RedactingFilter(logging.Filter):
    """Logging filter that takes the key out of every record a handler emits (the HTTP client logs headers at
    DEBUG level)."""

    def __init__(self, secret: str | None):
        super().__init__()
        self.secret = secret_of(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secret:
            msg = record.getMessage()
            if self.secret in msg:
                record.msg, record.args = redact(msg, self.secret), None
        return True


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name)) * scale
        except (TypeError, ValueError):
            continue
        if 0 <= value <= MAX_BACKOFF_S:
            return value
    return None


class OpenAIBackend:
    """Chat completions through the `openai` client, with the reply cache in front of the network."""

    def __init__(self, s: QuestionSettings, cache: ReplyCache, tally: Tally, limiter: RateLimiter, api_key: str):
        import openai

        self._openai = openai
        self.s = s
        self.cache = cache
        self.tally = tally
        self.limiter = limiter
        self.client = openai.OpenAI(api_key=api_key, base_url=s.base_url, timeout=s.timeout_s, max_retries=0)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock_for(self, key: str) -> threading.Lock:
        """Two workers asking the same question (duplicate contexts) must not both pay for it."""
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def complete(self, messages: list[dict], context: dict) -> Reply:
        request = {"model": self.s.model, "base_url": self.s.base_url, "prompt_version": self.s.prompt_version,
                   "messages": messages, "sampling": self.s.sampling}
        key = request_key(**request)
        with self._lock_for(key):
            hit = self.cache.get(key)
            if hit is not None:
                self.tally.reply(hit.get("usage"), cached=True)
                return Reply(**{k: v for k, v in hit.items() if k in Reply.__dataclass_fields__}, cached=True)
            try:
                reply = self._send(messages)
            except self._openai.OpenAIError as exc:  # retries exhausted or not retryable: this context fails
                raise EndpointError(f"{type(exc).__name__}: {exc}") from exc
            self.cache.put(key, request, reply.record())
            self.tally.reply(reply.usage, cached=False)
            return reply

    def _send(self, messages: list[dict]) -> Reply:
        openai = self._openai
        for attempt in range(self.s.max_retries + 1):
            self.limiter.acquire()
            self.tally.request(retry=attempt > 0)
            try:
                resp = self.client.chat.completions.create(
                    model=self.s.model, messages=messages,
                    temperature=self.s.temperature, max_tokens=self.s.max_tokens)
                return self._reply(resp)
            except openai.APIStatusError as exc:
                if not _retryable(exc.status_code) or attempt == self.s.max_retries:
                    raise
                delay, why = _retry_after(exc.response), f"HTTP {exc.status_code}"
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                if attempt == self.s.max_retries:
                    raise
                delay, why = None, type(exc).__name__
            if delay is None:
                delay = min(self.s.retry_backoff_s * 2 ** attempt, MAX_BACKOFF_S) * random.uniform(0.75, 1.0)
            log.warning("%s from %s; retry %d/%d in %.2fs", why, self.s.base_url, attempt + 1, self.s.max_retries,
                        delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    @staticmethod
    def _reply(resp: Any) -> Reply:
        if not getattr(resp, "choices", None):
            raise EndpointError("the endpoint returned no choices")
        choice = resp.choices[0]
        msg = choice.message
        extra = getattr(msg, "model_extra", None) or {}
        reasoning = getattr(msg, "reasoning_content", None) or extra.get("reasoning_content") or extra.get("reasoning")
        usage = resp.usage.model_dump(exclude_none=True) if getattr(resp, "usage", None) else {}
        return Reply(content=msg.content or "", reasoning_content=reasoning or None,
                     finish_reason=choice.finish_reason, model=getattr(resp, "model", None), usage=usage)

    def close(self) -> None:
        self.client.close()


class OfflineBackend:
    """Deterministic heuristic questions, no network: for the tiny preset and tests. Replies are not cached (they
    cost nothing to recompute) and count as neither requests nor cache hits."""

    def __init__(self, s: QuestionSettings):
        self.s = s

    def complete(self, messages: list[dict], context: dict) -> Reply:
        from .offline import offline_reply

        return Reply(content=offline_reply(context["id"], context["context"], self.s), model="offline-heuristic",
                     finish_reason="stop")

    def close(self) -> None:
        pass
