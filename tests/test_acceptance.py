"""ctxcomp.bench.acceptance: its CPU mode end to end (the GPU mode is the same code at the paper's shapes), and the
checks that make it fail."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from ctxcomp import memory_plan as mp
from ctxcomp.bench import acceptance
from helpers_tiny import ROOT, subprocess_env


def test_cpu_mode_trains_both_engines_evaluates_every_task_and_matches_the_estimates(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ctxcomp.bench.acceptance", "--cpu", "--steps", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=subprocess_env(), cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "RESULTS-acceptance-cpu.json").read_text())
    assert [(r["engine"], r["attn"]) for r in res["training"]] == [("torch", "sdpa"), ("deepspeed-zero2", "sdpa")]
    assert res["vocab"] == {"compressor": 151_936, "decoder": 128_256}
    for r in res["training"]:
        assert len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"])
        assert r["saved_estimate"] == pytest.approx(r["saved_measured"], rel=mp.ACTIVATION_MARGIN)
        assert r["static_measured"] == pytest.approx(r["static_estimate"], rel=1e-3)
        assert r["flops_per_step"] > 0 and 0 < r["mfu"] < 1
    assert set(res["evaluation"]["tasks"]) == {"recon_fineweb", "ko_faitheval", "sd_fineweb", "rank_truncation",
                                               "probes"}
    assert res["failed"] == []
    md = (tmp_path / "RESULTS-acceptance-cpu.md").read_text()
    assert "Result: PASS" in md and "deepspeed-zero2" in md


def _result(**training) -> dict:
    row = {"engine": "torch", "attn": "sdpa", "losses": [2.0, 1.9], "saved_measured": 100, "saved_estimate": 100,
           "peak_measured": 1000, "peak_estimate": 1000}
    return {"training": [{**row, **training}], "evaluation": None}


def test_checks_fail_on_a_nan_loss_and_on_estimates_off_their_margin():
    assert acceptance.checks(_result()) == []
    assert "loss not finite" in acceptance.checks(_result(losses=[2.0, float("nan")]))[0]
    off = 1000 * (1 + mp.PEAK_MARGIN) + 10
    assert "peak" in acceptance.checks(_result(peak_estimate=off))[0]
    assert acceptance.checks(_result(peak_estimate=1000 * (1 + mp.PEAK_MARGIN) - 10)) == []
    assert "saved activations" in acceptance.checks(_result(saved_estimate=100 * (1 + mp.ACTIVATION_MARGIN) + 1))[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_mode_refuses_without_a_gpu():
    proc = subprocess.run([sys.executable, "-m", "ctxcomp.bench.acceptance"], capture_output=True, text=True,
                          env=subprocess_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr


def test_committed_cpu_results_are_current():
    """The committed CPU output was produced by this code: same configurations and a passing verdict."""
    res = json.loads(acceptance.CPU_RESULTS.with_suffix(".json").read_text())
    assert res["mode"] == "cpu" and res["failed"] == []
    assert all(len(r["losses"]) >= 20 for r in res["training"])
    assert res["shapes"]["compressor"] == acceptance.TINY_COMP and res["shapes"]["decoder"] == acceptance.TINY_DEC
    # the miniatures keep the real vocabularies (and tokenizer layouts) at the tiny widths
    assert res["vocab"] == {"compressor": 151_936, "decoder": 128_256}
