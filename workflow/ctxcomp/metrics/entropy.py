"""Vocabulary entropy of the DECODER's next-token distribution given the memory (paper Fig. 4, §5.2).

Definition: H = -sum_v p_v log p_v (natural log, nats) with p = softmax(h W^T + b) over the vocabulary, per position,
where h is the frozen decoder's state while it reconstructs the segment from Z under teacher forcing
(evaluate/probes.py); a sample's entropy is the mean over its target tokens. It measures how confidently the decoder
reads the memory a compressor wrote, not the compressor's own language-model distribution (whose LM head is never
used). Range [0, log V]. Direction: descriptive, and NOT monotonic in compressor size (§5.2: it does not simply fall
as compressors grow); the paper relates it to semantic drift per context (Fig. 4c) and tracks it during training.

`chunked_entropy` walks the vocabulary in chunks with a streaming log-sum-exp, so a 128k-token vocabulary never
materialises an N x V logit matrix: it keeps, per position, the running max m, S = sum exp(l - m) and
T = sum exp(l - m) * (l - m), and returns H = log S - T / S (rescaling S and T whenever m grows). Arithmetic is
float32 even for bf16 inputs.
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


@torch.no_grad()
def chunked_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    chunk: int = 16384) -> torch.Tensor:
    """Entropy (nats) of softmax(hidden @ weight^T + bias) per row of hidden [N, d], computed chunk-wise over V.

    weight is [V, d] (an LM head), bias [V] or None. Peak memory is N x chunk instead of N x V. Returns float32 [N].
    """
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"shapes do not match: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    h = hidden.float()
    n, v = h.shape[0], weight.shape[0]
    m = torch.full((n,), float("-inf"), dtype=torch.float32, device=h.device)
    s = torch.zeros(n, dtype=torch.float32, device=h.device)  # sum exp(l - m)
    t = torch.zeros(n, dtype=torch.float32, device=h.device)  # sum exp(l - m) * (l - m), relative to m for accuracy
    for start in range(0, v, chunk):
        w = weight[start:start + chunk].to(device=h.device, dtype=torch.float32)
        logits = h @ w.T
        if bias is not None:
            logits = logits + bias[start:start + chunk].to(device=h.device, dtype=torch.float32)
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
