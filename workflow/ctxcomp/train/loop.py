"""Training one cell: compressor + adapter + memory + markers against a frozen decoder, loss L_re + L_nt.

The loop is engine-agnostic: `TorchEngine` (one process, CPU or one GPU) and `DeepSpeedEngine` (ZeRO, many GPUs
or nodes) expose the same few calls, so the data order, logging, probes, checkpoints and the resume logic are the
same code on a laptop and on 16 GPUs.

Run directory (train/<cell>/, or dynamics/<cell>/train/ for the dynamics run), besides the declared outputs:
    checkpoints/step_XXXXXXXX/   verified resume points (train/checkpoint.py), dropped when the run has finished
                                 unless train.keep_final_checkpoints
    RUN.json                     hash of everything that determines this run; other state is reset on a mismatch
    loss.partial.csv, dynamics.partial.csv   the logs so far, rewritten at every checkpoint (progress of a job)
    tensorboard/                 event files (rank 0): loss terms, lr, grad norm, tokens/s, probe erank/entropy
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .. import config as C
from ..fingerprint import path_fingerprint
from ..io import atomic_dir, atomic_write, provenance, read_jsonl, write_json
from ..model.collate import Collator, to_device
from ..model.load import build_for_training, pick_device, pick_dtype, save_trained, save_weights
from ..settings import CellTrainSettings, to_dict
from . import checkpoint as ckpt
from .data import JsonlIndex, batch_indices, rank_slice
from .engine import choose_engine, make_engine
from .schedule import lr_at

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, run again to resume
LOSS_COLUMNS = ["step", "loss", "loss_re", "loss_nt", "lr", "grad_norm", "tokens_per_s", "elapsed_s"]
DYN_COLUMNS = ["step", "erank", "entropy"]
#: Bump when the checkpoint layout or what it means changes: older checkpoints are then set aside, not resumed.
CHECKPOINT_FORMAT = 2


class StopFlag:
    """Set by SIGTERM / SIGUSR1 (what Slurm sends before a time limit or preemption) and SIGINT."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under a test runner thread)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("received signal %d: checkpointing at the end of this step", signum)
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def __bool__(self) -> bool:
        return self.signum is not None


class _WithHead:
    """`model` whose decoder reports `head` as its output embeddings; everything else is the model's own."""

    def __init__(self, model: Any, head: Any):
        self._model = model
        self.decoder = _DecoderWithHead(model.decoder, head)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _DecoderWithHead:
    def __init__(self, decoder: Any, head: Any):
        self._decoder = decoder
        self._head = head

    def get_output_embeddings(self) -> Any:
        return self._head

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)


class Preempted(SystemExit):
    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state that third-party code draws from)
    torch.manual_seed(seed)


