"""Pipeline configuration: loading, schema validation, cross-reference checks and the experiment matrix.

The YAML schema (workflow/schemas/config.schema.yaml) checks types and unknown keys; `check_references` checks what a
schema cannot (names that must exist in `models`, ratios that must divide the segment length, ...). Both raise
`ConfigError` with the offending key path in the message.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
TINY_PRESET = REPO_ROOT / "workflow" / "presets" / "tiny.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"

# Keys of `train` that a cell override may not change because they define the DAG, not the cell.
_TRAIN_TOP_ONLY = {"cell_overrides"}
#: `train` keys that decide how a run is stored and checked, never what it computes: they are read by the job at
#: run time (train_runtime), so editing one re-runs nothing and never invalidates a checkpoint.
RUNTIME_TRAIN_KEYS = ("checkpoint_every", "keep_checkpoints", "keep_final_checkpoints", "stale_checkpoints",
                      "verify_checkpoints", "tensorboard")
#: `train.cell_overrides` key of the dynamics run (a separate run of the dynamics cell, see train_settings).
DYNAMICS_KEY = "dynamics"
#: Keys of `dynamics` that its own section sets; an override of them under cell_overrides.dynamics is refused.
_DYNAMICS_OWN = ("max_steps", "probe_every")


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
    def key(self) -> str:
        """Full `train.cell_overrides` key: decoder/compressor/ratio (any cell)."""
        return f"{self.decoder}/{self.compressor}/{self.ratio}"

    @property
    def short_key(self) -> str:
        """Short `train.cell_overrides` key, compressor/ratio: only for cells of the main decoder."""
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


_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def _coerce_number(err: Any) -> tuple[list, float | int] | None:
    """A numeric string where the schema wants a number: YAML 1.1 (PyYAML) reads `1e-3` (no dot) as a string."""
    if err.validator != "type" or not isinstance(err.instance, str) or not _NUMBER.match(err.instance.strip()):
        return None
    wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    value = float(err.instance)
    if "integer" in wanted and value.is_integer() and "number" not in wanted:
        return list(err.absolute_path), int(value)
    return (list(err.absolute_path), value) if "number" in wanted else None


def _set_at(cfg: Any, path: list, value: Any) -> None:
    for key in path[:-1]:
        cfg = cfg[key]
    cfg[path[-1]] = value


def schema() -> dict:
    """The config schema (workflow/schemas/config.schema.yaml)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_schema(cfg: dict, set_default: bool = True) -> dict:
    """Validate against the JSON schema, filling defaults; raise ConfigError naming the first bad key.

    Numbers written the YAML 1.1 way (`1e-3`, read as a string by PyYAML) are converted in place where the schema
    asks for a number. One line per problem, the first one with its key path.
    """
    return _validate(cfg, schema(), (), set_default)


def fill_section(name: str, data: dict | None) -> dict:
    """A copy of the section `name` (e.g. "questions", "evaluate", "data.fineweb") validated against its subschema,
    with the schema's defaults filled in: how a section built outside the pipeline (tests, notebooks) gets the
    values a validated config would hold (for one that is, nothing changes). Errors name the key path from the top
    (`questions.per_context`)."""
    sch = schema()
    sub = sch
    for part in name.split("."):
        if part not in sub.get("properties", {}):
            raise ConfigError(f"config error at '{name}': no such section in the schema")
        sub = sub["properties"][part]
    return _validate(copy.deepcopy(dict(data or {})), {**sub, "$defs": sch["$defs"]}, tuple(name.split(".")), True)


def _validator_class(set_default: bool):
    from jsonschema import Draft202012Validator, validators

    if not set_default:
        return Draft202012Validator
    validate_props = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})


def _validate(cfg: Any, sch: dict, prefix: tuple, set_default: bool) -> Any:
    cls = _validator_class(set_default)
    for _ in range(1000):  # each pass converts the numeric strings it finds, then validates again
        errors = sorted(cls(sch).iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
        fixes = [f for f in map(_coerce_number, errors) if f is not None]
        if not fixes:
            break
        for path, value in fixes:
            _set_at(cfg, path, value)
    if errors:
        err = errors[0]
        where = _format_path([*prefix, *err.absolute_path])
        msg = err.message
        if err.validator in ("additionalProperties", "unevaluatedProperties"):
            msg = f"unknown key: {msg}"
        if len(msg) > 300:
            msg = msg[:300] + " ..."
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"config error at '{where}': {msg}{more}")
    return cfg


