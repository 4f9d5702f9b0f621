"""Compressor f_θ -> memory Z -> frozen decoder g_φ (the paper's §3; design after PCC, Dai et al. 2025, and ICAE).

Compressor side: a segment of L compressor tokens is followed by M = L/ρ learned memory embeddings; the
compressor's last-layer hidden states at those M positions, passed through an adapter
(RMSNorm -> Linear(d_c, d_d) -> GELU -> Linear(d_d, d_d)), are the memory Z ∈ R^{M×d_d}.

Decoder side (frozen, eval mode, no gradients to its weights; with activation checkpointing its layer modules alone
carry the training flag that makes transformers recompute them, see `train`): input embeddings
    [BOS?] [<mem>] Z_1 .. Z_M [</mem>] [<task>] target tokens
where <mem>, </mem> and the task markers (<reconstruct>, <continue>) are trainable vectors in the decoder's
embedding space. BOS is used only when the decoder's tokenizer has one (Llama-3 does, Qwen3 does not).
Losses go through the LM head in chunks over the real target positions (ctxcomp.model.loss), never as (B, T, V)
logits; `decoder_eos_ids` is the decoder's full EOS set (its generation config), where generation stops.

Padding conventions (shapes in comments: B batch, L segment, M memory, P prefix, T target, d width):
- compressor inputs are LEFT-padded, position ids count real tokens only, so the memory always directly follows
  the text at the positions a real continuation would have;
- decoder prefixes may differ in length (multi-segment QA contexts), so they are left-padded too, and targets are
  right-padded; position ids again count real tokens only.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .loss import frozen_head_nll, gathered

MARKERS = ("begin_memory", "end_memory", "reconstruct", "continue")


def backbone(model: nn.Module) -> nn.Module:
    """The transformer stack without LM head (also through a peft wrapper): we never need compressor logits.

    Not `getattr(model, model.base_model_prefix)`: that prefix names where a class's weights sit in a checkpoint,
    not always its submodule (MllamaForCausalLM, what AutoModelForCausalLM makes of a Llama-3.2-Vision checkpoint,
    has prefix "language_model" and its text stack in `.model`). The stack is the child module that is not the LM
    head and owns the input embeddings, which holds for every causal-LM class.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    for name in (model.base_model_prefix, "model", "transformer"):
        try:
            sub = model.get_submodule(name)
        except AttributeError:
            continue
        if sub is not model and sub is not head and any(m is emb for m in sub.modules()):
            return sub
    raise TypeError(f"{type(model).__name__}: no transformer stack found (looked for the module that holds the "
                    "input embeddings under base_model_prefix, 'model' and 'transformer')")


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


def _weight_std(module: nn.Module) -> float:
    with gathered(module.weight):  # a ZeRO-3 partition holds a slice only
        return float(module.weight.detach().float().std())


def eos_ids_of(model: nn.Module) -> tuple[int, ...]:
    """Every id that ends a generation of `model`: its generation config's EOS list (Llama-3-Instruct:
    <|end_of_text|> and <|eot_id|>; Qwen3: <|im_end|> and <|endoftext|>) and its config's EOS."""
    ids: list[int] = []
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(src, "eos_token_id", None)
        for i in ([eos] if isinstance(eos, int) else list(eos or [])):
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return tuple(ids)


