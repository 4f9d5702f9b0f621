"""The tiny preset starts in distribution: BOS-initial pretraining windows, and an adapter whose initial output has
the scale of the decoder's token embeddings."""
from __future__ import annotations

import json

import pytest
import torch

from ctxcomp.model.compressor import GELU_SECOND_MOMENT, Adapter, ContextCompressor
from ctxcomp.tiny.build import build_model
from ctxcomp.tiny.pretrain import windows
from ctxcomp.tiny.tokenizer import build_tokenizer
from snakemake_helpers import ROOT


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with open(ROOT / "workflow/data/c4/c4_sample.jsonl") as fh:
        return [json.loads(line)["text"] for _, line in zip(range(120), fh)]


def test_gelu_second_moment():
    x = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(torch.nn.functional.gelu(x).pow(2).mean()) == pytest.approx(GELU_SECOND_MOMENT, rel=5e-3)


def test_pretraining_windows_start_with_bos():
    stream = torch.arange(100, 200)
    w = windows(stream, [0, 10, 50], 8, bos_id=7)
    assert w.shape == (3, 8) and w[:, 0].tolist() == [7, 7, 7]
    assert w[1, 1:].tolist() == list(range(110, 117))
    assert windows(stream, [5], 4, bos_id=None).tolist() == [[105, 106, 107, 108]]  # Qwen-style: no BOS


@pytest.mark.parametrize("d_comp, d_dec, std", [(48, 128, 0.02), (96, 128, 0.3), (512, 1024, 0.014)])
def test_adapter_output_scale_on_unit_rms_inputs(d_comp, d_dec, std):
    torch.manual_seed(0)
    h = torch.randn(64, 16, d_comp) * 5.0 + 3.0  # any scale and offset: the RMSNorm comes first
    a = Adapter(d_comp, d_dec, out_std=std)
    assert float(a(h).std()) == pytest.approx(std, rel=0.2)


def test_memory_starts_at_the_decoder_embedding_scale(texts):
    comp_tok, dec_tok = build_tokenizer(texts, 400, "qwen3"), build_tokenizer(texts, 500, "llama")
    comp = build_model({"arch": "qwen3", "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "head_dim": 12, "intermediate_size": 96}, comp_tok, 1)
    dec = build_model({"arch": "llama", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "intermediate_size": 256}, dec_tok, 2)
    with torch.no_grad():  # a decoder embedding scale unlike PyTorch's default Linear output (~0.3)
        dec.get_input_embeddings().weight.mul_(3.0)
    torch.manual_seed(3)
    model = ContextCompressor(comp, dec, num_memory=8, decoder_bos_id=dec_tok.bos_token_id).eval()
    ids = comp_tok(texts[:6], add_special_tokens=False, truncation=True, max_length=32, padding="max_length")
    ids = torch.tensor([i[:32] for i in ids["input_ids"]])
    with torch.no_grad():
        z = model.compress(ids, torch.ones_like(ids))
    emb_std = float(dec.get_input_embeddings().weight.std())
    assert float(z.std()) == pytest.approx(emb_std, rel=0.2)
