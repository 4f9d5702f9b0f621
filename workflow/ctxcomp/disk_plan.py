"""Disk a cell's training leaves behind: checkpoints while it runs, the trained model after, estimated in advance.

What is written (ctxcomp.train.checkpoint, ctxcomp.train.ds_engine, ctxcomp.model.load.save_trained):
- every `checkpoint_every` steps a resumable checkpoint of the trainable part, a `step_*` directory with its
  MANIFEST.json (size and sha256 of every file) and COMPLETE (bytes, not counted): the torch engine's state.pt
  holds fp32 weights, both AdamW moments and their step counters (the frozen decoder is never saved); DeepSpeed
  saves the module weights of trainable parameters in the module's dtype (bf16 on GPU, fp32 on CPU;
  `exclude_frozen_parameters`, ZeRO-0..2; ZeRO-3 keeps only its small partitioned module files) and, split over
  the ranks, the fp32 master copy and both moments. DeepSpeed drops a frozen parameter from the module file under
  its first name only: the tied LM head of a frozen model (a Qwen3 or tiny decoder, a LoRA compressor's base) is
  saved under its second name (ZeRO-0..2). A Qwen3-8B full fine-tune checkpoint under ZeRO-3 is 12 bytes per
  parameter, about 99 GB;
- `keep_checkpoints` are kept, and a new one is complete before the oldest is pruned: keep + 1 at the peak;
- final/: the compressor (full weights in the module's dtype, or the LoRA adapter) + the head + both tokenizers;
- the dynamics cell also keeps its compressor at every probe checkpoint (probe_checkpoints/).
When the cell finishes, its resumable checkpoints are dropped unless `train.keep_final_checkpoints` is true
(ctxcomp.train.loop); the final figure assumes that. Evaluation outputs (JSON and per-sample rows, megabytes) are
not counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .memory_plan import TrainShape, _sum, cell_tensors, train_shape
from .settings import CellTrainSettings, RuntimeSettings, TrainSettings

TOKENIZER_BYTES_PER_TOKEN = 80   # a saved tokenizer (tokenizer.json: vocabulary and merges): ~10 MB at 128k


@dataclass
class DiskEstimate:
    checkpoint_bytes: int      # one resumable checkpoint
    keep: int
    final_bytes: int           # final/: weights_bytes + tokenizers
    probe_bytes: int           # probe_checkpoints/ (dynamics cell)
    keep_final_checkpoints: bool
    weights_bytes: int = 0     # final/: the compressor (or its LoRA adapter) and the head

    @property
    def peak_bytes(self) -> int:
        return (self.keep + 1) * self.checkpoint_bytes + self.final_bytes + self.probe_bytes

    @property
    def after_bytes(self) -> int:
        kept = self.keep * self.checkpoint_bytes if self.keep_final_checkpoints else 0
        return self.final_bytes + self.probe_bytes + kept

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint_bytes": self.checkpoint_bytes, "keep": self.keep, "final_bytes": self.final_bytes,
                "probe_bytes": self.probe_bytes, "peak_bytes": self.peak_bytes, "after_bytes": self.after_bytes,
                "keep_final_checkpoints": self.keep_final_checkpoints, "weights_bytes": self.weights_bytes}


def probe_checkpoints(train: TrainSettings) -> int:
    """How many probe checkpoints the loop writes: at every `probe_every` steps and at the last step."""
    if not train.keep_probe_checkpoints:
        return 0
    steps, every = train.max_steps, train.probe_every
    return steps // every + (1 if steps % every else 0)


def estimate_disk(s: TrainShape, train: TrainSettings, runtime: RuntimeSettings) -> DiskEstimate:
    groups = cell_tensors(s.comp, s.dec, s.finetune, s.lora, s.num_memory)
    trainable = _sum(groups, trainable=True)
    used = _sum(groups, trainable=True, used=True)
    n_used = sum(g.count for g in groups if g.trainable and g.used)
    head = _sum([g for g in groups if g.name.startswith("head.")], trainable=True)
    weights = trainable - head  # the compressor's trainable part: all its weights, or its LoRA A/B
    if s.engine == "torch":
        ckpt = 4 * trainable + 8 * used + 4 * n_used  # weights, AdamW moments and step counters, all fp32
        wbytes = 4
    else:
        wbytes = 2 if s.device == "cuda" else 4
        # frozen models' tied heads (state_dict keeps the alias of a parameter excluded under its first name)
        frozen_tied = [d for d, frozen in ((s.comp, s.finetune == "lora"), (s.dec, True)) if frozen and d.tied]
        aliases = sum(d.vocab * d.hidden for d in frozen_tied)
        ckpt = 12 * trainable + (0 if s.zero_stage == 3 else wbytes * (trainable + aliases))
    saved = wbytes * (weights + head)
    final = saved + TOKENIZER_BYTES_PER_TOKEN * (s.comp.vocab + s.dec.vocab)
    probes = probe_checkpoints(train) * saved
    return DiskEstimate(ckpt, runtime.keep_checkpoints, final, probes, runtime.keep_final_checkpoints,
                        weights_bytes=saved)


def disk_estimate(cfg: dict, cell: Any, device: str = "cuda", dynamics: bool = False) -> DiskEstimate:
    """Disk of one training run (`dynamics`: the dynamics run, which keeps its probe checkpoints)."""
    run = CellTrainSettings.for_cell(cfg, cell, dynamics)
    return estimate_disk(train_shape(cfg, run, device), run.train, run.runtime)
