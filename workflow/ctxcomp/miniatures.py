"""Miniature random checkpoints of every architecture class that config.yaml reaches, saved like the real ones.

No real weights can be downloaded in CI, so the path a cluster run takes (``from_pretrained`` of a local mirror, the
architecture's own classes, its tokenizer's special-token layout, its generation config) is proven on miniatures:

| kind               | class saved                         | stands for                                     |
|--------------------|-------------------------------------|------------------------------------------------|
| ``qwen3``          | ``Qwen3ForCausalLM``                | Qwen3-0.6B ... 32B (compressors, ablation decoders) |
| ``llama3.2``       | ``LlamaForCausalLM``                | Llama-3.2-1B / 3B                              |
| ``llama3.2-vision``| ``MllamaForConditionalGeneration``  | Llama-3.2-11B / 90B-Vision (cross-attention, vision) |
| ``llama3-instruct``| ``LlamaForCausalLM``                | Meta-Llama-3-8B-Instruct (the main decoder)    |

Each is a directory written by ``save_pretrained`` holding the model (random weights), a tokenizer and a
``generation_config.json``. The tokenizer is a small byte-level BPE trained on the shipped C4 sample, with the real
special tokens at their real ids (Qwen3: no BOS, ``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>``
151645 as EOS; Llama-3: ``<|begin_of_text|>`` 128000 as BOS, ``<|end_of_text|>`` 128001, Instruct ``<|eot_id|>``
128009 as EOS, Vision ``<|image|>`` 128256) and a chat template of the real form. Ids between the BPE's own
vocabulary and the special tokens are unused, as in any model whose embedding has more rows than its tokenizer;
the embedding always has the real number of rows (151,936 / 128,256; Mllama: 128,256 + 8), so the loss, entropy and
generation paths run at the real vocabulary size, at a tiny width.

``REAL_DIMS`` holds the published configs' dimensions; ``build_miniature(kind, out, **dims)`` takes any of them, so
a GPU acceptance run can build a Qwen3-0.6B-shaped compressor and a Llama-3-8B-shaped decoder with random weights
(``build_miniature("qwen3", d, **REAL_DIMS["qwen3-0.6b"])``).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KINDS = ("qwen3", "llama3.2", "llama3.2-vision", "llama3-instruct")

QWEN3_VOCAB = 151_936
LLAMA3_VOCAB = 128_256

# Special tokens (text, id) as in the published tokenizers; the first EOS-like token of each is its `eos_token`.
QWEN3_SPECIALS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<think>": 151667,
                  "</think>": 151668}
LLAMA3_SPECIALS = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|finetune_right_pad_id|>": 128004,
                   "<|start_header_id|>": 128006, "<|end_header_id|>": 128007, "<|eom_id|>": 128008,
                   "<|eot_id|>": 128009}
MLLAMA_SPECIALS = {**LLAMA3_SPECIALS, "<|image|>": 128256}

# The chat templates' structure as published (header/eot for Llama-3-Instruct, im_start/im_end for Qwen3).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")

# Tokenizer roles and generation config per kind, as in the published checkpoints.
TOKENIZERS: dict[str, dict[str, Any]] = {
    "qwen3": {"specials": QWEN3_SPECIALS, "bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>",
              "chat_template": QWEN3_CHAT_TEMPLATE, "generation_eos": [151645, 151643], "generation_bos": 151643},
    "llama3.2": {"specials": LLAMA3_SPECIALS, "bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": None,
                 "chat_template": None, "generation_eos": 128001, "generation_bos": 128000},
    "llama3.2-vision": {"specials": MLLAMA_SPECIALS, "bos": "<|begin_of_text|>", "eos": "<|end_of_text|>",
                        "pad": "<|finetune_right_pad_id|>", "chat_template": None,
                        "generation_eos": 128001, "generation_bos": 128000},
    "llama3-instruct": {"specials": LLAMA3_SPECIALS, "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None,
                        "chat_template": LLAMA3_CHAT_TEMPLATE, "generation_eos": [128001, 128009],
                        "generation_bos": 128000},
}

# Published dimensions (config.json of each checkpoint); a miniature takes any subset of these keys.
REAL_DIMS: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": {"hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
                   "head_dim": 128, "intermediate_size": 3072, "tie_word_embeddings": True},
    "qwen3-4b": {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "head_dim": 128, "intermediate_size": 9728, "tie_word_embeddings": True},
    "qwen3-32b": {"hidden_size": 5120, "num_hidden_layers": 64, "num_attention_heads": 64, "num_key_value_heads": 8,
                  "head_dim": 128, "intermediate_size": 25600, "tie_word_embeddings": False},
    "llama3.2-1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                    "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "tie_word_embeddings": True},
    "llama3.2-11b": {"hidden_size": 4096, "num_hidden_layers": 40, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "intermediate_size": 14336,
                     "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38]},
    "llama3.2-90b": {"hidden_size": 8192, "num_hidden_layers": 100, "num_attention_heads": 64,
                     "num_key_value_heads": 8, "intermediate_size": 28672,
                     "cross_attention_layers": list(range(3, 100, 5))},
    "llama3-8b-instruct": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                           "num_key_value_heads": 8, "intermediate_size": 14336, "tie_word_embeddings": False},
}

# Miniature defaults: tiny width, the real structure (GQA, Qwen3's explicit head_dim and tied embeddings, Llama-3.2's
# rope scaling, Mllama's cross-attention layers), the real vocabulary.
MINI_DIMS: dict[str, dict[str, Any]] = {
    "qwen3": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 8, "intermediate_size": 64, "tie_word_embeddings": True},
    "llama3.2": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "intermediate_size": 64, "tie_word_embeddings": True},
    "llama3.2-vision": {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 64, "cross_attention_layers": [1]},
    "llama3-instruct": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 96, "tie_word_embeddings": False},
}
# Llama-3.2's published rope scaling (the text stack of the Vision models uses factor 8).
LLAMA32_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
MLLAMA_ROPE = {**LLAMA32_ROPE, "factor": 8.0}
# A miniature vision tower of the real structure (tiles, global layers, intermediate-layer outputs).
MINI_VISION = {"hidden_size": 16, "num_hidden_layers": 2, "num_global_layers": 1, "attention_heads": 2,
               "intermediate_size": 32, "image_size": 28, "patch_size": 14, "max_num_tiles": 4,
               "intermediate_layers_indices": [0]}

BPE_VOCAB = 512  # the byte-level BPE's own vocabulary (ids 0..511); special tokens sit at their real ids


def _corpus(texts: Iterable[str] | None) -> list[str]:
    if texts is not None:
        return list(texts)
    from .tiny.tokenizer import iter_corpus

    root = Path(__file__).resolve().parents[1] / "data" / "c4" / "c4_sample.jsonl"
    return [t for _, t in zip(range(300), iter_corpus(root))]


def build_tokenizer(kind: str, texts: Iterable[str] | None = None, bpe_vocab: int = BPE_VOCAB):
    """A fast tokenizer of `kind`'s layout: BPE trained on `texts` (default: the C4 sample), real special-token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = TOKENIZERS[kind]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(texts), trainer=trainer)
    # Rebuild the BPE with the special tokens in its vocabulary at their real ids: an added token that the model's
    # vocabulary already holds keeps that id (added tokens would otherwise be numbered after the BPE's own).
    state = json.loads(tok.to_str())["model"]
    vocab = dict(state["vocab"])
    if max(vocab.values()) >= min(spec["specials"].values()):
        raise ValueError(f"BPE vocabulary of {len(vocab)} overlaps the special-token ids of {kind}")
    vocab.update(spec["specials"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    real = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    real.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    real.decoder = decoders.ByteLevel()
    real.add_special_tokens(list(spec["specials"]))
    roles = {k: spec[k] for k in ("bos", "eos", "pad") if spec[k]}
    fast = PreTrainedTokenizerFast(tokenizer_object=real, **{f"{k}_token": v for k, v in roles.items()})
    if spec["chat_template"]:
        fast.chat_template = spec["chat_template"]
    # As with the published Llama-3 / Qwen3 tokenizers used here, BOS is added by the pipeline, never implicitly.
    return fast


def model_config(kind: str, **dims: Any):
    """The transformers config of a `kind` miniature: MINI_DIMS overridden by `dims` (e.g. REAL_DIMS entries)."""
    from transformers import LlamaConfig, MllamaConfig, Qwen3Config

    if kind not in KINDS:
        raise ValueError(f"unknown miniature kind {kind!r} (expected one of {', '.join(KINDS)})")
    d = {**MINI_DIMS[kind], **dims}
    spec = TOKENIZERS[kind]
    ids = spec["specials"]
    bos = ids[spec["bos"]] if spec["bos"] else None
    eos = ids[spec["eos"]]
    common = {"max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "bos_token_id": bos, "eos_token_id": eos}
    if kind == "qwen3":
        qwen = {**common, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "bos_token_id": 151643}
        return Qwen3Config(vocab_size=QWEN3_VOCAB, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                           **{**qwen, **d})
    if kind in ("llama3.2", "llama3-instruct"):
        rope = copy.deepcopy(LLAMA32_ROPE) if kind == "llama3.2" else {"rope_type": "default", "rope_theta": 500000.0}
        if kind == "llama3-instruct":
            common["max_position_embeddings"] = 8192
        return LlamaConfig(vocab_size=LLAMA3_VOCAB, rope_parameters=rope, attention_bias=False, mlp_bias=False,
                           **{**common, **d})
    text = {"vocab_size": LLAMA3_VOCAB, "rope_parameters": copy.deepcopy(MLLAMA_ROPE),
            # the embedding has vocab + 8 rows; pad_token_id must be a real id (the published one: 128004)
            "pad_token_id": ids["<|finetune_right_pad_id|>"], **{**common, **d}}
    vision = {**MINI_VISION, "vision_output_dim": MINI_VISION["hidden_size"] * (
        len(MINI_VISION["intermediate_layers_indices"]) + 1)}
    return MllamaConfig(text_config=text, vision_config=vision, image_token_index=ids["<|image|>"])


def generation_config(kind: str):
    from transformers import GenerationConfig

    spec = TOKENIZERS[kind]
    pad = spec["specials"].get(spec["pad"]) if spec["pad"] else None
    return GenerationConfig(bos_token_id=spec["generation_bos"], eos_token_id=spec["generation_eos"],
                            pad_token_id=pad, do_sample=False)


def build_miniature(kind: str, out_dir: str | Path, seed: int = 0, texts: Iterable[str] | None = None,
                    init_std: float | None = None, tokenizer: Any = None, dtype: Any = None, device: Any = None,
                    **dims: Any) -> Path:
    """Write a random-weight `kind` checkpoint (model, tokenizer, generation config) to `out_dir`; return it.

    `dims` override the miniature's dimensions (hidden_size, num_hidden_layers, ... as in REAL_DIMS); `init_std`
    overrides the initializer range (a wider one makes a random decoder steerable in training tests). For
    full-size shapes pass `dtype=torch.bfloat16` (saved as published checkpoints are) and `device="cuda"` (random
    initialisation of billions of weights is minutes on a CPU, seconds on a GPU).
    """
    import torch
    from transformers import AutoModelForCausalLM, MllamaForConditionalGeneration

    out = Path(out_dir)
    tok = tokenizer if tokenizer is not None else build_tokenizer(kind, texts)
    cfg = model_config(kind, **dims)
    if init_std is not None:
        cfg.initializer_range = init_std
        if kind == "llama3.2-vision":
            cfg.text_config.initializer_range = init_std
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        if kind == "llama3.2-vision":
            model = MllamaForConditionalGeneration(cfg)
        else:
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config = generation_config(kind)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_all(root: str | Path, texts: Iterable[str] | None = None, **per_kind: dict) -> dict[str, Path]:
    """Every kind under `root/<kind>`; `per_kind[kind]` holds extra keyword arguments of build_miniature."""
    corpus = _corpus(texts)
    return {k: build_miniature(k, Path(root) / k, seed=i, texts=corpus, **per_kind.get(k, {}))
            for i, k in enumerate(KINDS)}
