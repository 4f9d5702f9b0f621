"""The environment locks and the rules' conda environments: complete, consistent, and what the code imports.

References are independent of workflow/tools/lock.py: pyproject.toml's ranges (packaging), the installed packages'
own metadata (importlib.metadata) and the imports written in the scripts and the package (ast).
"""
from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from snakemake_helpers import ROOT

sys.path.insert(0, str(ROOT / "workflow" / "tools"))
import architecture  # noqa: E402
import lock  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {name: lock.read_pins(path) for name, path in lock.LOCKS.items()}
CONDA = PYPROJECT["tool"]["ctxcomp"]["conda-envs"]
CUDA_ONLY_PREFIXES = ("nvidia-", "cuda-")  # CUDA libraries that PyPI's torch build requires, and triton


def project_requirements() -> list[Requirement]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"].get("optional-dependencies", {}).values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def conda_pins(name: str) -> dict[str, str]:
    env = yaml.safe_load((ROOT / "envs" / f"{name}.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for item in pip:
        if item.startswith("--"):
            continue
        assert "==" in item, f"envs/{name}.yaml: {item!r} is not pinned"
        pkg, version = item.split("==")
        pins[canonicalize_name(pkg)] = version
    return pins


@pytest.mark.parametrize("which", sorted(LOCKS))
def test_lock_satisfies_every_range_of_pyproject(which: str):
    pins = LOCKS[which]
    for req in project_requirements():
        if req.marker and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock.LOCKS[which].name} lacks {req}: regenerate with workflow/tools/lock.py"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), \
            f"{lock.LOCKS[which].name}: {name}=={pins[name]} is outside {req}"


def test_cpu_and_cuda_locks_differ_only_in_the_torch_build():
    cpu, cuda = LOCKS["cpu"], LOCKS["cuda"]
    assert cpu["torch"].endswith("+cpu") and cuda["torch"] == cpu["torch"].removesuffix("+cpu")
    assert set(cpu) <= set(cuda)
    assert {n: v for n, v in cpu.items() if n != "torch"} == {n: cuda[n] for n in cpu if n != "torch"}
    extra = set(cuda) - set(cpu)
    assert extra and all(n.startswith(CUDA_ONLY_PREFIXES) or n == "triton" for n in extra), extra


def test_lock_holds_the_tools_the_suite_and_ci_run():
    for tool in ("pytest", "ruff", "snakefmt", "tensorboard", "mutmut", "psutil", "accelerate", "uv", "pip"):
        assert tool in LOCKS["cpu"], tool


def test_this_venv_is_exactly_the_lock():
    stamp = Path(sys.prefix) / ".ctxcomp-installed"
    if not stamp.exists():
        pytest.skip(f"{sys.prefix} was not made by workflow/venv.sh")
    which = "cuda" if stamp.read_text().startswith(lock.LOCKS["cuda"].name) else "cpu"
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("ctxcomp", None)
    assert installed == LOCKS[which]


@pytest.mark.parametrize("name", sorted(CONDA))
def test_conda_env_pins_its_packages_at_the_lock_versions(name: str):
    pins, locked = conda_pins(name), LOCKS[CONDA[name]["lock"]]
    env = yaml.safe_load((ROOT / "envs" / f"{name}.yaml").read_text())
    assert "python=3.11" in env["dependencies"]
    assert {canonicalize_name(p) for p in CONDA[name]["packages"]} <= set(pins)
    assert {n: v for n, v in pins.items() if locked.get(n) != v} == {}, f"envs/{name}.yaml differs from its lock"


@pytest.mark.parametrize("name", sorted(CONDA))
def test_conda_env_holds_everything_its_packages_require(name: str):
    """Closed under the installed packages' own Requires-Dist (markers evaluated for this Python and platform).

    The CUDA libraries of the GPU env are not installed in a CPU venv: their own requirements are not checked here.
    """
    pins = conda_pins(name)
    missing = {}
    for pkg in pins:
        if pkg not in LOCKS["cpu"]:
            continue
        try:
            requires = metadata.requires(pkg) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{pkg} (envs/{name}.yaml) is not installed in this venv: it is not the lock's")
        for text in requires:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(req.name) not in pins:
                missing.setdefault(pkg, []).append(str(req))
    assert missing == {}


# ------------------------------------------------------------------------------ imports of each rule's script


def _module_file(module: str) -> Path | None:
    base = ROOT / "workflow" / Path(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _optional(node: ast.AST, parents: dict) -> bool:
    """Inside `try: ... except ImportError` (or ModuleNotFoundError): the code works without it."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
    return False


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _optional(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {target} | {f"{target}.{a.name}" for a in node.names}
        else:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def third_party_imports(script: Path) -> set[str]:
    """Top-level modules outside the standard library that the script needs, through the ctxcomp package."""
    seen, out, todo = set(), set(), [(script, "__main__")]
    while todo:
        path, module = todo.pop()
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top == "ctxcomp":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    sub = ".".join(parts[:i])
                    file = _module_file(sub)
                    if file and sub not in seen:
                        seen.add(sub)
                        todo.append((file, sub))
            elif top not in sys.stdlib_module_names and top != "__future__":
                out.add(top)
    return out


def test_import_scan_sees_through_the_package_and_skips_optional_imports(tmp_path: Path):
    script = tmp_path / "s.py"
    script.write_text("from ctxcomp.logs import setup_job\ntry:\n    import nothere\nexcept ImportError:\n"
                      "    pass\nimport yaml\n")
    found = third_party_imports(script)
    assert "yaml" in found and "nothere" not in found
    assert "torch" not in found, "ctxcomp.logs imports torch only inside try/except ImportError"


def test_every_rule_env_provides_what_its_script_imports():
    dists = metadata.packages_distributions()
    problems = {}
    for rule in architecture.load_rules():
        if not rule.script:
            continue
        assert rule.conda, f"rule {rule.name} runs a script without a conda env"
        env = Path(rule.conda).stem
        pins = conda_pins(env)
        for module in sorted(third_party_imports(ROOT / rule.script)):
            owners = {canonicalize_name(d) for d in dists.get(module, [module])}
            if not owners & set(pins):
                problems.setdefault(rule.name, []).append(f"{module} ({'/'.join(sorted(owners))}) not in {env}")
    assert problems == {}
