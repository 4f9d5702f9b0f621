"""The data-parallel world of a training run: its size and the gradient accumulation a global batch needs in it.

Shared by the engines (train/engine.py, train/ds_engine.py) and the DeepSpeed config (train/deepspeed_config.py),
which is why it is a module of its own: none of them imports another for it.
"""
from __future__ import annotations

import os

from ..settings import TrainSettings


def world_size() -> int:
    """Ranks of this run as the launcher set them (WORLD_SIZE); 1 outside a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def accumulation_steps(train: TrainSettings, world: int) -> int:
    """Micro-batches per optimizer step on each of `world` ranks: global batch / (micro batch x world)."""
    micro = train.micro_batch_size
    if train.global_batch_size % (micro * world):
        raise ValueError(f"train.global_batch_size={train.global_batch_size} is not a multiple of "
                         f"micro_batch_size x world size = {micro} x {world}")
    return train.global_batch_size // (micro * world)
