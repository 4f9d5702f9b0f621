"""DeepSpeed (ZeRO) implementation of the training-engine interface, train.engine.Engine.

One object per rank. Only the trainable parameters (compressor or its LoRA, memory, adapter, markers) are handed to
DeepSpeed's optimizer, so the frozen decoder has no optimizer state, no gradient buffers and is left out of
checkpoints (`exclude_frozen_parameters`); it is reloaded from its source on restart like at the first start.

Gradient accumulation: the loop calls `backward` once per micro-batch and `step` once per global batch. DeepSpeed
counts micro-steps itself (its `step()` is a no-op except at the accumulation boundary), so `backward` advances
DeepSpeed's counter on every micro-batch but the last, and `step` sets the learning rate and takes the boundary step.
`backward` receives the unscaled micro-batch loss: DeepSpeed divides by the accumulation steps.

Checkpoints: `engine.save_checkpoint(root, tag="step_XXXXXXXX", client_state=...)`. client_state carries the loop's
history/dynamics and the step; every rank also writes its RNG states beside its optimizer shard. A tag directory
counts only once rank 0 has written COMPLETE after every rank finished (same convention as the torch engine, so
ctxcomp.train.checkpoint lists, picks and prunes both kinds). The DeepSpeed config is kept in root and in every tag.

Outside a launcher (plain `python`), the process-group environment is filled in for a single process, so the same
code runs a one-process DeepSpeed job on a laptop; gloo on CPU (DS_ACCELERATOR=cpu), nccl on GPU.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path

import torch

from ..settings import CellTrainSettings
from . import checkpoint as ckpt
from .deepspeed_config import CONFIG_FILE, ds_config, write_config

log = logging.getLogger(__name__)

RNG_FILE = "rng_rank{rank:05d}.pt"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> bool:
    """Fill in a one-process rendezvous when no launcher did (else DeepSpeed goes looking for MPI). True if it did."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return False
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    return True


def init_distributed(device_type: str) -> None:
    if device_type != "cuda":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    single_process_env()
    import deepspeed
    from deepspeed import comm as dist

    if device_type != "cuda" and os.environ.get("CTXCOMP_DS_SHM", "0") != "1":
        # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op (~80 s with a cold cache) when the
        # process group starts. gloo does the same job; CPU runs here are tests and laptops, so skip the build.
        # (DeepSpeed keeps this dict in the module and documents that edits to it persist.)
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo", verbose=False)


