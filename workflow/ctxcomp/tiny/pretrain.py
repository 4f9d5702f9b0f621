"""Brief language-model pretraining of the tiny base models on the shipped corpus.

The frozen decoder must be a language model, not noise, or "reconstruct from memory" has nothing to build on.
Every decoder prefix of the pipeline starts with BOS (for a tokenizer that has one), so every pretraining window
does too (`windows`): a model that never saw BOS as an input would meet an unknown first token in every prefix.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_dir, write_json
from ..train.schedule import lr_at
from .build import build_model
from .tokenizer import iter_corpus

if TYPE_CHECKING:  # torch is imported where it is used: the module is imported by light entry points too
    import torch

log = logging.getLogger(__name__)


def token_stream(corpus: str | Path, tokenizer) -> torch.Tensor:
    import torch

    texts = list(iter_corpus(corpus))
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    flat = [t for doc in ids for t in (*doc, eos)]
    return torch.tensor(flat, dtype=torch.long)


def windows(stream: torch.Tensor, starts: list[int], seq_len: int, bos_id: int | None) -> torch.Tensor:
    """(B, seq_len) training windows: [BOS] + seq_len - 1 stream tokens from each start (no BOS: seq_len tokens)."""
    import torch

    if bos_id is None:
        return torch.stack([stream[s : s + seq_len] for s in starts])
    bos = torch.tensor([bos_id], dtype=stream.dtype)
    return torch.stack([torch.cat([bos, stream[s : s + seq_len - 1]]) for s in starts])


def pretrain(spec: dict, tokenizer_dir: str, corpus: str, out_dir: str, seed: int, seq_len: int, batch_size: int,
             lr: float) -> dict:
    """Pretrain the model `spec` (`models.<name>.build`) with `tiny.pretrain`'s seq_len, batch_size and lr."""
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_model(spec, tok, seed)
    stream = token_stream(corpus, tok)
    steps = spec["pretrain_steps"]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    history, t0 = [], time.time()
    for step in tqdm(range(steps), desc=f"pretrain {Path(out_dir).name}", mininterval=5):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, warmup_steps=max(1, steps // 20), max_steps=steps, min_lr_ratio=0.1)
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch_size,), generator=gen)
        batch = windows(stream, starts.tolist(), seq_len, tok.bos_token_id)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log.info("step %d loss %.4f", step, float(loss))
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "steps": steps,
        "params": n_params,
        "tokens_seen": steps * batch_size * seq_len,
        "bos_initial_windows": tok.bos_token_id is not None,
        "loss_first": history[0],
        "loss_last_10": sum(history[-10:]) / len(history[-10:]),
        "wall_s": time.time() - t0,
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(Path(tmp) / "pretrain.json", {**info, "spec": spec, "loss": history})
    log.info("pretrained %s: %s", out_dir, info)
    return info
