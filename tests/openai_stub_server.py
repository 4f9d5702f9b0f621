"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for testing the real `openai` client end to end.

Each request is matched to a script by a marker string found in its first user message (tests put a unique marker
such as "[ctx-03]" into each context); the n-th request for a marker plays the n-th step of its script (the last step
repeats). Steps are plain dicts built with `reply`, `error` and `slow`. The server counts and records every request.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DIMS = ("main_topic", "entity_list", "predicate_exactness", "relation_anchor", "coreference", "role_binding",
        "modifier_scope")
USAGE = {"prompt_tokens": 100, "completion_tokens": 50, "reasoning_tokens": 20}


def reply(content: str, reasoning_content: str | None = None, finish_reason: str = "stop") -> dict:
    return {"kind": "reply", "content": content, "reasoning_content": reasoning_content,
            "finish_reason": finish_reason}


def error(status: int, message: str = "stub error", retry_after_ms: int | None = 1,
          echo_auth: bool = False) -> dict:
    """An HTTP error; echo_auth puts the request's Authorization header in the body, as careless proxies do."""
    return {"kind": "error", "status": status, "message": message, "retry_after_ms": retry_after_ms,
            "echo_auth": echo_auth}


def slow(delay_s: float, then: dict | None = None) -> dict:
    """Sleep before answering (past the client's timeout, the client gives up first)."""
    return {**(then or reply("{}")), "delay_s": delay_s}


def make_questions(context: str, n_answerable: int, n_unanswerable: int, bad_answers: bool = False) -> list[dict]:
    """A valid question list for `context` (answers are its words), or one whose answers are not substrings."""
    words = [w.strip(".,") for w in context.split() if len(w.strip(".,")) > 2]
    items = [{"dimension": DIMS[i % len(DIMS)], "question": f"Question {i} about word {i}?",
              "answer": (f"NOT-IN-CONTEXT-{i}" if bad_answers else words[i % len(words)])}
             for i in range(n_answerable)]
    items += [{"dimension": "unanswerable", "question": f"Unanswerable question {i}?", "answer": None}
              for i in range(n_unanswerable)]
    return items


def questions_json(context: str, n_answerable: int, n_unanswerable: int, bad_answers: bool = False) -> str:
    return json.dumps({"questions": make_questions(context, n_answerable, n_unanswerable, bad_answers)})


class StubOpenAI:
    def __init__(self) -> None:
        self.scripts: dict[str, list[dict]] = {}
        self.requests: list[dict] = []  # {"marker", "body", "authorization"}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------------------------------
    def script(self, marker: str, *steps: dict) -> None:
        self.scripts[marker] = list(steps)

    def count(self, marker: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if marker is None or r["marker"] == marker)

    def bodies(self, marker: str) -> list[dict]:
        with self._lock:
            return [r["body"] for r in self.requests if r["marker"] == marker]

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> StubOpenAI:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                step, marker = stub._next_step(body, self.headers.get("Authorization", ""))
                if step.get("delay_s"):
                    time.sleep(step["delay_s"])
                if step["kind"] == "error":
                    msg = step["message"]
                    if step["echo_auth"]:
                        msg += f" (got header Authorization: {self.headers.get('Authorization')})"
                    headers = {"retry-after-ms": str(step["retry_after_ms"])} if step["retry_after_ms"] else {}
                    return self._send(step["status"], {"error": {"message": msg, "type": "stub"}}, headers)
                message = {"role": "assistant", "content": step["content"]}
                if step.get("reasoning_content") is not None:
                    message["reasoning_content"] = step["reasoning_content"]
                self._send(200, {
                    "id": f"chatcmpl-{stub.count()}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "stub"),
                    "choices": [{"index": 0, "message": message, "finish_reason": step["finish_reason"]}],
                    "usage": {"prompt_tokens": USAGE["prompt_tokens"], "completion_tokens": USAGE["completion_tokens"],
                              "total_tokens": USAGE["prompt_tokens"] + USAGE["completion_tokens"],
                              "completion_tokens_details": {"reasoning_tokens": USAGE["reasoning_tokens"]}},
                })

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _next_step(self, body: dict, authorization: str) -> tuple[dict, str | None]:
        first_user = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"), "")
        marker = next((m for m in self.scripts if m in first_user), None)
        with self._lock:
            n = sum(1 for r in self.requests if r["marker"] == marker)
            self.requests.append({"marker": marker, "body": body, "authorization": authorization})
        if marker is None:
            return error(400, "stub: no script matches this request", retry_after_ms=None), None
        steps = self.scripts[marker]
        return steps[min(n, len(steps) - 1)], marker


@pytest.fixture
def stub_server() -> Iterator[StubOpenAI]:
    server = StubOpenAI().start()
    try:
        yield server
    finally:
        server.stop()