def _need_model(cfg: dict, name: str, where: str) -> None:
    if name not in cfg["models"]:
        raise ConfigError(f"config error at '{where}': model '{name}' is not defined under 'models'")


def _check_batch(tr: dict, where: str) -> None:
    if tr["global_batch_size"] % tr["micro_batch_size"]:
        raise ConfigError(f"config error at '{where}.global_batch_size': {tr['global_batch_size']} is not a "
                          f"multiple of micro_batch_size={tr['micro_batch_size']}")


def _check_overrides(cfg: dict) -> None:
    """Every override addresses an existing run, and every key of it is honoured (none is silently ignored)."""
    tr = cfg["train"]
    overrides = tr.get("cell_overrides") or {}
    cells = {c.key: c for c in all_cells(cfg) + lora_control_cells(cfg)}
    main = {c.short_key: c for c in cells.values() if c.decoder == cfg["decoder"]}
    addressed: dict[Cell, str] = {}
    for key, over in overrides.items():
        where = f"train.cell_overrides.{key}"
        if key == DYNAMICS_KEY:
            if not cfg.get("dynamics"):
                raise ConfigError(f"config error at '{where}': there is no 'dynamics' section to override")
            for own in _DYNAMICS_OWN:
                if own in over:
                    raise ConfigError(f"config error at '{where}.{own}': the dynamics run takes {own} from "
                                      f"'dynamics.{own}'; set it there")
            cell = None
        elif key.count("/") == 2:
            dec, comp, ratio = key.split("/")
            cell = cells.get(f"{dec}/{comp}/{int(ratio)}")
            if cell is None:
                raise ConfigError(f"config error at '{where}': no such decoder/compressor/ratio cell")
        else:
            cell = main.get(key)
            if cell is None:
                abl = [c for c in cells.values() if c.short_key == key]
                hint = (f"; the ablation cell(s) {', '.join(sorted(c.key for c in abl))} are addressed as "
                        "decoder/compressor/ratio") if abl else ""
                raise ConfigError(f"config error at '{where}': no compressor/ratio cell of the main decoder "
                                  f"'{cfg['decoder']}'{hint}")
        if "lora" in over:  # LoRA settings of a fully fine-tuned run would be silently ignored
            comp = cfg["dynamics"]["compressor"] if cell is None else cell.compressor
            if over.get("finetune", cfg["models"][comp]["finetune"]) != "lora":
                raise ConfigError(f"config error at '{where}.lora': '{comp}' is fully fine-tuned in this run, so "
                                  "LoRA settings have no effect; add finetune: lora to the override")
        if cell is not None:
            if cell in addressed:
                raise ConfigError(f"config error at '{where}': the same cell is also overridden as "
                                  f"'train.cell_overrides.{addressed[cell]}'; keep one")
            addressed[cell] = key
        _check_batch({**tr, **over}, where)
    if cfg.get("dynamics"):
        _check_batch({**tr, **overrides.get(DYNAMICS_KEY, {})}, f"train.cell_overrides.{DYNAMICS_KEY}")


def _check_ratios(where: str, ratios: list[int], L: int) -> None:
    for i, r in enumerate(ratios):
        if L % r:
            raise ConfigError(f"config error at '{where}.{i}': ratio {r} does not divide {L} (segment.segment_tokens)")


def _check_dynamics(cfg: dict) -> None:
    dyn = cfg["dynamics"]
    if dyn["compressor"] not in cfg["compressors"]:
        raise ConfigError(f"config error at 'dynamics.compressor': '{dyn['compressor']}' is not in 'compressors'")
    if dyn["ratio"] not in cfg["ratios"]:
        raise ConfigError(f"config error at 'dynamics.ratio': {dyn['ratio']} is not in 'ratios'")
    if dyn["probe_every"] > dyn["max_steps"]:
        raise ConfigError(f"config error at 'dynamics.probe_every': {dyn['probe_every']} is more than "
                          f"dynamics.max_steps={dyn['max_steps']} (no probe checkpoint would be written)")


def _check_lora_control(cfg: dict) -> None:
    lc, models = cfg["lora_control"], cfg["models"]
    for i, name in enumerate(lc["compressors"]):
        where = f"lora_control.compressors.{i}"
        _need_model(cfg, name, where)
        if models[name]["finetune"] != "lora":
            raise ConfigError(f"config error at '{where}': model '{name}' has finetune "
                              f"'{models[name]['finetune']}', expected lora")
        lora_twin(cfg, name, where)
    _check_ratios("lora_control.ratios", lc["ratios"], cfg["segment"]["segment_tokens"])


