"""The profiles by bare name (`snakemake --profile slurm`) and by path (`--profile profiles/slurm`).

Snakemake finds a bare profile name only in its XDG config folders; workflow/venv.sh puts profiles/xdg first in
XDG_CONFIG_DIRS, whose snakemake/<name> entries link to profiles/<name>. The dry runs go through venv.sh, as the
README's commands do (CTXCOMP_NO_INSTALL: the running venv is used as it is, never rebuilt under the tests).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from snakemake_helpers import ROOT, job_counts

PROFILES = ROOT / "profiles"
XDG = PROFILES / "xdg"
NAMES = sorted(p.parent.name for p in PROFILES.glob("*/config.yaml"))


def venv_run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`bash workflow/venv.sh <args>` with this test's venv (venv.sh runs it from the repository root)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    full = {**base, "CTXCOMP_VENV": sys.prefix, "CTXCOMP_NO_INSTALL": "1", **(env or {})}
    return subprocess.run(["bash", str(ROOT / "workflow" / "venv.sh"), *args], capture_output=True, text=True,
                          env=full, timeout=600)


def snakemake(args: list[str], env: dict | None = None, check: bool = True) -> str:
    proc = venv_run(["snakemake", *args], env)
    out = proc.stdout + proc.stderr
    if check and proc.returncode:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{out[-4000:]}")
    return out


def test_every_profile_has_its_bare_name():
    assert {"local", "slurm", "tiny"} <= set(NAMES)
    links = sorted(p.name for p in (XDG / "snakemake").iterdir())
    assert links == NAMES, "profiles/xdg/snakemake must link every profile, and nothing else"
    for name in NAMES:
        link = XDG / "snakemake" / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)), f"{link}: a relative link (clones move)"
        assert link.resolve() == (PROFILES / name).resolve()


def test_venv_sh_puts_the_profiles_first_and_keeps_the_callers_dirs():
    out = venv_run(["sh", "-c", 'printf %s "$XDG_CONFIG_DIRS"'], {"XDG_CONFIG_DIRS": "/opt/site-xdg"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{XDG}:/opt/site-xdg"
    out = venv_run(["sh", "-c", 'printf %s "$XDG_CONFIG_DIRS"'])
    assert out.stdout == f"{XDG}:/etc/xdg", "XDG's default /etc/xdg must stay searched"


def test_activated_checkout_venv_knows_the_bare_names():
    """`source .venv/bin/activate` (the checkout's own venv, made by venv.sh) sets the same search path."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"the tests run in {sys.prefix}, not in this checkout's .venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    code = "from snakemake.cli import get_profile_dir; print(get_profile_dir('slurm')[1])"
    proc = subprocess.run(["bash", "-c", f'source .venv/bin/activate && python -c "{code}"'], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == (PROFILES / "slurm" / "config.yaml").resolve()


@pytest.mark.parametrize("name", NAMES)
def test_snakemake_resolves_the_bare_name_to_the_profile(name: str):
    """Snakemake's own profile lookup, in the environment venv.sh sets up, lands on profiles/<name>/config.yaml."""
    code = f"from snakemake.cli import get_profile_dir; print(get_profile_dir({name!r})[1])"
    out = venv_run(["python", "-c", code])
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == (PROFILES / name / "config.yaml").resolve()


def test_bare_name_fails_without_the_profiles_on_the_search_path(tmp_path: Path):
    """Without venv.sh's XDG_CONFIG_DIRS the bare name is unknown: the lookup is what makes it work."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(XDG_CONFIG_DIRS=str(tmp_path / "none"), XDG_CONFIG_HOME=str(tmp_path / "home"))
    exe = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(exe), "--profile", "tiny", "-n", "paper"], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode != 0
    assert "no profile.yaml (or config.yaml) found" in proc.stderr


def test_tiny_by_bare_name_and_by_path_plan_the_same_tiny_dag():
    # --forceall: the whole DAG whatever results/tiny holds (a finished tiny run would plan no tokenizer jobs)
    bare = job_counts(snakemake(["--profile", "tiny", "-n", "--forceall", "--quiet", "rules", "--nolock", "paper"]))
    path = job_counts(snakemake(["--profile", "profiles/tiny", "-n", "--forceall", "--quiet", "rules", "--nolock",
                                 "paper"]))
    assert bare == path
    # Only the tiny preset (loaded by the profile's configfile) trains tokenizers and pretrains base models.
    assert bare.get("train_tokenizer", 0) >= 2 and bare.get("pretrain_base", 0) >= 2


@pytest.mark.parametrize("form", ["slurm", "profiles/slurm"])
def test_slurm_profile_in_both_forms_applies_its_settings(form: str):
    """The paper's 27 cells; the profile's default-resources (runtime 60, mem_mb 4000) reach the target rule."""
    out = snakemake(["--profile", form, "-n", "--nolock", "all"])
    assert job_counts(out)["train_compressor"] == 27
    block = re.search(r"^(?:local)?rule all:\n(.*?)(?:\n\n|\Z)", out, re.S | re.M)
    assert block, out[-3000:]
    resources = re.search(r"resources: (.*)", block.group(1))
    assert resources and "mem_mb=4000" in resources.group(1) and "runtime=60" in resources.group(1)


@pytest.mark.parametrize("form", ["local", "profiles/local"])
def test_local_profile_in_both_forms(form: str):
    out = snakemake(["--profile", form, "-n", "--quiet", "rules", "--nolock", "all"])
    assert "Using profile " + form in out
    assert job_counts(out)["train_compressor"] == 27
