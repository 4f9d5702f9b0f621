"""The training benchmark's pieces (fast): FLOP counting and the matmul peak (the GPU measurements are
ctxcomp.bench.acceptance's, tests/test_acceptance.py)."""
from __future__ import annotations

import torch

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
