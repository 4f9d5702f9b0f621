"""Typed settings (ctxcomp.settings): strict building, defaults only from the schema, and params whose content and
hashes are those the pipeline had before the typed settings existed.

tests/fixtures/settings_hashes.json holds the sha256 of every rule params dict of config.yaml and of the tiny preset
as computed by the code before this module existed: a changed hash would re-run every job and orphan every checkpoint
(their run hash contains these settings). Regenerate it (`python tests/test_settings.py --write`) only with a change
that is meant to re-run the pipeline.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import typing
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from ctxcomp import config as C  # noqa: E402
from ctxcomp import settings as S  # noqa: E402
from ctxcomp.questions.settings import Prices, QuestionSettings  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "settings_hashes.json"
CONFIGS = {"paper": [ROOT / "config.yaml"], "tiny": [ROOT / "config.yaml", ROOT / "workflow/presets/tiny.yaml"]}
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def sha(obj) -> str:
    """Written out here, not ctxcomp.config.stable_hash: the hash the checkpoints carry must not move with it."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def cells(cfg: dict) -> list[C.Cell]:
    return list(dict.fromkeys(C.all_cells(cfg) + C.lora_control_cells(cfg)))


def params_hashes(cfg: dict) -> dict:
    return {"results_hash": C.results_hash(cfg), "question_params": sha(C.question_params(cfg)),
            "data_params": {k: sha(C.data_params(cfg, k)) for k in cfg["data"]},
            "train": {c.key: sha(C.train_settings(cfg, c)) for c in cells(cfg)},
            "eval": {c.key: sha(C.eval_settings(cfg, c)) for c in cells(cfg)},
            "runtime": {c.key: sha(C.train_runtime(cfg, c)) for c in cells(cfg)},
            "dynamics": sha(C.train_settings(cfg, C.dynamics_cell(cfg), dynamics=True))}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def named_cfg(request) -> tuple[str, dict]:
    return request.param, C.load_config(*CONFIGS[request.param])


def test_params_and_their_hashes_are_unchanged(named_cfg):
    name, cfg = named_cfg
    assert params_hashes(cfg) == json.loads(FIXTURE.read_text())[name]


def test_typed_settings_give_back_the_params_they_came_from(named_cfg):
    """A run's hash is computed from the typed object's to_dict(): it must be the hash of the params."""
    name, cfg = named_cfg
    want = json.loads(FIXTURE.read_text())[name]
    for cell in cells(cfg):
        run = S.CellTrainSettings.from_dict({**C.train_settings(cfg, cell), "runtime": C.train_runtime(cfg, cell)})
        back = run.to_dict()
        assert sha({k: v for k, v in back.items() if k != "runtime"}) == want["train"][cell.key]
        assert sha(back["runtime"]) == want["runtime"][cell.key]
        assert sha(S.CellEvalSettings.from_dict(C.eval_settings(cfg, cell)).to_dict()) == want["eval"][cell.key]
    dyn = C.dynamics_cell(cfg)
    run = S.CellTrainSettings.from_dict({**C.train_settings(cfg, dyn, dynamics=True),
                                         "runtime": C.train_runtime(cfg, dyn, dynamics=True)})
    assert run.dynamics and run.train.keep_probe_checkpoints
    assert sha({k: v for k, v in run.to_dict().items() if k != "runtime"}) == want["dynamics"]


def _tiny_run() -> dict:
    cfg = C.load_config(*CONFIGS["tiny"])
    cell = C.Cell(cfg["decoder"], "tiny-qwen-l", 16)
    return {**C.train_settings(cfg, cell), "runtime": C.train_runtime(cfg, cell)}


