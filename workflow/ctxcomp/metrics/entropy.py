"""Vocabulary entropy of the DECODER's next-token distribution given the memory (paper Fig. 4, §5.2).

Definition: H = -sum_v p_v log p_v (natural log, nats) with p = softmax(h W^T + b) over the vocabulary, per position,
where h is the frozen decoder's state while it reconstructs the segment from Z under teacher forcing
(evaluate/probes.py); a sample's entropy is the mean over its target tokens. It measures how confidently the decoder
reads the memory a compressor wrote, not the compressor's own language-model distribution (whose LM head is never
used). Range [0, log V]. Direction: descriptive, and NOT monotonic in compressor size (§5.2: it does not simply fall
as compressors grow); the paper relates it to semantic drift per context (Fig. 4c) and tracks it during training.

`chunked_entropy` walks the positions in row blocks and the vocabulary in chunks with a streaming log-sum-exp, so a
128k-token vocabulary never materialises an N x V logit matrix: per position it keeps the running max m,
S = sum exp(l - m) and T = sum exp(l - m) * (l - m), and returns H = log S - T / S (rescaling S and T whenever m
grows). The logits and the accumulation are float64 whatever the input dtype: in float32, summing 128k terms
loses ~1e-5 nats, more than the per-sample differences the entropy probe compares.
"""
from __future__ import annotations

import torch


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension, one value per leading position, in float32."""
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    # 0 * log 0 = 0: where p underflows to 0, logp may be -inf; mask it.
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(dim=-1)


def chunked_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    chunk: int = 16384, rows: int | None = None) -> torch.Tensor:
    """Entropy (nats) of softmax(hidden @ weight^T + bias) per row of hidden [N, d], computed chunk-wise over V.

    weight is [V, d] (an LM head), bias [V] or None. `rows` positions are processed at a time (default: as many as
    keep a row block's logits at 2**24 elements), so peak memory is rows x chunk float64 values whatever N and V.
    Returns float64 [N].
    """
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"shapes do not match: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    n, v = hidden.shape[0], weight.shape[0]
    rows = rows or max(1, 2**24 // min(chunk, v))
    out = torch.empty(n, dtype=torch.float64, device=hidden.device)
    for r0 in range(0, n, rows):
        out[r0:r0 + rows] = _entropy_rows(hidden[r0:r0 + rows].double(), weight, bias, chunk)
    return out


chunked_entropy = torch.no_grad()(chunked_entropy)  # not a decorator: mutmut skips decorated functions


def _entropy_rows(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, chunk: int) -> torch.Tensor:
    n, v = h.shape[0], weight.shape[0]
    m = torch.full((n,), float("-inf"), dtype=torch.float64, device=h.device)
    s = torch.zeros(n, dtype=torch.float64, device=h.device)  # sum exp(l - m)
    t = torch.zeros(n, dtype=torch.float64, device=h.device)  # sum exp(l - m) * (l - m), relative to m for accuracy
    for start in range(0, v, chunk):
        w = weight[start:start + chunk].to(device=h.device, dtype=torch.float64)
        logits = h @ w.T
        if bias is not None:
            logits = logits + bias[start:start + chunk].to(device=h.device, dtype=torch.float64)
        new_m = torch.maximum(m, logits.max(dim=1).values)
        seen = s > 0
        shift = torch.where(seen, m - new_m, torch.zeros_like(m))  # <= 0; 0 before any mass was seen
        scale = torch.where(seen, torch.exp(shift), torch.zeros_like(m))
        d = logits - new_m[:, None]
        e = torch.exp(d)
        # 0 * (-inf) = 0 where a logit is masked to -inf.
        ed = torch.where(e > 0, e * d, torch.zeros_like(e))
        t = scale * (t + shift * s) + ed.sum(dim=1)
        s = s * scale + e.sum(dim=1)
        m = new_m
    return torch.log(s) - t / s
