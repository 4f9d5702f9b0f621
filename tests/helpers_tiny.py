"""Tiny models, tokenizers and chunk files for the training tests (built once per test session, in a temp dir).

- compressor: Qwen3-architecture causal LM with a Qwen-style byte-level BPE (no BOS), random init;
- decoder: Llama-architecture causal LM with a Llama-style BPE (BOS), random init; frozen in every test;
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
VOCAB = 384
N_TRAIN = 64
N_PROBE = 8

_lock = threading.Lock()
_cache: dict[str, "TinyEnv"] = {}


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

    def build(self) -> "TinyEnv":
        from ctxcomp.tiny.build import build_model
        from ctxcomp.tiny.tokenizer import build_tokenizer

        texts = c4_texts(300)
        for path, spec, style, seed in ((self.compressor, COMPRESSOR_SPEC, "qwen3", 1),
                                        (self.decoder, DECODER_SPEC, "llama", 2)):
            tok = build_tokenizer(texts[:200], VOCAB, style)
            model = build_model(spec, tok, seed)
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
