"""The training benchmark's pieces (fast): FLOP counting, the matmul peak, and the GPU mode's refusal on CPU."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers_tiny import ROOT, subprocess_env

from ctxcomp.bench import train_bench


def test_count_flops_of_a_matmul_and_its_backward():
    a = torch.randn(32, 64, requires_grad=True)
    b = torch.randn(64, 16)
    assert train_bench.count_flops(lambda: a @ b) == 2 * 32 * 64 * 16
    # backward w.r.t. `a` only (b is "frozen"): one more matmul of the same size, as for the frozen decoder
    assert train_bench.count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 32 * 64 * 16)


def test_matmul_peak_and_machine_info():
    peak = train_bench.matmul_peak(torch.device("cpu"), torch.float32, (128,), repeats=2)
    assert peak["flops_per_s"] > 0 and peak["n"] == 128 and peak["dtype"] == "float32"
    info = train_bench.machine_info()
    assert info["nproc"] >= 1 and info["torch"] == torch.__version__ and info["cpu"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_shape_refuses_without_gpu():
    res = subprocess.run([sys.executable, "-m", "ctxcomp.bench.train_bench", "--gpu-shape"], capture_output=True,
                         text=True, env=subprocess_env(), cwd=ROOT, timeout=120)
    assert res.returncode == 2
    assert "needs a CUDA GPU" in res.stderr


def test_gpu_shape_step_runs_on_cpu_at_toy_size():
    """The --gpu-shape measurement code, on CPU with toy shapes (the real shapes need a GPU)."""
    tiny = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, max_position_embeddings=256)
    res = train_bench.run_gpu_shape("qwen3-0.6b", repeats=2, micro_batch=2, checkpointing=True, device="cpu",
                                    shapes={"compressor": tiny, "decoder": tiny, "bos": 1, "L": 32, "C": 16,
                                            "peak_n": (128,)})
    assert res["model_flops_per_step"] > 0
    # activation recomputation adds forward FLOPs: hardware FLOPs exceed model FLOPs
    assert res["hardware_flops_per_step"] > res["model_flops_per_step"]
    assert res["step_s"] > 0 and 0 < res["mfu"] < 10
    assert "MFU" in train_bench.report_gpu({**res, "machine": {**res["machine"], "gpu": "cpu", "cuda": None}})
