"""Unit tests of the question pipeline's pieces: reply parsing, validation, prompt, cache keys, limiter, settings."""
from __future__ import annotations

import json

import pytest

from ctxcomp.questions import DIMENSIONS
from ctxcomp.questions.cache import ReplyCache, request_key
from ctxcomp.questions.parse import ParseError, extract_json, question_items, split_reasoning
from ctxcomp.questions.prompt import build_messages, repair_message
from ctxcomp.questions.ratelimit import RateLimiter
from ctxcomp.questions.settings import QuestionSettings
from ctxcomp.questions.validate import find_span, validate_questions

CONTEXT = "The  city council of\nSpringfield approved a new budget. Mayor Jane Doe said it would fund 3 libraries."
S9 = QuestionSettings.from_partial({"backend": "openai", "per_context": 9, "unanswerable_per_context": 2})


def good_items() -> list[dict]:
    answers = ["budget", "Springfield", "approved", "city  council of Springfield", "Mayor Jane Doe", "Jane Doe",
               "3 libraries"]
    items = [{"dimension": d, "question": f"Q about {d}?", "answer": a} for d, a in zip(DIMENSIONS, answers)]
    return items + [{"dimension": "unanswerable", "question": f"Unanswerable {i}?", "answer": None} for i in range(2)]


# -- parsing ---------------------------------------------------------------------------------------------------------
def test_think_block_is_removed_and_kept_as_reasoning():
    r = split_reasoning('<think>maybe {"questions": []}</think>\n{"questions": [1]}')
    assert r.answer == '{"questions": [1]}' and "maybe" in r.reasoning
    assert extract_json(r.answer) == {"questions": [1]}


def test_reasoning_content_field_and_orphan_tags():
    assert split_reasoning('{"a": 1}', reasoning_content="thinking").reasoning == "thinking"
    r = split_reasoning('template opened the tag, so only a close</think> {"a": 1}')
    assert r.answer == '{"a": 1}' and "template" in r.reasoning
    r = split_reasoning("<think>cut off while reasoning {")
    assert r.answer == "" and "cut off" in r.reasoning
    with pytest.raises(ParseError, match="no answer"):
        extract_json(r.answer)


def test_fences_and_surrounding_prose():
    assert extract_json('Here you go:\n```json\n{"questions": []}\n```\nDone.') == {"questions": []}
    assert extract_json('```\n[{"x": 1}]\n```') == [{"x": 1}]
    assert extract_json('Sure! {"questions": [{"a": 1}]} hope that helps') == {"questions": [{"a": 1}]}
    with pytest.raises(ParseError, match="not valid JSON"):
        extract_json('{"questions": [ {"a": 1,, } ]')
    with pytest.raises(ParseError, match="no JSON"):
        extract_json("I cannot do that.")
    assert question_items([{"a": 1}]) == [{"a": 1}]
    with pytest.raises(ParseError):
        question_items({"qs": 1})


# -- validation ------------------------------------------------------------------------------------------------------
def test_span_matching_normalises_whitespace_only():
    assert find_span(CONTEXT, "city council of Springfield") == "city council of\nSpringfield"
    assert find_span(CONTEXT, "  Jane   Doe ") == "Jane Doe"
    assert find_span(CONTEXT, "jane doe") is None  # no case folding
    assert find_span(CONTEXT, "budget") == "budget" and find_span(CONTEXT, "budget!") is None


def test_valid_set_is_accepted_with_raw_spans():
    v = validate_questions(good_items(), CONTEXT, S9)
    assert v.ok, v.problems
    assert len(v.questions) == 9
    assert all(q["answer"] in CONTEXT for q in v.questions if q["answerable"])
    assert v.questions[3]["answer"] == "city council of\nSpringfield"
    assert [q["answerable"] for q in v.questions].count(False) == 2


def test_each_problem_is_reported():
    items = good_items()
    items[0]["answer"] = "a budget surplus"                      # not a substring
    items[1]["dimension"] = "Entity List"                         # tolerated spelling
    items[2]["dimension"] = "sentiment"                           # unknown
    items[4]["question"] = items[5]["question"] = "Who spoke?"   # duplicate
    items[7]["answer"] = "Springfield"                            # unanswerable with an answer
    v = validate_questions(items, CONTEXT, S9)
    text = "\n".join(v.problems)
    assert "not an exact substring" in text and "unknown dimension" in text and "duplicates question 5" in text
    assert "must be null" in text and "Entity List" not in text
    assert "no question for dimension(s): predicate_exactness" in text


