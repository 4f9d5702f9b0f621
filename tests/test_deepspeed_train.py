"""Real DeepSpeed runs of the tiny compressor on CPU (DS_ACCELERATOR=cpu, gloo): ZeRO-2 and ZeRO-3 in one process,
and ZeRO-2 on 2 ranks through the DeepSpeed launcher, each training, checkpointing and resuming.

Every run is a child process (tests/helpers_tiny.py as a script): a DeepSpeed process group and its environment
variables must not leak into the test process.
"""
from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctxcomp.train.checkpoint import latest_checkpoint, list_checkpoints
from helpers_tiny import subprocess_env, tiny_env

HELPER = Path(__file__).with_name("helpers_tiny.py")
LOSS_COLS = ["step", "loss", "loss_re", "loss_nt", "lr", "grad_norm"]
SHORT = {"max_steps": 4, "checkpoint_every": 2, "probe_every": 2, "keep_final_checkpoints": True}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_env(tmp_path_factory.mktemp("tiny"))


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def drive(tiny, run_dir, *args: str, settings: dict | None = None, timeout: float = 300) -> tuple[int, dict, str]:
    cmd = [sys.executable, str(HELPER), str(tiny.root), str(run_dir), "--engine", "deepspeed", *args,
           "--settings", json.dumps(settings or SHORT)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=timeout)
    facts = {}
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            facts = json.loads(line[len("RESULT "):])
    return res.returncode, facts, res.stdout + res.stderr


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def losses(run_dir: Path) -> list[dict]:
    return [{k: r[k] for k in LOSS_COLS} for r in read_csv(run_dir / "loss.csv")]


