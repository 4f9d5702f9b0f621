"""Loading the compressor and decoder (hub ids or local dirs), LoRA wrapping, and saving a trained cell.

Where the weights live (GPU; on CPU everything is float32 in one process):
- frozen weights are bf16: the decoder, and the base weights of a LoRA compressor. Trainable weights are float32
  with the torch engine (AdamW's master copy; autocast runs the matmuls in bf16) and bf16 under DeepSpeed, whose
  bf16 optimizer keeps the float32 master copy itself (a published checkpoint is bf16, so nothing is lost);
- ZeRO-3 cells (Qwen3-8B/32B, Llama-3.2-11B/90B) are built under DeepSpeed's `zero.Init` (transformers'
  `HfDeepSpeedConfig`): every parameter is partitioned over the ranks as it is loaded, so no rank ever holds the
  whole compressor (Qwen3-32B bf16: 66 GB, 8.2 GB per rank on 8 GPUs; Llama-3.2-90B: 177 GB, 11 GB per rank on
  16), with `offload_param` the partitions go to CPU memory. The frozen decoder is built in the same context, so it
  is partitioned too (Llama-3-8B-Instruct: 16 GB bf16, 2 GB per rank on 8): in exactly the cells where memory is
  the limit it is the cheaper choice, at the cost of all-gathering its layers in every forward (and in the
  recomputation of backward), which ZeRO-3 prefetches and overlaps with compute;
- ZeRO-0/1/2 and the torch engine: every rank holds a full bf16 replica of the decoder (16 GB), loaded straight
  onto its GPU.
- evaluation shards compressor and decoder over the job's GPUs (`eval_resources.gpu`) with an accelerate device
  map computed for both models together (`eval_device_maps`).
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from .compressor import CompressionHead, ContextCompressor, checkpointing_layers, num_memory_tokens

log = logging.getLogger(__name__)

HEAD_FILE = "head.pt"
META_FILE = "meta.json"


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU (fp16 diverges for this family of methods, per ICAE), fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def generation_eos(source: str) -> list[int]:
    """The EOS ids of `source`'s generation_config.json ([] when it has none)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(source).eos_token_id
    except (OSError, ValueError):
        return []
    return [int(i) for i in ([eos] if isinstance(eos, int) else (eos or []))]


