"""DeepSpeed configs derived from cell settings: DeepSpeed's own parser accepts each real model's config at the world
size of its Slurm resources (gpu × nodes), and the launcher command/env fit the machine."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ctxcomp.config import Cell, load_config
from ctxcomp.settings import CellTrainSettings, DeepSpeedSpec
from ctxcomp.train.deepspeed_config import ds_config, validate
from ctxcomp.train.launch import WORKER, launch_command, launch_env

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config(ROOT / "config.yaml")
COMPRESSORS = sorted(set(CFG["compressors"]) | set(CFG["ablation"]["compressors"]))


@pytest.mark.parametrize("name", COMPRESSORS)
def test_real_model_config_is_valid_for_deepspeed(name):
    s = CellTrainSettings.for_cell(CFG, Cell(CFG["decoder"], name, 16))
    spec = CFG["models"][name]
    world = spec["train_resources"]["gpu"] * spec["train_resources"].get("nodes", 1)
    cfg = ds_config(s, world, "cuda")
    assert json.loads(json.dumps(cfg)) == cfg  # plain JSON, as written next to every checkpoint

    parsed = validate(cfg, world)
    tr = CFG["train"]
    assert parsed.world_size == world
    assert parsed.train_batch_size == tr["global_batch_size"]
    assert parsed.train_micro_batch_size_per_gpu == tr["micro_batch_size"]
    assert parsed.gradient_accumulation_steps == tr["global_batch_size"] // (tr["micro_batch_size"] * world)
    assert parsed.gradient_clipping == tr["grad_clip"]
    assert parsed.zero_optimization_stage == spec["deepspeed"]["zero_stage"]
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    assert parsed.optimizer_name == "adamw" and parsed.optimizer_params["torch_adam"] is True
    assert parsed.optimizer_params["betas"] == list(tr["adam_betas"])
    assert (parsed.zero_config.offload_optimizer is not None) == bool(spec["deepspeed"].get("offload_optimizer"))
    assert (parsed.zero_config.offload_param is not None) == bool(spec["deepspeed"].get("offload_param"))


def test_tiny_cpu_config_is_fp32_and_valid():
    cfg_tiny = load_config(ROOT / "config.yaml", ROOT / "workflow" / "presets" / "tiny.yaml")
    s = CellTrainSettings.for_cell(cfg_tiny, Cell(cfg_tiny["decoder"], "tiny-qwen-s", 16))
    cfg = ds_config(s, 1, "cpu")
    parsed = validate(cfg, 1)
    assert not parsed.bfloat16_config.enabled and not parsed.zero_config.overlap_comm
    assert parsed.train_batch_size == cfg_tiny["train"]["global_batch_size"]
    assert parsed.zero_config.reduce_bucket_size <= 5_000_000  # large buckets slow CPU steps ~15x


def test_batch_size_must_divide_across_ranks():
    s = CellTrainSettings.for_cell(CFG, Cell(CFG["decoder"], "qwen3-0.6b", 16))
    with pytest.raises(ValueError, match="not a multiple"):
        ds_config(s, 12, "cuda")  # 256 is not a multiple of 8 x 12


def test_offload_param_needs_stage_3():
    s = CellTrainSettings.for_cell(CFG, Cell(CFG["decoder"], "qwen3-0.6b", 16))
    s = s.replace(compressor=s.compressor.replace(
        deepspeed=DeepSpeedSpec(zero_stage=2, offload_optimizer=False, offload_param=True)))
    with pytest.raises(ValueError, match="offload_param"):
        ds_config(s, 4, "cuda")


def test_launch_command_single_node_and_cpu_env():
    s = CellTrainSettings.for_cell(CFG, Cell(CFG["decoder"], "qwen3-0.6b", 16))
    cmd = launch_command(s, "/run/args.json", env={"CTXCOMP_MASTER_PORT": "31000"})
    assert cmd[:4] == [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]
    assert cmd[cmd.index("--num_gpus") + 1] == "4" and cmd[cmd.index("--master_port") + 1] == "31000"
    assert cmd[-3:] == [str(WORKER), "--args", "/run/args.json"]
    env = launch_env(s, env={"OMP_NUM_THREADS": "8"}, cuda=False)
    assert env["DS_ACCELERATOR"] == "cpu" and env["OMP_NUM_THREADS"] == "2"  # 8 threads over 4 CPU ranks
    assert "DS_ACCELERATOR" not in launch_env(s, env={}, cuda=True)


def test_launch_command_multi_node_needs_slurm():
    s = CellTrainSettings.for_cell(CFG, Cell(CFG["decoder"], "llama3.2-90b", 16))
    with pytest.raises(RuntimeError, match="Slurm"):
        launch_command(s, "/run/args.json", env={})
