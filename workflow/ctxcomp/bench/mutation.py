"""Mutation score of the package's computing code: mutmut, group by group, each against its own fast tests.

    python -m ctxcomp.bench.mutation [GROUP ...] [--jobs N] [--survivors] [--keep]

The groups, and the files and tests of each, are the tables [tool.ctxcomp.mutation.<group>] of pyproject.toml; the
settings all groups share are [tool.mutmut]. Each group runs in its own work dir `.mutation/<group>/` (git-ignored),
laid out for mutmut: mutmut names a module after its path below `src/`, so there `src` is a link to `workflow/` and
the mutants are `ctxcomp.*`, the names the tests import; the rest of the checkout the tests read (configs, schemas,
presets) is linked into mutmut's copy `mutants/`, and `mutants/workflow/ctxcomp` is the mutated package. A fresh
work dir is made for every run unless `--keep` (mutmut then reuses its verdicts for unchanged functions) or
`--survivors` (re-test only the mutants that survived last time, after tests were added; the verdicts of mutants
detected before, which mutmut resets when the test list changes, are kept where their function is unchanged). Writes
RESULTS-mutation.json (the numbers and every survivor's diff; groups not run keep their last entry) and
RESULTS-mutation.md beside this file.

A survivor can be an equivalent mutant (no input the code can receive tells it apart from the original). Those are
listed in mutation-equivalent.yaml, each with its mutated line(s) and the reason; a listed mutant whose line no longer
matches (the function changed) counts as a survivor again and is reported as stale. Score = killed (tests failed or
ran out of time) / (all mutants - equivalent ones); mutants in functions no selected test calls ("no tests") count
as not killed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
WORK = ROOT / ".mutation"
OUT_JSON = HERE / "RESULTS-mutation.json"
OUT_MD = HERE / "RESULTS-mutation.md"
EQUIVALENT = HERE / "mutation-equivalent.yaml"
PACKAGE = "workflow/ctxcomp"
#: Entries of the checkout the work dir must not link: mutmut's inputs it copies itself (tests/, pyproject.toml),
#: the package (mutated copy), run outputs, and version-control or environment state.
_NOT_LINKED = {"workflow", "tests", "pyproject.toml", "results", "logs", ".git", ".venv", ".mutation", "mutants",
               ".snakemake", ".pytest_cache"}
#: mutmut's verdicts (mutmut.stats.status_by_exit_code) that mean the tests noticed the mutant.
DETECTED = ("killed", "timeout", "segfault")
COLUMNS = ("killed", "timeout", "segfault", "survived", "no tests", "suspicious", "not checked", "skipped")


def load_groups(pyproject: Path = ROOT / "pyproject.toml") -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The shared mutmut settings and, per group, `mutate` (paths below workflow/ctxcomp/) and `tests`."""
    data = tomllib.loads(pyproject.read_text())
    base = data["tool"]["mutmut"]
    groups = data["tool"]["ctxcomp"]["mutation"]
    for name, g in groups.items():
        missing = {"mutate", "tests"} - set(g)
        if missing:
            raise SystemExit(f"pyproject.toml: tool.ctxcomp.mutation.{name} lacks {sorted(missing)}")
        for rel in g["mutate"]:
            if not (ROOT / PACKAGE / rel).is_file():
                raise SystemExit(f"pyproject.toml: tool.ctxcomp.mutation.{name}.mutate: {PACKAGE}/{rel} does not exist")
    return base, groups


def _toml_value(value: Any) -> str:
    # The mutmut settings are strings, numbers, booleans and lists of strings: JSON spells those as TOML does.
    return json.dumps(value)


def group_pyproject(text: str, settings: dict[str, Any]) -> str:
    """pyproject.toml with its [tool.mutmut] table replaced by `settings` (the pytest settings stay)."""
    block = "[tool.mutmut]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in settings.items()) + "\n"
    new, n = re.subn(r"^\[tool\.mutmut\]\n(?:(?!\[).*\n)*", block, text, count=1, flags=re.M)
    if n != 1:
        raise SystemExit("pyproject.toml has no [tool.mutmut] table")
    if tomllib.loads(new)["tool"]["mutmut"] != settings:
        raise AssertionError("group pyproject.toml does not read back as its settings")
    return new