def final_weights(final_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {f"compressor.{k}": v for k, v in load_file(final_dir / "compressor" / "model.safetensors").items()}
    state.update({f"head.{k}": v for k, v in torch.load(final_dir / "head.pt").items()})
    return state


@pytest.fixture(scope="module")
def zero2_reference(tiny, tmp_path_factory):
    run = tmp_path_factory.mktemp("ds") / "ref"
    rc, facts, out = drive(tiny, run, settings=SHORT)
    assert rc == 0, out[-4000:]
    return run, facts


def test_zero2_single_process_trains_only_the_trainable_part(zero2_reference):
    run, facts = zero2_reference
    assert facts["engine"] == "deepspeed" and facts["world_size"] == 1 and facts["accum"] == 2
    # DeepSpeed's optimizer holds exactly the trainable parameters; the decoder is frozen and absent from it
    assert facts["optimizer_numel"] == facts["trainable_numel"]
    assert not facts["decoder_in_optimizer"] and not facts["decoder_requires_grad"]
    assert [int(r["step"]) for r in losses(run)] == [1, 2, 3, 4]
    assert all(float(r["grad_norm"]) > 0 for r in losses(run))
    ck = run / "checkpoints"
    assert json.loads((ck / "ds_config.json").read_text())["zero_optimization"]["stage"] == 2
    assert [s for s, _ in list_checkpoints(ck)] == [2, 4]
    tag = ck / "step_00000004"
    for name in ("COMPLETE", "ds_config.json", "rng_rank00000.pt", "mp_rank_00_model_states.pt",
                 "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        assert (tag / name).exists(), name
    state = torch.load(tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 4 and len(state["history"]) == 4
    # frozen decoder weights are not checkpointed (the tied LM-head alias of its embeddings is DeepSpeed's only
    # leftover: it filters frozen weights by parameter name, and a tied alias has none)
    assert {k for k in state["module"] if k.startswith("decoder.")} <= {"decoder.lm_head.weight"}
    assert any(k.startswith("compressor.") for k in state["module"]) and "head.memory" in state["module"]


def test_disk_estimate_matches_a_zero2_checkpoint(tiny, zero2_reference):
    """ctxcomp.disk_plan against the files DeepSpeed wrote: fp32 master copy and both moments (optimizer file), the
    trainable module weights and the tied LM head of the frozen decoder, which DeepSpeed keeps under its second
    name (module file); fp32 on CPU."""
    from ctxcomp import disk_plan
    from ctxcomp import memory_plan as mp
    from ctxcomp.config import load_config
    from ctxcomp.settings import CellTrainSettings
    from helpers_tiny import ROOT

    run, _ = zero2_reference
    cfg = load_config(ROOT / "config.yaml", ROOT / "workflow" / "presets" / "tiny.yaml")
    s = CellTrainSettings.of(tiny.settings(**SHORT, engine="deepspeed"))
    shape = mp.train_shape(cfg, s, device="cpu")
    assert (shape.engine, shape.zero_stage, shape.dec.tied) == ("deepspeed", 2, True)
    est = disk_plan.estimate_disk(shape, s.train, s.runtime)
    _, step = latest_checkpoint(run / "checkpoints")
    module = torch.load(step / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    assert "decoder.lm_head.weight" in module  # the frozen, tied head's alias
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in module.values()}
    optim = torch.load(step / "zero_pp_rank_0_mp_rank_00_optim_states.pt", map_location="cpu", weights_only=False)
    osd = optim["optimizer_state_dict"]
    opt_tensors = list(osd["single_partition_of_fp32_groups"])
    opt_tensors += [t for st in osd["base_optimizer_state"]["state"].values() for t in st.values() if t.numel() > 1]
    counted = sum(storages.values()) + sum(t.numel() * t.element_size() for t in opt_tensors)
    assert counted == pytest.approx(est.checkpoint_bytes, rel=0.01)  # DeepSpeed pads its flat partitions
    files = sum(f.stat().st_size for f in step.iterdir())  # + RNG states, config, manifest, pickle framing
    assert est.checkpoint_bytes < files < est.checkpoint_bytes + 100_000
    # final/: the head alone, not the flat buffer of every trainable weight its tensors are views of
    final = run / "final"
    saved = (final / "compressor" / "model.safetensors").stat().st_size + (final / "head.pt").stat().st_size
    assert est.weights_bytes == pytest.approx(saved, rel=0.03)


def test_zero2_interrupted_and_resumed_equals_uninterrupted(tiny, zero2_reference, tmp_path):
    ref, _ = zero2_reference
    run = tmp_path / "run"
    rc, facts, out = drive(tiny, run, "--stop-at", "1")
    assert rc == 75 and facts["exit"] == 75, out[-4000:]
    assert latest_checkpoint(run / "checkpoints")[0] == 1
    rc, _, out = drive(tiny, run)
    assert rc == 0, out[-4000:]
    assert "resumed from step 1" in out
    assert losses(run) == losses(ref)
    wa, wb = final_weights(ref / "final"), final_weights(run / "final")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_zero3_single_process_resumes_and_matches_zero2(tiny, zero2_reference, tmp_path):
    """ZeRO-3 partitions every weight (the frozen decoder too): probes and the final export gather them, and a
    checkpoint of the partitioned state resumes."""
    ref, _ = zero2_reference
    run = tmp_path / "z3"
    rc, facts, out = drive(tiny, run, "--stop-at", "1", settings={**SHORT, "zero_stage": 3})
    assert rc == 75, out[-4000:]
    rc, facts, out = drive(tiny, run, settings={**SHORT, "zero_stage": 3})
    assert rc == 0, out[-4000:]
    assert "resumed from step 1" in out
    assert json.loads((run / "checkpoints" / "ds_config.json").read_text())["zero_optimization"]["stage"] == 3
    a, b = losses(ref), losses(run)
    for ra, rb in zip(a, b):
        assert abs(float(ra["loss"]) - float(rb["loss"])) < 1e-4
    assert len(read_csv(run / "dynamics.csv")) == 2
    wa, wb = final_weights(ref / "final"), final_weights(run / "final")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_ranks_through_launcher_sigterm_and_resume(tiny, tmp_path):
    """deepspeed launcher, 2 CPU ranks: SIGTERM to the parent reaches the ranks, which agree on a step, checkpoint
    (both optimizer shards) and exit 75; the rerun resumes from there and finishes."""
    run = tmp_path / "run"
    settings = {"max_steps": 40, "global_batch_size": 4, "micro_batch_size": 1, "checkpoint_every": 1000,
                "probe_every": 1000}
    cmd = [sys.executable, str(HELPER), str(tiny.root), str(run), "--engine", "deepspeed", "--launch", "--gpus", "2",
           "--settings", json.dumps(settings)]
    env = subprocess_env(CTXCOMP_MASTER_PORT=free_port(), OMP_NUM_THREADS="2")
    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        end = time.time() + 180
        while "train:" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.time() < end, log.read_text()[-4000:]
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=180)
    text = log.read_text()
    assert rc == 75, text[-4000:]
    assert "passing it to 2 training process(es)" in text
    step, tag = latest_checkpoint(run / "checkpoints")
    assert 1 <= step < 40
    for name in ("zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt",
                 "rng_rank00000.pt", "rng_rank00001.pt", "ds_config.json"):
        assert (tag / name).exists(), name
    assert json.loads((tag / "ds_config.json").read_text())["gradient_accumulation_steps"] == 2

    env["CTXCOMP_MASTER_PORT"] = free_port()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert f"resumed from step {step}" in out
    rows = read_csv(run / "loss.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["engine"] == "deepspeed" and summary["world_size"] == 2
