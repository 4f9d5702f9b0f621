"""The text the decoder reads after the memory, per task (ours; the paper does not print its prompts).

Every decoder row starts with the memory prefix `[BOS?] <mem> Z </mem> <task>`, exactly as in training; what follows:
- knowledge overwriting: `Question: {question}\nAnswer:` then each candidate as ` {candidate}` (scored, not
  generated; a log-likelihood comparison needs no instruction);
- semantic drift (and RAG): an instruction to answer with a span copied from the context or to say it cannot be
  answered, then the question. With a decoder that has a chat template (Llama-3-8B-Instruct, Qwen3) this text is the
  user turn of the template, with its generation prompt (assistant header; Qwen3: thinking disabled), and the memory
  stays where training put it, BEFORE the template: `[BOS] <mem> Z </mem> <continue> <|start_header_id|>user ...`
  (the template's own BOS is dropped, the prefix has one). Moving Z inside the user turn would show the frozen decoder
  the memory in a position it was never trained on. A decoder without a chat template (the tiny preset's, base
  models) reads the same instruction as plain text followed by `Question: {question}\nAnswer:`.
"""
from __future__ import annotations

from typing import Any

KO_PROMPT = "Question: {question}\nAnswer:"
INSTRUCTION = ("Answer the question with a short span copied from the context. If the context does not contain the "
               "answer, reply \"unanswerable\".")
PLAIN_ANSWER_PROMPT = INSTRUCTION + "\nQuestion: {question}\nAnswer:"
CHAT_USER_TURN = INSTRUCTION + "\n\nQuestion: {question}"


def ko_prompt_ids(tok: Any, question: str) -> list[int]:
    """Tokens of the knowledge-overwriting prompt (no special tokens)."""
    return tok(KO_PROMPT.format(question=question.strip()), add_special_tokens=False)["input_ids"]


def uses_chat_template(tok: Any) -> bool:
    return bool(getattr(tok, "chat_template", None))


def answer_prompt_text(tok: Any, question: str) -> str:
    """The semantic-drift prompt as text: the chat template's user turn + generation prompt, or the plain prompt."""
    q = question.strip()
    if not uses_chat_template(tok):
        return PLAIN_ANSWER_PROMPT.format(question=q)
    text = tok.apply_chat_template([{"role": "user", "content": CHAT_USER_TURN.format(question=q)}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=False)
    bos = getattr(tok, "bos_token", None)
    return text[len(bos):] if bos and text.startswith(bos) else text


def answer_prompt_ids(tok: Any, question: str) -> list[int]:
    """Tokens of the semantic-drift prompt; special tokens of the template are parsed, no BOS is added."""
    return tok(answer_prompt_text(tok, question), add_special_tokens=False)["input_ids"]


def prompt_kind(tok: Any) -> str:
    """"chat_template" or "plain": which prompt a decoder's answers were generated with (stored in results)."""
    return "chat_template" if uses_chat_template(tok) else "plain"
