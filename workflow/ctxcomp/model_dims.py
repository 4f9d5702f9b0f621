"""Architecture dimensions of the models the pipeline loads, and their exact parameter counts.

The memory and disk plan (ctxcomp.memory_plan, ctxcomp.disk_plan) needs the shapes of every model before anything
is downloaded. Sources, in order:
- a local directory (a weight mirror, or the tiny preset's pretrained base): its transformers config (AutoConfig);
- a `build:` entry of config.yaml (tiny preset, before the base model exists): the entry's dims and the vocabulary
  size of its tokenizer;
- a Hugging Face id: `HUB_DIMS`, the text-model dims of the real config.json of every model in config.yaml. When
  that config is in the local Hugging Face cache (HF_HOME), it is read (never downloaded) and must agree with the
  table, else `DimsMismatch` names the field.

Llama-3.2-Vision (model_type mllama): AutoModelForCausalLM loads MllamaForCausalLM, the text stack only: its
embedding has vocab + 8 rows (image and padding tokens), and `cross_layers` of its layers are cross-attention
layers (q/k RMSNorm over head_dim, two scalar gates) that hold weights but are skipped without image states, so they
cost parameters and optimizer state but no activations.

Parameter counts are exact for the three architecture classes (Qwen3ForCausalLM, LlamaForCausalLM,
MllamaForCausalLM): no biases, RMSNorm weights only, tied embeddings counted once (tests/test_memory_plan.py
checks them against models built from small configs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

#: LoRA targets the pipeline uses, by module name inside a decoder layer: (input width, output width) keys.
LINEAR_SHAPES = {
    "q_proj": ("hidden", "q_width"), "k_proj": ("hidden", "kv_width"), "v_proj": ("hidden", "kv_width"),
    "o_proj": ("q_width", "hidden"), "gate_proj": ("hidden", "intermediate"), "up_proj": ("hidden", "intermediate"),
    "down_proj": ("intermediate", "hidden"),
}


class DimsMismatch(ValueError):
    """The table of hub-model dims disagrees with a real config (local dir or Hugging Face cache)."""


@dataclass(frozen=True)
class ArchDims:
    """What the memory plan needs of one causal LM (the text stack for vision-language checkpoints)."""

    family: str                 # qwen3 | llama | mllama
    hidden: int
    layers: int                 # all decoder layers, cross-attention layers included
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int                  # LM-head rows (the embedding may have `embed_extra` more)
    tied: bool
    bos: bool                   # the tokenizer prepends a BOS (Llama-3 yes, Qwen3 no)
    cross_layers: int = 0       # mllama: cross-attention layers among `layers`
    embed_extra: int = 0        # mllama: 8 extra embedding rows

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def qk_norm(self) -> bool:
        return self.family == "qwen3"

    @property
    def self_layers(self) -> int:
        """Layers that run (and keep activations) on text-only inputs."""
        return self.layers - self.cross_layers

    def linear(self, name: str) -> tuple[int, int]:
        a, b = LINEAR_SHAPES[name]
        return getattr(self, a), getattr(self, b)

    def as_dict(self) -> dict:
        return asdict(self)


def _qwen3(hidden, layers, heads, intermediate, tied) -> ArchDims:
    return ArchDims("qwen3", hidden, layers, heads, 8, 128, intermediate, 151936, tied, bos=False)


def _llama(hidden, layers, heads, head_dim, intermediate, tied) -> ArchDims:
    return ArchDims("llama", hidden, layers, heads, 8, head_dim, intermediate, 128256, tied, bos=True)


#: Text-model dims from each model's config.json on the Hugging Face hub (Llama-3.2-Vision: its text_config).
HUB_DIMS: dict[str, ArchDims] = {
    "Qwen/Qwen3-0.6B": _qwen3(1024, 28, 16, 3072, tied=True),
    "Qwen/Qwen3-1.7B": _qwen3(2048, 28, 16, 6144, tied=True),
    "Qwen/Qwen3-4B": _qwen3(2560, 36, 32, 9728, tied=True),
    "Qwen/Qwen3-8B": _qwen3(4096, 36, 32, 12288, tied=False),
    "Qwen/Qwen3-32B": _qwen3(5120, 64, 64, 25600, tied=False),
    "meta-llama/Llama-3.2-1B": _llama(2048, 16, 32, 64, 8192, tied=True),
    "meta-llama/Llama-3.2-3B": _llama(3072, 28, 24, 128, 8192, tied=True),
    "meta-llama/Meta-Llama-3-8B-Instruct": _llama(4096, 32, 32, 128, 14336, tied=False),
    "meta-llama/Llama-3.2-11B-Vision": replace(_llama(4096, 40, 32, 128, 14336, tied=False), family="mllama",
                                               cross_layers=8, embed_extra=8),
    "meta-llama/Llama-3.2-90B-Vision": replace(_llama(8192, 100, 64, 128, 28672, tied=False), family="mllama",
                                               cross_layers=20, embed_extra=8),
}


# ------------------------------------------------------------------------------------------------ reading
def dims_from_config(config: Any) -> ArchDims:
    """ArchDims of a transformers config (or its dict); a vision-language config contributes its text_config."""
    cfg = config if isinstance(config, dict) else config.to_dict()
    model_type = cfg.get("model_type", "")
    if cfg.get("text_config"):
        text = dict(cfg["text_config"])
        text.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
        cfg, model_type = text, ("mllama" if model_type.startswith("mllama") else model_type)
    family = {"qwen3": "qwen3", "llama": "llama", "mllama": "mllama", "mllama_text_model": "mllama"}.get(model_type)
    if family is None:
        raise ValueError(f"no memory model for architecture {model_type!r} (known: qwen3, llama, mllama)")
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    cross = len(cfg.get("cross_attention_layers") or []) if family == "mllama" else 0
    return ArchDims(
        family=family, hidden=hidden, layers=int(cfg["num_hidden_layers"]), heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads), head_dim=int(cfg.get("head_dim") or hidden // heads),
        intermediate=int(cfg["intermediate_size"]), vocab=int(cfg["vocab_size"]),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        bos=family != "qwen3" and cfg.get("bos_token_id") is not None,
        cross_layers=cross, embed_extra=8 if family == "mllama" else 0)


def dims_from_build(spec: dict, vocab: int) -> ArchDims:
    """ArchDims of a tiny-preset `build:` entry (ctxcomp.tiny.build makes tied models of this shape)."""
    heads = spec["num_attention_heads"]
    return ArchDims(family=spec["arch"], hidden=spec["hidden_size"], layers=spec["num_hidden_layers"], heads=heads,
                    kv_heads=spec["num_key_value_heads"], head_dim=spec.get("head_dim") or spec["hidden_size"] // heads,
                    intermediate=spec["intermediate_size"], vocab=vocab, tied=True, bos=spec["arch"] != "qwen3")


def _cached_hub_config(hf_id: str) -> str | None:
    """Directory of `hf_id`'s config.json in the local Hugging Face cache, or None (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(hf_id, "config.json")
    return str(Path(found).parent) if isinstance(found, str) else None


