"""Tiny Qwen3- and Llama-architecture causal LMs built from transformers configs."""
from __future__ import annotations

from typing import Any


def build_config(spec: dict, tokenizer: Any):
    """A transformers config of the requested architecture sized by `spec` (a `models.<name>.build` entry)."""
    from transformers import LlamaConfig, Qwen3Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        intermediate_size=spec["intermediate_size"],
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if spec.get("head_dim"):
        common["head_dim"] = spec["head_dim"]
    if spec["arch"] == "qwen3":
        return Qwen3Config(**common)
    if spec["arch"] == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"unknown tiny architecture {spec['arch']!r}")


def build_model(spec: dict, tokenizer: Any, seed: int):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(build_config(spec, tokenizer), attn_implementation="sdpa")
