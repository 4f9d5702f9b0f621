"""Acceptance run for the first GPU node: a paper-shaped cell trains, evaluates, and fits where the plan says.

    python -m ctxcomp.bench.acceptance                     # on one GPU node, no downloads, a few minutes
    python -m ctxcomp.bench.acceptance --out DIR           # + DIR/RESULTS-acceptance-gpu.{md,json}
    python -m ctxcomp.bench.acceptance --cpu               # the same code at tiny shapes on CPU (the test suite)

GPU mode: a Qwen3-0.6B-shaped compressor and a Llama-3-8B-Instruct-shaped frozen decoder with random weights,
written as checkpoints by ctxcomp.miniatures (REAL_DIMS: the published dimensions, the real vocabularies, the real
special-token ids, generation configs and chat templates), bf16, at config.yaml's L, continuation, micro-batch,
gradient checkpointing and evaluation settings (ratio 16). The checkpoints go to `--models-dir` (default: a
temporary directory, about 20 GB, removed at the end) and are loaded by the pipeline's own loader
(ctxcomp.model.load.build_for_training: frozen decoder bf16, compressor fp32 under the torch engine and bf16 under
DeepSpeed). Training runs through the torch engine (fp32 master weights, bf16 autocast) and DeepSpeed ZeRO-2 (one
rank), each with SDPA and, when installed, FlashAttention-2: `--steps` optimizer steps of two micro-batches each
(gradient accumulation, as in every real run), cycling over four collated batches of C4 text so the loss can fall.
The torch engine's model is saved as a trained cell and loaded back by ctxcomp.model.load.load_trained for one
batch of every evaluation task (reconstruction, knowledge overwriting, semantic drift, rank truncation, probes)
through ctxcomp.evaluate.

Reported per configuration: step time, tokens/s, MFU (model FLOPs counted by FlopCounterMode without
recomputation, over the best bf16 matmul rate measured in this run), peak memory (torch.cuda.max_memory_allocated)
next to ctxcomp.memory_plan's estimate for the same shapes, saved-for-backward bytes of one micro-batch
(saved_tensors_hooks) next to the estimate, and the loss per step. Exit status 1 when a loss is NaN/inf, a peak is
off by more than memory_plan.PEAK_MARGIN, or saved activations by more than memory_plan.ACTIVATION_MARGIN.

CPU mode exercises every step at tiny widths (the real vocabularies and tokenizer layout) in fp32 (DeepSpeed on
gloo); there is no allocator peak on CPU, so the weights, gradient and optimizer bytes are counted from the tensors
instead. FlashAttention-2 is GPU only. Models come from `build_pair`: the one place to swap in other builders.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Cell, main_cells
from ..miniatures import REAL_DIMS
from ..settings import CellTrainSettings, CompressorRef, DecoderRef, DeepSpeedSpec, EvaluateSettings
from .train_bench import C4, count_flops, machine_info, matmul_peak

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
CPU_RESULTS = HERE / "RESULTS-acceptance-cpu.md"
POOL = 4                 # distinct micro-batches cycled over the steps
ACCUM = 2                # micro-batches per optimizer step
RATIO = 16
# miniature kinds (ctxcomp.miniatures) of the compressor and the decoder: Qwen3 and Llama-3-Instruct layouts
COMP_KIND, DEC_KIND = "qwen3", "llama3-instruct"

# CPU mode: tiny widths of the same structure (the vocabularies stay the real ones, 151,936 and 128,256)
TINY_COMP = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
TINY_DEC = dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=False)


@dataclass(frozen=True)
class Shapes:
    comp: dict
    dec: dict
    segment: int
    continuation: int
    micro_batch: int
    checkpointing: bool
    evaluate: EvaluateSettings
    max_segments: int


def config_run(cfg: dict) -> CellTrainSettings:
    """The settings of the first Table 2 cell of the config: its L, continuation, micro-batch, checkpointing."""
    return CellTrainSettings.for_cell(cfg, main_cells(cfg)[0])


def paper_shapes(cfg: dict) -> Shapes:
    run = config_run(cfg)
    seg, tr = run.segment, run.train
    return Shapes(REAL_DIMS["qwen3-0.6b"], REAL_DIMS["llama3-8b-instruct"], seg.segment_tokens,
                  seg.continuation_tokens, tr.micro_batch_size, tr.gradient_checkpointing,
                  EvaluateSettings.from_dict(cfg["evaluate"]), seg.max_segments)


def cpu_shapes(cfg: dict) -> Shapes:
    ev = EvaluateSettings.from_dict(cfg["evaluate"]).replace(batch_size=4, recon_max_new_tokens=12,
                                                             answer_max_new_tokens=6, entropy_vocab_chunk=1024)
    return Shapes(TINY_COMP, TINY_DEC, 32, 16, 2, True, ev, 2)


# ------------------------------------------------------------------------------------------------ building
def build_pair(shapes: Shapes, root: Path, device: torch.device, texts: list[str]) -> tuple[str, str]:
    """Random-weight compressor (Qwen3) and decoder (Llama-3-Instruct) checkpoints of the given dims under `root`,
    as ctxcomp.miniatures writes them (tokenizer with the real special tokens, generation config); their paths."""
    from ..miniatures import build_miniature

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # saved as published checkpoints are
    comp = build_miniature(COMP_KIND, root / "compressor", seed=0, texts=texts, dtype=dtype, device=device,
                           **shapes.comp)
    dec = build_miniature(DEC_KIND, root / "decoder", seed=1, texts=texts, dtype=dtype, device=device, **shapes.dec)
    return str(comp), str(dec)


def c4_texts(n: int) -> list[str]:
    out = []
    with open(C4, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    return out


def records(texts: list[str], n: int, chars: int = 6000) -> list[dict]:
    """Chunk records cut from the running C4 text, long enough for a full segment and continuation."""
    stream = " ".join(texts)
    step = 2 * chars
    return [{"id": f"c4-{i}", "text": stream[i * step: i * step + chars],
             "continuation": stream[i * step + chars: (i + 1) * step]} for i in range(n)]


def train_settings(cfg: dict, shapes: Shapes, engine: str, sources: tuple[str, str], attn: str) -> CellTrainSettings:
    """The config's training settings at these shapes, for the miniature pair (one rank, ZeRO-2 under DeepSpeed)."""
    run = config_run(cfg)
    return run.replace(
        cell=Cell("llama3-8b-shaped", "qwen3-0.6b-shaped", RATIO),
        segment=run.segment.replace(segment_tokens=shapes.segment, continuation_tokens=shapes.continuation),
        train=run.train.replace(micro_batch_size=shapes.micro_batch, global_batch_size=shapes.micro_batch * ACCUM,
                                gradient_checkpointing=shapes.checkpointing, engine=engine,
                                attn_implementation=attn),
        compressor=CompressorRef(name="qwen3-0.6b-shaped", source=sources[0], finetune="full",
                                 deepspeed=DeepSpeedSpec(zero_stage=2, offload_optimizer=False, offload_param=False),
                                 gpus=1, nodes=1),
        decoder=DecoderRef(name="llama3-8b-shaped", source=sources[1]))


