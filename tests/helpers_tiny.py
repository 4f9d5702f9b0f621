"""Tiny models, tokenizers and chunk files for the training tests (built once per test session, in a temp dir).

- compressor: Qwen3-architecture causal LM with a Qwen-style byte-level BPE (no BOS), random init;
- decoder: Llama-architecture causal LM with a Llama-style BPE (BOS), random init with a wide std (0.2), frozen in
  every test. With the default 0.02 init the final RMSNorm and the small tied LM head cap the logits near uniform:
  even memory vectors optimised freely per sample lowered the reconstruction loss only from 5.95 to 5.87 (a decoder
  pretrained for 150 steps: 4.82 to 4.79). At std 0.2 free memory vectors reach 1.15 from 7.14, so the decoder can
  be steered and "the compressor learns" is testable;
- train.jsonl / probe.jsonl: chunk records {"id", "text", "continuation"} cut from the shipped C4 sample.

Both models are saved with `save_pretrained` next to their tokenizer, so `from_pretrained(dir)` loads them exactly
as the pipeline loads its (pretrained) tiny base models. `settings(...)` gives a cell's settings dict from the real
config + tiny preset, pointed at these models and shrunk to a few steps.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "workflow") not in sys.path:
    sys.path.insert(0, str(ROOT / "workflow"))

C4 = ROOT / "workflow" / "data" / "c4" / "c4_sample.jsonl"
COMPRESSOR_SPEC = {"arch": "qwen3", "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 12, "intermediate_size": 96}
DECODER_SPEC = {"arch": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 128}
DECODER_INIT_STD = 0.2
VOCAB = 384
N_TRAIN = 64
N_PROBE = 8

_lock = threading.Lock()
_cache: dict[str, TinyEnv] = {}


def c4_texts(n: int | None = None) -> list[str]:
    out = []
    with open(C4, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line)["text"])
            if n is not None and len(out) >= n:
                break
    return out


def chunk_records(texts: list[str], seg_chars: int = 500, cont_chars: int = 250) -> list[dict]:
    """Character cuts are enough here: the collator takes the first L compressor tokens of `text`."""
    recs = []
    for i, t in enumerate(texts):
        if len(t) < seg_chars + 40:
            continue
        recs.append({"id": f"c4-{i}", "text": t[:seg_chars], "continuation": t[seg_chars : seg_chars + cont_chars]})
    return recs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


class TinyEnv:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.compressor = self.root / "compressor"
        self.decoder = self.root / "decoder"
        self.train = self.root / "train.jsonl"
        self.probe = self.root / "probe.jsonl"

    def build(self) -> TinyEnv:
        import torch
        from transformers import AutoModelForCausalLM

        from ctxcomp.tiny.build import build_config
        from ctxcomp.tiny.tokenizer import build_tokenizer

        texts = c4_texts(300)
        for path, spec, style, seed, std in ((self.compressor, COMPRESSOR_SPEC, "qwen3", 1, None),
                                             (self.decoder, DECODER_SPEC, "llama", 2, DECODER_INIT_STD)):
            tok = build_tokenizer(texts[:200], VOCAB, style)
            config = build_config(spec, tok)
            if std is not None:
                config.initializer_range = std
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
            model.save_pretrained(path)
            tok.save_pretrained(path)
        recs = chunk_records(texts[200:])
        assert len(recs) >= N_TRAIN + N_PROBE, len(recs)
        write_jsonl(self.train, recs[:N_TRAIN])
        write_jsonl(self.probe, recs[N_TRAIN : N_TRAIN + N_PROBE])
        return self

    def records(self, n: int | None = None, probe: bool = False) -> list[dict]:
        with open(self.probe if probe else self.train, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        return rows[:n] if n else rows

    def settings(self, ratio: int = 16, finetune: str = "full", zero_stage: int = 2, **train) -> dict:
        """A cell's settings (config.yaml + tiny preset) for these models; `train` overrides train.* keys."""
        from ctxcomp.config import Cell, load_config, train_settings

        cfg = load_config(ROOT / "config.yaml", ROOT / "workflow" / "presets" / "tiny.yaml")
        comp = "tiny-qwen-l" if finetune == "lora" else "tiny-qwen-s"
        s = train_settings(cfg, Cell(cfg["decoder"], comp, 16))
        s["cell"]["ratio"] = ratio
        s["compressor"]["source"] = str(self.compressor)
        s["compressor"]["deepspeed"] = {"zero_stage": zero_stage, "offload_optimizer": False,
                                        "offload_param": False}
        s["decoder"]["source"] = str(self.decoder)
        s["train"].update({"max_steps": 6, "global_batch_size": 4, "micro_batch_size": 2, "warmup_steps": 2,
                           "checkpoint_every": 3, "probe_every": 3, "probe_batch_size": 4, "keep_checkpoints": 2,
                           "keep_probe_checkpoints": False, "lr": 1e-3})
        s["train"].update(copy.deepcopy(train))
        return s

    def outputs(self, run_dir: str | Path) -> dict[str, str]:
        d = Path(run_dir)
        return {"final": str(d / "final"), "probe_checkpoints": str(d / "probe_checkpoints"),
                "loss": str(d / "loss.csv"), "dynamics": str(d / "dynamics.csv"), "summary": str(d / "summary.json")}


