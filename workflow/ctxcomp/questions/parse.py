"""Turn a model reply into JSON data, setting aside the reasoning that reasoning models emit.

Reasoning arrives either in a separate field (DeepSeek API, vLLM/SGLang with a reasoning parser) or inline as
`<think>...</think>` in the content (raw vLLM, Ollama). It must never reach the parsed result nor be sent back to the
model on a re-ask (the DeepSeek API rejects `reasoning_content` in input messages).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)


class ParseError(ValueError):
    """The reply holds no usable JSON; the message is shown to the model in the repair turn."""


@dataclass(frozen=True)
class SplitReply:
    answer: str  # the visible content, reasoning removed
    reasoning: str


def split_reasoning(content: str | None, reasoning_content: str | None = None) -> SplitReply:
    """Separate inline `<think>` reasoning from the answer; also handles a reply whose opening tag was part of the
    chat template (so only `</think>`) appears, and an unterminated `<think>` (reply cut off while reasoning)."""
    text = content or ""
    parts = [reasoning_content] if reasoning_content else []
    parts += [m.group(0)[7:-8] for m in _THINK_BLOCK.finditer(text)]
    text = _THINK_BLOCK.sub("", text)
    close = list(_THINK_CLOSE.finditer(text))
    if close:  # "reasoning...</think> answer": the opening tag was in the prompt
        parts.append(text[: close[-1].start()])
        text = text[close[-1].end():]
    opened = _THINK_OPEN.search(text)
    if opened:  # "<think> reasoning..." never closed: everything after it is reasoning
        parts.append(text[opened.end():])
        text = text[: opened.start()]
    return SplitReply(answer=text.strip(), reasoning="\n".join(p.strip() for p in parts if p and p.strip()))


def extract_json(answer: str) -> Any:
    """The first JSON value in the answer, inside ```json fences if there are any, tolerating prose around it."""
    if not answer.strip():
        raise ParseError("the reply contained no answer after the reasoning (was it cut off at max_tokens?)")
    candidates = [m.group(1) for m in _FENCE.finditer(answer)] + [answer]
    first_error: json.JSONDecodeError | None = None
    for text in candidates:
        start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
        if start < 0:
            continue
        try:
            value, _ = json.JSONDecoder().raw_decode(text, start)
            return value
        except json.JSONDecodeError as exc:
            first_error = first_error or exc
    if first_error is None:
        raise ParseError("the reply contains no JSON object")
    raise ParseError(f"the reply is not valid JSON ({first_error.msg} at line {first_error.lineno} "
                     f"column {first_error.colno})")


def question_items(data: Any) -> list:
    """The list of question objects: {"questions": [...]} as asked, or a bare list."""
    if isinstance(data, dict):
        for key in ("questions", "items", "qa"):
            if isinstance(data.get(key), list):
                return data[key]
        raise ParseError('the JSON object has no "questions" list')
    if isinstance(data, list):
        return data
    raise ParseError('the reply must be a JSON object {"questions": [...]}')
