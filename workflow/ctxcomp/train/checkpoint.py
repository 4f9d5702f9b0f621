"""Training checkpoints: complete or absent, newest found on restart, oldest pruned.

A checkpoint holds what an uninterrupted run would still have in memory: trainable weights, optimizer state, the
step, every RNG state and the loss log so far. Resuming from it gives bit-identical results on CPU.
"""
from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_dir

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "COMPLETE").exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> tuple[int, Path] | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only parameters that train (compressor or its LoRA, memory, adapter, markers): never the frozen decoder."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any], keep: int) -> Path:
    target = step_dir(root, step)
    with atomic_dir(target) as tmp:
        torch.save({"step": step, "model": trainable_state(model), "optimizer": optimizer.state_dict(),
                    "rng": rng_state(), **extra}, tmp / STATE_FILE)
        (tmp / "COMPLETE").write_text(str(step))
    prune(root, keep)
    log.info("checkpoint saved: %s", target)
    return target


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected:
        raise RuntimeError(f"checkpoint {path} holds parameters this model lacks: {unexpected[:5]}")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    absent = trainable - set(state["model"])
    if absent:
        raise RuntimeError(f"checkpoint {path} lacks trainable parameters {sorted(absent)[:5]}: "
                           "was it written by a different architecture or fine-tuning mode?")
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state


def prune(root: str | Path, keep: int) -> None:
    for _, p in list_checkpoints(root)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