def _auto_config(path: str) -> ArchDims:
    from transformers import AutoConfig

    return dims_from_config(AutoConfig.from_pretrained(path, local_files_only=True))


def check_against_table(hf_id: str, found: ArchDims, where: str) -> None:
    table = HUB_DIMS[hf_id]
    bad = [f"{k}: table {v!r}, config {found.as_dict()[k]!r}" for k, v in table.as_dict().items()
           if k != "bos" and found.as_dict()[k] != v]
    if bad:
        raise DimsMismatch(f"ctxcomp.model_dims.HUB_DIMS[{hf_id!r}] disagrees with {where}: " + "; ".join(bad))


def dims_of(cfg: dict, name: str, source: str | None = None) -> ArchDims:
    """Dims of config model `name` (loaded from `source`, default its config source): a local directory, its
    `build:` entry, or the hub table (checked against the Hugging Face cache when that has the config)."""
    from .config import model_source

    spec = cfg["models"][name]
    source = source or model_source(cfg, name)
    if Path(source).is_dir() and (Path(source) / "config.json").exists():
        found = _auto_config(source)
        if spec.get("hf_id") in HUB_DIMS:
            check_against_table(spec["hf_id"], found, f"{source}/config.json")
        return found
    if "build" in spec:
        tok = cfg["tiny"]["tokenizers"][spec["build"]["tokenizer"]]
        return dims_from_build(spec["build"], tok["vocab_size"])
    if source in HUB_DIMS:
        cached = _cached_hub_config(source)
        if cached:
            check_against_table(source, _auto_config(cached), f"the Hugging Face cache ({cached})")
        return HUB_DIMS[source]
    raise KeyError(f"models.{name}.hf_id: {source!r} is neither a local directory with a config.json nor in "
                   "ctxcomp.model_dims.HUB_DIMS; add its text-model dims there (or point hf_id at a local copy)")


# ------------------------------------------------------------------------------------------------- counts
def layer_params(d: ArchDims) -> int:
    """Parameters of one self-attention decoder layer (projections, two RMSNorms, q/k norms for Qwen3)."""
    linears = sum(a * b for a, b in map(d.linear, LINEAR_SHAPES))
    return linears + 2 * d.hidden + (2 * d.head_dim if d.qk_norm else 0)


def cross_layer_params(d: ArchDims) -> int:
    """Parameters of one Mllama cross-attention layer: the same projections, q/k norms, two norms, two gates."""
    return sum(a * b for a, b in map(d.linear, LINEAR_SHAPES)) + 2 * d.hidden + 2 * d.head_dim + 2


def embedding_params(d: ArchDims) -> int:
    return (d.vocab + d.embed_extra) * d.hidden


def lm_head_params(d: ArchDims) -> int:
    return 0 if d.tied else d.vocab * d.hidden


def total_params(d: ArchDims) -> int:
    return (embedding_params(d) + lm_head_params(d) + d.hidden + d.self_layers * layer_params(d)
            + d.cross_layers * cross_layer_params(d))


def param_tensors(d: ArchDims) -> int:
    """Number of parameter tensors (optimizer states are per tensor: AdamW keeps a `step` tensor for each)."""
    per_layer = len(LINEAR_SHAPES) + 2 + (2 if d.qk_norm else 0)
    per_cross = len(LINEAR_SHAPES) + 2 + 2 + 2
    return 1 + (0 if d.tied else 1) + 1 + d.self_layers * per_layer + d.cross_layers * per_cross


def lora_params(d: ArchDims, r: int, targets: list[str]) -> tuple[int, int]:
    """(parameters, tensors) of LoRA A (r x in) and B (out x r) on every targeted linear of every layer."""
    per_layer = sum(r * (a + b) for a, b in (d.linear(t) for t in targets if t in LINEAR_SHAPES))
    n = sum(1 for t in targets if t in LINEAR_SHAPES)
    return d.layers * per_layer, d.layers * 2 * n