def _check_built_models(cfg: dict) -> None:
    """Models the pipeline builds (tiny preset) need the `tiny` section and one of its tokenizers."""
    tiny = cfg.get("tiny")
    for name, spec in cfg["models"].items():
        if "build" in spec:
            if not tiny:
                raise ConfigError(f"config error at 'models.{name}.build': built models need a 'tiny' section")
            tok = spec["build"]["tokenizer"]
            if tok not in tiny["tokenizers"]:
                raise ConfigError(f"config error at 'models.{name}.build.tokenizer': unknown tokenizer '{tok}'")
            b = spec["build"]
            if b["num_attention_heads"] % b["num_key_value_heads"]:
                raise ConfigError(f"config error at 'models.{name}.build.num_key_value_heads': must divide heads")


def check_references(cfg: dict) -> None:
    """Checks beyond the schema: names must exist, ratios must divide L, batch sizes must divide, overrides must
    address a run, lora_control names must have a full-fine-tune twin."""
    for i, name in enumerate(cfg["compressors"]):
        _need_model(cfg, name, f"compressors.{i}")
    _need_model(cfg, cfg["decoder"], "decoder")
    L = cfg["segment"]["segment_tokens"]
    _check_ratios("ratios", cfg["ratios"], L)
    abl = cfg.get("ablation")
    if abl:
        for key in ("decoders", "compressors"):
            for i, name in enumerate(abl[key]):
                _need_model(cfg, name, f"ablation.{key}.{i}")
        _check_ratios("ablation.ratios", abl["ratios"], L)
    if cfg.get("dynamics"):
        _check_dynamics(cfg)
    if cfg.get("lora_control"):
        _check_lora_control(cfg)
    _check_batch(cfg["train"], "train")
    _check_overrides(cfg)
    for name, src in cfg["data"].items():
        cap, need = src.get("max_records") or 0, src.get("min_records") or 0
        if cap and need > cap:
            raise ConfigError(f"config error at 'data.{name}.min_records': {need} is more than "
                              f"data.{name}.max_records={cap}")
    chunk_tok = cfg["data"]["fineweb"].get("chunk_tokenizer")
    if chunk_tok:
        _need_model(cfg, chunk_tok, "data.fineweb.chunk_tokenizer")
    _check_built_models(cfg)


def validate(cfg: dict) -> dict:
    """Schema + references. Returns the config with defaults filled in."""
    validate_schema(cfg)
    check_references(cfg)
    return cfg


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a syntax error names the file, line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigError(f"config file {where}: YAML syntax error: {what}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p}: YAML error: {exc}") from exc


def checked_configfile(path: str | Path) -> str:
    """`path`, after checking that it parses (Snakefile `configfile:`): a syntax error names file:line:column."""
    read_yaml(path)
    return str(path)


def preset_path(name: str) -> str:
    """workflow/presets/<name>.yaml, relative to the repository (the Snakefile's `preset` config key)."""
    path = TINY_PRESET.parent / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TINY_PRESET.parent.glob("*.yaml"))) or "none"
        raise ConfigError(f"config error at 'preset': no preset {name!r} (workflow/presets/: {known})")
    return str(path.relative_to(REPO_ROOT))


