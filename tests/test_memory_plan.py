"""The memory and disk plan against what real models allocate, save for backward and write.

References: parameter counts of models built from transformers configs (and the published sizes of the real
checkpoints), tensors held by a real TorchEngine after a real AdamW step through ctxcomp.model.load, bytes
recorded by torch.autograd.graph.saved_tensors_hooks during a real ContextCompressor forward, and the files a real
(tiny) training run writes. The GPU peak against torch.cuda.max_memory_allocated runs in ctxcomp.bench.acceptance.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ctxcomp import disk_plan, plan
from ctxcomp import memory_plan as mp
from ctxcomp import model_dims as md
from ctxcomp.config import Cell, load_config
from ctxcomp.settings import CellTrainSettings, EvaluateSettings
from helpers_tiny import ROOT, tiny_env

CONFIG = load_config(ROOT / "config.yaml")  # validated: the plan reads a config with its defaults filled
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_env(tmp_path_factory.mktemp("memplan"))


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(ROOT / "config.yaml", ROOT / "workflow" / "presets" / "tiny.yaml")


# ------------------------------------------------------------------------------------------ dims and counts
@pytest.mark.parametrize("name", sorted(CONFIG["models"]))
def test_every_configured_model_has_dims_matching_its_published_size(name):
    spec = CONFIG["models"][name]
    d = md.HUB_DIMS[spec["hf_id"]]
    billions = md.total_params(d) / 1e9
    if d.family == "mllama":  # params_b counts the vision encoder (about 0.9 B), which the text stack leaves out
        assert 0.5 < spec["params_b"] - billions < 1.1, billions
    else:
        assert billions == pytest.approx(spec["params_b"], rel=0.035)


def test_qwen3_8b_parameter_count_by_hand():
    # embeddings and untied head 2 x 151936 x 4096; 36 layers of q 4096x4096, k/v 4096x1024, o 4096x4096,
    # MLP 3 x 4096 x 12288, two norms of 4096 and q/k norms of 128; final norm 4096
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 12288 + 2 * 4096 + 2 * 128
    assert md.total_params(md.HUB_DIMS["Qwen/Qwen3-8B"]) == 2 * 151936 * 4096 + 36 * layer + 4096 == 8_190_735_360


def _small_configs():
    from transformers import LlamaConfig, MllamaConfig, Qwen3Config

    kw = dict(vocab_size=97, hidden_size=32, intermediate_size=56, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_global_layers=1, attention_heads=2,
                  image_size=28, patch_size=14, vision_output_dim=32, intermediate_layers_indices=[0])
    return {"qwen3-tied": Qwen3Config(**kw, head_dim=12, tie_word_embeddings=True),
            "qwen3-untied": Qwen3Config(**kw, head_dim=8, tie_word_embeddings=False),
            "llama": LlamaConfig(**kw, tie_word_embeddings=False),
            "mllama": MllamaConfig(text_config={**kw, "cross_attention_layers": [1]}, vision_config=vision)}


@pytest.mark.parametrize("name", ["qwen3-tied", "qwen3-untied", "llama", "mllama"])
def test_parameter_and_lora_counts_are_exact_for_every_architecture_class(name):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = _small_configs()[name]
    model = AutoModelForCausalLM.from_config(cfg)
    d = md.dims_from_config(cfg)
    assert md.dims_from_config(model.config) == d  # the text config read from the loaded model agrees
    params = list(model.parameters())
    assert md.total_params(d) == sum(p.numel() for p in params)
    assert md.param_tensors(d) == len(params)
    groups = mp.model_tensors(d, "m", trainable=True, head_used=False)
    assert sum(g.total for g in groups) == md.total_params(d)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    lora = [p for n, p in peft.named_parameters() if "lora_" in n]
    assert md.lora_params(d, 4, TARGETS) == (sum(p.numel() for p in lora), len(lora))


def test_hub_table_is_checked_against_a_cached_config(tmp_path, monkeypatch, tiny_cfg):
    import huggingface_hub.constants as hc

    snap = tmp_path / "models--Qwen--Qwen3-0.6B" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (tmp_path / "models--Qwen--Qwen3-0.6B" / "refs").mkdir()
    (tmp_path / "models--Qwen--Qwen3-0.6B" / "refs" / "main").write_text("abc")
    real = dict(model_type="qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
                tie_word_embeddings=True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    (snap / "config.json").write_text(json.dumps(real))
    assert md.dims_of(CONFIG, "qwen3-0.6b") == md.HUB_DIMS["Qwen/Qwen3-0.6B"]
    (snap / "config.json").write_text(json.dumps({**real, "intermediate_size": 4096}))
    with pytest.raises(md.DimsMismatch, match="intermediate: table 3072, config 4096"):
        md.dims_of(CONFIG, "qwen3-0.6b")


def test_unknown_hub_model_names_the_config_key():
    cfg = {"models": {"x": {"hf_id": "org/unknown-7b"}}, "run_name": "t"}
    with pytest.raises(KeyError, match=r"models\.x\.hf_id: 'org/unknown-7b'"):
        md.dims_of(cfg, "x")


# --------------------------------------------------------------------- weights, gradients, optimizer: exact
def _untied_copy(src: Path, dst: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(src)
    cfg.tie_word_embeddings = False
    AutoModelForCausalLM.from_config(cfg).save_pretrained(dst)
    for f in src.iterdir():
        if "token" in f.name or f.name.endswith(".txt"):
            shutil.copy(f, dst / f.name)
    return dst


@pytest.mark.parametrize("variant", ["full", "full-untied", "lora"])
def test_weight_gradient_and_optimizer_bytes_are_exact(tiny, tiny_cfg, tmp_path, variant):
    from ctxcomp.model.collate import Collator, to_device
    from ctxcomp.model.load import build_for_training
    from ctxcomp.train.engine import TorchEngine

    s = tiny.settings(finetune="lora" if variant == "lora" else "full", micro_batch_size=4, global_batch_size=4)
    if variant == "full-untied":  # the compressor's LM head: a parameter that never gets a gradient
        s["compressor"]["source"] = str(_untied_copy(tiny.compressor, tmp_path / "untied"))
    torch.manual_seed(0)
    model, ct, dt = build_for_training(CellTrainSettings.of(s), torch.device("cpu"), torch.float32)
    engine = TorchEngine(model, CellTrainSettings.of(s))
    seg = s["segment"]
    batch = to_device(Collator(ct, dt, seg["segment_tokens"], seg["continuation_tokens"])(tiny.records(4)), "cpu")
    engine.backward(engine.forward(batch, s["train"]["loss_weights"])["loss"])
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    engine.step(1e-3, 1.0)
    state = sum(t.numel() * t.element_size() for st in engine.optimizer.state.values() for t in st.values()
                if torch.is_tensor(t))
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)

    est = mp.estimate_training(mp.train_shape(tiny_cfg, s, device="cpu"))
    assert est.engine == "torch"
    assert est.parts["weights_trainable"] == trainable
    assert est.parts["weights_frozen"] == frozen
    assert est.parts["grads"] == grads
    assert est.parts["optimizer"] == state
    if variant == "full-untied":
        assert grads < trainable  # the unused head is a weight, but neither gradient nor AdamW state


# -------------------------------------------------------------------------------------- saved activations
def _saved_bytes(fn, params) -> int:
    """Bytes of distinct storages autograd keeps for backward during fn(), parameters excluded."""
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


CASES = [  # finetune, LoRA dropout, gradient checkpointing, precision, a short (padded) record
    ("full", 0.0, False, "fp32", False), ("full", 0.0, True, "fp32", True), ("lora", 0.05, False, "fp32", True),
    ("lora", 0.0, True, "fp32", False), ("full", 0.0, False, "bf16", True), ("lora", 0.05, True, "bf16", False),
    ("full", 0.0, False, "autocast", False),
]


@pytest.mark.parametrize("finetune,dropout,ckpt,precision,padded", CASES)
def test_saved_activations_match_saved_tensors_hooks(tiny, tiny_cfg, finetune, dropout, ckpt, precision, padded):
    from ctxcomp.model.collate import Collator
    from ctxcomp.model.load import build_for_training

    s = tiny.settings(finetune=finetune, gradient_checkpointing=ckpt, micro_batch_size=4, global_batch_size=4)
    s["train"]["lora"] = {**s["train"]["lora"], "dropout": dropout}
    torch.manual_seed(0)
    model, ct, dt = build_for_training(CellTrainSettings.of(s), torch.device("cpu"), torch.float32)
    # CPU stands in for the GPU precisions; its dropout keeps the mask in the input dtype (CUDA: bool)
    prec = {"fp32": (mp.FP32, mp.FP32), "bf16": (replace(mp.BF16, mask=2), replace(mp.BF16, mask=2)),
            "autocast": (mp.AUTOCAST, mp.BF16)}[precision]
    if precision == "bf16":
        model.to(torch.bfloat16)
    elif precision == "autocast":
        model.decoder.to(torch.bfloat16)
    model.train()
    recs = tiny.records(4)
    if padded:  # a window shorter than L compressor tokens (text and continuation)
        recs[1] = {**recs[1], "text": recs[1]["text"][:60], "continuation": ""}
    seg = s["segment"]
    batch = {k: v for k, v in Collator(ct, dt, seg["segment_tokens"], seg["continuation_tokens"])(recs).items()
             if isinstance(v, torch.Tensor)}
    assert bool((batch["comp_mask"] == 0).any()) == padded

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "autocast"):
            model(batch)

    measured = _saved_bytes(forward, list(model.parameters()))
    shape = replace(mp.train_shape(tiny_cfg, s, device="cpu"), comp_tokens=batch["comp_ids"].shape[1],
                    target_tokens=max(batch["re_ids"].shape[1], batch["nt_ids"].shape[1]), masked=padded,
                    precision=prec)
    act = mp.activation_parts(shape)
    estimate = act["act_compressor"] + act["act_head"] + act["act_decoder"] + act["act_logits"]
    if precision == "autocast":  # autocast's bf16 weight copies are saved for backward too
        estimate += mp.estimate_training(replace(shape, device="cuda")).parts["autocast_copies"]
    assert estimate == pytest.approx(measured, rel=mp.ACTIVATION_MARGIN), (estimate, measured)


def test_checkpointing_shrinks_compressor_and_decoder(tiny, tiny_cfg):
    s = tiny.settings(micro_batch_size=4, global_batch_size=4)
    shape = mp.train_shape(tiny_cfg, s, device="cpu")
    on, off = mp.activation_parts(shape, checkpointing=True), mp.activation_parts(shape, checkpointing=False)
    assert on["act_compressor"] < off["act_compressor"] / 3
    # the frozen decoder's layers are recomputed too (their training flag is set, ContextCompressor.train); the
    # saved-activation test above measures both settings
    assert on["act_decoder"] < off["act_decoder"] / 3


def test_frozen_decoder_activations_of_the_main_decoder_by_hand():
    # Llama-3-8B, bf16, padded rows through SDPA, per token and layer: two RMSNorm fp32 inputs (4 x 4096) and
    # rstd (4), q and repeated k/v and the output (4 x 2 x 4096), log-sum-exp (4 x 32 heads), the mask row
    # (2 x 277), SwiGLU gate/silu/up (3 x 2 x 14336)
    d = md.HUB_DIMS["meta-llama/Meta-Llama-3-8B-Instruct"]
    per = mp.layer_saved_per_token(d, 277, mp.BF16, "frozen")
    assert per == 2 * (4 * 4096 + 4) + 4 * 2 * 4096 + 4 * 32 + 2 * 277 + 3 * 2 * 14336 == 152_242
    # checkpointed: each of the 32 layers keeps its bf16 input, the final RMSNorm its fp32 input and rstd
    tokens = 2 * 8 * 277
    assert mp.model_saved(d, 2 * 8, 277, mp.BF16, "frozen", checkpointing=True) == tokens * (
        32 * 2 * 4096 + 4 * 4096 + 4)


# ------------------------------------------------------------------------------------- ZeRO and evaluation
def _shape(cfg, compressor, ratio=16, **over):
    s = CellTrainSettings.for_cell(cfg, Cell(cfg["decoder"], compressor, ratio))
    return replace(mp.train_shape(cfg, s, device="cuda"), **over)


def test_zero_stages_partition_what_they_should():
    s3 = _shape(CONFIG, "qwen3-8b")
    assert (s3.engine, s3.zero_stage, s3.world) == ("deepspeed", 3, 8)
    # trainable: Qwen3-8B (8,190,735,360) + head at M = 16: memory 16 x 4096, norm 4096, two Linear(4096, 4096)
    # with bias, 4 markers x 4096
    head = 16 * 4096 + 4096 + 2 * (4096 * 4096 + 4096) + 4 * 4096
    T = 8_190_735_360 + head
    est = {st: mp.estimate_training(replace(s3, zero_stage=st)) for st in (1, 2, 3)}
    assert est[3].parts["optimizer"] == 12 * T // 8  # fp32 master + 2 moments, one eighth per rank
    assert est[1].parts["optimizer"] == est[2].parts["optimizer"] == est[3].parts["optimizer"]
    bucket = 200_000_000 * 2 * 2  # ds_config: reduce bucket, bf16, doubled by overlap_comm
    assert est[1].parts["grads"] == 2 * T + bucket and est[2].parts["grads"] == 2 * T // 8 + bucket
    assert est[2].parts["weights_trainable"] == 2 * T
    assert est[3].parts["weights_partition"] < 2 * (T + md.total_params(md.HUB_DIMS[
        "meta-llama/Meta-Llama-3-8B-Instruct"])) / 8 + 1
    off = mp.estimate_training(replace(s3, offload_optimizer=True))
    assert off.parts["optimizer"] == 0 and off.host_bytes == (12 * T // 8 + 4 * T // 8) * 8


def test_evaluation_shards_the_cell_over_its_evaluation_gpus():
    # Llama-3.2-90B's text stack + the Llama-3-8B decoder + the head, bf16, over config.yaml's 4 evaluation GPUs:
    # a quarter each plus at most one unsplittable block, the 128,264 x 8192 embedding (ctxcomp.model.load)
    cell = Cell(CONFIG["decoder"], "llama3.2-90b", 16)
    comp, dec = md.HUB_DIMS["meta-llama/Llama-3.2-90B-Vision"], md.HUB_DIMS["meta-llama/Meta-Llama-3-8B-Instruct"]
    # the head by hand: 16 memory embeddings, RMSNorm, Linear 8192->4096, Linear 4096->4096, 4 marker embeddings
    head = 16 * 8192 + 8192 + (8192 * 4096 + 4096) + (4096 * 4096 + 4096) + 4 * 4096
    whole = 2 * (md.total_params(comp) + md.total_params(dec) + head)
    assert CONFIG["models"]["llama3.2-90b"]["eval_resources"]["gpu"] == 4
    big = mp.eval_estimate(CONFIG, cell)
    assert big.gpus == 4 and big.parts["weights"] == -(-whole // 4) + 2 * 128264 * 8192
    assert big.fits(80)
    seg, ev = CONFIG["segment"], CONFIG["evaluate"]
    one = mp.estimate_eval(comp, dec, 16, EvaluateSettings.from_dict(ev), 256, seg["max_segments"], 1)
    assert one.parts["weights"] == whole > 180e9 and not one.fits(80)  # a whole cell on one GPU would not
    assert mp.eval_estimate(CONFIG, Cell(CONFIG["decoder"], "qwen3-32b", 16)).fits(80)  # 2 GPUs
    assert mp.eval_estimate(CONFIG, Cell(CONFIG["decoder"], "qwen3-0.6b", 16)).fits(80)  # 1 GPU


# ------------------------------------------------------------------------------------------------- disk
def test_disk_estimate_matches_the_files_of_a_real_run(tiny, tiny_cfg, tmp_path):
    from ctxcomp.train.loop import train_cell

    # keep_final_checkpoints: the finished run keeps its resumable checkpoints, so that they can be measured
    s = tiny.settings(max_steps=6, checkpoint_every=3, keep_checkpoints=2, keep_final_checkpoints=True)
    run = tmp_path / "run"
    train_cell(s, str(tiny.train), str(tiny.probe), str(run), tiny.outputs(run), engine="torch")
    r = CellTrainSettings.of(s)
    est = disk_plan.estimate_disk(mp.train_shape(tiny_cfg, r, device="cpu"), r.train, r.runtime)
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert len(ckpts) == est.keep == 2  # keep_checkpoints
    path = ckpts[-1] / "state.pt"
    state = torch.load(path, map_location="cpu", weights_only=False)
    tensors = [*state["model"].values()] + [t for st in state["optimizer"]["state"].values() for t in st.values()]
    assert est.checkpoint_bytes == sum(t.numel() * t.element_size() for t in tensors)
    # the checkpoint directory adds RNG states, the loss history, the zip framing of each tensor and the manifest
    files = [f for f in ckpts[-1].iterdir() if f.is_file()]
    assert {f.name for f in files} == {"state.pt", "MANIFEST.json", "COMPLETE"}
    assert est.checkpoint_bytes < sum(f.stat().st_size for f in files) < est.checkpoint_bytes + 100_000
    weights = (run / "final" / "compressor" / "model.safetensors").stat().st_size
    head = (run / "final" / "head.pt").stat().st_size
    assert est.weights_bytes == pytest.approx(weights + head, rel=0.03)  # + file headers and pickle framing
    # the run kept its checkpoints (train.keep_final_checkpoints): after = final/ + keep_checkpoints of them
    assert est.after_bytes == est.final_bytes + 2 * est.checkpoint_bytes and est.probe_bytes == 0
    dropped = disk_plan.estimate_disk(mp.train_shape(tiny_cfg, r, device="cpu"), r.train,
                                      r.runtime.replace(keep_final_checkpoints=False))
    assert dropped.after_bytes == est.final_bytes


def test_qwen3_8b_full_fine_tune_checkpoint_is_about_100_gb():
    est = disk_plan.disk_estimate(CONFIG, Cell(CONFIG["decoder"], "qwen3-8b", 16))
    assert 95e9 < est.checkpoint_bytes < 120e9  # 12 bytes per parameter (fp32 master and moments) under ZeRO-3
    assert est.peak_bytes >= 3 * est.checkpoint_bytes and est.after_bytes < 20e9


# ------------------------------------------------------------------------------------------------- the CLI
def test_plan_marks_exactly_the_jobs_that_do_not_fit(capsys):
    assert plan.main(["all", "--forceall", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["resources"]
    assert res["gpu_mem_gb"] == CONFIG["slurm"]["gpu_mem_gb"]
    assert sum(1 for r in res["jobs"] if r["rule"] == "train_compressor") == 27
    assert res["not_fitting"] == []  # config.yaml's GPU counts suffice, evaluation of 32B/90B sharded included
    assert res["disk_total_after_bytes"] == sum(d["after_bytes"] for d in res["disk"])
    # the dynamics run keeps a probe checkpoint (bf16 Qwen3-0.6B + head) every probe_every of its max_steps
    dyn = [d for d in res["disk"] if d["rule"] == "train_dynamics"]
    steps, every = CONFIG["dynamics"]["max_steps"], CONFIG["dynamics"]["probe_every"]
    assert len(dyn) == 1 and dyn[0]["probe_bytes"] == -(-steps // every) * dyn[0]["weights_bytes"] > 30e9
    # Qwen3-32B evaluated on one GPU instead of two: its evaluation jobs (82 GB of weights) do not fit
    one = "models={qwen3-32b: {eval_resources: {gpu: 1}}}"
    assert plan.main(["all", "--forceall", "--json", "--config", one]) == 0
    res = json.loads(capsys.readouterr().out)["resources"]
    expected = {f"evaluate_cell {CONFIG['decoder']}/qwen3-32b/r{r}" for r in CONFIG["ratios"]}
    assert set(res["not_fitting"]) == expected
    assert plan.main(["all", "--forceall", "--json", "--config", one, "--gpu-mem", "400"]) == 0
    assert json.loads(capsys.readouterr().out)["resources"]["not_fitting"] == []
    assert plan.main(["all", "--forceall", "--config", one]) == 0
    text = capsys.readouterr().out
    assert "Memory per GPU" in text and f"{len(expected)} of" in text and "Disk per training job" in text


def test_the_loss_is_planned_in_the_chunks_of_the_model_loss():
    from ctxcomp.model.loss import CHUNK_ELEMENTS

    s = _shape(CONFIG, "qwen3-0.6b")
    assert s.loss_chunk == CHUNK_ELEMENTS // 128256 == 261  # target positions per chunk at Llama-3's vocabulary
    rows = 2 * s.micro_batch * s.dec_target
    est = mp.estimate_training(s)
    # kept: the bf16 gradient w.r.t. the 4096-wide hidden states and the int64 target positions; one chunk's
    # transient: fp32 logits, their fp32 softmax and its bf16 cast
    assert est.parts["act_logits"] == 8 * rows + 2 * rows * 4096
    assert mp.logits_bytes(rows, 128256, 2, s.loss_chunk, 4096)[1] == (4 + 4 + 2) * 261 * 128256
    # against a loss over materialised logits: the fp32 log-softmax of every position would be kept
    full = mp.estimate_training(replace(s, loss_chunk=None))
    kept, transient = mp.logits_bytes(rows, 128256, 2, None)
    assert kept == 4 * rows * 128256 + 16 * rows and transient == 8 * rows * 128256
    assert full.parts["act_logits"] == kept and est.peak_bytes < full.peak_bytes - kept + est.parts["act_logits"]
