"""Typed, frozen views of the validated configuration: what the package reads, built once at its entry points.

The rules pass JSON-like dicts as params (ctxcomp.config.train_settings, eval_settings): Snakemake detects changed
params from them and their hash is in every checkpoint and result, so they stay dicts. The package's entry points
(train.launch.launch_training, train.loop.train_cell, evaluate.cell.*, model.load.load_trained, questions,
memory plan, acceptance) turn them into the objects below and pass those inside.

Defaults live only in the schema (workflow/schemas/config.schema.yaml): no field here has a default. Building an
object from a mapping with an unknown key, a missing key or a value of the wrong type raises ConfigError naming the
key path. A field typed `X | None` is a key the schema makes optional without a default (absent = None). A schema
section built outside the pipeline (tests, notebooks) is validated against its subschema with the defaults filled
in first (`from_partial`, through ctxcomp.config.fill_section), then built by the same strict code.

`to_dict()` gives back the mapping an object was built from (same keys, same values, lists for tuples), so a typed
object hashes and is stored exactly like the params it came from (tests/test_settings.py checks this against the
hashes of the settings of config.yaml and the tiny preset).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from .config import (
    DYNAMICS_KEY,
    RUNTIME_TRAIN_KEYS,
    Cell,
    ConfigError,
    eval_settings,
    fill_section,
    runtime_defaults,
    train_runtime,
    train_settings,
)

S = TypeVar("S")


def _key(f: dataclasses.Field) -> str:
    """The config key of a field (`continue` is a Python keyword: its field is `continue_`)."""
    return f.metadata.get("key", f.name)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _fail(where: str, what: str) -> typing.NoReturn:
    raise ConfigError(f"config error at '{where}': {what}")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """`value` checked against the annotation `tp`; nested mappings become dataclasses, lists tuples. Numbers are
    kept as given (an int where a float is declared stays an int), so `to_dict` reproduces the input exactly."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _optional(tp):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            _fail(where, f"{value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(where, f"expected a list, got {type(value).__name__}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            _fail(where, f"expected {len(items)} items, got {len(value)}")
        return tuple(_convert(t, v, f"{where}.{i}") for i, (t, v) in enumerate(zip(items, value, strict=True)))
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{where}: no conversion for the annotation {tp!r}")
    if not ok:
        _fail(where, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def build(cls: type[S], data: Any, path: str) -> S:
    """A `cls` dataclass from `data`, strictly: every key known, every non-optional key present, types checked."""
    if not isinstance(data, Mapping):
        _fail(path, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    by_key = {_key(f): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(by_key), key=str)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        _fail(_join(path, unknown[0]), f"unknown key{more}; known: {', '.join(by_key)}")
    kwargs = {}
    for key, f in by_key.items():
        if key in data:
            kwargs[f.name] = _convert(hints[f.name], data[key], _join(path, key))
        elif _optional(hints[f.name]):
            kwargs[f.name] = None
        else:
            _fail(_join(path, key), "missing key")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """The JSON-like form of a settings object: its mapping (absent optional keys left out), lists for tuples."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {_key(f): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) is not None}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


class _Section:
    """from_dict / to_dict / replace for the settings dataclasses; SECTION names a top-level schema section."""

    SECTION: ClassVar[str | None] = None

    @classmethod
    def from_dict(cls: type[S], data: Any, path: str | None = None) -> S:
        """Strictly from `data`; errors name the key path from `path` (default: the section's name, if any)."""
        return build(cls, data, (cls.SECTION or "") if path is None else path)  # type: ignore[attr-defined]

    @classmethod
    def from_partial(cls: type[S], data: Mapping | None = None) -> S:
        """Outside the pipeline: `data` validated against the section's subschema with its defaults filled in."""
        if cls.SECTION is None:  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__name__} is no schema section: build it from a validated config")
        return cls.from_dict(fill_section(cls.SECTION, dict(data or {})))  # type: ignore[attr-defined]

    def to_dict(self) -> dict:
        return to_dict(self)

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# ------------------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class SegmentSettings(_Section):
    """`segment`: L (compressor tokens per segment), the continuation's decoder tokens, segments per QA context."""

    SECTION: ClassVar[str] = "segment"
    segment_tokens: int
    continuation_tokens: int
    max_segments: int


@dataclass(frozen=True)
class LossWeights(_Section):
    """`train.loss_weights`: w_re and w_nt of eq. 3."""

    reconstruct: float
    continue_: float = field(metadata={"key": "continue"})

    def as_weights(self) -> dict[str, float]:
        """What ContextCompressor.forward takes as `weights`."""
        return {"reconstruct": self.reconstruct, "continue": self.continue_}


@dataclass(frozen=True)
class LoraSettings(_Section):
    """`train.lora`; target_modules None = peft's default modules of the architecture."""

    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...] | None


@dataclass(frozen=True)
class TrainSettings(_Section):
    """The `train` settings of one run (ctxcomp.config.train_settings: overrides applied; without the storage keys,
    which are RuntimeSettings, and with keep_probe_checkpoints, true for the dynamics run only)."""

    max_steps: int
    global_batch_size: int
    micro_batch_size: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    adam_betas: tuple[float, float]
    grad_clip: float
    loss_weights: LossWeights
    probe_every: int
    probe_batch_size: int
    gradient_checkpointing: bool
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"]
    engine: Literal["auto", "torch", "deepspeed"]
    num_threads: int
    lora: LoraSettings | None
    keep_probe_checkpoints: bool


@dataclass(frozen=True)
class RuntimeSettings(_Section):
    """How a run is stored and checked (ctxcomp.config.RUNTIME_TRAIN_KEYS): read at run time, never hashed."""

    checkpoint_every: int
    keep_checkpoints: int
    keep_final_checkpoints: bool
    stale_checkpoints: Literal["move", "delete"]
    verify_checkpoints: Literal["sha256", "size"]
    tensorboard: bool


@dataclass(frozen=True)
class DeepSpeedSpec(_Section):
    """`models.<name>.deepspeed`: ZeRO stage and offload of the model when it is the compressor."""

    zero_stage: Literal[0, 1, 2, 3]
    offload_optimizer: bool
    offload_param: bool


@dataclass(frozen=True)
class CompressorRef(_Section):
    """The compressor of a run: what is loaded, how it is fine-tuned, its DeepSpeed spec and training resources."""

    name: str
    source: str
    finetune: Literal["full", "lora"]
    deepspeed: DeepSpeedSpec
    gpus: int
    nodes: int

    @property
    def multi_process(self) -> bool:
        """The job spans several GPUs or nodes."""
        return self.gpus > 1 or self.nodes > 1


@dataclass(frozen=True)
class DecoderRef(_Section):
    """The frozen decoder of a run."""

    name: str
    source: str


@dataclass(frozen=True)
class RagSettings(_Section):
    enabled: bool
    top_k: int


@dataclass(frozen=True)
class EvaluateSettings(_Section):
    """`evaluate`."""

    SECTION: ClassVar[str] = "evaluate"
    batch_size: int
    recon_max_new_tokens: int
    answer_max_new_tokens: int
    probe_batch_size: int
    entropy_vocab_chunk: int
    truncation_energy: tuple[float, ...]
    max_records: int
    bootstrap_resamples: int
    rag: RagSettings


# ------------------------------------------------------------------------------------------ settings of a cell
def _of(cls: type[S], settings: Any) -> S:
    return settings if isinstance(settings, cls) else cls.from_dict(settings)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CellTrainSettings(_Section):
    """Everything one training run reads: ctxcomp.config.train_settings plus its runtime (storage) settings.

    `runtime` is None for the params alone (what the memory plan and the DeepSpeed config read); training needs it.
    """

    cell: Cell
    seed: int
    segment: SegmentSettings
    train: TrainSettings
    compressor: CompressorRef
    decoder: DecoderRef
    run: Literal["dynamics"] | None
    runtime: RuntimeSettings | None

    def __post_init__(self) -> None:
        if self.compressor.finetune == "lora" and self.train.lora is None:
            _fail("train.lora", f"compressor '{self.compressor.name}' is fine-tuned with LoRA (finetune: lora): "
                                "its r and alpha are needed")

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> CellTrainSettings:
        """From the params of a training rule. The runtime keys come from `runtime` (the job reads them from the
        config at run time, ctxcomp.config.train_runtime) over those a direct caller left in `train`, over the
        schema's defaults; with neither, `runtime` is None."""
        path = "" if path is None else path
        if not isinstance(data, Mapping) or not isinstance(data.get("train"), Mapping):
            _fail(_join(path, "train"), "missing key (or not a mapping)")
        train = dict(data["train"])
        given = {**{k: train.pop(k) for k in RUNTIME_TRAIN_KEYS if k in train}, **(data.get("runtime") or {})}
        runtime = {**runtime_defaults(), **given} if given else None
        return build(cls, {**data, "train": train, "runtime": runtime}, path)

    @classmethod
    def for_cell(cls, cfg: dict, cell: Cell, dynamics: bool = False) -> CellTrainSettings:
        """One run of a validated config, with its runtime settings: what its training job would read."""
        return cls.from_dict({**train_settings(cfg, cell, dynamics), "runtime": train_runtime(cfg, cell, dynamics)})

    @classmethod
    def of(cls, settings: CellTrainSettings | Mapping) -> CellTrainSettings:
        """`settings` as this type: the entry points take either the rule's params or a built object."""
        return _of(cls, settings)

    @property
    def dynamics(self) -> bool:
        """The separate dynamics run of the dynamics cell (ctxcomp.config.train_settings(dynamics=True))."""
        return self.run == DYNAMICS_KEY


@dataclass(frozen=True)
class CellEvalSettings(_Section):
    """What an evaluation or probe job of one cell reads (ctxcomp.config.eval_settings)."""

    cell: Cell
    seed: int
    segment: SegmentSettings
    evaluate: EvaluateSettings
    gpus: int

    @classmethod
    def of(cls, settings: CellEvalSettings | Mapping) -> CellEvalSettings:
        return _of(cls, settings)

    @classmethod
    def for_cell(cls, cfg: dict, cell: Cell) -> CellEvalSettings:
        """The evaluation settings of one cell of a validated config."""
        return cls.from_dict(eval_settings(cfg, cell))