def test_mix_counts_and_coverage():
    items = good_items()
    assert "expected exactly 9 questions, got 8" in validate_questions(items[:-1], CONTEXT, S9).problems[0]
    extra = items + [{"dimension": "main_topic", "question": "Another?", "answer": "budget"}]
    assert any("got 10" in p for p in validate_questions(extra, CONTEXT, S9).problems)
    swapped = items[:-1] + [{"dimension": "main_topic", "question": "Another?", "answer": "budget"}]
    assert any("unanswerable questions, got 1" in p for p in validate_questions(swapped, CONTEXT, S9).problems)
    small = S9.replace(per_context=3, unanswerable_per_context=1)  # fewer slots than dimensions: no coverage rule
    v = validate_questions(items[:2] + items[-1:], CONTEXT, small)
    assert v.ok, v.problems


# -- prompt ----------------------------------------------------------------------------------------------------------
def test_prompt_is_filled_and_repair_lists_problems():
    msgs = build_messages(CONTEXT, S9)
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    text = msgs[0]["content"]
    assert CONTEXT in text and "exactly 9 questions" in text and "$" not in text
    assert all(d in text for d in DIMENSIONS) and "unanswerable" in text
    rep = repair_message([f"problem {i}" for i in range(20)], S9)["content"]
    assert "- problem 0" in rep and "5 more problems" in rep and "exactly 9 questions" in rep
    with pytest.raises(FileNotFoundError, match="v1"):
        build_messages(CONTEXT, S9.replace(prompt_version="v999"))


# -- cache -----------------------------------------------------------------------------------------------------------
def test_cache_key_covers_everything_that_changes_the_reply(tmp_path):
    base = dict(model="m", base_url="http://x/v1", prompt_version="v1", messages=[{"role": "user", "content": "c"}],
                sampling={"temperature": 0.6, "max_tokens": 10})
    k = request_key(**base)
    assert request_key(**{**base, "base_url": "http://x/v1/"}) == k
    for change in ({"model": "m2"}, {"base_url": "http://y/v1"}, {"prompt_version": "v2"},
                   {"messages": [{"role": "user", "content": "d"}]},
                   {"sampling": {"temperature": 0.7, "max_tokens": 10}},
                   {"sampling": {"temperature": 0.6, "max_tokens": 11}}):
        assert request_key(**{**base, **change}) != k, change
    cache = ReplyCache(tmp_path)
    assert cache.get(k) is None
    cache.put(k, {"model": "m"}, {"content": "hi"})
    assert cache.get(k) == {"content": "hi"}
    assert [p.name for p in tmp_path.rglob("*")if p.is_file()] == [f"{k}.json"]  # no temp files left
    cache.path(k).write_text("{trunc")
    assert cache.get(k) is None  # unreadable entry = miss


# -- rate limiter ----------------------------------------------------------------------------------------------------
def test_rate_limiter_spaces_requests():
    now = [100.0]
    slept: list[float] = []

    def sleep(d: float) -> None:
        slept.append(d)

    lim = RateLimiter(120, clock=lambda: now[0], sleep=sleep)  # one every 0.5 s
    for _ in range(4):
        lim.acquire()
    assert slept == pytest.approx([0.5, 1.0, 1.5])
    RateLimiter(None, sleep=sleep).acquire()
    assert len(slept) == 3


# -- settings --------------------------------------------------------------------------------------------------------
def test_settings_defaults_and_checks():
    """Defaults are the schema's; an unknown key or a bad value is a ConfigError naming it, not a warning."""
    from ctxcomp.config import ConfigError

    s = QuestionSettings.from_partial({"backend": "offline", "per_context": 20, "price_per_mtok": {"input": 1.0},
                                       "contexts": {"fineweb": 3}})
    assert s.unanswerable_per_context == 4 and s.max_attempts == 3 and s.concurrency == 4
    assert (s.model, s.base_url, s.temperature, s.max_tokens) == ("deepseek-reasoner", "https://api.deepseek.com",
                                                                  0.6, 8192)
    assert s.price_per_mtok.input == 1.0 and s.price_per_mtok.output is None and s.requests_per_minute is None
    with pytest.raises(ConfigError, match="'questions.unanswerable_per_context': 3 is more than per_context=2"):
        QuestionSettings.from_partial({"backend": "offline", "per_context": 2, "unanswerable_per_context": 3})
    with pytest.raises(ConfigError, match="'questions.backend'"):
        QuestionSettings.from_partial({"backend": "anthropic", "per_context": 2})
    with pytest.raises(ConfigError, match="'questions': unknown key"):
        QuestionSettings.from_partial({"backend": "offline", "per_context": 2, "per_ctx": 3})
    with pytest.raises(ConfigError, match="'questions.concurrency': 0 is less than the minimum of 1"):
        QuestionSettings.from_partial({"backend": "offline", "per_context": 2, "concurrency": 0})
    assert json.dumps(s.sampling)
