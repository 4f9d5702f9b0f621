"""Pipeline configuration: loading, schema validation, cross-reference checks and the experiment matrix.

The YAML schema (workflow/schemas/config.schema.yaml) checks types and unknown keys; `check_references` checks what a
schema cannot (names that must exist in `models`, ratios that must divide the segment length, ...). Both raise
`ConfigError` with the offending key path in the message.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
TINY_PRESET = REPO_ROOT / "workflow" / "presets" / "tiny.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"

# Keys of `train` that a cell override may not change because they define the DAG, not the cell.
_TRAIN_TOP_ONLY = {"cell_overrides"}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or inconsistent; the message names the key."""


@dataclass(frozen=True, order=True)
class Cell:
    """One trained compressor: a (decoder, compressor, ratio) triple."""

    decoder: str
    compressor: str
    ratio: int

    @property
    def path(self) -> str:
        return f"{self.decoder}/{self.compressor}/r{self.ratio}"

    @property
    def override_key(self) -> str:
        return f"{self.compressor}/{self.ratio}"


def deep_merge(base: dict, update: dict) -> dict:
    """Recursive dict update, as Snakemake merges several --configfile files (lists are replaced)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _format_path(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def validate_schema(cfg: dict, set_default: bool = True) -> dict:
    """Validate against the JSON schema, filling defaults; raise ConfigError naming the first bad key."""
    import jsonschema
    from jsonschema import Draft202012Validator, validators

    schema = yaml.safe_load(SCHEMA_PATH.read_text())

    def _set_defaults(validator_class):
        validate_props = validator_class.VALIDATORS["properties"]

        def set_defaults(validator, properties, instance, schema):
            if isinstance(instance, dict):
                for prop, sub in properties.items():
                    if "default" in sub and prop not in instance:
                        instance[prop] = copy.deepcopy(sub["default"])
            yield from validate_props(validator, properties, instance, schema)

        return validators.extend(validator_class, {"properties": set_defaults})

    cls = _set_defaults(Draft202012Validator) if set_default else Draft202012Validator
    errors = sorted(cls(schema).iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        err = errors[0]
        where = _format_path(err.absolute_path)
        msg = err.message
        if err.validator in ("additionalProperties", "unevaluatedProperties"):
            msg = f"unknown key: {msg}"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"config error at '{where}': {msg}{more}")
    del jsonschema
    return cfg


def check_references(cfg: dict) -> None:
    """Checks beyond the schema: names must exist, ratios must divide L, batch sizes must divide."""
    models = cfg["models"]

    def need_model(name: str, where: str) -> None:
        if name not in models:
            raise ConfigError(f"config error at '{where}': model '{name}' is not defined under 'models'")

    for i, name in enumerate(cfg["compressors"]):
        need_model(name, f"compressors.{i}")
    need_model(cfg["decoder"], "decoder")
    L = cfg["segment"]["segment_tokens"]
    for i, r in enumerate(cfg["ratios"]):
        if L % r:
            raise ConfigError(f"config error at 'ratios.{i}': ratio {r} does not divide segment.segment_tokens={L}")
    abl = cfg.get("ablation")
    if abl:
        for key in ("decoders", "compressors"):
            for i, name in enumerate(abl[key]):
                need_model(name, f"ablation.{key}.{i}")
        for i, r in enumerate(abl["ratios"]):
            if L % r:
                raise ConfigError(f"config error at 'ablation.ratios.{i}': ratio {r} does not divide {L}")
    dyn = cfg.get("dynamics")
    if dyn:
        if dyn["compressor"] not in cfg["compressors"]:
            raise ConfigError(f"config error at 'dynamics.compressor': '{dyn['compressor']}' is not in 'compressors'")
        if dyn["ratio"] not in cfg["ratios"]:
            raise ConfigError(f"config error at 'dynamics.ratio': {dyn['ratio']} is not in 'ratios'")
    tr = cfg["train"]
    if tr["global_batch_size"] % tr["micro_batch_size"]:
        raise ConfigError("config error at 'train.global_batch_size': not a multiple of train.micro_batch_size")
    cells = {c.override_key for c in all_cells(cfg)}
    for key in tr.get("cell_overrides", {}):
        if key not in cells:
            raise ConfigError(f"config error at 'train.cell_overrides.{key}': no such compressor/ratio cell")
    chunk_tok = cfg["data"]["fineweb"].get("chunk_tokenizer")
    if chunk_tok:
        need_model(chunk_tok, "data.fineweb.chunk_tokenizer")
    tiny = cfg.get("tiny")
    for name, spec in models.items():
        if "build" in spec:
            if not tiny:
                raise ConfigError(f"config error at 'models.{name}.build': built models need a 'tiny' section")
            tok = spec["build"]["tokenizer"]
            if tok not in tiny["tokenizers"]:
                raise ConfigError(f"config error at 'models.{name}.build.tokenizer': unknown tokenizer '{tok}'")
            b = spec["build"]
            if b["num_attention_heads"] % b["num_key_value_heads"]:
                raise ConfigError(f"config error at 'models.{name}.build.num_key_value_heads': must divide heads")


def validate(cfg: dict) -> dict:
    """Schema + references. Returns the config with defaults filled in."""
    validate_schema(cfg)
    check_references(cfg)
    return cfg


def load_config(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Load and merge YAML files left to right (as `snakemake --configfile a b`), then validate."""
    cfg: dict = {}
    for p in paths or (DEFAULT_CONFIG,):
        p = Path(p)
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        cfg = deep_merge(cfg, data)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate(cfg)