def load_tokenizer(source: str):
    """The tokenizer of `source`, with a pad token, and an EOS that the model's generation config also lists.

    The reconstruction target ends with the tokenizer's EOS (ctxcomp.model.collate) and generation stops at every
    id of the generation config (evaluate.decoding.stop_ids): when the tokenizer names an EOS outside that set, the
    generation config's first is used instead, so the decoder is trained to emit a token that ends its generation.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    eos = generation_eos(source)
    if eos and tok.eos_token_id not in eos:
        log.info("%s: tokenizer EOS %r is not in its generation config %s; using %r", source, tok.eos_token, eos,
                 tok.convert_ids_to_tokens(eos[0]))
        tok.eos_token = tok.convert_ids_to_tokens(eos[0])
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(source: str, dtype: torch.dtype, attn_implementation: str = "sdpa",
                   device_map: Any = None):
    from transformers import AutoModelForCausalLM

    kw: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation}
    if device_map is not None:
        kw["device_map"] = device_map
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kw)
    except (ValueError, ImportError) as exc:
        if attn_implementation == "sdpa":
            raise
        log.warning("attention %s unavailable for %s (%s); falling back to sdpa", attn_implementation, source, exc)
        kw["attn_implementation"] = "sdpa"
        return AutoModelForCausalLM.from_pretrained(source, **kw)


def freeze_unused(model) -> list[str]:
    """Freeze layers that never run on text (Mllama's cross-attention layers: skipped without image states), so
    no optimizer state or LoRA gradient waits for them. Returns the frozen parameter names."""
    from .compressor import backbone

    stack = backbone(model)
    skipped = set(getattr(stack, "cross_attention_layers", None) or ())
    names = []
    for i in sorted(skipped):
        for n, p in stack.layers[i].named_parameters():
            p.requires_grad_(False)
            names.append(f"layers.{i}.{n}")
    return names


def compressor_dtype(finetune: str, device: torch.device, dtype: torch.dtype, engine: str) -> torch.dtype:
    """bf16 for frozen LoRA bases and under DeepSpeed (its bf16 optimizer holds the fp32 master copy); float32 for
    a fully fine-tuned compressor under the torch engine (the weights are AdamW's master copy). CPU: `dtype`."""
    if device.type != "cuda":
        return dtype
    if finetune == "lora" or engine == "deepspeed":
        return dtype
    return torch.float32


@contextlib.contextmanager
def zero3_init(settings: dict, device: torch.device, engine: str):
    """While open, `from_pretrained` builds models partitioned by DeepSpeed ZeRO-3 (zero.Init through transformers'
    HfDeepSpeedConfig) when the cell trains with DeepSpeed at stage 3; a no-op otherwise. Yields the DS config."""
    stage = int((settings["compressor"].get("deepspeed") or {}).get("zero_stage", 2))
    if engine != "deepspeed" or stage != 3:
        yield None
        return
    from transformers.integrations import HfDeepSpeedConfig

    from ..train.deepspeed_config import ds_config
    from ..train.ds_engine import init_distributed

    init_distributed(device.type)
    from deepspeed import comm as dist

    cfg = ds_config(settings, dist.get_world_size(), device.type)
    hf = HfDeepSpeedConfig(cfg)  # transformers holds a weak reference: keep it alive while models are built
    try:
        yield cfg
    finally:
        del hf


def apply_lora(model, lora: dict):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora.get("dropout", 0.0),
                     target_modules=lora.get("target_modules"), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def enable_checkpointing(model) -> int:
    """Activation checkpointing (non-reentrant) on every transformer layer of `model`; returns how many layers."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return len(checkpointing_layers(model))


def build_for_training(settings: dict, device: torch.device, dtype: torch.dtype, engine: str = "torch"):
    """A fresh ContextCompressor for one cell: pretrained compressor (full or LoRA), frozen decoder, new head.

    `engine` is the training engine that will run it ("torch" or "deepspeed"): it decides the compressor's dtype
    and whether the models are built partitioned (ZeRO-3); see the module docstring.
    """
    tr = settings["train"]
    attn = tr.get("attn_implementation", "sdpa")
    comp_src, dec_src = settings["compressor"]["source"], settings["decoder"]["source"]
    comp_tok, dec_tok = load_tokenizer(comp_src), load_tokenizer(dec_src)
    finetune = settings["compressor"]["finetune"]
    # Loaded straight onto this rank's GPU (not via host memory), unless ZeRO-3 partitions them while loading.
    with zero3_init(settings, device, engine) as zero3:
        place = device if device.type == "cuda" and not zero3 else None
        compressor = load_causal_lm(comp_src, compressor_dtype(finetune, device, dtype, engine), attn, place)
        decoder = load_causal_lm(dec_src, dtype, attn, place)
        if finetune == "lora":
            compressor = apply_lora(compressor, tr["lora"])
        frozen = freeze_unused(compressor)
        if frozen:
            log.info("%s: %d tensors of layers that never run on text frozen", comp_src, len(frozen))
        if tr.get("gradient_checkpointing"):
            enable_checkpointing(compressor)
            enable_checkpointing(decoder)
        M = num_memory_tokens(settings["segment"]["segment_tokens"], settings["cell"]["ratio"])
        model = ContextCompressor(compressor, decoder, M, decoder_bos_id=dec_tok.bos_token_id,
                                  compressor_bos_id=comp_tok.bos_token_id)
    if zero3:
        parts = [p for p in [*compressor.parameters(), *decoder.parameters()] if hasattr(p, "ds_id")]
        log.info("ZeRO-3: %d compressor/decoder tensors partitioned while loading: %d of %d elements on this rank",
                 len(parts), sum(p.ds_tensor.numel() for p in parts), sum(p.ds_numel for p in parts))
        return model, comp_tok, dec_tok  # deepspeed.initialize partitions and places the new (head, LoRA) weights
    return model.to(device), comp_tok, dec_tok


def save_weights(model: ContextCompressor, out_dir: str | Path, state_dict: dict | None = None) -> bool:
    """compressor/ (full weights) or compressor_lora/ (the adapter over its base), and head.pt. True if LoRA.

    `state_dict` (keys as in `model.state_dict()`, trainable part at least) replaces the module's own weights: a
    ZeRO-3 run's module holds only its partition, so the engine gathers a full copy (engine.export_state()).
    """
    out = Path(out_dir)
    comp = model.compressor
    is_lora = hasattr(comp, "peft_config")
    comp_state = head_state = None
    if state_dict is not None:
        comp_state = {k[len("compressor."):]: v for k, v in state_dict.items() if k.startswith("compressor.")}
        head_state = {k[len("head."):]: v for k, v in state_dict.items() if k.startswith("head.")}
    kw = {"state_dict": comp_state} if comp_state else {}
    comp.save_pretrained(out / ("compressor_lora" if is_lora else "compressor"), **kw)
    head_state = head_state or model.head.state_dict()
    torch.save({k: v.detach().cpu() for k, v in head_state.items()}, out / HEAD_FILE)
    return is_lora


def save_trained(model: ContextCompressor, comp_tok, dec_tok, out_dir: str | Path, meta: dict,
                 state_dict: dict | None = None) -> None:
    """final/: compressor (full weights, or the LoRA adapter over its base), tokenizers, head, meta.json."""
    out = Path(out_dir)
    is_lora = save_weights(model, out, state_dict)
    comp_tok.save_pretrained(out / "compressor_tokenizer")
    dec_tok.save_pretrained(out / "decoder_tokenizer")
    (out / META_FILE).write_text(json.dumps({**meta, "lora": is_lora, "num_memory": model.num_memory}, indent=2,
                                            default=str))


def load_trained(final_dir: str | Path, device: torch.device | None = None, dtype: torch.dtype | None = None,
                 compressor_dir: str | Path | None = None, head_file: str | Path | None = None,
                 gpus: int | None = None, max_memory: dict | None = None):
    """A trained cell for evaluation; `compressor_dir`/`head_file` select a probe checkpoint instead of final.

    `gpus` (the evaluation job's `eval_resources.gpu`, settings["gpus"]): with more than one, compressor and
    decoder are sharded over the first `gpus` devices by `eval_device_maps` (`max_memory` overrides the measured
    per-device budgets, e.g. {0: "70GiB", 1: "70GiB"}); with one or none, everything goes to `device`.
    """
    final = Path(final_dir)
    meta = json.loads((final / META_FILE).read_text())
    device = device or pick_device()
    dtype = dtype or pick_dtype(device)
    settings = meta["settings"]
    comp_tok = load_tokenizer(str(final / "compressor_tokenizer"))
    dec_tok = load_tokenizer(str(final / "decoder_tokenizer"))
    attn = settings["train"].get("attn_implementation", "sdpa")
    cdir = Path(compressor_dir) if compressor_dir else final / ("compressor_lora" if meta["lora"] else "compressor")
    comp_src = settings["compressor"]["source"] if meta["lora"] else str(cdir)
    dec_src = settings["decoder"]["source"]
    maps = eval_placement(comp_src, dec_src, dtype, device, gpus, max_memory)
    if meta["lora"]:
        from peft import PeftModel

        base = load_causal_lm(comp_src, dtype, attn, maps[0])
        compressor = PeftModel.from_pretrained(base, str(cdir)).merge_and_unload()
    else:
        compressor = load_causal_lm(comp_src, dtype, attn, maps[0])
    decoder = load_causal_lm(dec_src, dtype, attn, maps[1])
    head_state = torch.load(head_file or final / HEAD_FILE, map_location="cpu")
    M = meta["num_memory"]
    d_c, d_d = compressor.config.get_text_config().hidden_size, decoder.config.get_text_config().hidden_size
    head = CompressionHead(M, d_c, d_d, 1.0, 1.0)
    head.load_state_dict(head_state)
    model = ContextCompressor(compressor, decoder, M, head=head, decoder_bos_id=dec_tok.bos_token_id,
                              compressor_bos_id=comp_tok.bos_token_id)
    if maps[1] is None:
        model = model.to(device=device, dtype=dtype)
    else:  # sharded: the models stay where their maps put them; the head joins the decoder's input embeddings
        head.to(device=decoder.get_input_embeddings().weight.device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model, comp_tok, dec_tok, meta


def eval_placement(comp_src: str, dec_src: str, dtype: torch.dtype, device: torch.device, gpus: int | None,
                   max_memory: dict | None = None) -> tuple[Any, Any]:
    """(compressor device_map, decoder device_map) for evaluation: one device, or both models over `gpus` GPUs."""
    n = int(gpus or 0)
    if device.type != "cuda" or n <= 1:
        return (device, device) if device.type == "cuda" else (None, None)
    visible = torch.cuda.device_count()
    if visible < n:
        log.warning("eval_resources.gpu is %d but %d GPU(s) are visible: sharding over %d", n, visible, visible)
        n = visible
    if n <= 1:
        return device, device
    if max_memory is None:
        max_memory = {i: torch.cuda.mem_get_info(i)[0] for i in range(n)}
    return eval_device_maps(comp_src, dec_src, dtype, max_memory)


# Share of each device's free memory left for activations and the KV cache of batched generation.
EVAL_HEADROOM = 0.15


def skeleton(source: str):
    """`source`'s causal LM on the meta device (no memory, no weights read): what a device map is computed on."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    model.tie_weights()  # tied embeddings count once
    return model


def eval_device_maps(comp_src: str, dec_src: str, dtype: torch.dtype, max_memory: dict,
                     headroom: float = EVAL_HEADROOM) -> tuple[dict, dict]:
    """Device maps that spread compressor and decoder over the devices of `max_memory` ({device: bytes or "NGiB"}).

    Both models are planned together: each device gets the same share of their total size (capped at its budget
    less `headroom`), the compressor fills the first devices in layer order and the decoder continues where it
    stops, so each model's pipeline hands activations across as few devices as possible. Transformer layers are
    never split (the models' `_no_split_modules`). Raises MemoryError when the models do not fit.
    """
    from accelerate.utils import compute_module_sizes, convert_file_size_to_int, infer_auto_device_map

    models = [skeleton(comp_src), skeleton(dec_src)]
    sizes = [compute_module_sizes(m, dtype=dtype)[""] for m in models]
    budget = {d: int(convert_file_size_to_int(v) * (1 - headroom)) for d, v in max_memory.items()}
    total = sum(sizes)
    if total > sum(budget.values()):
        raise MemoryError(f"compressor {comp_src} ({sizes[0] / 2**30:.1f} GiB) and decoder {dec_src} "
                          f"({sizes[1] / 2**30:.1f} GiB) do not fit the evaluation GPUs' "
                          f"{sum(budget.values()) / 2**30:.1f} GiB (after {headroom:.0%} headroom): "
                          "raise eval_resources.gpu")
    # an even share of the total per device, plus the largest unsplittable block (a layer, the embeddings or
    # the LM head), which may have to sit whole on a device
    share = total / len(budget)
    maps = []
    left = dict(budget)
    for m in models:
        sizes_m = compute_module_sizes(m, dtype=dtype)
        blocks = [n for n, mod in m.named_modules() if n and (type(mod).__name__ in m._no_split_modules
                                                             or not any(True for _ in mod.children()))]
        biggest = max((sizes_m.get(n, 0) for n in blocks), default=0)
        cap = {d: min(left[d], int(share + biggest)) for d in left}
        dmap = infer_auto_device_map(m, max_memory=cap, no_split_module_classes=m._no_split_modules, dtype=dtype)
        if any(v in ("cpu", "disk") for v in dmap.values()):
            raise MemoryError(f"{type(m).__name__} does not fit the evaluation GPUs ({max_memory})")
        for name, d in dmap.items():
            left[d] -= sizes_m[name]
        maps.append(dmap)
    return maps[0], maps[1]
