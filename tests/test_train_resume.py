"""Preemption and resume with the torch engine: an interrupted run, resumed, equals an uninterrupted one exactly
(CPU), and a SIGTERM makes a running job checkpoint and exit 75 (EX_TEMPFAIL: run again)."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctxcomp.train.checkpoint import latest_checkpoint
from ctxcomp.train.loop import EXIT_PREEMPTED, Preempted, train_cell
from helpers_tiny import subprocess_env, tiny_env

HELPER = Path(__file__).with_name("helpers_tiny.py")
LOSS_COLS = ["step", "loss", "loss_re", "loss_nt", "lr", "grad_norm"]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_env(tmp_path_factory.mktemp("tiny"))


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def final_weights(final_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {f"compressor.{k}": v for k, v in load_file(final_dir / "compressor" / "model.safetensors").items()}
    state.update({f"head.{k}": v for k, v in torch.load(final_dir / "head.pt").items()})
    return state


def test_interrupted_and_resumed_equals_uninterrupted(tiny, tmp_path):
    s = tiny.settings(max_steps=6, checkpoint_every=3, probe_every=3, keep_final_checkpoints=True)
    ref, run = tmp_path / "ref", tmp_path / "run"
    train_cell(s, str(tiny.train), str(tiny.probe), str(ref), tiny.outputs(ref), engine="torch")

    # stop after step 2, off the checkpoint schedule: the stop itself writes a checkpoint
    with pytest.raises(Preempted) as exc:
        train_cell(s, str(tiny.train), str(tiny.probe), str(run), tiny.outputs(run), engine="torch", stop_at_step=2)
    assert exc.value.code == EXIT_PREEMPTED == 75
    assert latest_checkpoint(run / "checkpoints")[0] == 2
    assert not (run / "final").exists()
    train_cell(s, str(tiny.train), str(tiny.probe), str(run), tiny.outputs(run), engine="torch")

    a, b = read_csv(ref / "loss.csv"), read_csv(run / "loss.csv")
    assert [r["step"] for r in a] == [str(i) for i in range(1, 7)]
    assert [{k: r[k] for k in LOSS_COLS} for r in a] == [{k: r[k] for k in LOSS_COLS} for r in b]
    assert read_csv(ref / "dynamics.csv") == read_csv(run / "dynamics.csv")
    wa, wb = final_weights(ref / "final"), final_weights(run / "final")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # pruning kept the newest `keep_checkpoints` complete checkpoints
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step_00000003", "step_00000006"]


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before '{text}':\n{path.read_text()[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"'{text}' not seen in {timeout} s:\n{path.read_text()[-3000:]}")


def test_sigterm_checkpoints_exits_75_and_resumes(tiny, tmp_path):
    run = tmp_path / "run"
    log = tmp_path / "first.log"
    settings = {"max_steps": 400, "checkpoint_every": 1000, "probe_every": 1000}
    cmd = [sys.executable, str(HELPER), str(tiny.root), str(run), "--engine", "torch"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd + ["--settings", json.dumps(settings)], stdout=fh, stderr=subprocess.STDOUT,
                                env=subprocess_env())
        wait_for(log, "train:", proc, timeout=120)  # the progress bar starts inside the signal handlers' scope
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    text = log.read_text()
    assert rc == EXIT_PREEMPTED, text[-3000:]
    assert "received signal" in text
    step, path = latest_checkpoint(run / "checkpoints")
    assert 1 <= step < 400 and (path / "COMPLETE").exists()

    # the rerun (same settings) resumes from that checkpoint; asked to stop two steps later to keep the test short,
    # it checkpoints again and the partial loss log shows every step so far
    res = subprocess.run(cmd + ["--settings", json.dumps(settings), "--stop-at", str(step + 2)],
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert res.returncode == EXIT_PREEMPTED, res.stderr[-3000:]
    assert f"resumed from step {step}" in res.stderr
    rows = read_csv(run / "loss.partial.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, step + 3))
    assert not (run / "loss.csv").exists()
