"""Cross-entropy through the frozen decoder's LM head without materialising (positions x vocabulary) logits.

At the real scale the targets are 2 tasks x micro-batch 8 x ~330 positions and the vocabulary is 128,256 (Llama-3)
or 151,936 (Qwen3): fp32 logits plus their gradient would be several GB per micro-batch. The decoder, its LM head
included, is frozen, so the only gradient needed is the one w.r.t. the hidden states, and for row i it is
    d nll_i / d h_i = (softmax(h_i W^T + b) - onehot(t_i)) W,
a (d,)-vector. `frozen_head_nll` walks the positions in chunks, computes each chunk's logits once, keeps its NLL and
that (N, d) gradient, and frees the logits: peak memory is one chunk of logits, no recomputation in backward
(the same idea as fused linear-cross-entropy kernels; none is installed here, so it is written with torch ops).
Numerics follow `F.cross_entropy(F.linear(h, W, b).float(), t)`: the head matmul runs in the weight's dtype (bf16
under autocast on GPU), the softmax and the NLL in float32.

A trainable head (not used by this pipeline) falls back to checkpointed chunks: same values, its logits are
recomputed chunk by chunk in backward.
"""
from __future__ import annotations

import contextlib
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# Logit elements per chunk (rows x vocabulary): 2**25 fp32 values = 128 MiB, ~260 positions at a 128k vocabulary.
CHUNK_ELEMENTS = 2**25


def rows_per_chunk(vocab: int, elements: int = CHUNK_ELEMENTS) -> int:
    return max(1, elements // max(1, vocab))


def gathered(*params: torch.Tensor | None):
    """Full copies of ZeRO-3-partitioned `params` inside the block (read-only); a no-op for ordinary tensors.

    Inside a module's forward, ZeRO-3 has already fetched a parameter on attribute access (and releases it after
    that forward: an "external parameter" of the running module), so only parameters still not available are
    gathered here; releasing a fetched one early would break ZeRO-3's bookkeeping.
    """
    ds = [p for p in params if p is not None and hasattr(p, "ds_id")]
    if not ds:
        return contextlib.nullcontext()
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    missing = [p for p in ds if p.ds_status == ZeroParamStatus.NOT_AVAILABLE]
    if not missing:
        return contextlib.nullcontext()
    return deepspeed.zero.GatheredParameters(missing, modifier_rank=None)


class _FrozenHeadNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                rows: int) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0]
        nll = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        grad = torch.empty_like(h) if need_grad else None
        for s in range(0, h.shape[0], rows):
            logits = F.linear(h[s:s + rows], weight, bias).float()  # (n, V)
            t = targets[s:s + rows]
            lse = torch.logsumexp(logits, dim=-1)
            nll[s:s + rows] = lse - logits.gather(1, t[:, None]).squeeze(1)
            if need_grad:
                p = torch.exp(logits.sub_(lse[:, None]))  # softmax, in place of the logits
                p[torch.arange(p.shape[0], device=p.device), t] -= 1.0
                grad[s:s + rows] = (p.to(weight.dtype) @ weight).to(h.dtype)
            del logits
        ctx.save_for_backward(grad if need_grad else h.new_empty(0))
        return nll

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * g[:, None].to(grad.dtype), None, None, None, None


def _chunk_nll(head: torch.nn.Module, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(h).float(), t, reduction="none")


def frozen_head_nll(head: torch.nn.Module, h: torch.Tensor, targets: torch.Tensor,
                    rows: int | None = None) -> torch.Tensor:
    """NLL (float32, shape (N,)) of `targets` (N,) under softmax(head(h)) for hidden states `h` (N, d), chunked.

    `head` is the decoder's output embedding (nn.Linear, possibly ZeRO-3-partitioned: its weight is gathered once
    for the whole call). Gradients flow to `h` only when the head is frozen, which it is in this pipeline.
    """
    weight = head.weight
    bias = getattr(head, "bias", None)
    vocab = tuple(getattr(weight, "ds_shape", weight.shape))[0]  # a ZeRO-3 partition knows its full shape
    rows = rows or rows_per_chunk(vocab)
    targets = targets.to(h.device)
    if h.shape[0] == 0:
        return h.new_zeros(0, dtype=torch.float32)
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        fn = partial(_chunk_nll, head)
        parts = [checkpoint(fn, h[s:s + rows], targets[s:s + rows], use_reentrant=False)
                 if torch.is_grad_enabled() else fn(h[s:s + rows], targets[s:s + rows])
                 for s in range(0, h.shape[0], rows)]
        return torch.cat(parts)
    with gathered(weight, bias):
        w = weight.detach()
        b = bias.detach() if bias is not None else None
        if w.device != h.device:  # a head on another GPU of a sharded evaluation model
            h = h.to(w.device)
            targets = targets.to(w.device)
        # under autocast the head's matmul runs in bf16, as nn.Linear's would
        dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else None
        if dtype is not None:
            w, b = w.to(dtype), (b.to(dtype) if b is not None else None)
            h_in = h.to(dtype)
        else:
            h_in = h.to(w.dtype)
        with torch.autocast(h.device.type, enabled=False):
            return _FrozenHeadNLL.apply(h_in, w, b, targets, rows)
