"""The real architecture path on miniature checkpoints of every class config.yaml reaches (ctxcomp.miniatures):
config.yaml with `hf_id:` pointed at local directories, as with a local model mirror; real special-token ids,
generation configs and vocabulary sizes (151,936 / 128,256) at a tiny width.

Per class: the loader (AutoModelForCausalLM, Mllama's text stack from a vision checkpoint), training with the torch
engine (full or LoRA as config.yaml assigns them, gradient checkpointing on as in config.yaml) and with DeepSpeed
ZeRO-2 and ZeRO-3 + optimizer offload (`slow`, one child process), every evaluation task, the probes, the EOS set
and the evaluation device map.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctxcomp import miniatures as M
from helpers_tiny import subprocess_env
from miniature_env import MIRROR, ROOT, minis

MAIN = "llama3-8b-instruct"
# (decoder, compressor) cells of config.yaml covering every architecture class and fine-tuning mode
CELLS = [(MAIN, "qwen3-0.6b"), (MAIN, "qwen3-32b"), (MAIN, "llama3.2-1b"), (MAIN, "llama3.2-11b"),
         ("qwen3-4b", "qwen3-0.6b")]


@pytest.fixture(scope="session")
def mini(tmp_path_factory):
    return minis(tmp_path_factory.mktemp("minis"))


@pytest.fixture(scope="session")
def trained(mini, tmp_path_factory):
    """Each cell of CELLS trained for 2 steps with the torch engine through the Trainer; name -> (run dir, facts)."""
    from ctxcomp.train.loop import Trainer

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for dec, comp in CELLS:
        s = mini.settings(dec, comp)
        run = root / f"{dec}--{comp}"
        tr = Trainer(s, str(mini.train), str(mini.probe), str(run), engine="torch")
        before = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
        frozen_xattn = [n for n, p in tr.model.compressor.named_parameters() if "cross_attn" in n]
        tr.run()
        o = mini.outputs(run)
        tr.finish(o["final"], o["probe_checkpoints"], o["loss"], o["dynamics"], o["summary"])
        changed = {n for n, p in tr.model.named_parameters() if n in before and not torch.equal(p, before[n])}
        out[(dec, comp)] = {"run": run, "settings": s, "trainable": set(before), "changed": changed,
                            "xattn": frozen_xattn, "model": tr.model, "collate": tr.collate,
                            "history": tr.history, "dynamics": tr.dynamics}
    return out


# ------------------------------------------------------------------------------------------------ checkpoints
def test_tokenizer_and_generation_layouts_are_the_real_ones(mini):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    q = AutoTokenizer.from_pretrained(mini.models["qwen3"])
    assert q.bos_token is None and q.eos_token == "<|im_end|>" and q.eos_token_id == 151645
    assert q.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>"]) == [151643, 151644]
    assert q.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True) \
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert GenerationConfig.from_pretrained(mini.models["qwen3"]).eos_token_id == [151645, 151643]
    ins = AutoTokenizer.from_pretrained(mini.models["llama3-instruct"])
    assert (ins.bos_token_id, ins.eos_token_id) == (128000, 128009)
    assert ins.convert_tokens_to_ids("<|end_of_text|>") == 128001
    assert ins.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    assert GenerationConfig.from_pretrained(mini.models["llama3-instruct"]).eos_token_id == [128001, 128009]
    base = AutoTokenizer.from_pretrained(mini.models["llama3.2"])
    assert (base.bos_token_id, base.eos_token_id, base.pad_token_id) == (128000, 128001, None)
    vis = AutoTokenizer.from_pretrained(mini.models["llama3.2-vision"])
    assert vis.convert_tokens_to_ids("<|image|>") == 128256 and vis.pad_token_id == 128004
    # the tokenizer really tokenizes: text round-trips, specials are single ids
    ids = ins("Hello world.<|eot_id|>", add_special_tokens=False)["input_ids"]
    assert ids[-1] == 128009 and ins.decode(ids[:-1]) == "Hello world."
    vc = AutoConfig.from_pretrained(mini.models["llama3.2-vision"])
    assert type(vc).__name__ == "MllamaConfig" and vc.text_config.cross_attention_layers == [1]


@pytest.mark.parametrize("kind,cls,rows", [("qwen3", "Qwen3ForCausalLM", 151_936),
                                           ("llama3.2", "LlamaForCausalLM", 128_256),
                                           ("llama3.2-vision", "MllamaForCausalLM", 128_256 + 8),
                                           ("llama3-instruct", "LlamaForCausalLM", 128_256)])
def test_loader_and_backbone_for_every_class(mini, kind, cls, rows):
    from peft import LoraConfig, get_peft_model

    from ctxcomp.model.compressor import backbone
    from ctxcomp.model.load import load_causal_lm

    m = load_causal_lm(str(mini.models[kind]), torch.float32)
    assert type(m).__name__ == cls and m.get_input_embeddings().weight.shape[0] == rows
    stack = backbone(m)
    assert stack is not m and stack.get_input_embeddings() is m.get_input_embeddings()
    ids = torch.tensor([[5, 6, 7]])
    out = stack(input_ids=ids, use_cache=False).last_hidden_state
    assert out.shape == (1, 3, m.config.get_text_config().hidden_size)
    wrapped = get_peft_model(m, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    assert backbone(wrapped) is stack
    if kind == "llama3.2-vision":
        # the text weights are the checkpoint's: compare with the saved MllamaForConditionalGeneration
        from safetensors.torch import load_file

        saved = load_file(mini.models[kind] / "model.safetensors")
        q = [k for k in saved if k.endswith("layers.0.self_attn.q_proj.weight") and "vision" not in k]
        assert len(q) == 1 and torch.equal(saved[q[0]], stack.layers[0].self_attn.q_proj.base_layer.weight)


# --------------------------------------------------------------------------------------------------- training
def test_every_class_trains_with_the_torch_engine(trained, mini):
    import math

    cfg = mini.config()
    for (_dec, comp), r in trained.items():
        lora = cfg["models"][comp]["finetune"] == "lora"
        assert r["settings"]["compressor"]["finetune"] == ("lora" if lora else "full"), comp
        losses = [h["loss"] for h in r["history"]]
        assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses), (comp, losses)
        names = r["trainable"]
        assert all("decoder." not in n for n in names)
        if lora:
            assert {n for n in names if n.startswith("compressor.")} == {n for n in names if "lora_" in n}
        assert any(n.startswith("head.") for n in r["changed"]) and any("compressor." in n for n in r["changed"])
        if MIRROR[comp] == "llama3.2-vision":  # cross-attention layers never run on text: frozen, untouched
            assert r["xattn"] and not any("cross_attn" in n for n in names)
        assert len(r["dynamics"]) == 1 and r["dynamics"][0]["erank"] > 0  # probes ran at the real vocabulary


@pytest.mark.slow
def test_every_class_trains_with_deepspeed_zero2_and_zero3_offload(mini, tmp_path):
    """DeepSpeed on CPU, one process: ZeRO-2 and ZeRO-3 with optimizer offload for every compressor class; ZeRO-3
    builds the models under zero.Init (partitioned while loading) and gives the same losses as ZeRO-2."""
    jobs = []
    for comp in ("qwen3-0.6b", "qwen3-32b", "llama3.2-1b", "llama3.2-11b"):
        jobs.append({"name": f"{comp}-z2", "decoder": MAIN, "compressor": comp,
                     "deepspeed": {"zero_stage": 2, "offload_optimizer": False}})
        jobs.append({"name": f"{comp}-z3", "decoder": MAIN, "compressor": comp,
                     "deepspeed": {"zero_stage": 3, "offload_optimizer": True}})
    # Qwen3 as the frozen decoder (Table 3's ablation), partitioned under ZeRO-3 with the compressor
    jobs.append({"name": "ablation-z3", "decoder": "qwen3-4b", "compressor": "qwen3-0.6b",
                 "deepspeed": {"zero_stage": 3, "offload_optimizer": True}})
    helper = Path(__file__).with_name("miniature_env.py")
    res = subprocess.run([sys.executable, str(helper), str(mini.root), str(tmp_path), json.dumps(jobs)],
                         capture_output=True, text=True, env=subprocess_env(), timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    got = {r["name"]: r for r in (json.loads(x[7:]) for x in res.stdout.splitlines() if x.startswith("RESULT "))}
    assert set(got) == {j["name"] for j in jobs}
    for comp in ("qwen3-0.6b", "qwen3-32b", "llama3.2-1b", "llama3.2-11b"):
        z2, z3 = got[f"{comp}-z2"], got[f"{comp}-z3"]
        assert (z2["stage"], z3["stage"]) == (2, 3) and z2["engine"] == z3["engine"] == "deepspeed"
        assert all(g > 0 for g in z2["grad_norms"] + z3["grad_norms"])
        assert z3["losses"] == pytest.approx(z2["losses"], abs=1e-4), comp
        assert (tmp_path / f"{comp}-z3" / "final" / "head.pt").exists()
    assert got["ablation-z3"]["stage"] == 3 and all(g > 0 for g in got["ablation-z3"]["grad_norms"])
    # ZeRO-3 runs built their models partitioned: no rank materialised the full compressor or decoder
    assert out.count("partitioned while loading") == 5


@pytest.mark.slow
def test_mllama_lora_zero3_on_two_ranks(mini, tmp_path):
    """Llama-3.2-Vision LoRA at ZeRO-3 + optimizer offload on 2 CPU ranks through the DeepSpeed launcher: each rank
    loads half of every weight (zero.Init), trains, and the final LoRA adapter and head are gathered and written."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    jobs = [{"name": "mllama-z3x2", "decoder": MAIN, "compressor": "llama3.2-11b", "ranks": 2,
             "deepspeed": {"zero_stage": 3, "offload_optimizer": True}}]
    helper = Path(__file__).with_name("miniature_env.py")
    res = subprocess.run([sys.executable, str(helper), str(mini.root), str(tmp_path), json.dumps(jobs)],
                         capture_output=True, text=True, env=subprocess_env(CTXCOMP_MASTER_PORT=port), timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    (r,) = [json.loads(x[7:]) for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    assert r["world_size"] == 2 and r["stage"] == 3 and len(r["losses"]) == 2
    import re

    shares = [(int(a), int(b)) for a, b in re.findall(r"partitioned while loading: (\d+) of (\d+) elements", out)]
    assert len(shares) == 2 and shares[0][1] == shares[1][1]  # each rank holds about half of every weight
    assert all(a <= b / 2 + 10_000 for a, b in shares) and sum(a for a, _ in shares) >= shares[0][1]
    final = tmp_path / "mllama-z3x2" / "final"
    assert (final / "compressor_lora" / "adapter_model.safetensors").exists() and (final / "head.pt").exists()


# ------------------------------------------------------------------------------------------------- evaluation
def test_every_task_and_probe_on_every_class(trained, mini):
    from ctxcomp.evaluate import tasks
    from ctxcomp.evaluate.probes import probe_batch
    from ctxcomp.io import read_jsonl
    from ctxcomp.model.collate import Collator
    from ctxcomp.model.load import load_trained

    recs = read_jsonl(mini.probe)[:3]
    ko = [{"id": f"k{i}", "context": r["text"], "question": "What is it?", "candidates": ["a cat", "a dog"],
           "correct_index": i % 2} for i, r in enumerate(recs)]
    sd = [{"context_id": "c0", "context": recs[0]["text"], "status": "ok", "questions": [
        {"qid": "c0-q0", "dimension": "main_topic", "question": "What is it about?", "answer": "x",
         "answerable": True}]}]
    for (_dec, _comp), r in trained.items():
        model, comp_tok, dec_tok, meta = load_trained(r["run"] / "final", torch.device("cpu"), torch.float32,
                                                      gpus=r["settings"]["compressor"]["gpus"])
        seg = meta["settings"]["segment"]
        collate = Collator(comp_tok, dec_tok, seg["segment_tokens"], seg["continuation_tokens"])
        assert model.decoder.get_output_embeddings().weight.shape[0] in (128_256, 151_936)
        summary, rows = tasks.reconstruction(model, collate, recs, 2, 5)
        assert summary["n"] == 3 and all(x["new_tokens"] <= 5 for x in rows)
        summary, rows = tasks.knowledge_overwriting(model, collate, ko, 4, 2)
        assert summary["n"] == 3 and all(len(x["loglik_sum"]) == 2 for x in rows)
        summary, rows = tasks.semantic_drift(model, collate, sd, 4, 2, 3)
        assert len(rows) == 1
        batch = collate(recs)
        res = probe_batch(model, batch, vocab_chunk=32768)
        assert res["erank"] > 1 and len(res["entropy"]) == 3
        vocab = model.decoder.get_output_embeddings().weight.shape[0]
        assert all(0 < e < torch.log(torch.tensor(float(vocab))) for e in res["entropy"])


def test_generation_stops_on_every_eos_of_the_instruct_decoder(trained):
    """Llama-3-Instruct ends with <|eot_id|> or <|end_of_text|>: the reconstruction target ends with the first (the
    tokenizer's EOS), and greedy decoding stops on either, given only the tokenizer's."""
    from ctxcomp.evaluate.decoding import greedy_generate

    r = trained[(MAIN, "qwen3-0.6b")]
    model, collate = r["model"], r["collate"]
    model.eval()
    assert set(model.decoder_eos_ids) == {128001, 128009}
    batch = collate([{"text": "Some text to compress here.", "continuation": "x"}])
    n = int(batch["re_mask"][0].sum())
    assert batch["re_ids"][0, n - 1] == 128009 == collate.dec_tok.eos_token_id
    z = model.compress(batch["comp_ids"], batch["comp_mask"])
    head = model.decoder.get_output_embeddings()
    plain = head.forward
    free = greedy_generate(model, [z[0]], [[]], 4, None, "reconstruct")[0]
    assert len(free) == 4 and not set(free) & {128001, 128009}
    for eos in (128001, 128009):
        calls = []

        def forced(h, eos=eos, calls=calls):  # from the second decoding step on, `eos` wins the argmax
            out = plain(h)
            calls.append(1)
            if len(calls) > 1:
                out = out.clone()
                out[..., eos] = out.max() + 100.0
            return out

        head.forward = forced
        try:
            got = greedy_generate(model, [z[0]], [[]], 4, collate.dec_tok.eos_token_id, "reconstruct")[0]
        finally:
            del head.forward
        assert got == free[:1], (eos, got)


@pytest.mark.parametrize("compressor,kind,gpus,too_few", [("qwen3-32b", "qwen3", 2, 1),
                                                           ("llama3.2-90b", "llama3.2-vision", 4, 2)])
def test_eval_device_map_spreads_both_models_over_the_gpus(tmp_path, compressor, kind, gpus, too_few):
    """32B and 90B evaluation (config.yaml: eval_resources.gpu 2 and 4): the published configs' shapes (meta-device
    skeletons, no weights) planned together with the 8B decoder over that many 80 GB GPUs; whole layers only, each
    GPU within its budget and its share of both models (plus one block); too few GPUs do not fit and says which
    setting to raise."""
    from accelerate.utils import compute_module_sizes

    from ctxcomp.model.load import EVAL_HEADROOM, eval_device_maps, skeleton

    comp, dec = tmp_path / "comp", tmp_path / "dec"
    M.model_config(kind, **M.REAL_DIMS[compressor]).save_pretrained(comp)
    M.model_config("llama3-instruct", **M.REAL_DIMS[MAIN]).save_pretrained(dec)
    gpu = 80 * 10**9
    cmap, dmap = eval_device_maps(str(comp), str(dec), torch.bfloat16, dict.fromkeys(range(gpus), gpu))
    assert set(cmap.values()) | set(dmap.values()) == set(range(gpus))
    used = dict.fromkeys(range(gpus), 0)
    total = block = 0
    for src, dm in ((comp, cmap), (dec, dmap)):
        sk = skeleton(str(src))
        sizes = compute_module_sizes(sk, dtype=torch.bfloat16)
        placed = set(dm)
        assert sum(sizes[k] for k in placed) == sizes[""]  # every weight placed exactly once
        assert all(k.count(".") <= 2 for k in placed if ".layers." in f".{k}")  # no layer split across GPUs
        n_layers = sk.config.get_text_config().num_hidden_layers
        for i in range(n_layers):  # each layer inside one placed module
            layer = f"model.layers.{i}"
            assert sum(1 for k in placed if k == "" or layer == k or layer.startswith(k + ".")) == 1, layer
        for k, d in dm.items():
            used[d] += sizes[k]
        total += sizes[""]
        block = max(block, sizes["model.embed_tokens"], sizes.get("lm_head", 0),
                    *(sizes[f"model.layers.{i}"] for i in range(n_layers)))
    assert all(u <= gpu * (1 - EVAL_HEADROOM) for u in used.values()), used
    # both models together are spread evenly: no GPU holds more than its share and one unsplittable block
    assert all(u <= total / gpus + block for u in used.values()), (used, total / gpus, block)
    with pytest.raises(MemoryError, match="eval_resources.gpu"):
        eval_device_maps(str(comp), str(dec), torch.bfloat16, dict.fromkeys(range(too_few), gpu))


def test_sharded_load_follows_the_device_map(mini):
    """A planned device map (fake two-GPU budgets, devices renamed to "cpu" here) loads through from_pretrained's
    accelerate dispatch and computes what the plain load computes; without CUDA the plan falls back to one device."""
    from ctxcomp.model.compressor import backbone
    from ctxcomp.model.load import eval_device_maps, eval_placement, load_causal_lm

    comp, dec = str(mini.models["qwen3"]), str(mini.models["llama3-instruct"])
    assert eval_placement(comp, dec, torch.float32, torch.device("cpu"), gpus=2) == (None, None)
    cmap, dmap = eval_device_maps(comp, dec, torch.float32, {0: "60MB", 1: "60MB"})
    assert set(cmap.values()) | set(dmap.values()) == {0, 1}
    ids = torch.tensor([[128000, 5, 6, 7, 8]])
    plain = load_causal_lm(dec, torch.float32)
    sharded = load_causal_lm(dec, torch.float32, device_map=dict.fromkeys(dmap, "cpu"))
    with torch.no_grad():
        torch.testing.assert_close(sharded(input_ids=ids).logits, plain(input_ids=ids).logits)
        a = backbone(load_causal_lm(comp, torch.float32, device_map=dict.fromkeys(cmap, "cpu")))
        b = backbone(load_causal_lm(comp, torch.float32))
        torch.testing.assert_close(a(input_ids=ids[:, 1:]).last_hidden_state, b(input_ids=ids[:, 1:]).last_hidden_state)


def test_weight_placement_policy():
    """Frozen weights bf16 on GPU, trainable ones float32 only where no optimizer keeps a master copy; ZeRO-3
    construction only for DeepSpeed stage-3 cells."""
    from ctxcomp.model.load import compressor_dtype, zero3_init

    gpu, cpu, bf16, f32 = torch.device("cuda", 0), torch.device("cpu"), torch.bfloat16, torch.float32
    assert compressor_dtype("lora", gpu, bf16, "torch") == bf16  # frozen base
    assert compressor_dtype("lora", gpu, bf16, "deepspeed") == bf16
    assert compressor_dtype("full", gpu, bf16, "deepspeed") == bf16  # DeepSpeed's bf16 optimizer: fp32 master
    assert compressor_dtype("full", gpu, bf16, "torch") == f32  # AdamW steps on these weights
    assert compressor_dtype("full", cpu, f32, "torch") == f32
    from ctxcomp.config import Cell, load_config
    from ctxcomp.settings import CellTrainSettings

    cfg = load_config(ROOT / "config.yaml")
    s = CellTrainSettings.for_cell(cfg, Cell(cfg["decoder"], "qwen3-0.6b", 16))
    assert s.compressor.deepspeed.zero_stage == 2
    with zero3_init(s, cpu, "deepspeed") as z:
        assert z is None
    s = s.replace(compressor=s.compressor.replace(deepspeed=s.compressor.deepspeed.replace(zero_stage=3)))
    with zero3_init(s, cpu, "torch") as z:
        assert z is None


def test_tokenizer_eos_follows_the_generation_config(mini, tmp_path):
    """A checkpoint whose tokenizer names an EOS its generation config does not list (here a Llama-3 tokenizer with
    <|end_of_text|> beside a generation config listing only <|eot_id|>): the target EOS becomes the generation
    config's, so training teaches the token that generation stops at."""
    import shutil

    from transformers import GenerationConfig

    from ctxcomp.model.load import load_tokenizer

    src = tmp_path / "ckpt"
    shutil.copytree(mini.models["llama3.2"], src)  # tokenizer EOS <|end_of_text|> (128001)
    GenerationConfig(bos_token_id=128000, eos_token_id=[128009]).save_pretrained(src)
    tok = load_tokenizer(str(src))
    assert tok.eos_token == "<|eot_id|>" and tok.eos_token_id == 128009 and tok.pad_token_id == 128009
    assert load_tokenizer(str(mini.models["llama3-instruct"])).eos_token_id == 128009  # listed: kept
