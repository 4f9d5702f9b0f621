"""Compressor f_θ -> memory Z -> frozen decoder g_φ (the paper's §3; design after PCC, Dai et al. 2025, and ICAE).

Compressor side: a segment of L compressor tokens is followed by M = L/ρ learned memory embeddings; the
compressor's last-layer hidden states at those M positions, passed through an adapter
(RMSNorm -> Linear(d_c, d_d) -> GELU -> Linear(d_d, d_d)), are the memory Z ∈ R^{M×d_d}.

Decoder side (frozen, eval mode, no gradients to its weights): input embeddings
    [BOS?] [<mem>] Z_1 .. Z_M [</mem>] [<task>] target tokens
where <mem>, </mem> and the task markers (<reconstruct>, <continue>) are trainable vectors in the decoder's
embedding space. BOS is used only when the decoder's tokenizer has one (Llama-3 does, Qwen3 does not).

Padding conventions (shapes in comments: B batch, L segment, M memory, P prefix, T target, d width):
- compressor inputs are LEFT-padded, position ids count real tokens only, so the memory always directly follows
  the text at the positions a real continuation would have;
- decoder prefixes may differ in length (multi-segment QA contexts), so they are left-padded too, and targets are
  right-padded; position ids again count real tokens only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

MARKERS = ("begin_memory", "end_memory", "reconstruct", "continue")


def backbone(model: nn.Module) -> nn.Module:
    """The transformer stack without LM head (also through a peft wrapper): we never need compressor logits."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, model.base_model_prefix)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: 0 at the first real token."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


#: E[GELU(x)^2] for x ~ N(0, 1) (numerical quadrature): the second moment of the adapter's hidden layer at init.
GELU_SECOND_MOMENT = 0.4252214825667899


class Adapter(nn.Module):
    """RMSNorm -> Linear(d_c, d_d) -> GELU -> Linear(d_d, d_d): maps compressor states into decoder space."""

    def __init__(self, d_comp: int, d_dec: int, eps: float = 1e-6, out_std: float | None = None):
        super().__init__()
        self.norm = nn.RMSNorm(d_comp, eps=eps)
        self.up = nn.Linear(d_comp, d_dec)
        self.out = nn.Linear(d_dec, d_dec)
        if out_std is not None:
            self.init_output_scale(out_std)

    @torch.no_grad()
    def init_output_scale(self, out_std: float) -> None:
        """Start with outputs of std ~ `out_std`: the RMSNorm gives unit-RMS inputs, so with up ~ N(0, 1/d_c) the
        pre-activations are ~ N(0, 1), the GELU layer has second moment GELU_SECOND_MOMENT, and out ~
        N(0, out_std^2 / (GELU_SECOND_MOMENT d_d)) gives std out_std (biases 0). PyTorch's default Linear init
        would give ~0.3 whatever the decoder's embedding scale."""
        d_comp, d_dec = self.up.in_features, self.out.in_features
        nn.init.normal_(self.up.weight, std=d_comp ** -0.5)
        nn.init.zeros_(self.up.bias)
        nn.init.normal_(self.out.weight, std=out_std / (GELU_SECOND_MOMENT * d_dec) ** 0.5)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.up(self.norm(h))))


class CompressionHead(nn.Module):
    """Everything trainable besides the compressor's own weights: memory embeddings, adapter, markers."""

    def __init__(self, num_memory: int, d_comp: int, d_dec: int, comp_embed_std: float, dec_embed_std: float):
        super().__init__()
        # Initialised at the scale of each side's token embeddings, so they start "in distribution" (the adapter's
        # output too: Z starts at the std of the decoder's token embeddings).
        self.memory = nn.Parameter(torch.randn(num_memory, d_comp) * comp_embed_std)
        self.adapter = Adapter(d_comp, d_dec, out_std=dec_embed_std)
        self.markers = nn.Parameter(torch.randn(len(MARKERS), d_dec) * dec_embed_std)

    def marker(self, name: str) -> torch.Tensor:
        return self.markers[MARKERS.index(name)]