# ------------------------------------------------------------------------------------------------- meters
def saved_bytes(fn, params) -> int:
    """Bytes of distinct storages autograd keeps for backward while fn() runs, parameters excluded."""
    pids = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in pids:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _dims(source: str):
    """The plan's view of a saved checkpoint (its config.json)."""
    from transformers import AutoConfig

    from ..model_dims import dims_from_config

    return dims_from_config(AutoConfig.from_pretrained(source))


def estimate_for(shapes: Shapes, settings: CellTrainSettings, engine: str, device: torch.device, batch: dict,
                 attn: str):
    from .. import memory_plan as mp
    from ..train.deepspeed_config import ds_config

    dec = _dims(settings.decoder.source)
    shape = mp.TrainShape(
        comp=_dims(settings.compressor.source), dec=dec, finetune="full", lora=None,
        micro_batch=shapes.micro_batch, segment=shapes.segment, continuation=shapes.continuation, ratio=RATIO,
        checkpointing=shapes.checkpointing, attn=attn, engine=engine, world=1, gpus_per_node=1,
        device=device.type, zero_stage=2 if engine == "deepspeed" else 0,
        ds_config=ds_config(settings, 1, device.type) if engine == "deepspeed" else None,
        loss_chunk=mp.loss_chunk_of(dec.vocab), masked=bool((batch["comp_mask"] == 0).any()),
        comp_tokens=int(batch["comp_ids"].shape[1]),
        target_tokens=int(max(batch["re_ids"].shape[1], batch["nt_ids"].shape[1])))
    return shape, mp.estimate_training(shape)