class DeepSpeedEngine:
    """One rank of a DeepSpeed ZeRO run (stage and offload from the compressor's `deepspeed` spec)."""

    name = "deepspeed"
    module: torch.nn.Module
    rank: int
    world_size: int
    is_main: bool
    accum: int
    partitioned: bool

    def __init__(self, module: torch.nn.Module, run: CellTrainSettings):
        self.device = next(module.parameters()).device
        device_type = self.device.type
        init_distributed(device_type)
        import deepspeed
        from deepspeed import comm as dist

        self._dist = dist
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()
        self.is_main = self.rank == 0
        self.config = ds_config(run, self.world_size, device_type)
        self.clip = self.config["gradient_clipping"]
        self.zero_stage = self.config["zero_optimization"]["stage"]
        self.partitioned = self.zero_stage == 3  # module parameters hold only this rank's partition
        params = [p for p in module.parameters() if p.requires_grad]
        n_frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=module, model_parameters=params,
                                                                 config=self.config)
        self.module = self.engine.module
        self.device = self.engine.device
        self.accum = self.engine.gradient_accumulation_steps()
        if self.is_main:
            log.info("DeepSpeed ZeRO-%d on %d rank(s) (%s): %d trainable / %d frozen parameters, accumulation %d",
                     self.zero_stage, self.world_size, device_type, sum(p.numel() for p in params), n_frozen,
                     self.accum)

    # ------------------------------------------------------------------------------------------- stepping
    def autocast(self) -> contextlib.AbstractContextManager:
        # DeepSpeed's bf16 mode casts the module itself (fp32 master weights live in the optimizer): no autocast.
        return contextlib.nullcontext()

    def forward(self, batch: dict, weights: dict) -> dict:
        return self.engine(batch, weights=weights)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)  # scales by 1 / gradient_accumulation_steps itself
        if not self.engine.is_gradient_accumulation_boundary():
            self.engine.step()  # advances the micro-step counter only; no update off the boundary

    def step(self, lr: float, clip: float) -> float:
        if not self.engine.is_gradient_accumulation_boundary():
            raise RuntimeError(f"step() called after fewer than {self.accum} backward() calls")
        if clip != self.clip and not getattr(self, "_clip_warned", False):
            log.warning("grad clip %s requested but DeepSpeed clips at %s (its config)", clip, self.clip)
            self._clip_warned = True
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def reduce_row(self, row: dict) -> dict:
        """Mean over ranks of the per-rank losses (each rank saw its own share of the global batch)."""
        if self.world_size == 1:
            return row
        keys = [k for k in ("loss", "loss_re", "loss_nt", "tokens_per_s") if k in row]
        t = torch.tensor([float(row[k]) for k in keys], dtype=torch.float64, device=self.device)
        self._dist.all_reduce(t)
        t /= self.world_size
        return {**row, **{k: float(v) for k, v in zip(keys, t.tolist())}}

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if it is True on any (a signal reaches the ranks at slightly different steps)."""
        if self.world_size == 1:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        self._dist.all_reduce(t, op=self._dist.ReduceOp.MAX)
        return bool(t.item())

    def gathered(self, params: Iterable[torch.nn.Parameter]) -> contextlib.AbstractContextManager:
        """Full copies of (ZeRO-3-partitioned) `params` inside the block, read-only; collective."""
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)

    def barrier(self) -> None:
        self._dist.barrier()

    # ------------------------------------------------------------------------------------------ checkpoints
    def save(self, root: str | Path, step: int, extra: dict, keep: int, run_hash: str | None = None) -> None:
        root = Path(root)
        tag = ckpt.step_dir(root, step).name
        target = root / tag
        if self.is_main:
            root.mkdir(parents=True, exist_ok=True)
            write_config(self.config, root / CONFIG_FILE)
            if target.exists():  # an incomplete save of this step by a killed run: start clean
                shutil.rmtree(target)
        self.barrier()
        self.engine.save_checkpoint(str(root), tag=tag, client_state={"step": step, **extra},
                                    save_latest=False, exclude_frozen_parameters=True)
        torch.save(ckpt.rng_state(), target / RNG_FILE.format(rank=self.rank))
        if self.is_main:
            write_config(self.config, target / CONFIG_FILE)
        self.barrier()
        ckpt.write_share(target, self.rank, self.world_size)  # every rank hashes its share of the files
        self.barrier()
        if self.is_main:
            ckpt.finalize(target, step, run_hash, world=self.world_size)  # MANIFEST.json, then COMPLETE
            ckpt.prune(root, keep)
            log.info("checkpoint saved: %s", target)
        self.barrier()

    def verify(self, path: str | Path, level: str = "sha256") -> list[str]:
        """Collective: each rank checks its share; every rank returns a problem list, non-empty if any rank's is."""
        problems = ckpt.verify(path, level, self.rank, self.world_size)
        if self.any_rank(bool(problems)) and not problems:
            problems = [f"{path}: failed verification on another rank (see its log)"]
        return problems

    def load(self, path: str | Path) -> dict:
        path = Path(path)
        step = int(path.name.split("_")[-1])
        try:
            load_path, client_state = self.engine.load_checkpoint(str(path.parent), tag=path.name,
                                                                  load_module_strict=False)
        except Exception as exc:  # DeepSpeed's errors do not say which checkpoint
            raise ckpt.CheckpointError(f"DeepSpeed could not load checkpoint {path}: {type(exc).__name__}: "
                                       f"{exc}") from exc
        if load_path is None:
            raise ckpt.CheckpointError(f"DeepSpeed could not load checkpoint {path}")
        rng = path / RNG_FILE.format(rank=self.rank)
        if rng.exists():
            ckpt.set_rng_state(torch.load(rng, map_location="cpu", weights_only=False))
        else:
            log.warning("%s has no RNG state for rank %d (world size changed?): RNG not restored", path, self.rank)
        client_state = dict(client_state or {})
        client_state.setdefault("step", step)
        return client_state

    # ------------------------------------------------------------------------------------------------ export
    def export_state(self) -> dict[str, torch.Tensor] | None:
        """Trainable weights as a full (unpartitioned) state dict on rank 0, for writing the final model.

        Collective: every rank must call it. Under ZeRO-3 the module's parameters are partitioned, so they are
        gathered layer by layer; under ZeRO-0/1/2 every rank holds full weights and None means "use the module".
        """
        if self.zero_stage != 3:
            return None
        return self.engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=True)
