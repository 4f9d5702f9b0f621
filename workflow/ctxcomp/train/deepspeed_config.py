"""The DeepSpeed JSON config of one training cell, derived from its settings (never written by hand).

Everything that matters comes from the cell's settings: batch sizes (micro batch per rank, gradient accumulation,
global batch), gradient clipping, AdamW hyper-parameters, and the ZeRO stage / offload of the compressor model
(`models.<name>.deepspeed` in config.yaml). The learning rate in the config is only the initial value: the loop
sets it every step from `ctxcomp.train.schedule.lr_at` on the optimizer's param groups, so there is no DeepSpeed
scheduler. The file is written next to every checkpoint, so a checkpoint always says how it was trained.

Choices made here (the paper is silent on them):
- bf16 on GPU (fp16 diverges for this family of methods, per ICAE), fp32 on CPU (no bf16 matmul speed-up there).
- `torch_adam: true`: torch.optim.AdamW inside ZeRO. DeepSpeed's fused/CPU Adam ops JIT-compile on first use
  (≈50 s on CPU, a CUDA toolchain on GPU); torch's AdamW is close in speed for the trainable share. With optimizer
  offload, `zero_force_ds_cpu_optimizer: false` lets the torch optimizer step on the CPU copy.
- `overlap_comm` only on GPU (it relies on CUDA streams; on gloo it brings nothing).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from .engine import accumulation_steps

CONFIG_FILE = "ds_config.json"
# Communication buckets (elements). GPU: large enough not to starve NVLink/IB on 8×H100, bounded extra memory.
# CPU: ZeRO allocates and walks whole buckets every step, and 2e8 fp32 elements made a tiny model's step 15× slower.
BUCKET_GPU = 200_000_000
BUCKET_CPU = 5_000_000


def ds_config(settings: dict, world_size: int, device_type: str) -> dict[str, Any]:
    """DeepSpeed config for `world_size` data-parallel ranks on `device_type` ("cuda" or "cpu")."""
    tr = settings["train"]
    micro = int(tr["micro_batch_size"])
    accum = accumulation_steps(settings, world_size)
    gpu = device_type == "cuda"
    zero = zero_section(settings, gpu)
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world_size,
        "gradient_clipping": float(tr.get("grad_clip", 0.0)),
        "zero_optimization": zero,
        "bf16": {"enabled": gpu},
        "fp16": {"enabled": False},
        "optimizer": optimizer_section(tr),
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if "offload_optimizer" in zero:
        cfg["zero_force_ds_cpu_optimizer"] = False
    return cfg


def zero_section(settings: dict, gpu: bool) -> dict[str, Any]:
    """`zero_optimization`: the compressor's stage and offload (models.<name>.deepspeed), buckets per device."""
    ds = dict(settings["compressor"].get("deepspeed") or {})
    stage = int(ds.get("zero_stage", 2))
    bucket = BUCKET_GPU if gpu else BUCKET_CPU
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": gpu and stage > 0,
        "contiguous_gradients": True,
        "reduce_scatter": True,
        "reduce_bucket_size": bucket,
        "allgather_bucket_size": bucket,
    }
    if stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": bucket // 4,
            "stage3_param_persistence_threshold": 1_000_000,
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            # the final model is written from a gathered copy (ctxcomp.train.ds_engine.export_state)
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if ds.get("offload_param") and stage != 3:
        raise ValueError(f"compressor {settings['compressor'].get('name')!r}: offload_param needs zero_stage 3 "
                         f"(got {stage})")
    if ds.get("offload_optimizer") and stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": gpu}
    if ds.get("offload_param") and stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": gpu}
    return zero


def optimizer_section(tr: dict) -> dict[str, Any]:
    """AdamW (torch's, see the module docstring) with the cell's hyper-parameters; the loop sets the lr per step."""
    return {
        "type": "AdamW",
        "params": {
            "lr": float(tr["lr"]),
            "betas": [float(b) for b in tr.get("adam_betas", (0.9, 0.95))],
            "eps": 1e-8,
            "weight_decay": float(tr.get("weight_decay", 0.0)),
            "torch_adam": True,
        },
    }


def write_config(cfg: dict, path: str | Path) -> Path:
    from ..io import atomic_write

    path = Path(path)
    with atomic_write(path) as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return path


class _DataParallel:
    """The minimal `mpu` DeepSpeedConfig asks for the data-parallel world size."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def get_data_parallel_world_size(self) -> int:
        return self.world_size

    def get_data_parallel_rank(self) -> int:
        return 0


def validate(cfg: dict, world_size: int):
    """Parse `cfg` with DeepSpeed's own DeepSpeedConfig as it would be on `world_size` ranks; return the parsed object.

    No process group is needed: outside a distributed run DeepSpeedConfig would assume one rank (and then reject the
    batch sizes of a multi-GPU config), so rank 0 of a `world_size`-rank data-parallel group is simulated.
    """
    import copy
    from unittest import mock

    from deepspeed import comm as dist
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = copy.deepcopy(cfg)
    patch = contextlib.nullcontext() if dist.is_initialized() else mock.patch.object(dist, "get_rank", lambda *a: 0)
    with patch:
        return DeepSpeedConfig(cfg, mpu=_DataParallel(world_size))
