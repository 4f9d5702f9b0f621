"""Peak GPU memory of a cell's training and evaluation jobs, estimated before submission.

`train_estimate(cfg, cell)` and `eval_estimate(cfg, cell)` return a `MemoryEstimate`: bytes per GPU by component
and the peak. ctxcomp.plan prints them against `slurm.gpu_mem_gb` and marks the jobs that would not fit.

What is modelled (the design of ctxcomp.model.load / ctxcomp.train, read from that code):
- ContextCompressor = compressor (full fine-tune, or LoRA on `train.lora.target_modules` of every layer) + head
  (memory embeddings, adapter, markers; always trainable) + frozen decoder. The compressor's LM head is never run
  (`backbone()`): it is a parameter (and, full fine-tune, a trainable one) but gets no gradient.
- Frozen weights (decoder, LoRA bases) are bf16 on GPU; trainable weights are fp32 on the torch engine (bf16
  autocast computes, AdamW moments fp32) and bf16 under DeepSpeed (fp32 master copy + two fp32 moments in its
  optimizer). On CPU everything is fp32.
- Engine as ctxcomp.train.engine.choose_engine picks it: DeepSpeed once a job has several GPUs or nodes. DeepSpeed
  config from ctxcomp.train.deepspeed_config.ds_config (buckets, persistence threshold, live parameters): ZeRO-1
  partitions optimizer states, ZeRO-2 also gradients, ZeRO-3 also parameters (all of them, frozen decoder too,
  built under zero.Init so that no rank ever holds a full copy); parameters with at most
  `stage3_param_persistence_threshold` elements stay whole on every rank. offload_optimizer keeps master and moments
  in host memory (`host_bytes`).
- Activations: bytes each op saves for backward, per token and layer, derived from the HF Qwen3/Llama layer code
  (RMSNorm keeps an fp32 copy of its input, attention keeps q, k, v, output and log-sum-exp, SwiGLU keeps three
  intermediate tensors, ...); a trainable layer also keeps the inputs of its weight gradients, a frozen one only
  what its input gradient needs. SDPA with a padding mask repeats k/v to all heads and keeps the (B, S, S) mask
  per layer; FlashAttention-2 keeps k/v at the KV heads and no mask. Gradient checkpointing
  (`train.gradient_checkpointing`) applies to compressor and decoder alike (the frozen decoder's layer modules carry
  the training flag that makes transformers recompute them, ContextCompressor.train): each layer keeps its input
  and is recomputed one at a time in backward. Mllama cross-attention layers are skipped on text (no activations).
- Gradient accumulation: from the second micro-batch on, every gradient exists during forward and backward, so the
  peak is weights + optimizer + gradients + activations + the largest transient (logits, or one recomputed layer and
  its gradients), or weights + optimizer + gradients + the optimizer step's temporaries, whichever is larger.
- Loss: ctxcomp.model.loss runs the frozen LM head over the target positions in chunks of
  `rows_per_chunk(vocab)` rows (its CHUNK_ELEMENTS logits) and keeps, for backward, the (positions x d) gradient
  w.r.t. the hidden states it computes in forward (and the int64 indices of the real target positions): one chunk
  of fp32 logits, its softmax and their cast to the head's dtype exist at a time, never (positions x vocab).
  `TrainShape.loss_chunk = None` models a loss over materialised logits instead (the fp32 log-softmax of every
  position kept), for comparison only.
- Lengths: compressor rows are L + M (+ BOS) tokens; the decoder runs both targets in one batch of 2 x micro-batch
  rows of P + T tokens, P = M + 3 (+ BOS), T = max(L + 1, continuation) (a segment re-tokenised by the decoder is
  assumed to be about L tokens; the collator caps it at 2L).

Not modelled: the CUDA context, NCCL buffers and allocator fragmentation (the plan keeps `RESERVE_GIB` and
`FRAGMENTATION` free), temporary buffers inside kernels. Evaluation: the cell in bf16, LoRA merged, sharded over the
job's `eval_resources.gpu` GPUs by one accelerate device map for compressor and decoder together
(ctxcomp.model.load.eval_device_maps: each GPU gets an even share of both models plus at most one unsplittable
block, a layer, the embeddings or the LM head), plus the largest of: the KV cache of greedy reconstruction or
answering, candidate scoring logits, the chunked entropy probe, one compression batch, counted whole on one GPU
(the decoder's layers and head may all sit on one). Questions are assumed to be at most `QUESTION_TOKENS` tokens
and candidates at most `CANDIDATE_TOKENS`.

Accuracy (tests/test_memory_plan.py): parameter, gradient and optimizer bytes match the tensors of real models
built through ctxcomp.model.load exactly; saved activations match torch.autograd.graph.saved_tensors_hooks on CPU
within `ACTIVATION_MARGIN`; the GPU acceptance script (ctxcomp.bench.acceptance) compares the peak with
torch.cuda.max_memory_allocated within `PEAK_MARGIN`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import model_dims as md
from .model_dims import LINEAR_SHAPES, ArchDims, dims_of
from .settings import CellEvalSettings, CellTrainSettings, EvaluateSettings, LoraSettings

GIB = 2**30
RESERVE_GIB = 1.5           # CUDA context, cuBLAS workspace and NCCL communicators, outside the caching allocator
FRAGMENTATION = 0.05        # caching-allocator slack on top of the estimated peak
ACTIVATION_MARGIN = 0.10    # stated accuracy of saved-activation bytes (checked on CPU against saved_tensors_hooks)
PEAK_MARGIN = 0.20          # stated accuracy of the training peak (checked on GPU against max_memory_allocated)
QUESTION_TOKENS = 64        # "Question: ...\nAnswer:" prompt, upper bound assumed for evaluation
CANDIDATE_TOKENS = 32       # a knowledge-overwriting candidate answer, upper bound assumed


# --------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Tensors:
    """`count` parameter tensors of `numel` elements each; `used`: they take part in the forward pass."""

    name: str
    numel: int
    count: int
    trainable: bool
    used: bool = True

    @property
    def total(self) -> int:
        return self.numel * self.count


def model_tensors(d: ArchDims, prefix: str, trainable: bool, head_used: bool,
                  lora: LoraSettings | None = None) -> list[Tensors]:
    """Every parameter tensor of one causal LM (+ its LoRA A/B when `lora`), grouped by shape."""
    base_trainable = trainable and not lora
    out = [Tensors(f"{prefix}.embed", (d.vocab + d.embed_extra) * d.hidden, 1, base_trainable),
           Tensors(f"{prefix}.norm", d.hidden, 1, base_trainable)]
    if not d.tied:
        out.append(Tensors(f"{prefix}.lm_head", d.vocab * d.hidden, 1, base_trainable, used=head_used))
    for kind, n, used in (("layer", d.self_layers, True), ("cross", d.cross_layers, False)):
        if not n:
            continue
        for lin in LINEAR_SHAPES:
            a, b = d.linear(lin)
            out.append(Tensors(f"{prefix}.{kind}.{lin}", a * b, n, base_trainable, used))
        out.append(Tensors(f"{prefix}.{kind}.norms", d.hidden, 2 * n, base_trainable, used))
        if d.qk_norm or kind == "cross":
            out.append(Tensors(f"{prefix}.{kind}.qk_norms", d.head_dim, 2 * n, base_trainable, used))
        if kind == "cross":
            out.append(Tensors(f"{prefix}.cross.gates", 1, 2 * n, base_trainable, used))
        if lora:
            r = lora.r
            for lin in _lora_targets(lora):
                if lin in LINEAR_SHAPES:
                    a, b = d.linear(lin)
                    out.append(Tensors(f"{prefix}.{kind}.{lin}.lora_A", r * a, n, True, used))
                    out.append(Tensors(f"{prefix}.{kind}.{lin}.lora_B", b * r, n, True, used))
    return out


def head_tensors(num_memory: int, d_comp: int, d_dec: int) -> list[Tensors]:
    """ctxcomp.model.compressor.CompressionHead: memory, adapter (RMSNorm, two Linear with bias), markers."""
    return [Tensors("head.memory", num_memory * d_comp, 1, True), Tensors("head.adapter.norm", d_comp, 1, True),
            Tensors("head.adapter.up.weight", d_comp * d_dec, 1, True), Tensors("head.adapter.up.bias", d_dec, 1, True),
            Tensors("head.adapter.out.weight", d_dec * d_dec, 1, True),
            Tensors("head.adapter.out.bias", d_dec, 1, True), Tensors("head.markers", 4 * d_dec, 1, True)]


def _lora_targets(lora: LoraSettings) -> tuple[str, ...]:
    if lora.target_modules is None:  # peft would pick them per architecture: the plan does not guess which
        raise ValueError("the memory plan needs train.lora.target_modules (peft's per-architecture default is not "
                         "modelled)")
    return lora.target_modules


def cell_tensors(comp: ArchDims, dec: ArchDims, finetune: str, lora: LoraSettings | None,
                 num_memory: int) -> list[Tensors]:
    return (model_tensors(comp, "compressor", True, head_used=False, lora=lora if finetune == "lora" else None)
            + model_tensors(dec, "decoder", False, head_used=True)
            + head_tensors(num_memory, comp.hidden, dec.hidden))


def _sum(groups: list[Tensors], **where: bool) -> int:
    return sum(g.total for g in groups if all(getattr(g, k) == v for k, v in where.items()))


def _count(groups: list[Tensors], **where: bool) -> int:
    return sum(g.count for g in groups if all(getattr(g, k) == v for k, v in where.items()))


# -------------------------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class Precision:
    """Bytes per element of what a forward keeps: `act` (compute dtype), `res` (residual stream and RMSNorm
    inputs), `lin` (inputs saved for weight gradients), `mask` (a dropout mask: bool from CUDA's fused dropout,
    the input dtype on CPU). fp32 CPU: 4/4/4/4; bf16 (DeepSpeed): 2/2/2/1; bf16 autocast over fp32 weights
    (torch engine on GPU): matmuls in bf16, residual stream fp32: 2/4/2/1, and each Linear keeps its own bf16
    cast of its fp32 input (`cast_per_call`: q, k, v three copies, gate and up two)."""

    act: int
    res: int
    lin: int
    mask: int
    cast_per_call: bool = False

    @property
    def norm_out(self) -> int:  # RMSNorm's normalised input, kept for its weight gradient (input dtype)
        return self.res


FP32 = Precision(4, 4, 4, 4)
BF16 = Precision(2, 2, 2, 1)
AUTOCAST = Precision(2, 4, 2, 1, cast_per_call=True)


def _norm(width: int, rows: int, keep_normed: bool, normed_bytes: int) -> int:
    """HF RMSNorm: fp32 copy of the input (pow, mul), rsqrt per row, normalised input when its weight trains."""
    return 4 * width + 4 * rows + (normed_bytes * width if keep_normed else 0)


def layer_saved_per_token(d: ArchDims, seq: int, prec: Precision, mode: str, lora: LoraSettings | None = None,
                          attn: str = "sdpa", masked: bool = True) -> int:
    """Bytes one self-attention layer keeps for backward per token. mode: full | lora | frozen."""
    h, inter, qw, kvw, b = d.hidden, d.intermediate, d.q_width, d.kv_width, prec.act
    full = mode == "full"
    qkv, gate_up = (3, 2) if prec.cast_per_call else (1, 1)
    n = _norm(h, 1, full, prec.norm_out) + (qkv * prec.lin * h if full else 0)    # input norm, q/k/v input
    if d.qk_norm:
        n += _norm(qw, d.heads, full, b) + _norm(kvw, d.kv_heads, full, b)
    n += _attention(d, seq, b, attn, masked)
    n += _norm(h, 1, full, prec.norm_out) + (gate_up * prec.lin * h if full else 0)  # post-attention norm, MLP input
    n += 3 * b * inter + (b * inter if full else 0)  # gate, silu(gate), up (+ product)
    if mode == "lora" and lora:
        n += _lora_saved(d, lora, b, prec.mask)
    return n


def _attention(d: ArchDims, seq: int, b: int, attn: str, masked: bool) -> int:
    qw, kvw = d.q_width, d.kv_width
    if attn == "flash_attention_2":
        return b * (2 * qw + 2 * kvw) + 4 * d.heads
    if attn == "eager":  # q, repeated k and v, softmax probabilities (B, H, S, S), mask
        return b * (3 * qw) + b * d.heads * seq + b * seq + b * qw
    kv = qw if masked else kvw  # transformers repeats k/v for SDPA unless it can use enable_gqa (no mask)
    return b * (2 * qw + 2 * kv) + 4 * d.heads + (b * seq if masked else 0)


def _lora_saved(d: ArchDims, lora: LoraSettings, b: int, mask: int) -> int:
    """peft LoRA: B(A(dropout(x))): A's input (dropout output and mask, or x itself), A's output for B."""
    r, p = lora.r, float(lora.dropout)
    targets = [t for t in _lora_targets(lora) if t in LINEAR_SHAPES]
    n = sum(b * r for _ in targets)
    if p > 0:
        return n + sum((b + mask) * d.linear(t)[0] for t in targets)
    # without dropout A reads the base layer's input: the q/k/v input and the gate/up input once each, the
    # down_proj input (SwiGLU product); o_proj's input is the attention output, which attention keeps anyway
    if {"q_proj", "k_proj", "v_proj"} & set(targets):
        n += b * d.hidden
    if {"gate_proj", "up_proj"} & set(targets):
        n += b * d.hidden
    if "down_proj" in targets:
        n += b * d.intermediate
    return n


def model_saved(d: ArchDims, batch: int, seq: int, prec: Precision, mode: str, checkpointing: bool,
                lora: LoraSettings | None = None, attn: str = "sdpa", masked: bool = True, input_ids: int = 0) -> int:
    """Bytes one transformer stack keeps for backward over batch x seq tokens, final norm included; `input_ids`:
    tokens per row that came through the embedding (a trainable embedding keeps its int64 indices)."""
    tokens = batch * seq
    if checkpointing:  # each layer's input; RoPE cos/sin and the mask reach the layers as kwargs (not saved)
        per_layer, rope = prec.res * d.hidden, 0
    else:
        per_layer = layer_saved_per_token(d, seq, prec, mode, lora, attn, masked)
        rope = 2 * d.head_dim * prec.res               # cos and sin, computed once per forward
    final_norm = _norm(d.hidden, 1, mode == "full", prec.norm_out)
    embed_ids = 8 * batch * input_ids if mode == "full" else 0
    return tokens * (d.self_layers * per_layer + rope + final_norm) + embed_ids


def layer_transient(d: ArchDims, batch: int, seq: int, prec: Precision, mode: str, checkpointing: bool,
                    lora: LoraSettings | None = None, attn: str = "sdpa", masked: bool = True) -> int:
    """Extra bytes while one layer runs backward: its recomputed activations (checkpointing) and the gradients
    flowing through it (hidden and intermediate widths)."""
    tokens = batch * seq
    grads = prec.act * tokens * (2 * d.hidden + 2 * d.intermediate)
    recompute = tokens * layer_saved_per_token(d, seq, prec, mode, lora, attn, masked) if checkpointing else 0
    return recompute + grads


def head_saved(num_memory: int, batch: int, comp_seq: int, d_comp: int, d_dec: int, prec: Precision) -> int:
    """Adapter over the B x M memory positions: torch's RMSNorm keeps its input, a view of the compressor's whole
    last hidden state (B x S x d_c), its rstd and normalised input; the two Linear keep their inputs, GELU its."""
    return (batch * comp_seq * d_comp * prec.res
            + batch * num_memory * (4 + prec.act * d_comp + prec.lin * d_comp + 2 * prec.act * d_dec))


def logits_bytes(rows: int, vocab: int, act: int, chunk: int | None, hidden: int = 0) -> tuple[int, int]:
    """(kept for backward, transient) bytes of the loss over `rows` target positions.

    Chunked (ctxcomp.model.loss.frozen_head_nll, `chunk` rows at a time): kept are the gradient w.r.t. the hidden
    states, (rows x hidden) in the compute dtype, and the int64 indices of the target positions; a chunk's forward
    holds its fp32 logits, their softmax (fp32) and its cast to the head's dtype (none when that is fp32).
    Full logits (`chunk` None, for comparison): the fp32 log-softmax is kept (plus int64 targets and mask);
    forward briefly holds the LM-head output and its fp32 copy, backward the fp32 gradients of the log-softmax and
    of its input."""
    if chunk is None:
        up = 4 if act != 4 else 0  # the fp32 copy of bf16 logits (none when the logits are fp32 already)
        saved = 4 * rows * vocab + 16 * rows
        return saved, max((act + up) * rows * vocab, 8 * rows * vocab)
    c = min(chunk, rows)
    cast = act if act != 4 else 0  # the softmax cast to the head's dtype (none when that is fp32)
    return 8 * rows + act * rows * hidden, (8 + cast) * c * vocab


# ----------------------------------------------------------------------------------------------- estimate
@dataclass
class MemoryEstimate:
    """Bytes per GPU (device memory; `host_bytes`: per node, for offloaded optimizer states)."""

    kind: str                      # train | eval
    engine: str                    # torch | zero0 .. zero3 | eval
    gpus: int                      # data-parallel ranks (train) or GPUs of the job (eval)
    parts: dict[str, int] = field(default_factory=dict)
    peak_bytes: int = 0
    host_bytes: int = 0
    alt_peak_bytes: int | None = None   # training: peak with gradient checkpointing toggled
    checkpointing: bool | None = None
    notes: list[str] = field(default_factory=list)

    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def fits(self, gpu_mem_gb: float) -> bool:
        return self.needed_gib() <= gpu_mem_gb

    def needed_gib(self, peak: int | None = None) -> float:
        """What must be free: the peak, allocator slack and the reserve outside the allocator."""
        return (self.peak_bytes if peak is None else peak) * (1 + FRAGMENTATION) / GIB + RESERVE_GIB

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "engine": self.engine, "gpus": self.gpus, "parts": dict(self.parts),
                "peak_bytes": self.peak_bytes, "host_bytes": self.host_bytes, "alt_peak_bytes": self.alt_peak_bytes,
                "checkpointing": self.checkpointing, "notes": list(self.notes)}


@dataclass(frozen=True)
class TrainShape:
    """Everything the training estimate depends on (built from a cell's settings by `train_shape`)."""

    comp: ArchDims
    dec: ArchDims
    finetune: str
    lora: LoraSettings | None
    micro_batch: int
    segment: int
    continuation: int
    ratio: int
    checkpointing: bool
    attn: str
    engine: str                    # torch | deepspeed
    world: int                     # data-parallel ranks
    gpus_per_node: int
    device: str = "cuda"
    zero_stage: int = 0
    offload_optimizer: bool = False
    ds_config: dict | None = None
    loss_chunk: int | None = None
    masked: bool = True            # padded compressor rows (the usual case: texts re-tokenised to other lengths)
    comp_tokens: int | None = None     # measured lengths, when known (tests, the acceptance script):
    target_tokens: int | None = None   # compressor input ids per row, and decoder target length T
    precision: tuple[Precision, Precision] | None = None  # (compressor, decoder), default from device and engine

    @property
    def num_memory(self) -> int:
        return self.segment // self.ratio

    @property
    def comp_seq(self) -> int:
        ids = self.comp_tokens if self.comp_tokens is not None else self.segment + (1 if self.comp.bos else 0)
        return ids + self.num_memory

    @property
    def dec_prefix(self) -> int:
        return self.num_memory + 3 + (1 if self.dec.bos else 0)

    @property
    def dec_target(self) -> int:
        return self.target_tokens if self.target_tokens is not None else max(self.segment + 1, self.continuation)


def loss_chunk_of(vocab: int) -> int:
    """Target positions per chunk of the training loss at this vocabulary (ctxcomp.model.loss)."""
    from .model.loss import rows_per_chunk

    return rows_per_chunk(vocab)


def train_shape(cfg: dict, settings: CellTrainSettings | Mapping, device: str = "cuda") -> TrainShape:
    """The TrainShape of one training job from its settings (the params of ctxcomp.config.train_settings, or the
    built settings) and the config."""
    from .train.deepspeed_config import ds_config
    from .train.engine import choose_engine

    run = CellTrainSettings.of(settings)
    tr, comp = run.train, run.compressor
    dec = dims_of(cfg, run.decoder.name, run.decoder.source)
    gpus, nodes = max(1, comp.gpus), max(1, comp.nodes)
    world = gpus * nodes
    engine = choose_engine(run)
    stage = comp.deepspeed.zero_stage if engine == "deepspeed" else 0
    dsc = ds_config(run, world, device) if engine == "deepspeed" else None
    return TrainShape(
        comp=dims_of(cfg, comp.name, comp.source), dec=dec,
        finetune=comp.finetune, lora=tr.lora if comp.finetune == "lora" else None, micro_batch=tr.micro_batch_size,
        segment=run.segment.segment_tokens, continuation=run.segment.continuation_tokens, ratio=run.cell.ratio,
        checkpointing=tr.gradient_checkpointing, attn=tr.attn_implementation, engine=engine,
        world=world if engine == "deepspeed" else 1, gpus_per_node=gpus, device=device, zero_stage=stage,
        offload_optimizer=comp.deepspeed.offload_optimizer and stage > 0, ds_config=dsc,
        loss_chunk=loss_chunk_of(dec.vocab))


def precision_of(s: TrainShape) -> tuple[Precision, Precision]:
    """(compressor, decoder) precision of the forward pass."""
    if s.precision is not None:
        return s.precision
    if s.device != "cuda":
        return FP32, FP32
    if s.engine == "torch" and s.finetune == "full":
        return AUTOCAST, BF16
    return BF16, BF16


def activation_parts(s: TrainShape, checkpointing: bool | None = None) -> dict[str, int]:
    """Saved-for-backward bytes of compressor, head, decoder and loss, and the largest transient."""
    ckpt = s.checkpointing if checkpointing is None else checkpointing
    pc, pd = precision_of(s)
    B, M = s.micro_batch, s.num_memory
    mode = "full" if s.finetune == "full" else "lora"
    rows_d, seq_d = 2 * B, s.dec_prefix + s.dec_target
    comp = model_saved(s.comp, B, s.comp_seq, pc, mode, ckpt, s.lora, s.attn, s.masked, s.comp_seq - M)
    dec = model_saved(s.dec, rows_d, seq_d, pd, "frozen", ckpt, None, s.attn, True)
    head = head_saved(M, B, s.comp_seq, s.comp.hidden, s.dec.hidden, pc)
    logits_kept, logits_peak = logits_bytes(rows_d * s.dec_target, s.dec.vocab, pd.act, s.loss_chunk, s.dec.hidden)
    layer = max(layer_transient(s.comp, B, s.comp_seq, pc, mode, ckpt, s.lora, s.attn, s.masked),
                layer_transient(s.dec, rows_d, seq_d, pd, "frozen", ckpt, None, s.attn, True))
    return {"act_compressor": comp, "act_head": head, "act_decoder": dec, "act_logits": logits_kept,
            "transient": max(logits_peak, layer)}


def _static_parts(s: TrainShape, groups: list[Tensors]) -> tuple[dict[str, int], int, int]:
    """(weights/grads/optimizer parts per GPU, step transient, host bytes)."""
    trainable, frozen = _sum(groups, trainable=True), _sum(groups, trainable=False)
    used = _sum(groups, trainable=True, used=True)
    n_used = _count(groups, trainable=True, used=True)
    cuda = s.device == "cuda"
    fb = 2 if cuda else 4
    if s.engine == "torch":
        parts = {"weights_trainable": 4 * trainable, "weights_frozen": fb * frozen, "grads": 4 * used,
                 "optimizer": 8 * used + 4 * n_used}
        if cuda and s.finetune == "full":  # autocast's bf16 copies of the fp32 weights it multiplies
            mats = _sum([g for g in groups if g.name.startswith(("compressor.layer.", "head.adapter."))
                         and g.name.endswith(tuple(LINEAR_SHAPES) + (".weight",))], trainable=True, used=True)
            parts["autocast_copies"] = 2 * mats
        return parts, 0, 0
    # DeepSpeed: the module is cast to the engine's dtype (bf16 on GPU); master + moments fp32 in the optimizer
    mb = 2 if cuda else 4
    dsc = s.ds_config or {}
    zero = dsc.get("zero_optimization", {})
    N = s.world
    part_opt = N if s.zero_stage >= 1 else 1
    part_grad = N if s.zero_stage >= 2 else 1
    parts: dict[str, int] = {}
    if s.zero_stage == 3:
        thr = int(zero.get("stage3_param_persistence_threshold", 100_000))
        persistent = sum(g.total for g in groups if g.numel <= thr)
        rest = trainable + frozen - persistent
        live = min(int(zero.get("stage3_max_live_parameters", 10**9)), rest)
        parts.update(weights_trainable=0, weights_frozen=0, weights_partition=mb * (rest // N),
                     weights_persistent=mb * persistent, weights_gathered=mb * live)
    else:
        parts.update(weights_trainable=mb * trainable, weights_frozen=mb * frozen)
    bucket = int(zero.get("reduce_bucket_size", 5 * 10**8)) if s.zero_stage >= 1 else 0
    buffers = bucket * mb * (2 if zero.get("overlap_comm") else 1)
    parts["grads"] = mb * trainable // part_grad + buffers
    opt = 12 * trainable // part_opt
    host = 0
    if s.offload_optimizer:
        host = (opt + 4 * trainable // part_opt) * s.gpus_per_node   # master, moments and fp32 grads, per node
        parts["optimizer"] = 0
        step = 0
    else:
        parts["optimizer"] = opt
        step = 8 * trainable // part_opt  # fp32 copy of the gradient partition + AdamW (foreach) temporaries
    return parts, step, host


def estimate_training(s: TrainShape) -> MemoryEstimate:
    groups = cell_tensors(s.comp, s.dec, s.finetune, s.lora, s.num_memory)
    static, step, host = _static_parts(s, groups)
    est = MemoryEstimate("train", "torch" if s.engine == "torch" else f"zero{s.zero_stage}", s.world,
                         checkpointing=s.checkpointing, host_bytes=host)

    def peak(ckpt: bool) -> tuple[dict[str, int], int]:
        act = activation_parts(s, ckpt)
        fwd_bwd = sum(v for k, v in act.items())
        total = sum(static.values()) + max(fwd_bwd, step)
        return act, total

    act, est.peak_bytes = peak(s.checkpointing)
    _, est.alt_peak_bytes = peak(not s.checkpointing)
    est.parts = {**static, **act, "step_transient": step}
    if s.loss_chunk is None:
        est.notes.append("full logits (no chunked loss)")
    return est


def train_estimate(cfg: dict, cell: Any, device: str = "cuda", dynamics: bool = False) -> MemoryEstimate:
    """Memory of one training run (`dynamics`: the dynamics run, with its own overrides)."""
    return estimate_training(train_shape(cfg, CellTrainSettings.for_cell(cfg, cell, dynamics), device))


# ------------------------------------------------------------------------------------------------ evaluation
def estimate_eval(comp: ArchDims, dec: ArchDims, num_memory: int, ev: EvaluateSettings, segment: int,
                  max_segments: int, gpus: int, device: str = "cuda") -> MemoryEstimate:
    """One evaluation/probe job: the merged cell in bf16 over `gpus` GPUs (one device map for both models) and the
    largest task buffer, per GPU."""
    b = 2 if device == "cuda" else 4
    n = max(1, int(gpus)) if device == "cuda" else 1
    groups = cell_tensors(comp, dec, "full", None, num_memory)  # LoRA is merged into the base for evaluation
    total = b * _sum(groups, trainable=True) + b * _sum(groups, trainable=False)
    # eval_device_maps: an even share per GPU plus at most the largest block that cannot be split
    block = b * max(max(md.layer_params(d), md.embedding_params(d), md.lm_head_params(d),
                        md.cross_layer_params(d) if d.cross_layers else 0) for d in (comp, dec))
    weights = total if n == 1 else min(total, -(-total // n) + block)
    bs = ev.batch_size
    prefix = num_memory + 3 + (1 if dec.bos else 0)
    kv_token = dec.self_layers * 2 * dec.kv_width * b
    recon = bs * (prefix + ev.recon_max_new_tokens) * kv_token
    answer = bs * (num_memory * max_segments + prefix - num_memory + QUESTION_TOKENS
                   + ev.answer_max_new_tokens) * kv_token
    kv = max(recon, answer) * (1 + 1 / max(1, dec.self_layers))  # the cache grows by concatenation
    score = bs * CANDIDATE_TOKENS * dec.vocab * (b + 8)
    chunk = ev.entropy_vocab_chunk
    rows = bs * (segment + 1)
    entropy = rows * min(chunk, dec.vocab) * 4 * 3 + rows * dec.hidden * 4
    comp_tokens = bs * (segment + num_memory + 1)
    compress = comp_tokens * (3 * comp.hidden + comp.q_width + 2 * comp.kv_width + 3 * comp.intermediate) * b
    parts = {"weights": weights, "kv_cache": int(kv), "scoring_logits": score, "entropy_chunk": entropy,
             "compress": compress}
    est = MemoryEstimate("eval", "eval", n, parts=parts,
                         peak_bytes=weights + max(int(kv), score, entropy, compress))
    if n > 1:
        est.notes.append(f"evaluation weights sharded over {n} GPUs (one device map for compressor and decoder)")
    return est


def eval_estimate(cfg: dict, cell: Any, device: str = "cuda") -> MemoryEstimate:
    comp, dec = dims_of(cfg, cell.compressor), dims_of(cfg, cell.decoder)
    run = CellEvalSettings.for_cell(cfg, cell)
    L = run.segment.segment_tokens
    return estimate_eval(comp, dec, L // run.cell.ratio, run.evaluate, L, run.segment.max_segments, run.gpus,
                         device)
