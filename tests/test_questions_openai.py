"""The OpenAI-compatible backend against a real local HTTP server, with the real `openai` client.

Covers reasoning in both places, malformed and invalid replies with re-asks, 429/500/timeouts with retries, failed
contexts that do not stop the run, caching (a second run sends nothing), resuming after a crash, and the API key
never reaching disk.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from ctxcomp.questions import run as run_module
from ctxcomp.questions.run import generate_questions
from openai_stub_server import USAGE, error, questions_json, reply, slow, stub_server  # noqa: F401 (fixture)

KEY_ENV = "CTXCOMP_TEST_QUESTIONS_KEY"
KEY = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"
N_ANS, N_UNANS = 7, 2


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def qcfg(server, **over) -> dict:
    cfg = {"backend": "openai", "base_url": server.base_url, "model": "deepseek-reasoner", "api_key_env": KEY_ENV,
           "prompt_version": "v1", "per_context": N_ANS + N_UNANS, "unanswerable_per_context": N_UNANS,
           "temperature": 0.6, "max_tokens": 512, "timeout_s": 5, "max_retries": 2, "max_attempts": 2,
           "concurrency": 3, "requests_per_minute": 60000, "retry_backoff_s": 0.01,
           "price_per_mtok": {"input": 0.55, "output": 2.19},
           "min_success_fraction": 0.0}  # these runs fail contexts on purpose (the threshold: test_hostile_inputs)
    cfg.update(over)
    return cfg


def ctx(i: int) -> dict:
    return {"id": f"c{i}", "source": "fineweb",
            "context": f"[ctx-{i:02d}] The Harbor Board approved a new ferry route to Elm Island in 2024. "
                       "Its chair, Dana Ruiz, said the route would carry 300 passengers daily."}


def good(i: int) -> str:
    return questions_json(ctx(i)["context"], N_ANS, N_UNANS)


def run(tmp_path: Path, server, contexts: list[dict], tag: str = "run", **over) -> tuple[dict, list[dict]]:
    out, rep = tmp_path / f"{tag}.jsonl", tmp_path / f"{tag}.report.json"
    report = generate_questions(contexts, qcfg(server, **over), str(out), str(rep), str(tmp_path / "cache"))
    assert json.loads(rep.read_text()) == report
    return report, [json.loads(line) for line in out.read_text().splitlines()]


def test_good_reply(tmp_path, stub_server):
    stub_server.script("[ctx-00]", reply(good(0)))
    report, rows = run(tmp_path, stub_server, [ctx(0)])
    row = rows[0]
    assert row["status"] == "ok" and row["reason"] is None and row["source"] == "fineweb"
    assert len(row["questions"]) == N_ANS + N_UNANS and row["questions"][0]["qid"] == "c0-q00"
    assert all(q["answer"] in row["context"] for q in row["questions"] if q["answerable"])
    assert report["valid"] == 1 and report["requests_sent"] == 1 and report["cache_hits"] == 0
    assert report["tokens"] == {"prompt": 100, "completion": 50, "reasoning": 20}
    assert report["estimated_cost_usd"] == pytest.approx((100 * 0.55 + 50 * 2.19) / 1e6)
    assert report["model"] == "deepseek-reasoner" and report["base_url"] == stub_server.base_url
    body = stub_server.bodies("[ctx-00]")[0]
    assert body["model"] == "deepseek-reasoner" and body["max_tokens"] == 512 and body["temperature"] == 0.6
    assert stub_server.requests[0]["authorization"] == f"Bearer {KEY}"


def test_reasoning_in_think_tags_and_in_reasoning_content(tmp_path, stub_server):
    decoy = '{"questions": [{"dimension": "bogus", "question": "?", "answer": "nope"}]}'
    stub_server.script("[ctx-00]", reply(f"<think>Let me draft: {decoy}</think>\n```json\n{good(0)}\n```"))
    stub_server.script("[ctx-01]", reply(good(1), reasoning_content=f"Thinking hard. Draft: {decoy}"))
    report, rows = run(tmp_path, stub_server, [ctx(0), ctx(1)])
    assert report["valid"] == 2 and report["requests_sent"] == 2
    assert all(r["status"] == "ok" for r in rows)
    assert "Draft" not in json.dumps(rows) and "bogus" not in json.dumps(rows)


def test_malformed_json_is_repaired_without_sending_reasoning_back(tmp_path, stub_server):
    broken = reply('{"questions": [ {"dimension": "main_topic",, ', reasoning_content="R1 SECRET")
    stub_server.script("[ctx-00]", broken, reply(good(0)))
    report, rows = run(tmp_path, stub_server, [ctx(0)])
    assert rows[0]["status"] == "ok" and report["repaired"] == 1 and report["valid"] == 0
    assert report["requests_sent"] == 2
    second = stub_server.bodies("[ctx-00]")[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert "not valid JSON" in second[2]["content"]
    assert "R1 SECRET" not in json.dumps(second) and all("reasoning_content" not in m for m in second)


def test_non_substring_answers_fail_after_max_attempts(tmp_path, stub_server):
    bad = questions_json(ctx(0)["context"], N_ANS, N_UNANS, bad_answers=True)
    stub_server.script("[ctx-00]", reply(bad))
    stub_server.script("[ctx-01]", reply(bad), reply(good(1)))
    report, rows = run(tmp_path, stub_server, [ctx(0), ctx(1)], max_attempts=3)
    assert stub_server.count("[ctx-00]") == 3 and stub_server.count("[ctx-01]") == 2
    assert rows[0]["status"] == "failed" and rows[0]["questions"] == []
    assert "invalid after 3 attempt(s)" in rows[0]["reason"] and "not an exact substring" in rows[0]["reason"]
    assert rows[1]["status"] == "ok"
    repair = stub_server.bodies("[ctx-00]")[1]["messages"][-1]["content"]
    assert "NOT-IN-CONTEXT-0" in repair and "not an exact substring" in repair
    assert (report["valid"], report["repaired"], report["failed"]) == (0, 1, 1)
    assert report["failures"] == [{"context_id": "c0", "reason": rows[0]["reason"]}]


def test_429_and_500_are_retried_and_persistent_500_fails_only_its_context(tmp_path, stub_server):
    stub_server.script("[ctx-00]", error(429, "slow down"), reply(good(0)))
    stub_server.script("[ctx-01]", error(500), error(503), reply(good(1)))
    stub_server.script("[ctx-02]", error(500, "boom", echo_auth=True))
    stub_server.script("[ctx-03]", error(500, retry_after_ms=None), reply(good(3)))  # plain exponential backoff
    report, rows = run(tmp_path, stub_server, [ctx(i) for i in range(4)])
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok"]
    assert stub_server.count("[ctx-02]") == 3  # 1 + max_retries
    assert "500" in rows[2]["reason"] and "request failed" in rows[2]["reason"]
    assert KEY not in rows[2]["reason"] and "***" in rows[2]["reason"]
    assert report["requests_sent"] == 2 + 3 + 3 + 2 and report["retries"] == 1 + 2 + 2 + 1
    assert (report["valid"], report["repaired"], report["failed"]) == (3, 0, 1)


def test_slow_reply_past_timeout_is_retried_then_fails(tmp_path, stub_server):
    stub_server.script("[ctx-00]", slow(1.0), reply(good(0)))
    stub_server.script("[ctx-01]", slow(1.0))
    t0 = time.monotonic()
    report, rows = run(tmp_path, stub_server, [ctx(0), ctx(1)], timeout_s=0.3, max_retries=1)
    assert time.monotonic() - t0 < 5
    assert rows[0]["status"] == "ok" and stub_server.count("[ctx-00]") == 2
    assert rows[1]["status"] == "failed" and "Timeout" in rows[1]["reason"]
    assert report["failed"] == 1 and report["valid"] == 1


def test_second_run_sends_no_requests(tmp_path, stub_server):
    stub_server.script("[ctx-00]", reply(good(0)))
    stub_server.script("[ctx-01]", reply("not json"), reply(good(1)))  # the repair turn is cached too
    contexts = [ctx(0), ctx(1)]
    first, _ = run(tmp_path, stub_server, contexts, tag="first")
    sent = stub_server.count()
    assert sent == 3 and first["requests_sent"] == 3
    second, _ = run(tmp_path, stub_server, contexts, tag="second")
    assert stub_server.count() == sent
    assert second["requests_sent"] == 0 and second["cache_hits"] == 3
    assert second["tokens"] == {"prompt": 0, "completion": 0, "reasoning": 0}
    assert second["tokens_cached"]["prompt"] == 300 and second["estimated_cost_usd"] == 0.0
    assert (second["valid"], second["repaired"]) == (first["valid"], first["repaired"]) == (1, 1)
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()
    # a different prompt-relevant setting is a different request
    run(tmp_path, stub_server, contexts[:1], tag="third", temperature=0.0)
    assert stub_server.count() == sent + 1


def test_interrupted_run_resumes_without_resending(tmp_path, stub_server, monkeypatch):
    contexts = [ctx(i) for i in range(5)]
    for i in range(5):
        stub_server.script(f"[ctx-{i:02d}]", reply(good(i)))
    real = run_module._generate_one
    calls = {"n": 0}

    def crash_after_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("injected crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "_generate_one", crash_after_two)
    with pytest.raises(RuntimeError, match="injected crash"):
        run(tmp_path, stub_server, contexts, concurrency=1)
    assert stub_server.count() == 2
    assert not (tmp_path / "run.jsonl").exists() and not (tmp_path / "run.report.json").exists()
    monkeypatch.setattr(run_module, "_generate_one", real)
    report, rows = run(tmp_path, stub_server, contexts)
    assert [stub_server.count(f"[ctx-{i:02d}]") for i in range(5)] == [1, 1, 1, 1, 1]
    assert report["cache_hits"] == 2 and report["requests_sent"] == 3 and report["valid"] == 5
    assert [r["context_id"] for r in rows] == [c["id"] for c in contexts]


def test_api_key_never_written(tmp_path, stub_server):
    log_file = tmp_path / "debug.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        stub_server.script("[ctx-00]", reply(good(0), reasoning_content="thinking"))
        stub_server.script("[ctx-01]", error(401, "bad key", retry_after_ms=None, echo_auth=True))
        stub_server.script("[ctx-02]", error(500, "boom", echo_auth=True))
        stub_server.script("[ctx-03]", reply("nope"), reply(good(3)))
        run(tmp_path, stub_server, [ctx(i) for i in range(4)])
        run(tmp_path, stub_server, [ctx(i) for i in range(4)], tag="again")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 7 and log_file.stat().st_size > 0  # outputs, reports, cache entries, log
    leaked = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert leaked == []


def test_missing_key_is_a_clear_error(tmp_path, stub_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    stub_server.script("[ctx-00]", reply(good(0)))
    with pytest.raises(RuntimeError, match=KEY_ENV):
        run(tmp_path, stub_server, [ctx(0)])
    assert stub_server.count() == 0 and not list(tmp_path.iterdir())


def test_report_counts_over_a_mixed_run(tmp_path, stub_server):
    bad = questions_json(ctx(2)["context"], N_ANS, N_UNANS, bad_answers=True)
    stub_server.script("[ctx-00]", reply(good(0)))
    stub_server.script("[ctx-01]", reply("```json\n{oops}\n```"), reply(good(1)))
    stub_server.script("[ctx-02]", reply(bad))
    stub_server.script("[ctx-03]", error(502))
    stub_server.script("[ctx-04]", reply(good(4)))
    report, rows = run(tmp_path, stub_server, [ctx(i) for i in range(5)], max_retries=1)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed", "ok"]
    assert {k: report[k] for k in ("n_contexts", "valid", "repaired", "failed", "n_questions")} == \
        {"n_contexts": 5, "valid": 2, "repaired": 1, "failed": 2, "n_questions": 27}
    assert [f["context_id"] for f in report["failures"]] == ["c2", "c3"]
    replies = 1 + 2 + 2 + 1  # requests that returned a completion
    assert report["requests_sent"] == replies + 2 and report["cache_hits"] == 0
    assert report["tokens"] == {k: USAGE[f"{k}_tokens"] * replies for k in ("prompt", "completion", "reasoning")}
    assert report["estimated_cost_usd"] == pytest.approx(replies * (100 * 0.55 + 50 * 2.19) / 1e6)
    assert report["prompt_version"] == "v1" and report["backend"] == "openai" and report["wall_s"] >= 0