def group_settings(base: dict[str, Any], group: dict[str, Any]) -> dict[str, Any]:
    settings = dict(base)
    settings["only_mutate"] = [f"src/ctxcomp/{rel}" for rel in group["mutate"]]
    settings["pytest_add_cli_args_test_selection"] = list(group["tests"])
    return settings


def prepare(name: str, base: dict[str, Any], group: dict[str, Any], fresh: bool) -> Path:
    """The work dir of a group: pyproject.toml for it, `src` -> workflow/, `tests`, and the rest linked in mutants/."""
    work = WORK / name
    if fresh and work.exists():
        shutil.rmtree(work)
    mutants = work / "mutants"
    (mutants / "workflow").mkdir(parents=True, exist_ok=True)
    (work / "pyproject.toml").write_text(group_pyproject((ROOT / "pyproject.toml").read_text(),
                                                         group_settings(base, group)))
    links = {work / "src": ROOT / "workflow", work / "tests": ROOT / "tests"}
    links |= {mutants / p.name: p for p in ROOT.iterdir() if p.name not in _NOT_LINKED}
    links |= {mutants / "workflow" / p.name: p for p in (ROOT / "workflow").iterdir() if p.name != "ctxcomp"}
    # workflow/ctxcomp in the copy is mutmut's mutated package: what conftest.py puts on sys.path, and what a test
    # that starts a subprocess (PYTHONPATH=<root>/workflow, MUTANT_UNDER_TEST inherited) imports.
    links[mutants / "workflow" / "ctxcomp"] = Path("..") / "src" / "ctxcomp"
    for link, target in links.items():
        if not link.is_symlink():
            link.symlink_to(target)
    return work


#: mutmut forks one process per mutant from a process that has run the tests: an OpenMP or BLAS thread pool started
#: there (torch's SVD, matrix products) deadlocks in the fork, which would end as a false "timeout" kill. One thread
#: per mutant also fits `--jobs` mutants at once to as many cores.
SINGLE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1")


def _mutmut(work: Path, args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "mutmut", *args]
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=work, stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, **SINGLE_THREAD}).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-30:]
        raise SystemExit(f"mutmut {' '.join(args[:1])} failed in {work} (exit {rc}); end of {log}:\n" + "\n".join(tail))


def verdicts(work: Path) -> dict[str, tuple[str, str]]:
    """mutant name -> (source file below workflow/ctxcomp/, mutmut's verdict), from mutmut's .meta files."""
    from mutmut.stats import status_by_exit_code

    out = {}
    src = work / "mutants" / "src" / "ctxcomp"
    for meta in sorted(src.rglob("*.py.meta")):
        rel = str(meta.relative_to(src))[: -len(".meta")]
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[mutant] = (rel, status_by_exit_code[code])
    return out