@pytest.mark.parametrize("mutate, where, what", [
    (lambda d: d["train"].update(learning_rate=1e-4), "train.learning_rate", "unknown key"),
    (lambda d: d["train"].pop("min_lr_ratio"), "train.min_lr_ratio", "missing key"),
    (lambda d: d["train"]["loss_weights"].pop("continue"), "train.loss_weights.continue", "missing key"),
    (lambda d: d["compressor"]["deepspeed"].update(zero_stage=4), "compressor.deepspeed.zero_stage", "not one of"),
    (lambda d: d["compressor"]["deepspeed"].update(zero_stage=True), "compressor.deepspeed.zero_stage", "not one of"),
    (lambda d: d["train"].update(max_steps="10"), "train.max_steps", "expected int"),
    (lambda d: d["train"].update(max_steps=True), "train.max_steps", "expected int"),
    (lambda d: d["train"].update(adam_betas=[0.9]), "train.adam_betas", "expected 2 items"),
    (lambda d: d["train"]["lora"].update(target_modules=["q_proj", 3]), "train.lora.target_modules.1", "expected str"),
    (lambda d: d["segment"].pop("max_segments"), "segment.max_segments", "missing key"),
    (lambda d: d["runtime"].update(stale_checkpoints="keep"), "runtime.stale_checkpoints", "not one of"),
    (lambda d: d["train"].pop("lora"), "train.lora", "fine-tuned with LoRA"),
    (lambda d: d.update(run="table2"), "run", "not one of"),
    (lambda d: d.pop("seed"), "seed", "missing key"),
])
def test_strict_build_names_the_key(mutate, where, what):
    data = _tiny_run()
    mutate(data)
    with pytest.raises(C.ConfigError) as err:
        S.CellTrainSettings.from_dict(data)
    assert f"config error at '{where}'" in str(err.value) and what in str(err.value)


def test_optional_keys_are_absent_not_defaulted():
    data = _tiny_run()
    data["train"]["lora"].pop("target_modules")  # optional in the schema: peft picks the modules
    run = S.CellTrainSettings.from_dict(data)
    assert run.train.lora.target_modules is None and "target_modules" not in run.to_dict()["train"]["lora"]
    data["compressor"]["finetune"] = "full"
    data["train"].pop("lora")
    assert S.CellTrainSettings.from_dict(data).train.lora is None


def test_runtime_keys_of_direct_callers_and_schema_defaults():
    """Storage keys: the job's `runtime` over keys a direct caller left in `train` over the schema's defaults."""
    data = _tiny_run()
    data.pop("runtime")
    data["train"].update(checkpoint_every=3, keep_checkpoints=5)
    run = S.CellTrainSettings.from_dict(data)
    props = SCHEMA["properties"]["train"]["properties"]
    assert (run.runtime.checkpoint_every, run.runtime.keep_checkpoints) == (3, 5)
    assert run.runtime.stale_checkpoints == props["stale_checkpoints"]["default"] == "move"
    assert run.runtime.tensorboard is props["tensorboard"]["default"] is True
    assert "checkpoint_every" not in run.to_dict()["train"]
    data["runtime"] = {"checkpoint_every": 7}
    assert S.CellTrainSettings.from_dict(data).runtime.checkpoint_every == 7
    data["train"].pop("checkpoint_every")
    data["train"].pop("keep_checkpoints")
    data.pop("runtime")
    assert S.CellTrainSettings.from_dict(data).runtime is None  # the params alone (memory plan, DeepSpeed config)
    data["runtime"] = {"keep_checkpoints": 3}
    with pytest.raises(C.ConfigError, match="'runtime.checkpoint_every': missing key"):
        S.CellTrainSettings.from_dict(data)  # required in the schema, so there is no default to fall back on


def test_for_cell_is_the_params_and_the_runtime_of_the_config():
    cfg = C.load_config(*CONFIGS["tiny"])
    cell = C.dynamics_cell(cfg)
    run = S.CellTrainSettings.for_cell(cfg, cell, dynamics=True)
    assert run.to_dict() == {**C.train_settings(cfg, cell, dynamics=True),
                             "runtime": C.train_runtime(cfg, cell, dynamics=True)}
    assert S.CellEvalSettings.for_cell(cfg, cell).to_dict() == C.eval_settings(cfg, cell)


