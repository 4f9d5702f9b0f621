"""Loading the compressor and decoder (hub ids or local dirs), LoRA wrapping, and saving a trained cell."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .compressor import CompressionHead, ContextCompressor, num_memory_tokens

log = logging.getLogger(__name__)

HEAD_FILE = "head.pt"
META_FILE = "meta.json"


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU (fp16 diverges for this family of methods, per ICAE), fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
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


def apply_lora(model, lora: dict):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora.get("dropout", 0.0),
                     target_modules=lora.get("target_modules"), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def build_for_training(settings: dict, device: torch.device, dtype: torch.dtype):
    """A fresh ContextCompressor for one cell: pretrained compressor (full or LoRA), frozen decoder, new head."""
    tr = settings["train"]
    attn = tr.get("attn_implementation", "sdpa")
    comp_src, dec_src = settings["compressor"]["source"], settings["decoder"]["source"]
    comp_tok, dec_tok = load_tokenizer(comp_src), load_tokenizer(dec_src)
    # Trainable weights stay fp32 (optimizer master copy); the frozen decoder can live in bf16 on GPU.
    compressor = load_causal_lm(comp_src, torch.float32, attn)
    decoder = load_causal_lm(dec_src, dtype, attn)
    if settings["compressor"]["finetune"] == "lora":
        compressor = apply_lora(compressor, tr["lora"])
    if tr.get("gradient_checkpointing"):
        compressor.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    M = num_memory_tokens(settings["segment"]["segment_tokens"], settings["cell"]["ratio"])
    model = ContextCompressor(compressor, decoder, M, decoder_bos_id=dec_tok.bos_token_id,
                              compressor_bos_id=comp_tok.bos_token_id)
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
                 compressor_dir: str | Path | None = None, head_file: str | Path | None = None):
    """A trained cell for evaluation; `compressor_dir`/`head_file` select a probe checkpoint instead of final."""
    final = Path(final_dir)
    meta = json.loads((final / META_FILE).read_text())
    device = device or pick_device()
    dtype = dtype or pick_dtype(device)
    settings = meta["settings"]
    comp_tok = load_tokenizer(str(final / "compressor_tokenizer"))
    dec_tok = load_tokenizer(str(final / "decoder_tokenizer"))
    attn = settings["train"].get("attn_implementation", "sdpa")
    cdir = Path(compressor_dir) if compressor_dir else final / ("compressor_lora" if meta["lora"] else "compressor")
    if meta["lora"]:
        from peft import PeftModel

        base = load_causal_lm(settings["compressor"]["source"], dtype, attn)
        compressor = PeftModel.from_pretrained(base, str(cdir)).merge_and_unload()
    else:
        compressor = load_causal_lm(str(cdir), dtype, attn)
    decoder = load_causal_lm(settings["decoder"]["source"], dtype, attn)
    head_state = torch.load(head_file or final / HEAD_FILE, map_location="cpu")
    M = meta["num_memory"]
    d_c, d_d = compressor.config.hidden_size, decoder.config.hidden_size
    head = CompressionHead(M, d_c, d_d, 1.0, 1.0)
    head.load_state_dict(head_state)
    model = ContextCompressor(compressor, decoder, M, head=head, decoder_bos_id=dec_tok.bos_token_id,
                              compressor_bos_id=comp_tok.bos_token_id)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model, comp_tok, dec_tok, meta