def _meta_state(work: Path) -> dict[str, tuple[int | None, str | None]]:
    """mutant name -> (mutmut's exit code, hash of the mutated function's source), from the .meta files."""
    out = {}
    for meta in sorted((work / "mutants" / "src" / "ctxcomp").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        hashes = data.get("hash_by_function_name", {})
        for mutant, code in data["exit_code_by_key"].items():
            out[mutant] = (code, hashes.get(mutant.partition("__mutmut_")[0].rsplit(".", 1)[-1]))
    return out


def restore_detected(work: Path, before: dict[str, tuple[int | None, str | None]], retested: set[str]) -> list[str]:
    """Give back the verdicts of detected mutants that a re-run of `retested` reset. mutmut invalidates every result
    when its configuration changes (the group's test list grew), but a mutant the tests detected before, in a
    function whose source is unchanged, is detected by a superset of those tests too. Returns the restored names."""
    from mutmut.stats import status_by_exit_code

    restored = []
    for meta in sorted((work / "mutants" / "src" / "ctxcomp").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        hashes = data.get("hash_by_function_name", {})
        changed = False
        for mutant, code in data["exit_code_by_key"].items():
            old_code, old_hash = before.get(mutant, (None, None))
            if mutant in retested or old_code is None or status_by_exit_code[old_code] not in DETECTED:
                continue
            if status_by_exit_code[code] in DETECTED:
                continue
            if old_hash is None or hashes.get(mutant.partition("__mutmut_")[0].rsplit(".", 1)[-1]) != old_hash:
                continue
            data["exit_code_by_key"][mutant] = old_code
            restored.append(mutant)
            changed = True
        if changed:
            meta.write_text(json.dumps(data))
    return restored


def diffs(work: Path, names: list[str]) -> dict[str, str]:
    """The unified diff of each mutant against the original function (mutmut's own `show`)."""
    if not names:
        return {}
    code = ("import json, sys\nfrom mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant\n"
            "print(json.dumps({n: get_diff_for_mutant(n, path=find_mutant(n).path) for n in sys.argv[1:]}))\n")
    proc = subprocess.run([sys.executable, "-c", code, *names], cwd=work, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mutated_lines(diff: str) -> str:
    """The lines a mutant has instead of the original's (the `+` lines of its diff), stripped: what a judgment of
    equivalence names, so that it goes stale when the function changes."""
    return "\n".join(ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++"))


def load_equivalent(path: Path = EQUIVALENT) -> dict[str, dict[str, str]]:
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or set(entry) != {"mutant", "why"}:
            raise SystemExit(f"{path}: {name}: needs exactly the keys `mutant` and `why`")
    return data


def summarise(name: str, group: dict[str, Any], found: dict[str, tuple[str, str]], diff_of: dict[str, str],
              equivalent: dict[str, dict[str, str]], wall_s: float,
              tested: set[str] | None = None) -> dict[str, Any]:
    """Counts per file and for the group over the mutants `tested` (all of `found` by default; a sample: the
    others only count in `population`), the equivalent mutants honoured, and the remaining survivors."""
    per_file: dict[str, Counter] = {rel: Counter() for rel in group["mutate"]}
    survivors, honoured, stale = [], [], []
    for mutant, (rel, status) in sorted(found.items()):
        c = per_file.setdefault(rel, Counter())
        c["population"] += 1
        if tested is not None and mutant not in tested:
            continue
        c["total"] += 1
        c[status] += 1
        if status in DETECTED:
            continue
        entry = equivalent.get(mutant)
        lines = mutated_lines(diff_of.get(mutant, ""))
        if entry is not None and status == "survived" and entry["mutant"].strip() == lines:
            c["equivalent"] += 1
            honoured.append(mutant)
            continue
        if entry is not None:
            stale.append(mutant)
        survivors.append({"name": mutant, "file": rel, "status": status, "diff": diff_of.get(mutant, "")})
    keys = ("population", "total", *COLUMNS, "equivalent")
    files = {}
    for rel, c in per_file.items():
        files[rel] = {k: c.get(k, 0) for k in keys}
        files[rel].update(_score(files[rel]))
    totals = {k: sum(f[k] for f in files.values()) for k in keys}
    totals.update(_score(totals))
    return {"files": files, "totals": totals, "tests": list(group["tests"]), "equivalent": honoured,
            "stale_equivalent": stale, "survivors": survivors, "wall_s": round(wall_s, 1)}


def _score(c: dict[str, int]) -> dict[str, Any]:
    """Killed share of the non-equivalent tested mutants and, when they are a sample of the population, its 95 %
    Wilson interval (the score of all mutants lies there with 95 % confidence)."""
    judged = c["total"] - c["equivalent"]
    if not judged:
        return {"score": None, "score_ci95": None}
    k = sum(c[key] for key in DETECTED)
    ci = None
    if c["total"] < c["population"]:
        z, p = 1.959964, k / judged
        centre = (p + z * z / (2 * judged)) / (1 + z * z / judged)
        half = z * math.sqrt(p * (1 - p) / judged + z * z / (4 * judged * judged)) / (1 + z * z / judged)
        ci = [max(0.0, centre - half), min(1.0, centre + half)]
    return {"score": k / judged, "score_ci95": ci}


def generate(work: Path, jobs: int) -> None:
    """mutmut's first step alone (copy the sources, write every mutant and its .meta), so that a sample can be
    drawn from all mutant names before any test runs. The same calls, in the same order, as `mutmut run`."""
    code = ("import os, sys\n"
            "from mutmut.__main__ import (copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths,\n"
            "                             store_lines_covered_by_tests)\n"
            "from mutmut.mutation.trampoline import set_mutant_under_test\n"
            "set_mutant_under_test('mutant_generation')\n"
            "os.makedirs('mutants', exist_ok=True)\n"
            "copy_src_dir(); copy_also_copy_files(); setup_source_paths(); store_lines_covered_by_tests()\n"
            "create_mutants(int(sys.argv[1]))\n")
    with open(work / "mutmut.log", "a") as fh:
        rc = subprocess.run([sys.executable, "-c", code, str(jobs)], cwd=work, stdout=fh, stderr=subprocess.STDOUT)
    if rc.returncode != 0:
        raise SystemExit(f"mutant generation failed in {work} (exit {rc.returncode}); see {work / 'mutmut.log'}")


def draw_sample(found: dict[str, tuple[str, str]], fraction: float, key: str) -> set[str]:
    """The same share of every file's mutants, drawn with a seed fixed by `key` (the group): the same code gives
    the same sample."""
    by_file: dict[str, list[str]] = {}
    for mutant, (rel, _) in found.items():
        by_file.setdefault(rel, []).append(mutant)
    rng = random.Random(f"ctxcomp-mutation-sample:{key}")
    picked: set[str] = set()
    for rel in sorted(by_file):
        names = sorted(by_file[rel])
        picked |= set(rng.sample(names, max(1, math.ceil(fraction * len(names)))))
    return picked


def run_group(name: str, base: dict[str, Any], group: dict[str, Any], jobs: int, mode: str,
              fraction: float) -> dict[str, Any]:
    """Run one group (mode: fresh | keep | survivors) over all its mutants or a `fraction` of each file's."""
    work = prepare(name, base, group, fresh=(mode == "fresh"))
    log = work / "mutmut.log"
    sample_file = work / "sample.json"
    start, cpu0 = time.monotonic(), _children_cpu()
    if mode == "survivors":
        tested = set(json.loads(sample_file.read_text())) if sample_file.exists() else None
        again = [m for m, (_, s) in verdicts(work).items() if s not in DETECTED and (tested is None or m in tested)]
        if again:
            before = _meta_state(work)
            _mutmut(work, ["run", "--max-children", str(jobs), *again], log)
            restore_detected(work, before, set(again))
    elif fraction < 1:
        generate(work, jobs)
        tested = draw_sample(verdicts(work), fraction, name)
        sample_file.write_text(json.dumps(sorted(tested)))
        todo = sorted(m for m, (_, s) in verdicts(work).items() if m in tested and s == "not checked")
        if todo:
            _mutmut(work, ["run", "--max-children", str(jobs), *todo], log)
    else:
        tested = None
        sample_file.unlink(missing_ok=True)
        _mutmut(work, ["run", "--max-children", str(jobs)], log)
    wall, cpu = time.monotonic() - start, _children_cpu() - cpu0
    found = verdicts(work)
    if not found:
        raise SystemExit(f"group {name}: mutmut made no mutants (see {log})")
    undetected = [m for m, (_, s) in found.items() if s not in DETECTED and (tested is None or m in tested)]
    out = summarise(name, group, found, diffs(work, undetected), load_equivalent(), wall, tested)
    out["cpu_s"] = round(cpu, 1)
    out["sample"] = None if tested is None else fraction
    return out


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes (mutmut and every fork it waited for)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "workflow/ctxcomp", "tests"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + ("+changes" if dirty else "")


def render_md(results: dict[str, Any], equivalent: dict[str, dict[str, str]]) -> str:
    lines = ["# Mutation score", "",
             "Written by `python -m ctxcomp.bench.mutation` (workflow/ctxcomp/bench/mutation.py; the groups and their",
             "tests are `[tool.ctxcomp.mutation.*]` in pyproject.toml). Score = killed / (mutants - equivalent);",
             "killed counts mutants the tests failed on or that ran out of time; `no tests`: no selected test calls",
             "the function (counted as not killed). Equivalent mutants, each with the reason, are listed below from",
             "mutation-equivalent.yaml. A group with a `sample` share tests that share of every file's mutants (a",
             "seeded draw); the interval is then the 95 % Wilson interval of the score of all its mutants.", ""]
    head = ("| group / file | mutants | tested | killed | timeout | survived | no tests | other | equivalent | score "
            "| 95 % interval |")
    lines += [head, "|" + "---|" * 11]
    for name, g in results["groups"].items():
        rows = [(f"**{name}**", g["totals"])] + [(f"`{rel}`", c) for rel, c in g["files"].items()]
        for label, c in rows:
            other = c["segfault"] + c["suspicious"] + c["not checked"] + c["skipped"]
            score = "-" if c["score"] is None else f"{100 * c['score']:.1f} %"
            ci = c.get("score_ci95")
            ci = "(all tested)" if ci is None else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f} %"
            lines.append(f"| {label} | {c.get('population', c['total'])} | {c['total']} | {c['killed']} | "
                         f"{c['timeout']} | {c['survived']} | {c['no tests']} | {other} | {c['equivalent']} | "
                         f"{score} | {ci} |")
    lines += ["", "| group | tests | wall (s) | CPU (s) | run | commit |", "|---|---|---|---|---|---|"]
    # CPU: user + system seconds of mutmut and all its forks; on an otherwise idle machine, wall = CPU / jobs.
    for name, g in results["groups"].items():
        tests = " ".join(f"`{t}`" for t in g["tests"])
        lines.append(f"| {name} | {tests} | {g['wall_s']} | {g.get('cpu_s', '-')} | {g['date']}, {g['mode']} | "
                     f"{g['commit']} |")
    lines += ["", f"Machine: {results['machine']}.", "", "## Equivalent mutants", ""]
    for g in results["groups"].values():
        for mutant in g["equivalent"]:
            e = equivalent.get(mutant, {"mutant": "?", "why": "(no longer in mutation-equivalent.yaml)"})
            lines += [f"- `{mutant}`: `{e['mutant']}`  ", f"  {e['why'].strip()}"]
    lines += ["", "## Surviving mutants", ""]
    untested: Counter = Counter()
    for g in results["groups"].values():
        for s in g["survivors"]:
            if s["status"] == "no tests":
                untested[s["name"].partition("__mutmut_")[0]] += 1
                continue
            stale = " (its equivalence judgment is stale)" if s["name"] in g["stale_equivalent"] else ""
            lines += [f"- `{s['name']}` ({s['status']}){stale}", "", "```diff", s["diff"].rstrip(), "```", ""]
    if untested:
        lines += ["", "## Functions no selected test calls", ""]
        lines += [f"- `{fn}`: {n} mutants" for fn, n in sorted(untested.items())]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    base, groups = load_groups()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(groups)}")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--keep", action="store_true", help="reuse the work dir and mutmut's verdicts")
    how.add_argument("--survivors", action="store_true", help="re-test only last run's undetected mutants")
    share = ap.add_mutually_exclusive_group()
    share.add_argument("--all", action="store_true", help="every mutant, also of groups configured with a `sample`")
    share.add_argument("--sample", type=float, help="test this share of every file's mutants (overrides the config)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.groups) - set(groups))
    if unknown:
        ap.error(f"unknown group(s) {unknown}; known: {sorted(groups)}")
    mode = "survivors" if args.survivors else "keep" if args.keep else "fresh"
    results = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {"groups": {}}
    import mutmut

    results["machine"] = f"{os.cpu_count()} CPUs, {args.jobs} mutants at once, mutmut {mutmut.__version__}"
    for name in args.groups or list(groups):
        print(f"[mutation] {name}: {', '.join(groups[name]['mutate'])}", file=sys.stderr, flush=True)
        fraction = 1.0 if args.all else args.sample or float(groups[name].get("sample", 1.0))
        if not 0 < fraction <= 1:
            raise SystemExit(f"pyproject.toml: tool.ctxcomp.mutation.{name}.sample must be in (0, 1], not {fraction}")
        g = run_group(name, base, groups[name], args.jobs, mode, fraction)
        g["date"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        g["commit"] = _commit()
        g["mode"] = mode
        # Re-read what is there now: a run of another group that ended meanwhile keeps its entry.
        if OUT_JSON.exists():
            results["groups"] = json.loads(OUT_JSON.read_text())["groups"]
        results["groups"][name] = g
        results["groups"] = {k: results["groups"][k] for k in groups if k in results["groups"]}
        OUT_JSON.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        OUT_MD.write_text(render_md(results, load_equivalent()))
        t = g["totals"]
        print(f"[mutation] {name}: {t['total']} of {t['population']} mutants tested, score {t['score']}, "
              f"{len(g['survivors'])} survivors, {g['wall_s']} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
