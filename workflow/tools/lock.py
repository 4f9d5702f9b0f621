"""Compile the environment locks from pyproject.toml and pin the conda environments of the rules to them.

    bash workflow/venv.sh python workflow/tools/lock.py                  # re-resolve, keeping locked versions
    bash workflow/venv.sh python workflow/tools/lock.py --upgrade        # newest versions the ranges allow
    bash workflow/venv.sh python workflow/tools/lock.py --torch 2.14.1   # another torch release (both builds)

Writes, for CPython 3.11 on x86_64 Linux:
  envs/requirements.lock.txt       every package of the venv (workflow/venv.sh, CI), torch as its CPU build
  envs/requirements-cuda.lock.txt  the same versions with PyPI's CUDA build of torch and its CUDA libraries
  envs/<name>.yaml                 the conda environment of each rule group ([tool.ctxcomp.conda-envs] of
                                   pyproject.toml): its packages and all they need, at the versions of its lock
Packages come from where pip takes them on this machine (`pip config list`, PIP_* variables): where no local
index serves the CPU build of torch, add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / "envs"
PYPROJECT = ROOT / "pyproject.toml"
LOCKS = {"cpu": ENVS / "requirements.lock.txt", "cuda": ENVS / "requirements-cuda.lock.txt"}
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
COMMAND = "bash workflow/venv.sh python workflow/tools/lock.py"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def read_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a requirements-style lock (`name==version` lines)."""
    pins = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def conda_envs() -> dict[str, dict]:
    """The conda environments of the rule groups, as declared in pyproject.toml."""
    return tomllib.loads(PYPROJECT.read_text())["tool"]["ctxcomp"]["conda-envs"]


def pip_sources(cuda: bool) -> list[str]:
    """uv options for the package sources pip uses here; without find-links and CPU indexes for the CUDA lock."""
    values: dict[str, list[str]] = {"index-url": [], "extra-index-url": [], "find-links": []}
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in values:
            values[option] += shlex.split(value.strip().strip("'\""))
    for option in values:
        values[option] += os.environ.get("PIP_" + option.upper().replace("-", "_"), "").split()
    args = []
    for option, urls in values.items():
        for url in dict.fromkeys(urls):
            if cuda and (option == "find-links" or url.rstrip("/").endswith("/whl/cpu")):
                continue  # their torch builds are CPU ones and would satisfy torch==X as X+cpu
            args += [f"--{option}", url]
    return args


def uv_compile(requirements: list[str], output: Path, sources: list[str], project: bool = False,
               constraints: Path | None = None, upgrade: bool = False, header: bool = True) -> None:
    """uv pip compile of `requirements` (plus pyproject.toml with all its extras when `project`) into `output`."""
    uv = shutil.which("uv") or sys.exit("uv is not installed: run this through workflow/venv.sh (lock extra)")
    cmd = [uv, "pip", "compile", "--quiet", "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
           "--index-strategy", "unsafe-best-match", "--custom-compile-command", COMMAND, "-o", str(output), "-",
           *sources]
    if project:
        cmd += ["pyproject.toml", "--all-extras"]
    if constraints:
        cmd += ["-c", str(constraints)]
    if upgrade:
        cmd.append("--upgrade")
    if not header:
        cmd.append("--no-header")
    subprocess.run(cmd, input="\n".join(requirements) + "\n", text=True, check=True, cwd=ROOT)


def compile_locks(torch: str, upgrade: bool) -> None:
    """The CPU lock, then the CUDA lock constrained to the CPU lock's versions of everything but torch."""
    uv_compile([f"torch=={torch}+cpu"], LOCKS["cpu"], pip_sources(cuda=False), project=True, upgrade=upgrade)
    with tempfile.TemporaryDirectory() as tmp:
        others = Path(tmp) / "cpu-without-torch.txt"
        others.write_text("".join(f"{n}=={v}\n" for n, v in read_pins(LOCKS["cpu"]).items() if n != "torch"))
        uv_compile([f"torch=={torch}"], LOCKS["cuda"], pip_sources(cuda=True), project=True, constraints=others,
                   upgrade=upgrade)
        # The annotations name the constraint file: name the lock it comes from, not the temporary copy.
        text = LOCKS["cuda"].read_text().replace(str(others), f"envs/{LOCKS['cpu'].name} (but torch)")
        LOCKS["cuda"].write_text(text)
    for name, path in LOCKS.items():
        version = read_pins(path)["torch"]
        if ("+cpu" in version) != (name == "cpu"):
            sys.exit(f"{path.name}: torch=={version} is not the {name} build")


def conda_yaml(name: str, spec: dict, pins: dict[str, str]) -> str:
    lines = [f"# {spec['description']}",
             f"# Generated by `{COMMAND}`",
             f"# from pyproject.toml ([tool.ctxcomp.conda-envs.{name}]) and envs/{LOCKS[spec['lock']].name}:",
             "# edit those, not this file. Every package is pinned. The ctxcomp package itself comes from the",
             "# checkout: workflow/ is on the search path that Snakemake gives the rule scripts.",
             f"name: ctxcomp-{name}",
             "channels: [conda-forge, nodefaults]",
             "dependencies:",
             f"  - python={PYTHON_VERSION}",
             "  - pip",
             "  - pip:"]
    if "+cpu" in pins.get("torch", ""):
        lines.append(f"      - --extra-index-url {TORCH_CPU_INDEX}")
    lines += [f"      - {n}=={v}" for n, v in sorted(pins.items())]
    return "\n".join(lines) + "\n"


def write_conda_envs() -> None:
    for name, spec in conda_envs().items():
        lock = LOCKS[spec["lock"]]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "env.txt"
            uv_compile(spec["packages"], out, pip_sources(cuda=spec["lock"] == "cuda"), constraints=lock,
                       header=False)
            pins = read_pins(out)
        locked = read_pins(lock)
        drift = {n: v for n, v in pins.items() if locked.get(n) != v}
        if drift:
            sys.exit(f"envs/{name}.yaml would pin versions outside {lock.name}: {drift}")
        (ENVS / f"{name}.yaml").write_text(conda_yaml(name, spec, pins))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upgrade", action="store_true", help="newest versions the ranges allow")
    parser.add_argument("--torch", help="torch release to lock (default: the one locked now)")
    parser.add_argument("--conda-only", action="store_true", help="rewrite envs/*.yaml from the current locks")
    args = parser.parse_args(argv)
    if not args.conda_only:
        torch = args.torch or read_pins(LOCKS["cpu"])["torch"].split("+")[0]
        compile_locks(torch, args.upgrade)
    write_conda_envs()
    for path in LOCKS.values():
        print(f"{path.relative_to(ROOT)}: {len(read_pins(path))} packages")


if __name__ == "__main__":
    main()