def checkpointing_layers(model: nn.Module) -> list[nn.Module]:
    """The model's transformer layers that recompute their forward in backward (activation checkpointing on)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]


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
        self.decoder_eos_ids = eos_ids_of(decoder)
        d_c = compressor.config.get_text_config().hidden_size
        d_d = decoder.config.get_text_config().hidden_size
        if head is None:
            c_std = _weight_std(compressor.get_input_embeddings())
            d_std = _weight_std(decoder.get_input_embeddings())
            head = CompressionHead(num_memory, d_c, d_d, c_std, d_std)
        self.head = head
        self.freeze_decoder()

    # ------------------------------------------------------------------------------------------------ setup
    def freeze_decoder(self) -> None:
        self.decoder.requires_grad_(False)
        self.decoder.eval()

    def train(self, mode: bool = True) -> ContextCompressor:
        super().train(mode)
        self.decoder.eval()  # the decoder stays in eval mode (no dropout) whatever the trainer asks
        # transformers recomputes a checkpointed layer only when that layer is in training mode. Only the layer
        # modules' own flag is set: their sub-modules (attention, MLP, any dropout) stay in eval mode.
        for layer in checkpointing_layers(self.decoder):
            layer.training = mode
        return self

    # ------------------------------------------------------------------------------------------- compressor
    def compress(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded segment -> Z (B, M, d_d)."""
        B = input_ids.shape[0]
        comp = backbone(self.compressor)
        tok_emb = self.compressor.get_input_embeddings()(input_ids)  # (B, L, d_c)
        mem = self.head.memory.to(tok_emb).unsqueeze(0).expand(B, -1, -1)  # (B, M, d_c)
        embeds = torch.cat([tok_emb, mem], dim=1)  # (B, L+M, d_c)
        mask = attention_mask.to(embeds.device)
        mask = torch.cat([mask, mask.new_ones(B, self.num_memory)], dim=1)
        out = comp(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask),
                   use_cache=False)
        h = out.last_hidden_state[:, -self.num_memory:]  # (B, M, d_c)
        w = self.head.adapter.up.weight  # on a sharded model the head sits with the decoder's embeddings
        return self.head.adapter(h.to(device=w.device, dtype=w.dtype))  # (B, M, d_d)

    # ---------------------------------------------------------------------------------------------- decoder
    def prefix(self, z: torch.Tensor, task: str) -> torch.Tensor:
        """Decoder prefix embeddings [BOS?, <mem>, Z, </mem>, <task>]: (B, P, d_d) with P = M' + 3 (+1 with BOS)."""
        B = z.shape[0]
        emb = self.decoder.get_input_embeddings()
        dtype = emb.weight.dtype
        m = self.head.markers.to(dtype)
        parts = []
        if self.decoder_bos_id is not None:
            bos = torch.full((B, 1), self.decoder_bos_id, dtype=torch.long, device=m.device)
            parts.append(emb(bos).to(m.device))
        parts += [m[0].expand(B, 1, -1), z.to(device=m.device, dtype=dtype), m[1].expand(B, 1, -1),
                  m[MARKERS.index(task)].expand(B, 1, -1)]
        return torch.cat(parts, dim=1)

    def decoder_hidden(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, target_ids: torch.Tensor,
                       target_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states of the decoder over [prefix; target]: (B, P+T, d_d)."""
        emb = self.decoder.get_input_embeddings()(target_ids.to(prefix.device)).to(prefix.device)  # (B, T, d_d)
        embeds = torch.cat([prefix, emb], dim=1)
        mask = torch.cat([prefix_mask.to(prefix.device), target_mask.to(prefix.device)], dim=1)
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
        """Per-token negative log-likelihood of the targets (B, T) in float32, zero at padding.

        Only real target positions go through the LM head, in chunks (ctxcomp.model.loss): the (B, T, V) logits
        are never materialised. Equal to cross_entropy(target_logits(...).float()) times the mask.
        """
        P = prefix.shape[1]
        h = self.decoder_hidden(prefix, prefix_mask, target_ids, target_mask)[:, P - 1 : -1]  # (B, T, d)
        B, T, d = h.shape
        keep = target_mask.to(h.device).reshape(-1).nonzero().squeeze(1)
        nll = frozen_head_nll(self.decoder.get_output_embeddings(), h.reshape(B * T, d)[keep],
                              target_ids.to(h.device).reshape(-1)[keep])
        out = torch.zeros(B * T, dtype=torch.float32, device=nll.device)
        return out.index_copy(0, keep.to(nll.device), nll).view(B, T)

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
        total = nll.new_zeros(())
        for i, t in enumerate(tasks):
            m = tmask[i].to(device=nll.device, dtype=torch.float32)
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