def export_package_path() -> None:
    """Put this package on PYTHONPATH for the rule scripts Snakemake starts as child processes."""
    import os

    pkg = str(REPO_ROOT / "workflow")
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if pkg not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([pkg, *parts])


# --------------------------------------------------------------------------------------------------- matrix


def outdir(cfg: dict) -> str:
    return f"results/{cfg['run_name']}"


def main_cells(cfg: dict) -> list[Cell]:
    return [Cell(cfg["decoder"], c, r) for c in cfg["compressors"] for r in cfg["ratios"]]


def ablation_cells(cfg: dict) -> list[Cell]:
    abl = cfg.get("ablation") or {}
    return [
        Cell(d, c, r)
        for d in abl.get("decoders", [])
        for c in abl.get("compressors", [])
        for r in abl.get("ratios", [])
    ]


def all_cells(cfg: dict) -> list[Cell]:
    seen: dict[Cell, None] = {}
    for c in main_cells(cfg) + ablation_cells(cfg):
        seen.setdefault(c, None)
    return list(seen)


def dynamics_cell(cfg: dict) -> Cell | None:
    dyn = cfg.get("dynamics")
    return Cell(cfg["decoder"], dyn["compressor"], dyn["ratio"]) if dyn else None


def model_source(cfg: dict, name: str) -> str:
    """What `from_pretrained` loads: a hub id (real runs) or the pipeline's pretrained base (tiny preset)."""
    spec = cfg["models"][name]
    return spec["hf_id"] if "hf_id" in spec else f"{outdir(cfg)}/base/{name}"


def train_settings(cfg: dict, cell: Cell) -> dict:
    """Everything that determines one cell's training run, and nothing else (its Snakemake params)."""
    tr = {k: copy.deepcopy(v) for k, v in cfg["train"].items() if k not in _TRAIN_TOP_ONLY}
    tr.update(copy.deepcopy(cfg["train"].get("cell_overrides", {}).get(cell.override_key, {})))
    dyn = dynamics_cell(cfg)
    tr["keep_probe_checkpoints"] = cell == dyn
    if cell == dyn:
        tr["max_steps"] = cfg["dynamics"]["max_steps"]
        tr["probe_every"] = cfg["dynamics"]["probe_every"]
    comp, dec = cfg["models"][cell.compressor], cfg["models"][cell.decoder]
    return {
        "cell": {"decoder": cell.decoder, "compressor": cell.compressor, "ratio": cell.ratio},
        "seed": cfg["seed"],
        "segment": copy.deepcopy(cfg["segment"]),
        "train": tr,
        "compressor": {
            "name": cell.compressor,
            "source": model_source(cfg, cell.compressor),
            "finetune": comp["finetune"],
            "deepspeed": copy.deepcopy(comp["deepspeed"]),
            "gpus": comp["train_resources"]["gpu"],
            "nodes": comp["train_resources"].get("nodes", 1),
        },
        "decoder": {"name": cell.decoder, "source": model_source(cfg, cell.decoder)},
    }


def eval_settings(cfg: dict, cell: Cell) -> dict:
    return {
        "cell": {"decoder": cell.decoder, "compressor": cell.compressor, "ratio": cell.ratio},
        "seed": cfg["seed"],
        "segment": copy.deepcopy(cfg["segment"]),
        "evaluate": copy.deepcopy(cfg["evaluate"]),
        "gpus": cfg["models"][cell.compressor]["eval_resources"]["gpu"],
    }


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON form: the same settings give the same hash on every machine."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()