# ------------------------------------------------------------------------------------------------ training
class _Steps:
    """Optimizer steps of ACCUM micro-batches each, cycling over a pool of collated batches."""

    def __init__(self, engine: Any, pool: list[dict], weights: dict, lr: float, clip: float):
        self.engine, self.pool, self.weights, self.lr, self.clip = engine, pool, weights, lr, clip

    def micro(self, mb: dict) -> torch.Tensor:
        with self.engine.autocast():
            out = self.engine.forward(mb, self.weights)
        self.engine.backward(out["loss"])
        return out["loss"].detach()

    def step(self, i: int) -> float:
        losses = [self.micro(self.pool[(ACCUM * i + k) % POOL]) for k in range(ACCUM)]
        self.engine.step(self.lr, self.clip)
        return float(sum(float(x) for x in losses) / len(losses))

    def warm_up(self, widest: dict, checkpointing: bool) -> tuple[int, int]:
        """Two warm-up steps; returns (saved-for-backward bytes of the widest micro-batch, measured as the first
        micro-batch of the first step, and the model FLOPs of a step, counted without activation recomputation:
        the recomputed forward is not model work)."""
        engine, model, saved = self.engine, self.engine.module, {}

        def fwd():
            with engine.autocast():
                saved["out"] = engine.forward(widest, self.weights)

        act_measured = saved_bytes(fwd, list(model.parameters()))
        engine.backward(saved.pop("out")["loss"])
        self.micro(self.pool[0])
        engine.step(self.lr, self.clip)
        if checkpointing:
            for m in (model.compressor, model.decoder):
                m.activation_checkpointing_disable()
        flops = count_flops(lambda: self.micro(self.pool[0])) * ACCUM
        if checkpointing:
            for m in (model.compressor, model.decoder):
                m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            model.train()  # the decoder's layers take the training flag that makes them recompute
        self.micro(self.pool[1])
        engine.step(self.lr, self.clip)
        return act_measured, flops

    def timed(self, steps: int, device: torch.device) -> tuple[list[float], list[float]]:
        """(mean micro-batch loss, seconds) of each of `steps` steps."""
        losses, times = [], []
        for i in range(steps):
            _sync(device)
            t0 = time.perf_counter()
            losses.append(self.step(i))
            _sync(device)
            times.append(time.perf_counter() - t0)
        return losses, times


def _saved_estimate(est: Any, shape: Any, checkpointing: bool) -> int:
    """The plan's saved-for-backward bytes of a micro-batch, as saved_bytes counts them."""
    act = sum(est.parts[k] for k in ("act_compressor", "act_head", "act_decoder", "act_logits"))
    if est.parts.get("autocast_copies"):  # autocast's bf16 weight copies are saved for backward (outside
        # checkpointed layers: only the adapter's)
        d_c, d_d = shape.comp.hidden, shape.dec.hidden
        act += 2 * (d_c * d_d + d_d * d_d) if checkpointing else est.parts["autocast_copies"]
    return act


