"""The dynamics run end to end on tiny models: probe checkpoints kept during training, then knowledge overwriting at
each of them (checkpoints.csv + checkpoints.samples.jsonl, the contract the report reads)."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from ctxcomp import config as C
from ctxcomp.evaluate.cell import probe_dynamics
from ctxcomp.train.loop import train_cell
from helpers_tiny import tiny_env

ROOT = C.REPO_ROOT


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tiny = tiny_env(tmp_path_factory.mktemp("tiny"))
    run = tmp_path_factory.mktemp("dyn") / "train"
    s = tiny.settings(max_steps=4, checkpoint_every=2, probe_every=2, keep_probe_checkpoints=True)
    train_cell(s, str(tiny.train), str(tiny.probe), str(run), tiny.outputs(run), engine="torch")
    texts = [r["text"] for r in tiny.records(6, probe=True)]
    qa = tmp_path_factory.mktemp("qa")
    for name in ("faitheval", "conflictqa"):
        with open(qa / f"{name}.jsonl", "w") as fh:
            for i, t in enumerate(texts):
                words = t.split()
                fh.write(json.dumps({"id": f"{name}-{i}", "context": t, "question": "Which word comes first?",
                                     "candidates": [words[0], words[1], words[2]], "correct_index": i % 3}) + "\n")
    return tiny, run, qa


def test_probe_checkpoints_are_scored_at_every_step(trained, tmp_path):
    tiny, run, qa = trained
    assert sorted(p.name for p in (run / "probe_checkpoints").iterdir() if p.is_dir()) == \
        ["step_00000002", "step_00000004"]
    cfg = C.load_config(ROOT / "config.yaml", ROOT / "workflow/presets/tiny.yaml")
    settings = C.eval_settings(cfg, C.dynamics_cell(cfg))
    settings["evaluate"]["batch_size"] = 4
    inputs = {"model": str(run / "final"), "probe_checkpoints": str(run / "probe_checkpoints"),
              "dynamics": str(run / "dynamics.csv"), "faitheval": str(qa / "faitheval.jsonl"),
              "conflictqa": str(qa / "conflictqa.jsonl")}
    outputs = {"checkpoints": str(tmp_path / "checkpoints.csv"), "samples": str(tmp_path / "checkpoints.samples.jsonl")}
    probe_dynamics(settings, inputs, outputs)
    rows = list(csv.DictReader(open(outputs["checkpoints"])))
    assert list(rows[0]) == ["step", "erank", "entropy", "ko_faitheval", "ko_conflictqa"]
    train_dyn = {r["step"]: r for r in csv.DictReader(open(run / "dynamics.csv"))}
    assert [r["step"] for r in rows] == ["2", "4"]
    samples = [json.loads(line) for line in open(outputs["samples"])]
    assert len(samples) == 2 * 2 * 6 and set(samples[0]) == {"step", "task", "id", "correct", "margin"}
    for r in rows:
        assert float(r["erank"]) == pytest.approx(float(train_dyn[r["step"]]["erank"]))
        for task in ("ko_faitheval", "ko_conflictqa"):
            mine = [s for s in samples if s["step"] == int(r["step"]) and s["task"] == task]
            assert len(mine) == 6
            # accuracy recomputed from the per-question rows; a positive margin is exactly a correct answer
            assert float(r[task]) == pytest.approx(sum(s["correct"] for s in mine) / 6)
            assert all(s["correct"] == (s["margin"] > 0) for s in mine)


def test_probe_checkpoint_of_another_run_is_refused(trained, tmp_path):
    tiny, run, qa = trained
    mixed = tmp_path / "probe_checkpoints"
    shutil.copytree(run / "probe_checkpoints", mixed)
    shutil.copytree(mixed / "step_00000002", mixed / "step_00000003")  # no erank/entropy row for step 3
    cfg = C.load_config(ROOT / "config.yaml", ROOT / "workflow/presets/tiny.yaml")
    inputs = {"model": str(run / "final"), "probe_checkpoints": str(mixed), "dynamics": str(run / "dynamics.csv"),
              "faitheval": str(qa / "faitheval.jsonl"), "conflictqa": str(qa / "conflictqa.jsonl")}
    with pytest.raises(ValueError, match=r"dynamics.csv: no erank/entropy row for probe checkpoint\(s\) "
                                         r"\['step_00000003'\]"):
        probe_dynamics(C.eval_settings(cfg, C.dynamics_cell(cfg)), inputs,
                       {"checkpoints": str(tmp_path / "c.csv"), "samples": str(tmp_path / "s.jsonl")})
    assert not (tmp_path / "c.csv").exists()