def test_of_accepts_params_or_built_settings_only():
    run = S.CellTrainSettings.of(_tiny_run())
    assert S.CellTrainSettings.of(run) is run
    with pytest.raises(C.ConfigError, match="'train'"):
        S.CellTrainSettings.of({"cell": {}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.seed = 1  # type: ignore[misc]


# ------------------------------------------------------------------------ the dataclasses mirror the schema
def _props(schema: dict) -> dict:
    ref = schema.get("$ref")
    base = _props(SCHEMA["$defs"][ref.split("/")[-1]]) if ref else {}
    return {**base, **schema.get("properties", {})}


def _defaulted(schema: dict) -> set[str]:
    return {k for k, v in _props(schema).items() if "default" in v}


def _keys(cls) -> dict[str, typing.Any]:
    hints = typing.get_type_hints(cls)
    return {f.metadata.get("key", f.name): hints[f.name] for f in dataclasses.fields(cls)}


def _optional(tp) -> bool:
    return type(None) in typing.get_args(tp)


TRAIN = SCHEMA["properties"]["train"]
MIRRORS = [  # (dataclass, its schema, keys the dataclass adds, keys of the schema it leaves out)
    (S.SegmentSettings, SCHEMA["properties"]["segment"], set(), set()),
    (S.EvaluateSettings, SCHEMA["properties"]["evaluate"], set(), set()),
    (S.RagSettings, SCHEMA["properties"]["evaluate"]["properties"]["rag"], set(), set()),
    (S.TrainSettings, TRAIN, {"keep_probe_checkpoints"}, {"cell_overrides", *C.RUNTIME_TRAIN_KEYS}),
    (S.LossWeights, SCHEMA["$defs"]["train_keys"]["properties"]["loss_weights"], set(), set()),
    (S.LoraSettings, SCHEMA["$defs"]["train_keys"]["properties"]["lora"], set(), set()),
    (S.DeepSpeedSpec, SCHEMA["$defs"]["model"]["properties"]["deepspeed"], set(), set()),
    (QuestionSettings, SCHEMA["properties"]["questions"], set(), {"contexts"}),
    (Prices, SCHEMA["properties"]["questions"]["properties"]["price_per_mtok"], set(), set()),
]


@pytest.mark.parametrize("cls, schema, added, left", MIRRORS, ids=[m[0].__name__ for m in MIRRORS])
def test_dataclasses_mirror_the_schema_without_defaults_of_their_own(cls, schema, added, left):
    keys = _keys(cls)
    assert set(keys) == set(_props(schema)) - left | added
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(cls)), "defaults belong in the schema"
    # optional (None when absent) exactly where the schema neither requires a key nor gives it a default
    optional = set(_props(schema)) - set(schema.get("required", [])) - _defaulted(schema) - left
    assert {k for k, tp in keys.items() if _optional(tp)} == optional


def test_runtime_settings_are_the_runtime_keys():
    assert set(_keys(S.RuntimeSettings)) == set(C.RUNTIME_TRAIN_KEYS)


def test_from_partial_fills_the_schema_defaults():
    ev = S.EvaluateSettings.from_partial({"batch_size": 2, "recon_max_new_tokens": 3, "answer_max_new_tokens": 4,
                                          "probe_batch_size": 5})
    props = SCHEMA["properties"]["evaluate"]["properties"]
    assert list(ev.truncation_energy) == props["truncation_energy"]["default"] == [0.5, 0.8, 0.9, 0.95, 0.99]
    assert ev.bootstrap_resamples == props["bootstrap_resamples"]["default"] == 1000
    assert ev.rag == S.RagSettings(enabled=False, top_k=5)  # the section's default {} and then its keys' defaults
    assert S.SegmentSettings.from_partial({"segment_tokens": 8, "continuation_tokens": 4}).max_segments == 4
    with pytest.raises(C.ConfigError, match="config error at 'evaluate': 'batch_size' is a required property"):
        S.EvaluateSettings.from_partial({"recon_max_new_tokens": 3, "answer_max_new_tokens": 4,
                                         "probe_batch_size": 5})
    with pytest.raises(C.ConfigError, match="config error at 'evaluate.batch_size': 0 is less than"):
        S.EvaluateSettings.from_partial({"batch_size": 0, "recon_max_new_tokens": 3, "answer_max_new_tokens": 4,
                                         "probe_batch_size": 5})
    with pytest.raises(TypeError, match="validated config"):
        S.TrainSettings.from_partial({})


def test_config_defaults_fill_optional_train_keys():
    """A config that leaves out the optional train keys gets the schema's values, which are the ones config.yaml
    writes out (so the paper's settings are the schema's defaults where it has them)."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    written = {k: cfg["train"].pop(k) for k in ("min_lr_ratio", "weight_decay", "adam_betas", "engine")}
    cfg["train"]["cell_overrides"] = {"qwen3-4b/16": {"lr": 5.0e-5}}
    got = C.validate(cfg)["train"]
    assert {k: got[k] for k in written} == {"min_lr_ratio": 0.1, "weight_decay": 0.0, "adam_betas": [0.9, 0.95],
                                            "engine": "auto"} == written
    assert got["cell_overrides"] == {"qwen3-4b/16": {"lr": 5.0e-5}}  # defaults fill the section, not an override


def _write_fixture() -> None:
    FIXTURE.write_text(json.dumps({n: params_hashes(C.load_config(*f)) for n, f in CONFIGS.items()}, indent=1,
                                  sort_keys=True) + "\n")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    _write_fixture()
