"""Generate the semantic-drift question sets: ask, validate, re-ask with the problems, record, report.

Results are written once, atomically, at the end (a half-written JSONL would look complete to Snakemake); progress
survives a crash through the reply cache instead, so a resumed run re-sends nothing that was already answered.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from tqdm import tqdm

from ..io import write_json, write_jsonl
from .backends import Backend, EndpointError, OfflineBackend, OpenAIBackend, RedactingFilter, read_api_key, redact
from .cache import ReplyCache
from .parse import ParseError, extract_json, question_items, split_reasoning
from .prompt import build_messages, repair_message
from .ratelimit import RateLimiter
from .schema import QuestionRow, qid
from .settings import QuestionSettings
from .usage import Tally
from .validate import validate_questions

log = logging.getLogger(__name__)
MAX_FAILURES_REPORTED = 20
MAX_PROBLEMS_IN_REASON = 5


@dataclass
class Outcome:
    status: str  # "valid" (first try) | "repaired" | "failed"
    questions: list[dict] = field(default_factory=list)
    reason: str | None = None
    attempts: int = 0


def _generate_one(ctx: dict, s: QuestionSettings, backend: Backend, secret: str | None) -> Outcome:
    """Ask for one context's questions; re-ask with the list of problems until valid or `max_attempts` replies
    (the first ask included) have been judged. Request failures end the context at once; other errors propagate
    and stop the run."""
    messages = build_messages(ctx["context"], s)
    problems: list[str] = []
    for attempt in range(1, s.max_attempts + 1):
        try:
            reply = backend.complete(messages, ctx)
        except EndpointError as exc:
            return Outcome("failed", reason=redact(f"request failed: {exc}", secret), attempts=attempt)
        split = split_reasoning(reply.content, reply.reasoning_content)
        try:
            items = question_items(extract_json(split.answer))
            result = validate_questions(items, ctx["context"], s)
            problems = result.problems
        except ParseError as exc:
            problems = [str(exc)]
        if not problems:
            return Outcome("valid" if attempt == 1 else "repaired", result.questions, attempts=attempt)
        if reply.finish_reason == "length":
            problems.append("the reply was cut off at the token limit: be more concise")
        log.info("context %s attempt %d/%d invalid: %s", ctx["id"], attempt, s.max_attempts, "; ".join(problems[:3]))
        messages = messages + [{"role": "assistant", "content": split.answer or "(no answer)"},
                               repair_message(problems, s)]
    reason = f"invalid after {s.max_attempts} attempt(s): " + "; ".join(problems[:MAX_PROBLEMS_IN_REASON])
    if len(problems) > MAX_PROBLEMS_IN_REASON:
        reason += f"; ... ({len(problems) - MAX_PROBLEMS_IN_REASON} more)"
    return Outcome("failed", reason=redact(reason, secret), attempts=s.max_attempts)


class QuestionsIncomplete(RuntimeError):
    """Too few contexts got valid questions (questions.min_success_fraction): nothing is written."""


@contextlib.contextmanager
def _redacted_logs(secret: str | None):
    """While questions are generated, every handler of the root logger drops the key from what it writes."""
    filt = RedactingFilter(secret)
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(filt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(filt)


def _check_success(rows: list[dict], s: QuestionSettings, cache_dir: str) -> None:
    n = len(rows)
    ok = sum(r["status"] != "failed" for r in rows)
    need = math.ceil(s.min_success_fraction * n - 1e-9)
    if n and ok >= need:
        return
    last = next((r["reason"] for r in reversed(rows) if r["status"] == "failed"), None)
    resume = (f"replies received so far are cached in {cache_dir}: the re-run asks only for the rest"
              if s.backend == "openai" else "the offline backend has no cache")
    raise QuestionsIncomplete(f"only {ok} of {n} contexts got valid questions; questions.min_success_fraction="
                              f"{s.min_success_fraction} needs {need}. Last error: {last}. Nothing was written; "
                              f"{resume}")


def _check_contexts(contexts: list[dict]) -> None:
    seen: set[str] = set()
    for i, c in enumerate(contexts):
        for key in ("id", "source", "context"):
            if not isinstance(c.get(key), str):
                raise ValueError(f"context {i}: {key!r} must be a string")
        if c["id"] in seen:
            raise ValueError(f"duplicate context id {c['id']!r}: question ids would collide")
        seen.add(c["id"])


def _row(ctx: dict, out: Outcome) -> QuestionRow:
    questions = [{"qid": qid(ctx["id"], i), **q} for i, q in enumerate(out.questions)]
    return {"context_id": ctx["id"], "source": ctx["source"], "context": ctx["context"],
            "status": "failed" if out.status == "failed" else "ok", "reason": out.reason, "questions": questions}


def _run_all(contexts: list[dict], s: QuestionSettings, backend: Backend, secret: str | None) -> list[Outcome]:
    """Contexts in a thread pool; an unexpected error cancels the contexts not yet started (those in flight finish
    and so land in the cache) and propagates."""
    outcomes: list[Outcome | None] = [None] * len(contexts)
    workers = max(1, min(s.concurrency, len(contexts)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="questions") as pool, \
            tqdm(total=len(contexts), desc=f"questions ({s.backend})", unit="ctx", mininterval=1.0) as bar:
        futures = {pool.submit(_generate_one, c, s, backend, secret): i for i, c in enumerate(contexts)}
        try:
            for fut in as_completed(futures):
                outcomes[futures[fut]] = fut.result()
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return outcomes  # type: ignore[return-value]


def generate_questions(contexts: list[dict], qcfg: dict, out_path: str, report_path: str, cache_dir: str) -> dict:
    """contexts: [{"id": str, "source": "fineweb"|"faitheval", "context": str}]; qcfg: the `questions` section
    (validated against its schema, which fills in what it leaves out). Writes out_path (JSONL, one row per context
    in input order) and report_path (JSON); returns the report dict."""
    t0 = time.monotonic()
    s = QuestionSettings.from_partial(qcfg)
    _check_contexts(contexts)
    tally = Tally()
    secret: str | None = None
    if s.backend == "openai":
        secret = read_api_key(s)
        backend: Backend = OpenAIBackend(s, ReplyCache(cache_dir), tally, RateLimiter(s.requests_per_minute), secret)
    else:
        backend = OfflineBackend(s)
    log.info("questions: %d contexts, backend=%s model=%s prompt=%s, %d per context (%d unanswerable)",
             len(contexts), s.backend, s.model_label, s.prompt_version, s.per_context, s.unanswerable_per_context)
    try:
        with _redacted_logs(secret):
            outcomes = _run_all(contexts, s, backend, secret)
    finally:
        backend.close()

    rows = [_row(c, o) for c, o in zip(contexts, outcomes)]
    failures = [{"context_id": r["context_id"], "reason": r["reason"]} for r in rows if r["status"] == "failed"]
    report = {
        "backend": s.backend,
        "model": s.model_label,
        "base_url": redact(s.base_url, secret) if s.backend == "openai" else None,  # a URL may carry a key
        "prompt_version": s.prompt_version,
        "per_context": s.per_context,
        "unanswerable_per_context": s.unanswerable_per_context,
        "n_contexts": len(contexts),
        "n_questions": sum(len(r["questions"]) for r in rows),
        "valid": sum(o.status == "valid" for o in outcomes),
        "repaired": sum(o.status == "repaired" for o in outcomes),
        "failed": len(failures),
        "failures": failures[:MAX_FAILURES_REPORTED],
        "requests_sent": tally.requests_sent,
        "retries": tally.retries,
        "cache_hits": tally.cache_hits,
        "tokens": dict(tally.tokens),
        "tokens_cached": dict(tally.tokens_cached),
        "estimated_cost_usd": Tally.cost(tally.tokens, s),
        "estimated_cost_cached_usd": Tally.cost(tally.tokens_cached, s),
        "wall_s": round(time.monotonic() - t0, 3),
    }
    for f in failures[:MAX_FAILURES_REPORTED]:
        log.warning("context %s failed: %s", f["context_id"], f["reason"])
    _check_success(rows, s, cache_dir)
    write_jsonl(out_path, rows)
    write_json(report_path, report)
    log.info("questions: %d valid, %d repaired, %d failed; %d requests, %d cache hits, cost %s USD, %.1fs",
             report["valid"], report["repaired"], report["failed"], report["requests_sent"], report["cache_hits"],
             report["estimated_cost_usd"], report["wall_s"])
    return report