@dataclass
class CompressorBatch:
    """A batch of segments for the compressor: (B, L) ids and mask, left-padded."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class ContextCompressor(nn.Module):
    """f_θ + adapter + frozen g_φ. `forward` returns the training losses of eq. 3 for a collated batch."""

    def __init__(self, compressor: nn.Module, decoder: nn.Module, num_memory: int, head: CompressionHead | None = None,
                 decoder_bos_id: int | None = None, compressor_bos_id: int | None = None):
        super().__init__()
        self.compressor = compressor
        self.decoder = decoder
        self.num_memory = num_memory
        self.decoder_bos_id = decoder_bos_id
        self.compressor_bos_id = compressor_bos_id
        d_c = compressor.config.hidden_size
        d_d = decoder.config.hidden_size
        if head is None:
            c_std = float(compressor.get_input_embeddings().weight.detach().float().std())
            d_std = float(decoder.get_input_embeddings().weight.detach().float().std())
            head = CompressionHead(num_memory, d_c, d_d, c_std, d_std)
        self.head = head
        self.freeze_decoder()

    # ------------------------------------------------------------------------------------------------ setup
    def freeze_decoder(self) -> None:
        self.decoder.requires_grad_(False)
        self.decoder.eval()

    def train(self, mode: bool = True) -> "ContextCompressor":
        super().train(mode)
        self.decoder.eval()  # the decoder stays in eval mode (no dropout) whatever the trainer asks
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------------------------------- compressor
    def compress(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded segment -> Z (B, M, d_d)."""
        B = input_ids.shape[0]
        comp = backbone(self.compressor)
        tok_emb = self.compressor.get_input_embeddings()(input_ids)  # (B, L, d_c)
        mem = self.head.memory.to(tok_emb.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, M, d_c)
        embeds = torch.cat([tok_emb, mem], dim=1)  # (B, L+M, d_c)
        mask = torch.cat([attention_mask, attention_mask.new_ones(B, self.num_memory)], dim=1)
        out = comp(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask),
                   use_cache=False)
        h = out.last_hidden_state[:, -self.num_memory:]  # (B, M, d_c)
        return self.head.adapter(h.to(self.head.adapter.up.weight.dtype))  # (B, M, d_d)

    # ---------------------------------------------------------------------------------------------- decoder
    def prefix(self, z: torch.Tensor, task: str) -> torch.Tensor:
        """Decoder prefix embeddings [BOS?, <mem>, Z, </mem>, <task>]: (B, P, d_d) with P = M' + 3 (+1 with BOS)."""
        B = z.shape[0]
        emb = self.decoder.get_input_embeddings()
        dtype = emb.weight.dtype
        parts = []
        if self.decoder_bos_id is not None:
            bos = torch.full((B, 1), self.decoder_bos_id, dtype=torch.long, device=z.device)
            parts.append(emb(bos))
        m = self.head.markers.to(dtype)
        parts += [m[0].expand(B, 1, -1), z.to(dtype), m[1].expand(B, 1, -1),
                  m[MARKERS.index(task)].expand(B, 1, -1)]
        return torch.cat(parts, dim=1)

    def decoder_hidden(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, target_ids: torch.Tensor,
                       target_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states of the decoder over [prefix; target]: (B, P+T, d_d)."""
        emb = self.decoder.get_input_embeddings()(target_ids)  # (B, T, d_d)
        embeds = torch.cat([prefix, emb], dim=1)
        mask = torch.cat([prefix_mask, target_mask], dim=1)
        out = backbone(self.decoder)(inputs_embeds=embeds, attention_mask=mask,
                                     position_ids=positions_from_mask(mask), use_cache=False)
        return out.last_hidden_state

    def target_logits(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, target_ids: torch.Tensor,
                      target_mask: torch.Tensor) -> torch.Tensor:
        """Logits predicting each target token (B, T, V): only target positions go through the LM head."""
        P = prefix.shape[1]
        h = self.decoder_hidden(prefix, prefix_mask, target_ids, target_mask)
        h = h[:, P - 1 : -1]  # state before each target token
        return self.decoder.get_output_embeddings()(h)

    def target_nll(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, target_ids: torch.Tensor,
                   target_mask: torch.Tensor) -> torch.Tensor:
        """Per-token negative log-likelihood of the targets (B, T), zero at padding."""
        logits = self.target_logits(prefix, prefix_mask, target_ids, target_mask).float()
        nll = F.cross_entropy(logits.transpose(1, 2), target_ids, reduction="none")  # (B, T)
        return nll * target_mask

    # ---------------------------------------------------------------------------------------------- training
    def forward(self, batch: dict[str, torch.Tensor], weights: dict[str, float] | None = None,
                z_perm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eq. 3: L = w_re·L_re + w_nt·L_nt, each a token-mean cross-entropy. Both halves in one decoder call.

        `z_perm` reorders Z across the batch: the control that shows the decoder really reads the memory.
        """
        weights = weights or {"reconstruct": 1.0, "continue": 1.0}
        z = self.compress(batch["comp_ids"], batch["comp_mask"])  # (B, M, d_d)
        if z_perm is not None:
            z = z[z_perm]
        tasks = [t for t in ("reconstruct", "continue") if weights.get(t, 0.0) > 0]
        key = {"reconstruct": "re", "continue": "nt"}
        prefixes, pmask, tids, tmask = [], [], [], []
        T = max(batch[f"{key[t]}_ids"].shape[1] for t in tasks)
        for t in tasks:
            p = self.prefix(z, t)
            ids, m = batch[f"{key[t]}_ids"], batch[f"{key[t]}_mask"]
            prefixes.append(p)
            pmask.append(torch.ones(p.shape[:2], dtype=m.dtype, device=m.device))
            tids.append(F.pad(ids, (0, T - ids.shape[1]), value=0))
            tmask.append(F.pad(m, (0, T - m.shape[1]), value=0))
        nll = self.target_nll(torch.cat(prefixes), torch.cat(pmask), torch.cat(tids), torch.cat(tmask))
        B = z.shape[0]
        out: dict[str, torch.Tensor] = {}
        total = z.new_zeros((), dtype=torch.float32)
        for i, t in enumerate(tasks):
            m = tmask[i].float()
            loss_t = nll[i * B : (i + 1) * B].sum() / m.sum().clamp_min(1.0)
            out[f"loss_{key[t]}"] = loss_t
            total = total + weights[t] * loss_t
        out["loss"] = total
        out["z"] = z
        out["tokens"] = batch["comp_mask"].sum() + sum(m.sum() for m in tmask)
        return out


def num_memory_tokens(segment_tokens: int, ratio: int) -> int:
    """M = L / ρ (the config check guarantees ρ divides L)."""
    if segment_tokens % ratio:
        raise ValueError(f"ratio {ratio} does not divide segment length {segment_tokens}")
    return segment_tokens // ratio


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def describe(model: ContextCompressor) -> dict[str, Any]:
    return {
        "num_memory": model.num_memory,
        "compressor_params": count_parameters(model.compressor),
        "decoder_params": count_parameters(model.decoder),
        "trainable_params": count_parameters(model, trainable_only=True),
        "d_comp": model.compressor.config.hidden_size,
        "d_dec": model.decoder.config.hidden_size,
    }