def run_training(cfg: dict, shapes: Shapes, device: torch.device, engine_name: str, attn: str, steps: int,
                 sources: tuple[str, str], recs: list[dict], final: Path | None = None) -> dict[str, Any]:
    """One training configuration; `final`: save the trained cell there (as the Trainer does) for the evaluation."""
    from ..model.collate import Collator, to_device
    from ..model.load import build_for_training, pick_dtype, save_trained
    from ..train.engine import make_engine

    _free(device)
    # whatever an earlier configuration left allocated (DeepSpeed keeps some state per process) is not this one's
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    torch.manual_seed(0)
    settings = train_settings(cfg, shapes, engine_name, sources, attn)
    # the pipeline's loader: bf16 frozen decoder, compressor fp32 (torch) or bf16 (DeepSpeed), checkpointing
    model, comp_tok, dec_tok = build_for_training(settings, device, pick_dtype(device), engine_name)
    engine = make_engine(model, settings, engine_name)
    model = engine.module
    collate = Collator(comp_tok, dec_tok, shapes.segment, shapes.continuation)
    pool = [to_device({k: v for k, v in collate(recs[i * shapes.micro_batch:(i + 1) * shapes.micro_batch]).items()
                       if isinstance(v, torch.Tensor)}, engine.device if hasattr(engine, "device") else device)
            for i in range(POOL)]
    widest = max(pool, key=lambda b: b["comp_ids"].shape[1] * 10**6 + max(b["re_ids"].shape[1], b["nt_ids"].shape[1]))
    shape, est = estimate_for(shapes, settings, engine_name, device, widest, attn)
    model.train()
    run = _Steps(engine, pool, settings.train.loss_weights.as_weights(), settings.train.lr, settings.train.grad_clip)
    act_measured, flops = run.warm_up(widest, shapes.checkpointing)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, times = run.timed(steps, device)
    tokens = ACCUM * sum(int(b["comp_mask"].sum() + b["re_mask"].sum() + b["nt_mask"].sum()) for b in pool) / POOL
    row: dict[str, Any] = {
        "engine": engine.name if engine_name == "torch" else f"deepspeed-zero{shape.zero_stage}", "attn": attn,
        "steps": steps, "accum": ACCUM, "micro_batch": shapes.micro_batch, "tokens_per_step": tokens,
        "comp_len": int(widest["comp_ids"].shape[1]), "target_len": shape.dec_target,
        "step_s": statistics.median(times), "step_s_min": min(times), "tokens_per_s": tokens / statistics.median(times),
        "flops_per_step": flops, "losses": losses,
        "saved_measured": act_measured, "saved_estimate": _saved_estimate(est, shape, shapes.checkpointing),
        "peak_estimate": est.peak_bytes, "estimate_parts": est.parts,
    }
    if device.type == "cuda":
        row["peak_measured"] = torch.cuda.max_memory_allocated(device) - baseline
        row["allocated_before"] = baseline
    else:  # no allocator peak on CPU: count the tensors the engine holds
        row["static_measured"] = _static_bytes(engine, model)
        row["static_estimate"] = sum(v for k, v in est.parts.items() if k.startswith("weights") or k == "optimizer")
    if final is not None:
        save_trained(model, comp_tok, dec_tok, final, {"settings": settings.to_dict()})
    return row


def _static_bytes(engine, model) -> int:
    """Parameters + optimizer states between steps (gradients are freed by then): torch AdamW's moments and step
    counters, or DeepSpeed's fp32 master partition and its optimizer's moments."""
    def nbytes(ts):
        return sum(t.numel() * t.element_size() for t in ts if torch.is_tensor(t))

    params = nbytes(model.parameters())
    opt = getattr(engine, "optimizer", None)
    inner = getattr(opt, "optimizer", opt)
    state = nbytes(t for st in inner.state.values() for t in st.values())
    if engine.name == "torch":
        return params + state
    master = nbytes(getattr(opt, "single_partition_of_fp32_groups", []))
    return params + state + master