def write_csv(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    with atomic_write(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def run_hash(run: CellTrainSettings, train_path: str | Path, probe_path: str | Path) -> str:
    """Hash of everything that determines a training run: its settings (the rule's params, without the runtime
    keys), the content of the data it reads and of the (local) models it starts from, and the checkpoint format."""
    return C.stable_hash({
        "format": CHECKPOINT_FORMAT,
        "settings": C.determining(run.to_dict()),
        "data": {"train": path_fingerprint(train_path), "probe": path_fingerprint(probe_path)},
        "models": {"compressor": path_fingerprint(run.compressor.source),
                   "decoder": path_fingerprint(run.decoder.source)},
    })


class _Board:
    """TensorBoard events of one run (rank 0); a resumed run hides the events it is about to write again."""

    def __init__(self, log_dir: Path, start: int, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError("train.tensorboard is true but the `tensorboard` package is not installed "
                               "(install it, or set train.tensorboard: false)") from exc
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start + 1)  # steps are 1-based

    def scalars(self, step: int, values: dict, prefix: str) -> None:
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Trainer:
    def __init__(self, settings: CellTrainSettings | Mapping, train_path: str, probe_path: str, run_dir: str,
                 engine: str | None = None, stop_at_step: int | None = None):
        self.run_settings = run = CellTrainSettings.of(settings)
        if run.runtime is None:
            raise C.ConfigError("config error at 'runtime': a training run needs its runtime settings "
                                "(ctxcomp.config.train_runtime; CellTrainSettings.for_cell builds both)")
        self.tr = run.train
        self.rt = run.runtime
        self.run_dir = Path(run_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.probe_root = self.run_dir / "probe_checkpoints.partial"
        self.loss_partial = self.run_dir / "loss.partial.csv"
        self.dyn_partial = self.run_dir / "dynamics.partial.csv"
        self.board_dir = self.run_dir / "tensorboard"
        self._train_path, self._probe_path = train_path, probe_path
        self.board: _Board | None = None
        self.run_hash: str | None = None  # set by resume(), on rank 0 (the rank that writes manifests)
        self.stop_at_step = stop_at_step  # test hook: behave as if preempted after this step
        seed_everything(run.seed)
        self.device = pick_device()
        if os.environ.get("LOCAL_RANK") is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(self.device)
        self.dtype = pick_dtype(self.device)
        model, self.comp_tok, self.dec_tok = build_for_training(run, self.device, self.dtype,
                                                                engine=choose_engine(run, engine))
        self.collate = Collator(self.comp_tok, self.dec_tok, run.segment.segment_tokens,
                                run.segment.continuation_tokens)
        self.data = JsonlIndex(train_path)
        self.probe_records = read_jsonl(probe_path)[: self.tr.probe_batch_size]
        self.engine = make_engine(model, run, engine)
        self.model = self.engine.module
        self.accum = self.engine.accum
        self.history: list[dict] = []
        self.dynamics: list[dict] = []
        self._pool = None  # collates the next step's micro-batches while this one computes (see prefetching)
        self._pending: tuple[int, Any] | None = None

    # ------------------------------------------------------------------------------------------------ pieces
    def micro_batches(self, step: int) -> list[dict]:
        idx = batch_indices(step, self.tr.global_batch_size, len(self.data), self.run_settings.seed)
        mine = rank_slice(idx, self.engine.rank, self.engine.world_size)
        micro = self.tr.micro_batch_size
        return [self.collate([self.data[int(i)] for i in mine[j : j + micro]]) for j in range(0, len(mine), micro)]

    @contextlib.contextmanager
    def prefetching(self):
        """Within this block, `train_step(s)` starts collating step s+1 in a background thread.

        Collation is tokenisation (Rust, releases the GIL) and JSON parsing: it overlaps the forward/backward,
        which would otherwise wait for it every step. It is a pure function of the step, so results are identical.
        """
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collate")
        try:
            yield self
        finally:
            self._pending = None
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _wait_prefetch(self) -> None:
        """Let a pending prefetch finish (the tokenizers must not be used by two threads at once)."""
        if self._pending is not None:
            self._pending[1].exception()

    def _step_batches(self, step: int) -> list[dict]:
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == step:
            batches = pending[1].result()
        else:
            if pending is not None:
                pending[1].exception()
            batches = self.micro_batches(step)
        if self._pool is not None and step + 1 < self.tr.max_steps:
            self._pending = (step + 1, self._pool.submit(self.micro_batches, step + 1))
        return batches

    def probe(self, step: int) -> dict:
        from ..evaluate.probes import probe_batch

        self._wait_prefetch()
        self.model.eval()
        batch = to_device(self.collate(self.probe_records), self.device)
        with torch.no_grad(), self.engine.autocast():
            res = probe_batch(self._probe_view(), batch)
        self.model.train()
        row = {"step": step, "erank": res["erank"], "entropy": res["entropy_mean"]}
        log.info("probe @%d: erank %.3f entropy %.3f", step, row["erank"], row["entropy"])
        return row

    def _probe_view(self) -> Any:
        """The model as the probes see it. The entropy probe reads the decoder's LM-head weight outside a forward,
        which a ZeRO-3 partition does not hold: it gets a gathered copy (collective; every rank probes)."""
        if not self.engine.partitioned:
            return self.model
        head = self.model.decoder.get_output_embeddings()
        with torch.no_grad(), self.engine.gathered(head.parameters()):
            full = SimpleNamespace(weight=head.weight.detach().clone(),
                                   bias=None if getattr(head, "bias", None) is None else head.bias.detach().clone())
        return _WithHead(self.model, full)

    def save_probe_checkpoint(self, step: int) -> None:
        state = self.engine.export_state()  # collective: every rank takes part (ZeRO-3 gathers the weights)
        target = self.probe_root / f"step_{step:08d}"
        if not self.engine.is_main or target.exists():
            return
        with atomic_dir(target) as tmp:
            save_weights(self.model, tmp, state)

    @torch.no_grad()
    def shuffle_gap(self, records: list[dict]) -> dict:
        """L_re with each sample's own Z versus Z rolled by one across the batch: positive gap = Z carries content."""
        self._wait_prefetch()
        self.model.eval()
        batch = to_device(self.collate(records), self.device)
        B = batch["comp_ids"].shape[0]
        w = {"reconstruct": 1.0, "continue": 0.0}
        with self.engine.autocast():
            own = float(self.model(batch, weights=w)["loss"])
            perm = torch.roll(torch.arange(B, device=self.device), 1)
            shuffled = float(self.model(batch, weights=w, z_perm=perm)["loss"])
        self.model.train()
        return {"loss_own_z": own, "loss_shuffled_z": shuffled, "gap": shuffled - own, "batch": B}

    # -------------------------------------------------------------------------------------------------- loop
    def train_step(self, step: int, weights: dict | None = None) -> dict:
        """One optimizer step (0-based `step`): this rank's micro-batches (collate, forward, backward), then the
        update. Losses stay on the device until the step is taken (no host sync per micro-batch)."""
        tr = self.tr
        weights = weights or tr.loss_weights.as_weights()
        lr = lr_at(step, tr.lr, tr.warmup_steps, tr.max_steps, tr.min_lr_ratio)
        parts: dict[str, list[torch.Tensor]] = {"loss": [], "loss_re": [], "loss_nt": []}
        tokens = []
        for mb in self._step_batches(step):
            mb = to_device(mb, self.device)
            with self.engine.autocast():
                out = self.engine.forward(mb, weights)
            self.engine.backward(out["loss"])
            for k in parts:
                if k in out:
                    parts[k].append(out[k].detach())
            tokens.append(out["tokens"])
        grad_norm = self.engine.step(lr, tr.grad_clip)
        row = {k: _mean([float(x) for x in xs]) for k, xs in parts.items()}
        return {**row, "lr": lr, "grad_norm": grad_norm, "tokens": int(sum(int(t) for t in tokens))}

    def resume(self) -> int:
        """Reset state of other settings, then load the newest checkpoint that verifies; 0 when there is none."""
        max_steps = self.tr.max_steps
        self.run_hash = run_hash(self.run_settings, self._train_path, self._probe_path) if self.engine.is_main else None
        if self.engine.is_main:
            ckpt.reset_if_stale(self.run_dir, self.ckpt_root,
                                [self.probe_root, self.loss_partial, self.dyn_partial, self.board_dir],
                                self.run_hash, self.rt.stale_checkpoints, max_steps)
        self.engine.barrier()
        for _step, path in reversed(ckpt.list_checkpoints(self.ckpt_root)):
            problems = self.engine.verify(path, self.rt.verify_checkpoints)
            if problems:
                log.error("checkpoint %s is unusable: %s", path, "; ".join(problems[:5]))
                self.engine.barrier()
                if self.engine.is_main:
                    log.error("checkpoint %s %s; trying the one before", path,
                              ckpt.quarantine(path, self.rt.stale_checkpoints))
                self.engine.barrier()
                continue
            extra = self.engine.load(path)
            self.history = extra["history"]
            self.dynamics = extra["dynamics"]
            log.info("resumed from step %d (%s)", extra["step"], path)
            return int(extra["step"])
        return 0

    def checkpoint(self, step: int) -> None:
        self.engine.save(self.ckpt_root, step, {"history": self.history, "dynamics": self.dynamics},
                         keep=self.rt.keep_checkpoints, run_hash=self.run_hash)
        if self.engine.is_main:  # progress of a running job; the declared loss.csv appears only at the end
            write_csv(self.loss_partial, self.history, LOSS_COLUMNS)
            write_csv(self.dyn_partial, self.dynamics, DYN_COLUMNS)
        if self.board is not None:
            self.board.flush()

    def run(self) -> None:
        from tqdm import tqdm

        tr = self.tr
        max_steps = tr.max_steps
        start = self.resume()
        weights = tr.loss_weights.as_weights()
        self.model.train()
        t_start = time.time()
        elapsed0 = self.history[-1]["elapsed_s"] if self.history else 0.0
        self.board = _Board(self.board_dir, start, self.rt.tensorboard and self.engine.is_main)
        with StopFlag() as stop, self.prefetching(), contextlib.closing(self.board):
            bar = tqdm(range(start, max_steps), initial=start, total=max_steps, desc="train", mininterval=10,
                       disable=not self.engine.is_main)
            for step in bar:
                t0 = time.time()
                res = self.train_step(step, weights)
                done = step + 1
                dt = time.time() - t0
                row = {"step": done, "loss": res["loss"], "loss_re": res["loss_re"], "loss_nt": res["loss_nt"],
                       "lr": res["lr"], "grad_norm": res["grad_norm"],
                       "tokens_per_s": res["tokens"] * self.engine.world_size / max(dt, 1e-9),
                       "elapsed_s": elapsed0 + time.time() - t_start}
                self.history.append(self.engine.reduce_row(row))
                self.board.scalars(done, {k: v for k, v in self.history[-1].items() if k != "step"}, "train")
                bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
                if done % tr.probe_every == 0 or done == max_steps:
                    self.dynamics.append(self.probe(done))
                    self.board.scalars(done, {k: self.dynamics[-1][k] for k in ("erank", "entropy")}, "probe")
                    if tr.keep_probe_checkpoints:
                        self.save_probe_checkpoint(done)
                # all ranks must stop after the same step (the checkpoint is collective): agree on the signal
                preempt = self.engine.any_rank(bool(stop)) or (
                    self.stop_at_step is not None and done == self.stop_at_step)
                # the last step is always a checkpoint: a failure while writing the outputs costs no training
                if done % self.rt.checkpoint_every == 0 or preempt or done == max_steps:
                    self.checkpoint(done)
                if preempt and done < max_steps:
                    log.warning("stopping after step %d; the next run resumes from its checkpoint", done)
                    raise Preempted()

    def finish(self, out_final: str, out_probe: str, out_loss: str, out_dyn: str, out_summary: str) -> dict:
        gap = self.shuffle_gap(self.probe_records)
        log.info("shuffle control: %s", gap)
        summary = {
            "cell": to_dict(self.run_settings.cell),
            "steps": self.tr.max_steps,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "final_loss_re": self.history[-1]["loss_re"] if self.history else None,
            "final_loss_nt": self.history[-1]["loss_nt"] if self.history else None,
            "shuffle_gap": gap,
            "engine": self.engine.name,
            "world_size": self.engine.world_size,
            "grad_accum": self.accum,
            "wall_s": self.history[-1]["elapsed_s"] if self.history else 0.0,
            "provenance": {**provenance(C.determining(self.run_settings.to_dict())), "run_hash": self.run_hash},
        }
        state = self.engine.export_state()  # collective (ZeRO-3 gathers the trainable weights onto rank 0)
        if not self.engine.is_main:
            return summary
        with atomic_dir(out_final) as tmp:
            save_trained(self.model, self.comp_tok, self.dec_tok, tmp,
                         {"settings": self.run_settings.to_dict(), "provenance": summary["provenance"]},
                         state_dict=state)
        # Probe checkpoints exist only for the dynamics cell; other cells get an empty directory with a note.
        self.probe_root.mkdir(parents=True, exist_ok=True)
        (self.probe_root / "README.json").write_text(
            json.dumps({"keep_probe_checkpoints": self.tr.keep_probe_checkpoints}) + "\n")
        if Path(out_probe).exists():
            import shutil

            shutil.rmtree(out_probe)
        os.replace(self.probe_root, out_probe)
        write_csv(out_loss, self.history, LOSS_COLUMNS)
        write_csv(out_dyn, self.dynamics, DYN_COLUMNS)
        write_json(out_summary, summary)  # declared last: its presence means every output is complete
        self.drop_resume_state()
        return summary

    def drop_resume_state(self) -> None:
        """After the outputs are written: the partial logs go, and the optimizer-state checkpoints too unless
        train.keep_final_checkpoints (they can be ~100 GB per cell; resuming a finished run needs none)."""
        for p in (self.loss_partial, self.dyn_partial):
            p.unlink(missing_ok=True)
        if not self.rt.keep_final_checkpoints and self.ckpt_root.exists():
            import shutil

            shutil.rmtree(self.ckpt_root)
            log.info("finished: removed %s (train.keep_final_checkpoints is false)", self.ckpt_root)


def train_cell(settings: CellTrainSettings | Mapping, train_path: str, probe_path: str, run_dir: str,
               outputs: dict[str, str], engine: str | None = None, stop_at_step: int | None = None) -> dict:
    """Train one cell to `settings.train.max_steps`, resuming from `run_dir/checkpoints` if a checkpoint exists.
    `settings`: the rule's params (with their runtime keys) or the built settings."""
    run = CellTrainSettings.of(settings)
    if not torch.cuda.is_available():
        # bit-identical resume on CPU; on GPU the deterministic kernels would cost throughput for no tested gain
        torch.use_deterministic_algorithms(True, warn_only=True)
    if run.train.num_threads:  # 0: as many as the job was given (logs.setup_job)
        torch.set_num_threads(run.train.num_threads)
    trainer = Trainer(run, train_path, probe_path, run_dir, engine=engine, stop_at_step=stop_at_step)
    trainer.run()
    return trainer.finish(outputs["final"], outputs["probe_checkpoints"], outputs["loss"], outputs["dynamics"],
                          outputs["summary"])