def load_config(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Load and merge YAML files left to right (as `snakemake --configfile a b`), then validate."""
    cfg: dict = {}
    for p in paths or (DEFAULT_CONFIG,):
        data = read_yaml(p)
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
    """The Table 2 cell whose training dynamics Figures 3b/3c/4b/4c show. The dynamics are a separate run of it
    (dynamics/<cell>/train/); the Table 2 cell itself follows the protocol of its neighbours."""
    dyn = cfg.get("dynamics")
    return Cell(cfg["decoder"], dyn["compressor"], dyn["ratio"]) if dyn else None


def lora_control_cells(cfg: dict) -> list[Cell]:
    """LoRA-trained twins of full-fine-tune compressors (optional `lora_control` section), main decoder."""
    lc = cfg.get("lora_control") or {}
    return [Cell(cfg["decoder"], c, r) for c in lc.get("compressors", []) for r in lc.get("ratios", [])]


def _weights_identity(spec: dict) -> Any:
    """What fixes a model's starting weights: its hub id, or the build recipe of a pipeline-made base."""
    return spec["hf_id"] if "hf_id" in spec else json.dumps(spec.get("build"), sort_keys=True)


def lora_twin(cfg: dict, name: str, where: str = "lora_control") -> str:
    """The full-fine-tune entry of `compressors` with the same weights (hf_id, or build recipe) as LoRA model
    `name`; ConfigError when there is none or more than one."""
    ident = _weights_identity(cfg["models"][name])
    twins = [c for c in cfg["compressors"] if c != name and cfg["models"][c]["finetune"] == "full"
             and _weights_identity(cfg["models"][c]) == ident]
    if len(twins) != 1:
        what = "no" if not twins else f"{len(twins)} ({', '.join(twins)})"
        raise ConfigError(f"config error at '{where}': {what} full-fine-tune entry of 'compressors' has the "
                          f"weights of '{name}' (same hf_id or build); exactly one is needed as its twin")
    return twins[0]


def base_of(cfg: dict, name: str) -> str:
    """The model whose pipeline-made base `name` loads: the first `models` entry with the same build recipe, so a
    LoRA twin starts from exactly the weights of its full-fine-tune twin (tiny preset; hub models load by id)."""
    spec = cfg["models"][name]
    if "build" not in spec:
        return name
    ident = _weights_identity(spec)
    return next(n for n, s in cfg["models"].items() if "build" in s and _weights_identity(s) == ident)


def model_source(cfg: dict, name: str) -> str:
    """What `from_pretrained` loads: a hub id (real runs) or the pipeline's pretrained base (tiny preset)."""
    spec = cfg["models"][name]
    return spec["hf_id"] if "hf_id" in spec else f"{outdir(cfg)}/base/{base_of(cfg, name)}"


def cell_override(cfg: dict, cell: Cell | None, dynamics: bool = False) -> dict:
    """The `train.cell_overrides` entry of one run: `dynamics` for the dynamics run; decoder/compressor/ratio or,
    for a cell of the main decoder, compressor/ratio for a cell (check_references refuses both at once)."""
    overrides = cfg["train"].get("cell_overrides") or {}
    if dynamics:
        return copy.deepcopy(overrides.get(DYNAMICS_KEY, {}))
    out: dict = {}
    keys = [cell.key] + ([cell.short_key] if cell.decoder == cfg["decoder"] else [])
    for key in keys:
        out.update(copy.deepcopy(overrides.get(key, {})))
    return out


def train_settings(cfg: dict, cell: Cell, dynamics: bool = False) -> dict:
    """Everything that determines one training run, and nothing else (its Snakemake params; its checkpoints carry
    the hash of it). `dynamics=True`: the separate dynamics run of the dynamics cell (own steps, probe interval,
    probe checkpoints kept). How the run is stored (RUNTIME_TRAIN_KEYS) is in train_runtime instead."""
    if dynamics and cell != dynamics_cell(cfg):
        raise ConfigError(f"{cell.path} is not the dynamics cell (config 'dynamics')")
    over = cell_override(cfg, cell, dynamics)
    tr = {k: copy.deepcopy(v) for k, v in cfg["train"].items() if k not in _TRAIN_TOP_ONLY}
    tr.update(over)
    comp = cfg["models"][cell.compressor]
    finetune = tr.pop("finetune", comp["finetune"])
    for key in RUNTIME_TRAIN_KEYS:
        tr.pop(key, None)
    tr["keep_probe_checkpoints"] = dynamics
    if dynamics:
        tr["max_steps"] = cfg["dynamics"]["max_steps"]
        tr["probe_every"] = cfg["dynamics"]["probe_every"]
    out = {
        "cell": {"decoder": cell.decoder, "compressor": cell.compressor, "ratio": cell.ratio},
        "seed": cfg["seed"],
        "segment": copy.deepcopy(cfg["segment"]),
        "train": tr,
        "compressor": {
            "name": cell.compressor,
            "source": model_source(cfg, cell.compressor),
            "finetune": finetune,
            "deepspeed": copy.deepcopy(comp["deepspeed"]),
            "gpus": comp["train_resources"]["gpu"],
            "nodes": comp["train_resources"]["nodes"],
        },
        "decoder": {"name": cell.decoder, "source": model_source(cfg, cell.decoder)},
    }
    if dynamics:
        out["run"] = DYNAMICS_KEY
    return out


def train_runtime(cfg: dict, cell: Cell, dynamics: bool = False) -> dict:
    """How a run is stored and checked (RUNTIME_TRAIN_KEYS, overrides applied): read by the training job from the
    config at run time, so changing them re-runs nothing and keeps checkpoints valid."""
    merged = {**cfg["train"], **cell_override(cfg, cell, dynamics)}
    return {k: copy.deepcopy(merged[k]) for k in RUNTIME_TRAIN_KEYS if k in merged}


def runtime_defaults() -> dict:
    """Schema defaults of the runtime keys, for callers (tests, notebooks) that pass bare settings."""
    props = schema()["properties"]["train"]["properties"]
    return {k: props[k]["default"] for k in RUNTIME_TRAIN_KEYS if "default" in props.get(k, {})}


def determining(settings: dict) -> dict:
    """`settings` without what cannot change a training result (the runtime keys, wherever a caller put them)."""
    out = {k: copy.deepcopy(v) for k, v in settings.items() if k != "runtime"}
    out["train"] = {k: v for k, v in out.get("train", {}).items() if k not in RUNTIME_TRAIN_KEYS}
    return out


def eval_settings(cfg: dict, cell: Cell) -> dict:
    return {
        "cell": {"decoder": cell.decoder, "compressor": cell.compressor, "ratio": cell.ratio},
        "seed": cfg["seed"],
        "segment": copy.deepcopy(cfg["segment"]),
        "evaluate": copy.deepcopy(cfg["evaluate"]),
        "gpus": cfg["models"][cell.compressor]["eval_resources"]["gpu"],
    }


#: Top-level config sections that never change a result: where jobs run.
_PLACEMENT_SECTIONS = ("slurm",)
#: Top-level keys that annotate the reports without changing any result (the report rules take them as params).
_ANNOTATION_KEYS = ("report_note",)
#: `questions` keys that change how questions are fetched (network, budget, failure threshold), not which
#: questions come back: read by the job from the config, not its params.
QUESTION_RUNTIME_KEYS = ("timeout_s", "max_retries", "concurrency", "requests_per_minute", "price_per_mtok",
                         "retry_backoff_s", "api_key_env", "min_success_fraction")
#: Per-model resources that only place a job (the GPU/node counts stay: they set a training run's world size).
_PLACEMENT_RESOURCES = ("mem_mb", "runtime")


#: `data.<set>` keys that decide whether a job fails, not what it writes: read by the job from the config.
DATA_RUNTIME_KEYS = ("min_records",)


def data_params(cfg: dict, name: str) -> dict:
    """The `data.<name>` settings that determine a prepared set (rule prepare_qa's params)."""
    return {k: copy.deepcopy(v) for k, v in cfg["data"][name].items() if k not in DATA_RUNTIME_KEYS}


def question_params(cfg: dict) -> dict:
    """The `questions` settings that determine a question set (rule generate_questions' params)."""
    return {k: copy.deepcopy(v) for k, v in cfg["questions"].items()
            if k not in QUESTION_RUNTIME_KEYS and k != "contexts"}


def results_hash(cfg: dict) -> str:
    """Hash of the config minus what only decides where and how jobs run (`slurm:`, memory/time limits, runtime
    train and question keys) and the report annotations (`report_note`): reports keyed by it re-run when a result
    could change, not when a partition is renamed or a timeout raised."""
    cfg = copy.deepcopy({k: v for k, v in cfg.items() if k not in (*_PLACEMENT_SECTIONS, *_ANNOTATION_KEYS)})
    tr = cfg.get("train", {})
    for entry in [tr, *(tr.get("cell_overrides") or {}).values()]:
        for key in RUNTIME_TRAIN_KEYS:
            entry.pop(key, None)
    if tr.get("cell_overrides"):  # an override of runtime keys only is no override of a result
        tr["cell_overrides"] = {k: v for k, v in tr["cell_overrides"].items() if v}
    for key in QUESTION_RUNTIME_KEYS:
        cfg.get("questions", {}).pop(key, None)
    for src in cfg.get("data", {}).values():
        for key in DATA_RUNTIME_KEYS:
            src.pop(key, None)
    for spec in cfg.get("models", {}).values():
        for kind in ("train_resources", "eval_resources"):
            for key in _PLACEMENT_RESOURCES:
                spec.get(kind, {}).pop(key, None)
    return stable_hash(cfg)


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON form: the same settings give the same hash on every machine."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()