# ---------------------------------------------------------------------------------------------- evaluation
def run_evaluation(shapes: Shapes, device: torch.device, final: Path, recs: list[dict]) -> dict[str, Any]:
    """One batch of every task on the trained cell `final`, loaded as an evaluation job loads it (load_trained)."""
    from .. import memory_plan as mp
    from ..evaluate import tasks
    from ..evaluate.probes import probe_batch
    from ..model.collate import Collator, to_device
    from ..model.load import load_trained

    _free(device)
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    model, comp_tok, dec_tok, meta = load_trained(final, device, gpus=1)
    collate = Collator(comp_tok, dec_tok, shapes.segment, shapes.continuation)
    ev, bs = shapes.evaluate, shapes.evaluate.batch_size
    words = recs[0]["text"].split()
    n_ko = max(1, bs // 4)
    ko = [{"id": f"ko-{i}", "context": recs[i]["text"] + " " + recs[i]["continuation"], "question": "Who is it?",
           "candidates": words[4 * i: 4 * i + 4], "correct_index": 0} for i in range(n_ko)]
    sd = [{"status": "ok", "context_id": "sd-0", "context": recs[0]["text"] + " " + recs[0]["continuation"],
           "questions": [{"qid": f"q{j}", "dimension": "entity", "answerable": j % 4 != 0,
                          "question": f"What is item {j}?", "answer": words[j]} for j in range(bs)]}]
    sources = meta["run"].compressor.source, meta["run"].decoder.source
    est = mp.estimate_eval(_dims(sources[0]), _dims(sources[1]), shapes.segment // RATIO, ev, shapes.segment,
                           shapes.max_segments, 1, device.type)
    jobs = {
        "recon_fineweb": lambda: tasks.reconstruction(model, collate, recs[:bs], bs, ev.recon_max_new_tokens),
        "ko_faitheval": lambda: tasks.knowledge_overwriting(model, collate, ko, bs, shapes.max_segments),
        "sd_fineweb": lambda: tasks.semantic_drift(model, collate, sd, bs, shapes.max_segments,
                                                   ev.answer_max_new_tokens),
        "rank_truncation": lambda: tasks.rank_truncation(model, collate, {"faitheval": ko}, [0.9], bs,
                                                         shapes.max_segments),
        "probes": lambda: probe_batch(model, to_device(collate(recs[:bs]), device),
                                      ev.entropy_vocab_chunk),
    }
    out: dict[str, Any] = {"estimate_parts": est.parts, "peak_estimate": est.peak_bytes, "tasks": {}}
    for name, fn in jobs.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        res = fn()
        _sync(device)
        row = {"s": time.perf_counter() - t0}
        if isinstance(res, tuple) and isinstance(res[0], dict):
            row["n"] = res[0].get("n")
        if device.type == "cuda":
            row["peak_measured"] = torch.cuda.max_memory_allocated(device) - baseline
        out["tasks"][name] = row
    out["weights_measured"] = sum(p.numel() * p.element_size() for p in model.parameters())
    return out


# ---------------------------------------------------------------------------------------------------- checks
def checks(res: dict[str, Any]) -> list[str]:
    from .. import memory_plan as mp

    bad = []
    for r in res["training"]:
        name = f"{r['engine']}/{r['attn']}"
        if not all(math.isfinite(x) for x in r["losses"]):
            bad.append(f"{name}: loss not finite ({r['losses']})")
        if abs(r["saved_estimate"] / r["saved_measured"] - 1) > mp.ACTIVATION_MARGIN:
            bad.append(f"{name}: saved activations {r['saved_measured']:,} B, estimate {r['saved_estimate']:,} B "
                       f"(margin {mp.ACTIVATION_MARGIN:.0%})")
        if "peak_measured" in r and abs(r["peak_estimate"] / r["peak_measured"] - 1) > mp.PEAK_MARGIN:
            bad.append(f"{name}: peak {r['peak_measured'] / 2**30:.2f} GiB, estimate "
                       f"{r['peak_estimate'] / 2**30:.2f} GiB (margin {mp.PEAK_MARGIN:.0%})")
        exact = r["engine"] == "torch"  # DeepSpeed pads its flat partitions for alignment
        if "static_measured" in r and abs(r["static_measured"] - r["static_estimate"]) > (
                0 if exact else 0.01 * r["static_estimate"]):
            bad.append(f"{name}: weights+grads+optimizer {r['static_measured']:,} B, estimate "
                       f"{r['static_estimate']:,} B")
    ev = res.get("evaluation")
    if ev and "peak_measured" in next(iter(ev["tasks"].values())):
        peak = max(t["peak_measured"] for t in ev["tasks"].values())
        if abs(ev["peak_estimate"] / peak - 1) > mp.PEAK_MARGIN:
            bad.append(f"evaluation: peak {peak / 2**30:.2f} GiB, estimate {ev['peak_estimate'] / 2**30:.2f} GiB")
    return bad


def run(cfg: dict, cpu: bool, steps: int, attns: tuple[str, ...] | None = None,
        models_dir: str | None = None) -> dict[str, Any]:
    device = torch.device("cpu" if cpu else "cuda")
    shapes = cpu_shapes(cfg) if cpu else paper_shapes(cfg)
    t_start = time.perf_counter()
    texts = c4_texts(400)
    need = max(POOL * shapes.micro_batch, shapes.evaluate.batch_size)
    recs = records(texts, need)
    dtype = torch.float32 if cpu else torch.bfloat16
    peak = matmul_peak(device, dtype, (1024, 2048) if cpu else (4096, 8192), repeats=5 if cpu else 10)
    res: dict[str, Any] = {"machine": machine_info(), "mode": "cpu" if cpu else "gpu", "matmul_peak": peak,
                           "shapes": {"compressor": shapes.comp, "decoder": shapes.dec, "L": shapes.segment,
                                      "continuation": shapes.continuation, "micro_batch": shapes.micro_batch,
                                      "ratio": RATIO, "gradient_checkpointing": shapes.checkpointing},
                           "training": [], "skipped": []}
    attns = attns or (("sdpa",) if cpu else ("sdpa", "flash_attention_2"))
    with tempfile.TemporaryDirectory(prefix="acceptance-", dir=models_dir) as tmp:
        root = Path(tmp)
        sources = build_pair(shapes, root, device, texts[:300])
        res["vocab"] = {"compressor": _dims(sources[0]).vocab, "decoder": _dims(sources[1]).vocab}
        for attn in attns:
            if attn == "flash_attention_2" and not _flash_available():
                res["skipped"].append("flash_attention_2: the flash_attn package is not installed")
                continue
            for engine in ("torch", "deepspeed"):
                final = root / "final" if (engine, attn) == ("torch", attns[0]) else None
                row = run_training(cfg, shapes, device, engine, attn, steps, sources, recs, final)
                row["mfu"] = row["flops_per_step"] / row["step_s"] / peak["flops_per_s"]
                res["training"].append(row)
        res["evaluation"] = run_evaluation(shapes, device, root / "final", recs)
        _free(device)
    res["wall_s"] = time.perf_counter() - t_start
    res["failed"] = checks(res)
    return res


def _flash_available() -> bool:
    try:
        from transformers.utils import is_flash_attn_2_available

        return bool(is_flash_attn_2_available())
    except ImportError:
        return False


# ---------------------------------------------------------------------------------------------------- report
def report(res: dict[str, Any]) -> str:
    m, pk = res["machine"], res["matmul_peak"]
    gpu = res["mode"] == "gpu"
    sh = res["shapes"]
    unit, uname = (2**30, "GiB") if gpu else (2**20, "MiB")
    command = "python -m ctxcomp.bench.acceptance" + ("" if gpu else " --cpu")
    where = f"{m.get('gpu') or m['cpu']}" + (f" (CUDA {m.get('cuda')})" if gpu else "")
    comp, dec = sh["compressor"], sh["decoder"]
    vocab = res["vocab"]
    models = (f"- compressor {comp['hidden_size']}d x {comp['num_hidden_layers']} layers, vocab "
              f"{vocab['compressor']:,} ({COMP_KIND}); decoder {dec['hidden_size']}d x {dec['num_hidden_layers']} "
              f"layers, vocab {vocab['decoder']:,} ({DEC_KIND}, frozen); random weights, ctxcomp.miniatures "
              f"checkpoints; L = {sh['L']}, continuation {sh['continuation']}, ratio {sh['ratio']}, "
              f"micro-batch {sh['micro_batch']} x {ACCUM} per step, gradient checkpointing "
              f"{sh['gradient_checkpointing']}")
    header = (f"| engine | attention | step | tokens/s | MFU | peak ({uname}) measured / estimate | saved for "
              f"backward ({uname}) measured / estimate | loss first → last |")
    lines = [f"# Acceptance run ({res['mode'].upper()})", "",
             f"Produced by `{command}` (do not edit by hand; rerun to refresh).", "",
             f"- date: {m['date']}; {where}; torch {m['torch']}; {m['nproc']} CPUs", models,
             f"- {pk['dtype']} matmul peak measured in this run: {pk['flops_per_s'] / 1e12:.2f} TFLOP/s (n={pk['n']})",
             f"- wall time {res['wall_s']:.0f} s", "", header, "|---|---|---|---|---|---|---|---|"]
    for r in res["training"]:
        if "peak_measured" in r:
            peak = f"{r['peak_measured'] / unit:.2f} / {r['peak_estimate'] / unit:.2f}"
        else:
            diff = r["static_measured"] - r["static_estimate"]
            counted = "exact" if diff == 0 else f"{diff:+,} B"  # DeepSpeed: alignment and step counters
            peak = f"– / {r['peak_estimate'] / unit:.2f} (weights + optimizer, counted vs estimate: {counted})"
        lines.append(f"| {r['engine']} | {r['attn']} | {r['step_s'] * 1e3:.0f} ms | {r['tokens_per_s']:,.0f} "
                     f"| {r['mfu'] * 100:.1f} % | {peak} | {r['saved_measured'] / unit:.2f} / "
                     f"{r['saved_estimate'] / unit:.2f} | {r['losses'][0]:.3f} → {r['losses'][-1]:.3f} |")
    ev = res["evaluation"]
    lines += ["", (f"Evaluation, one batch each (estimate of the job's peak: {ev['peak_estimate'] / unit:.2f} "
                   f"{uname}; weights {ev['weights_measured'] / unit:.2f} {uname}):"), "",
              "| task | time | peak measured |", "|---|---|---|"]
    for name, t in ev["tasks"].items():
        pm = f"{t['peak_measured'] / unit:.2f} {uname}" if "peak_measured" in t else "–"
        lines.append(f"| {name} | {t['s']:.2f} s | {pm} |")
    lines += [""] + [f"- skipped: {s}" for s in res["skipped"]]
    verdict = "PASS" if not res["failed"] else "FAIL\n" + "\n".join(f"- {f}" for f in res["failed"])
    lines += ["", f"Result: {verdict}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..config import load_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="tiny shapes on CPU (what the test suite runs)")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per configuration (default 20)")
    ap.add_argument("--configfile", nargs="+", default=[str(ROOT / "config.yaml")],
                    help="config files: L, continuation, micro-batch and evaluation settings come from here")
    ap.add_argument("--out", default=None, help="directory for RESULTS-acceptance-<mode>.{md,json} "
                                                "(CPU default: next to this module)")
    ap.add_argument("--models-dir", default=None,
                    help="where the random checkpoints are written (a temporary directory inside it, removed at the "
                         "end; GPU mode: about 20 GB); default: the system's temporary directory")
    ns = ap.parse_args(argv)
    if not ns.cpu and not torch.cuda.is_available():
        print("ctxcomp.bench.acceptance needs a CUDA GPU (torch.cuda.is_available() is False); --cpu runs the same "
              "steps at tiny shapes.", file=sys.stderr)
        return 2
    cfg = load_config(*ns.configfile)
    res = run(cfg, ns.cpu, ns.steps, models_dir=ns.models_dir)
    text = report(res)
    print(text)
    out = Path(ns.out) if ns.out else (HERE if ns.cpu else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"RESULTS-acceptance-{res['mode']}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
