"""Hostile reruns of training: changed settings, changed data, lowered max_steps, truncated and altered checkpoints,
old-format state. Each rerun either continues exactly the same computation (bit-identical to an uninterrupted run)
or starts clean, and says which in the log."""
from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctxcomp.train import checkpoint as ckpt
from ctxcomp.train.loop import Preempted, train_cell
from helpers_tiny import subprocess_env, tiny_env

LOSS_COLS = ["step", "loss", "loss_re", "loss_nt", "lr", "grad_norm"]
HELPER = Path(__file__).with_name("helpers_tiny.py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_env(tmp_path_factory.mktemp("tiny"))


def losses(run: Path, name: str = "loss.csv") -> list[dict]:
    with open(run / name, newline="") as fh:
        return [{k: r[k] for k in LOSS_COLS} for r in csv.DictReader(fh)]


def train(tiny, run: Path, stop_at: int | None = None, **over) -> None:
    s = tiny.settings(**{"max_steps": 6, "checkpoint_every": 2, "probe_every": 3, **over})
    if stop_at is None:
        train_cell(s, str(tiny.train), str(tiny.probe), str(run), tiny.outputs(run), engine="torch")
    else:
        with pytest.raises(Preempted):
            train_cell(s, str(tiny.train), str(tiny.probe), str(run), tiny.outputs(run), engine="torch",
                       stop_at_step=stop_at)


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """Uninterrupted runs: the default settings, and the one with a changed learning rate."""
    root = tmp_path_factory.mktemp("ref")
    train(tiny, root / "base")
    train(tiny, root / "lr", lr=5e-3)
    train(tiny, root / "short", max_steps=3)
    return root


def steps_of(run: Path) -> list[int]:
    return [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")]


def test_changed_lr_starts_fresh_and_moves_old_checkpoints_aside(tiny, reference, tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    assert steps_of(run) == [2, 4]
    with caplog.at_level(logging.INFO):
        train(tiny, run, lr=5e-3)
    text = caplog.text
    assert "resumed from step" not in text
    assert "other settings" in text and "training starts from step 0" in text
    # every row is the new learning rate's: equal to a run that never saw the old settings
    assert losses(run) == losses(reference / "lr")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["provenance"]["settings"]["train"]["lr"] == 5e-3
    stale = list((run / "stale").iterdir())
    assert len(stale) == 1
    moved = stale[0]
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    assert (moved / "RUN.json").exists() and (moved / "loss.partial.csv").exists()
    # the old checkpoints carry the old run's hash, the new run records its own
    old = ckpt.read_manifest(moved / "checkpoints" / "step_00000004")["run_hash"]
    new = json.loads((run / "RUN.json").read_text())["run_hash"]
    assert old != new and summary["provenance"]["run_hash"] == new


def test_stale_checkpoints_deleted_when_the_config_says_so(tiny, reference, tmp_path):
    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    train(tiny, run, lr=5e-3, stale_checkpoints="delete")
    assert not (run / "stale").exists()
    assert losses(run) == losses(reference / "lr")


def test_lowered_max_steps_below_the_last_checkpoint_finishes_at_the_new_max(tiny, reference, tmp_path):
    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    train(tiny, run, max_steps=3)
    assert [int(r["step"]) for r in losses(run)] == [1, 2, 3]
    assert losses(run) == losses(reference / "short")
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


def test_changed_training_data_starts_fresh(tiny, tmp_path, caplog):
    run = tmp_path / "run"
    data = tmp_path / "train.jsonl"
    data.write_bytes(tiny.train.read_bytes())
    s = tiny.settings(max_steps=4, checkpoint_every=2, probe_every=2)
    with pytest.raises(Preempted):
        train_cell(s, str(data), str(tiny.probe), str(run), tiny.outputs(run), engine="torch", stop_at_step=2)
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[1:] + rows[:1]) + "\n")  # same records, another order: another run
    with caplog.at_level(logging.INFO):
        train_cell(s, str(data), str(tiny.probe), str(run), tiny.outputs(run), engine="torch")
    assert "resumed from step" not in caplog.text and "other settings" in caplog.text


def test_runtime_keys_do_not_invalidate_checkpoints(tiny, reference, tmp_path, caplog):
    """Checkpoint interval, retention and verification level decide how a run is stored, not what it computes."""
    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    with caplog.at_level(logging.INFO):
        train(tiny, run, checkpoint_every=5, keep_checkpoints=3, verify_checkpoints="size", tensorboard=False)
    assert "resumed from step 4" in caplog.text
    assert losses(run) == losses(reference / "base")


def test_truncated_checkpoint_falls_back_to_the_previous_one(tiny, reference, tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    state = run / "checkpoints" / "step_00000004" / "state.pt"
    with open(state, "r+b") as fh:
        fh.truncate(state.stat().st_size // 2)
    with caplog.at_level(logging.INFO):
        train(tiny, run)
    assert f"{state}: " in caplog.text and "truncated" in caplog.text
    assert "resumed from step 2" in caplog.text
    assert losses(run) == losses(reference / "base")  # bit-identical to the uninterrupted run
    assert f"moved to {run / 'checkpoints' / 'corrupt-step_00000004-'}" in caplog.text  # out of use, named so


def test_altered_checkpoint_of_the_same_size_is_caught_by_its_sha256(tiny, reference, tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    state = run / "checkpoints" / "step_00000004" / "state.pt"
    blob = bytearray(state.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    state.write_bytes(bytes(blob))
    with caplog.at_level(logging.INFO):
        train(tiny, run)
    assert f"{state}: content differs from its sha256" in caplog.text
    assert "resumed from step 2" in caplog.text
    assert losses(run) == losses(reference / "base")


def test_every_checkpoint_corrupt_starts_clean(tiny, reference, tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    for step in (2, 4):
        (run / "checkpoints" / f"step_{step:08d}" / "state.pt").write_bytes(b"")
    with caplog.at_level(logging.INFO):
        train(tiny, run)
    assert "resumed from step" not in caplog.text
    assert losses(run) == losses(reference / "base")


def test_checkpoint_without_manifest_is_set_aside(tiny, reference, tmp_path, caplog):
    """State written by an older version (no manifest, no run hash) is never resumed."""
    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    for p in (run / "checkpoints").iterdir():
        (p / ckpt.MANIFEST_FILE).unlink()
    (run / ckpt.RUN_FILE).unlink()
    with caplog.at_level(logging.INFO):
        train(tiny, run)
    assert "resumed from step" not in caplog.text and "training starts from step 0" in caplog.text
    assert losses(run) == losses(reference / "base")


def test_unreadable_state_file_names_the_file(tiny, tmp_path):
    """A checkpoint whose manifest matches a broken file (written broken) fails with the file named."""
    run = tmp_path / "run"
    train(tiny, run, stop_at=2)
    target = run / "checkpoints" / "step_00000002"
    (target / "state.pt").write_bytes(b"not a torch file")
    ckpt.finalize(target, 2, ckpt.read_manifest(target)["run_hash"])
    with pytest.raises(ckpt.CheckpointError, match=r"step_00000002/state.pt: cannot be read"):
        train(tiny, run)


def test_finished_run_drops_checkpoints_and_partial_logs_and_writes_tensorboard(tiny, reference, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny, run, stop_at=4)
    assert losses(run, "loss.partial.csv") == losses(reference / "base")[:4]  # progress while it ran
    train(tiny, run)
    assert not (run / "checkpoints").exists()
    assert not (run / "loss.partial.csv").exists() and not (run / "dynamics.partial.csv").exists()
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_re", "train/loss_nt", "train/lr", "train/grad_norm", "train/tokens_per_s",
            "probe/erank", "probe/entropy"} <= tags
    ref = losses(reference / "base")
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]  # the resumed run wrote each step once
    assert [e.value for e in events] == pytest.approx([float(r["loss"]) for r in ref], rel=1e-6)


def test_keep_final_checkpoints_keeps_them(tiny, tmp_path):
    run = tmp_path / "run"
    train(tiny, run, keep_final_checkpoints=True)
    assert steps_of(run) == [4, 6]


def test_deepspeed_truncated_checkpoint_falls_back(tiny, tmp_path):
    """Same guarantee with DeepSpeed (ZeRO-2, one CPU rank): an optimizer shard cut short is found and named."""
    settings = json.dumps({"max_steps": 4, "checkpoint_every": 2, "probe_every": 2})

    def drive(run: Path, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(HELPER), str(tiny.root), str(run), "--engine", "deepspeed", *args,
               "--settings", settings]
        return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)

    ref, run = tmp_path / "ref", tmp_path / "run"
    assert drive(ref).returncode == 0
    res = drive(run, "--stop-at", "3")
    assert res.returncode == 75, res.stderr[-3000:]
    shard = run / "checkpoints" / "step_00000003" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    with open(shard, "r+b") as fh:
        fh.truncate(1000)
    res = drive(run)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert f"{shard}: 1000 bytes" in out and "resumed from step 2" in out
    assert losses(run) == losses(ref)
    a = torch.load(ref / "final" / "head.pt")
    b = torch.load(run / "final" / "head.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_crash_while_writing_outputs_resumes_at_the_end_without_retraining(tiny, reference, tmp_path, monkeypatch,
                                                                           caplog):
    """The last step is always checkpointed: a job killed after training, before its summary, finishes on the
    rerun without a single training step, and its outputs equal the uninterrupted run's."""
    from ctxcomp.train import loop

    run = tmp_path / "run"
    real = loop.write_json

    def dies(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(loop, "write_json", dies)
    with pytest.raises(OSError, match="disk full"):
        train(tiny, run)
    assert not (run / "summary.json").exists() and steps_of(run)[-1] == 6
    monkeypatch.setattr(loop, "write_json", real)
    with caplog.at_level(logging.INFO):
        train(tiny, run)
    assert "resumed from step 6" in caplog.text
    assert losses(run) == losses(reference / "base")
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