def tiny_env(base: str | Path | None = None) -> TinyEnv:
    """The session's TinyEnv (built on first use). `base` defaults to a fresh temp dir."""
    with _lock:
        if "env" not in _cache:
            root = Path(base) if base else Path(tempfile.mkdtemp(prefix="ctxcomp-tiny-"))
            root.mkdir(parents=True, exist_ok=True)
            _cache["env"] = TinyEnv(root).build()
        return _cache["env"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child training processes: package importable, single thread, CPU DeepSpeed, offline."""
    env = dict(os.environ)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "workflow"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------ subprocess driver
def _main(argv: list[str] | None = None) -> None:
    """`python tests/helpers_tiny.py ROOT RUN_DIR --engine E [--stop-at N] [--launch] [--settings JSON]`.

    Trains one tiny cell in this process (train_cell) or through launch_training (--launch, multi-rank), with the
    settings of `TinyEnv(ROOT).settings(**json)`; prints a JSON line "RESULT {...}" with a few facts at the end.
    """
    import argparse
    import logging

    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("run_dir")
    ap.add_argument("--engine", default="torch")
    ap.add_argument("--stop-at", type=int, default=None)
    ap.add_argument("--launch", action="store_true")
    ap.add_argument("--settings", default="{}", help="JSON: keyword arguments of TinyEnv.settings")
    ap.add_argument("--gpus", type=int, default=None, help="ranks for --launch")
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = TinyEnv(ns.root)
    settings = env.settings(**json.loads(ns.settings))
    if ns.gpus is not None:
        settings["compressor"]["gpus"] = ns.gpus
    if ns.launch:
        from ctxcomp.train.launch import launch_training

        launch_training(settings, str(env.train), str(env.probe), ns.run_dir, env.outputs(ns.run_dir),
                        engine=ns.engine)
        print("RESULT " + json.dumps({"launched": True}), flush=True)
        return
    import torch

    from ctxcomp.train.loop import Trainer

    torch.use_deterministic_algorithms(True, warn_only=True)
    tr = Trainer(settings, str(env.train), str(env.probe), ns.run_dir, engine=ns.engine, stop_at_step=ns.stop_at)
    facts = {"engine": tr.engine.name, "world_size": tr.engine.world_size, "accum": tr.accum}
    opt = getattr(tr.engine, "optimizer", None)
    if opt is not None:
        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        facts["optimizer_numel"] = sum(p.numel() for g in opt.param_groups for p in g["params"])
        facts["trainable_numel"] = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
        facts["decoder_in_optimizer"] = any(id(p) in ids for p in tr.model.decoder.parameters())
    facts["decoder_requires_grad"] = any(p.requires_grad for p in tr.model.decoder.parameters())
    try:
        tr.run()
    except SystemExit as exc:
        print("RESULT " + json.dumps({**facts, "exit": exc.code}), flush=True)
        raise
    out = tr.finish(**{f"out_{k}": v for k, v in {
        "final": env.outputs(ns.run_dir)["final"], "probe": env.outputs(ns.run_dir)["probe_checkpoints"],
        "loss": env.outputs(ns.run_dir)["loss"], "dyn": env.outputs(ns.run_dir)["dynamics"],
        "summary": env.outputs(ns.run_dir)["summary"]}.items()})
    print("RESULT " + json.dumps({**facts, "exit": 0, "final_loss": out["final_loss"]}), flush=True)


if __name__ == "__main__":
    _main()
