"""The README's architecture map is that of the workflow as it is (workflow/tools/architecture.py)."""
from __future__ import annotations

import ast
import re
import sys
import textwrap
from pathlib import Path

import pytest

from snakemake_helpers import ROOT

sys.path.insert(0, str(ROOT / "workflow" / "tools"))
import architecture as A  # noqa: E402


@pytest.fixture(scope="module")
def rules() -> list[A.RuleInfo]:
    return A.load_rules()


def test_readme_map_is_current(rules):
    text = (ROOT / "README.md").read_text()
    start, end = text.index(A.BEGIN), text.index(A.END) + len(A.END)
    assert text[start:end] == A.readme_section(rules), (
        "README.md's architecture map is out of date: bash workflow/venv.sh python workflow/tools/architecture.py")


def test_map_lists_every_rule_file_and_script_of_the_repository(rules):
    """Independent of Snakemake's parse: every `rule x:` in the .smk files and every script is in the table."""
    declared = set()
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        declared |= set(re.findall(r"^rule (\w+):", smk.read_text(), re.M))
    assert {r.name for r in rules} == declared
    scripts = {f"workflow/scripts/{p.name}" for p in (ROOT / "workflow" / "scripts").glob("*.py")}
    assert {r.script for r in rules if r.script} == scripts


def test_entry_functions_are_defined_where_the_table_says(rules):
    for r in rules:
        if not r.script:
            continue
        module, _, name = r.entry.rpartition(".")
        source = ROOT / "workflow" / Path(*module.split(".")).with_suffix(".py")
        top_level = {n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert name in top_level, f"{r.name}: {r.entry} is not a function of {source}"


def test_entry_function_follows_reexports_and_skips_log_setup(tmp_path: Path):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("""\
        from ctxcomp.logs import setup_job
        setup_job(snakemake)
        from ctxcomp.io import read_jsonl
        from ctxcomp.report import build_main_report as build
        rows = read_jsonl("x")
        build(out="y")
        print(rows)
    """))
    # ctxcomp/report/__init__.py re-exports build_main_report from ctxcomp/report/build.py
    assert A.entry_function(script) == "ctxcomp.report.build.build_main_report"
    script.write_text("from ctxcomp.logs import setup_job\nsetup_job(snakemake)\n")
    assert A.entry_function(script) is None


def test_outputs_are_run_relative_patterns(rules):
    by_name = {r.name: r for r in rules}
    assert by_name["evaluate_cell"].outputs[-2:] == (
        "results/<run>/probes/{decoder}/{compressor}/r{ratio}/probes.json",
        "results/<run>/probes/{decoder}/{compressor}/r{ratio}/entropy.samples.jsonl")
    cell = A._outputs_cell(("a/b/t.md", "a/b/t.csv", "a/b/fig.png", "a/b/final"))
    assert cell == "`a/b/`: `t.{md,csv}`, `fig.png`, `final`"


def test_rule_graph_picture_shows_every_rule(rules):
    """The committed SVG has one node per rule (regenerate it with the script when rules are added or removed)."""
    svg = (ROOT / "workflow" / "docs" / "rulegraph.svg").read_text()
    nodes = re.findall(r'<g id="node\d+" class="node">.*?<text[^>]*>([^<]+)</text>', svg, re.S)
    assert sorted(nodes) == sorted(r.name for r in rules)


def test_every_gpu_rule_records_a_benchmark():
    """GPU jobs are what the GPU-hour estimates are checked against: each writes a benchmark file."""
    blocks = []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        blocks += re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S)
    gpu = {name: body for name, body in blocks if "envs/gpu.yaml" in body}
    assert {"train_compressor", "evaluate_cell", "probe_dynamics"} <= set(gpu)
    assert [name for name, body in gpu.items() if "\n    benchmark:\n" not in body] == []
