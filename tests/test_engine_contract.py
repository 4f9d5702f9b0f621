"""The training-engine contract (ctxcomp.train.engine.Engine) and the import structure of the package.

Both engines must offer every member of the protocol with the protocol's signature: the loop is written against
the protocol only, so an engine that drifts (a renamed parameter, a missing attribute) would fail on a cluster, not
here. The package's modules must not import each other in a cycle: each train module imports alone in a fresh
interpreter, and the import graph read from the source (every import statement, also inside functions) is acyclic.
"""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from ctxcomp.config import Cell, load_config
from ctxcomp.settings import CellTrainSettings
from ctxcomp.train.ds_engine import DeepSpeedEngine
from ctxcomp.train.engine import Engine, TorchEngine, make_engine

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "workflow" / "ctxcomp"


def _protocol_members() -> tuple[dict[str, typing.Any], dict[str, typing.Any]]:
    """(data members with their annotations, methods) that Engine declares."""
    data = typing.get_type_hints(Engine)
    methods = {n: f for n, f in vars(Engine).items() if inspect.isfunction(f) and not n.startswith("_")}
    return data, methods


def _signature(cls: type, name: str) -> tuple[list[tuple[str, typing.Any, typing.Any]], typing.Any]:
    fn = getattr(cls, name)
    hints = typing.get_type_hints(fn)
    params = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    return params, dict(hints.items())


@pytest.mark.parametrize("cls", [TorchEngine, DeepSpeedEngine], ids=lambda c: c.__name__)
def test_engine_satisfies_the_protocol_member_by_member(cls):
    data, methods = _protocol_members()
    assert {"forward", "backward", "step", "save", "load", "verify", "export_state", "gathered"} <= set(methods)
    declared = {**typing.get_type_hints(cls), **{k: type(v) for k, v in vars(cls).items() if not callable(v)}}
    for name, tp in data.items():
        assert name in declared, f"{cls.__name__} does not declare `{name}`"
        assert declared[name] == tp or issubclass(declared[name], tp), (cls.__name__, name, declared[name], tp)
    for name in methods:
        assert callable(getattr(cls, name, None)), f"{cls.__name__} has no method {name}()"
        assert _signature(cls, name) == _signature(Engine, name), f"{cls.__name__}.{name} differs from Engine.{name}"


def test_engine_members_are_exactly_what_the_loop_calls():
    """Every `self.engine.<x>` of train/loop.py is in the protocol, and the protocol has nothing the loop never
    uses (besides what the other callers read: export_state's users are in the loop too)."""
    tree = ast.parse((PKG / "train" / "loop.py").read_text())
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "engine" and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}
    data, methods = _protocol_members()
    assert used <= set(data) | set(methods), used - set(data) - set(methods)
    assert set(data) | set(methods) <= used, set(data) | set(methods) - used


def test_a_real_torch_engine_is_an_engine():
    cfg = load_config(ROOT / "config.yaml", ROOT / "workflow" / "presets" / "tiny.yaml")
    run = CellTrainSettings.for_cell(cfg, Cell(cfg["decoder"], "tiny-qwen-s", 16))
    module = torch.nn.Linear(2, 2)
    engine = make_engine(module, run, "torch")
    assert isinstance(engine, TorchEngine) and isinstance(engine, Engine)
    assert (engine.rank, engine.world_size, engine.is_main, engine.partitioned) == (0, 1, True, False)
    assert engine.accum == run.train.global_batch_size // run.train.micro_batch_size
    assert not isinstance(object(), Engine)


# ------------------------------------------------------------------------------------------------ imports
def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (`from pkg import name` counts as pkg.name when that is a module)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        package = mod.split(".") if is_pkg else mod.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + (node.module.split(".") if node.module else []))
                deps.update(f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names)
        graph[mod] = {d for d in deps if d in mods and d != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while comp[-1:] != [v]:
                comp.append(stack.pop())
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "ctxcomp.train.world" in graph["ctxcomp.train.deepspeed_config"]  # relative imports are resolved
    assert "ctxcomp.train.checkpoint" in graph["ctxcomp.train.engine"]  # `from . import checkpoint`
    assert "ctxcomp.train.ds_engine" in graph["ctxcomp.train.engine"]  # imports inside functions count


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


TRAIN_MODULES = sorted(p.stem for p in (PKG / "train").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", TRAIN_MODULES)
def test_each_train_module_imports_alone_in_a_fresh_interpreter(name):
    proc = subprocess.run([sys.executable, "-c", f"import ctxcomp.train.{name}"], cwd=ROOT / "workflow",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
