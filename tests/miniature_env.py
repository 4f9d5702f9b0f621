"""Miniature checkpoints of every architecture class behind config.yaml, and config.yaml pointed at them.

`MIRROR` maps config.yaml's model names to miniature kinds: the config is the real one with `hf_id:` replaced by
local directories, as a cluster user with a local model mirror writes it; only sizes are shrunk (`SMALL`). Also a
script: `python tests/miniature_env.py ROOT RUN_DIR JSON` trains the listed cells with DeepSpeed in one process
(a DeepSpeed process group must not leak into the test process) and prints "RESULT {...}" per cell.
"""
from __future__ import annotations

import copy
import json
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "workflow") not in sys.path:
    sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(Path(__file__).parent))

from helpers_tiny import c4_texts, chunk_records, write_jsonl  # noqa: E402

MIRROR = {"qwen3-0.6b": "qwen3", "qwen3-4b": "qwen3", "qwen3-32b": "qwen3", "llama3.2-1b": "llama3.2",
          "llama3.2-11b": "llama3.2-vision", "llama3.2-90b": "llama3.2-vision", "llama3-8b-instruct": "llama3-instruct"}
SMALL = {
    # config.yaml's dynamics cell is one of the trained cells: same few steps (its probe checkpoints are kept)
    "dynamics": {"compressor": "qwen3-0.6b", "ratio": 16, "max_steps": 2, "probe_every": 2},
    # every Qwen3 entry is the same miniature, so a LoRA entry's twin (the one full entry with its hf_id) would be
    # ambiguous: no LoRA control here (tests/test_hostile_dag.py and the tiny pipeline run it)
    "lora_control": {"compressors": [], "ratios": []},
    "segment": {"segment_tokens": 64, "continuation_tokens": 16, "max_segments": 2},
    "train": {"max_steps": 2, "global_batch_size": 2, "micro_batch_size": 1, "warmup_steps": 1,
              "checkpoint_every": 100, "probe_every": 2, "probe_batch_size": 2, "keep_checkpoints": 2,
              "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
                       "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"]}},
    "evaluate": {"batch_size": 4, "recon_max_new_tokens": 6, "answer_max_new_tokens": 4, "probe_batch_size": 2,
                 "entropy_vocab_chunk": 32768, "max_records": 3},
}

_lock = threading.Lock()
_cache: dict = {}


class Minis:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.models = {k: self.root / "models" / k for k in ("qwen3", "llama3.2", "llama3.2-vision", "llama3-instruct")}
        self.train = self.root / "train.jsonl"
        self.probe = self.root / "probe.jsonl"

    def build(self) -> Minis:
        from ctxcomp.miniatures import build_all

        texts = c4_texts(300)
        build_all(self.root / "models", texts=texts[:200])
        recs = chunk_records(texts[200:])
        write_jsonl(self.train, recs[:16])
        write_jsonl(self.probe, recs[16:20])
        return self

    def config(self, **extra) -> dict:
        from ctxcomp.config import deep_merge, load_config

        models = {name: {"hf_id": str(self.models[kind])} for name, kind in MIRROR.items()}
        return load_config(ROOT / "config.yaml", overrides=deep_merge({"models": models, **SMALL}, extra))

    def settings(self, decoder: str, compressor: str, ratio: int = 16, **deepspeed) -> dict:
        from ctxcomp.config import Cell, train_runtime, train_settings

        cfg, cell = self.config(), Cell(decoder, compressor, ratio)
        s = train_settings(cfg, cell)
        s["runtime"] = train_runtime(cfg, cell)  # as the rule script adds it (checkpointing is not a parameter)
        s["compressor"]["deepspeed"].update(deepspeed)
        return s

    def outputs(self, run_dir) -> dict[str, str]:
        d = Path(run_dir)
        return {"final": str(d / "final"), "probe_checkpoints": str(d / "probe_checkpoints"),
                "loss": str(d / "loss.csv"), "dynamics": str(d / "dynamics.csv"), "summary": str(d / "summary.json")}


def minis(base) -> Minis:
    with _lock:
        if "m" not in _cache:
            _cache["m"] = Minis(Path(base)).build()
        return _cache["m"]


def _main(argv: list[str]) -> None:
    import logging

    import torch

    from ctxcomp.train.loop import train_cell

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root, run_root, jobs = Path(argv[0]), Path(argv[1]), json.loads(argv[2])
    m = Minis(root)
    torch.use_deterministic_algorithms(True, warn_only=True)
    for job in jobs:
        s = m.settings(job["decoder"], job["compressor"], **job.get("deepspeed", {}))
        # a ZeRO checkpoint of the (partitioned) state is written too, and kept (its ds_config names the stage)
        s["runtime"].update(checkpoint_every=2, keep_final_checkpoints=True)
        run = run_root / job["name"]
        if job.get("ranks"):  # several CPU ranks through the DeepSpeed launcher, as on a multi-GPU node
            from ctxcomp.train.launch import launch_training

            s["compressor"]["gpus"] = job["ranks"]
            launch_training(s, str(m.train), str(m.probe), str(run), m.outputs(run), engine="deepspeed")
            summary = json.loads((run / "summary.json").read_text())
        else:
            summary = train_cell(copy.deepcopy(s), str(m.train), str(m.probe), str(run), m.outputs(run),
                                 engine="deepspeed")
        import csv

        rows = list(csv.DictReader(open(run / "loss.csv")))
        print("RESULT " + json.dumps({"name": job["name"], "engine": summary["engine"],
                                      "world_size": summary["world_size"],
                                      "losses": [float(r["loss"]) for r in rows],
                                      "grad_norms": [float(r["grad_norm"]) for r in rows],
                                      "stage": json.loads((run / "checkpoints" / "ds_config.json").read_text())
                                      ["zero_optimization"]["stage"] if (run / "checkpoints").exists() else None}),
              flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
