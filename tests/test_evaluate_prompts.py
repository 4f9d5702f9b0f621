"""Prompt building and stop ids against a tokenizer double that renders like the real ones: BOS added unless
add_special_tokens=False, a Qwen3-style template that opens a thinking block unless enable_thinking is False."""
from __future__ import annotations

from types import SimpleNamespace

from ctxcomp.evaluate import decoding, prompts


class Tok:
    """Ids are the characters' code points; BOS (id 1) is prepended when special tokens are added."""

    def __init__(self, template: bool, bos: str | None = None, bos_in_template: bool = True):
        if template:
            self.chat_template = "{{ messages }}"
        if bos is not None:
            self.bos_token = bos
        self.bos_in_template = bos_in_template

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}

    def apply_chat_template(self, messages, tokenize: bool = True, add_generation_prompt: bool = False,
                            enable_thinking: bool = True) -> str:
        assert tokenize is False and add_generation_prompt is True
        head = getattr(self, "bos_token", "") if self.bos_in_template else ""
        think = "" if enable_thinking is False else "<think>"
        return f"{head}<user>{messages[0]['content']}</user><assistant>{think}"


def test_plain_prompts_carry_no_special_tokens():
    tok = Tok(template=False)
    assert not prompts.uses_chat_template(tok) and prompts.prompt_kind(tok) == "plain"
    assert prompts.ko_prompt_ids(tok, "  Who?  ") == [ord(c) for c in "Question: Who?\nAnswer:"]
    text = prompts.PLAIN_ANSWER_PROMPT.format(question="Who?")
    assert prompts.answer_prompt_text(tok, " Who? ") == text
    assert prompts.answer_prompt_ids(tok, "Who?") == [ord(c) for c in text]


def test_chat_prompt_without_thinking_and_without_a_doubled_bos():
    turn = prompts.CHAT_USER_TURN.format(question="Who?")
    tok = Tok(template=True, bos="<s>")
    assert prompts.uses_chat_template(tok) and prompts.prompt_kind(tok) == "chat_template"
    assert prompts.answer_prompt_text(tok, "Who? ") == f"<user>{turn}</user><assistant>"  # BOS cut: ids add none
    assert prompts.answer_prompt_ids(tok, "Who?") == [ord(c) for c in f"<user>{turn}</user><assistant>"]
    # a template that does not start with the BOS keeps its text; a tokenizer without a BOS token keeps it too
    assert prompts.answer_prompt_text(Tok(True, "<s>", bos_in_template=False), "Who?") == \
        f"<user>{turn}</user><assistant>"
    assert prompts.answer_prompt_text(Tok(True), "Who?") == f"<user>{turn}</user><assistant>"


def test_stop_ids_join_the_tokenizer_eos_and_the_decoders_own():
    llama = SimpleNamespace(decoder_eos_ids=(128009, 128001))
    assert decoding.stop_ids(llama, 128001) == {128001, 128009}
    assert decoding.stop_ids(llama, [5, 6]) == {5, 6, 128001, 128009}
    assert decoding.stop_ids(SimpleNamespace(), 2) == {2}  # a model without its own EOS set
    assert decoding.stop_ids(llama, None) == set()
