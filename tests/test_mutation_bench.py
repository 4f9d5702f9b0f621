"""The mutation benchmark's bookkeeping: group settings from pyproject.toml, the per-group pyproject mutmut reads,
counting verdicts into a score, and honouring an equivalence judgment only while its mutated line still matches."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ctxcomp.bench import mutation

ROOT = Path(__file__).resolve().parents[1]

DIFF = """--- src/ctxcomp/x.py
+++ src/ctxcomp/x.py
@@ -1,3 +1,3 @@
 def f(a):
-    return a + 1
+    return a - 1
"""


def test_groups_name_existing_files_and_tests():
    base, groups = mutation.load_groups()
    assert base["source_paths"] == ["src/ctxcomp"]
    assert {"train", "report"} <= set(groups)
    for name, g in groups.items():
        for rel in g["mutate"]:
            assert (ROOT / mutation.PACKAGE / rel).is_file(), (name, rel)
        for arg in g["tests"]:
            if arg.startswith("tests/"):
                assert (ROOT / arg.split("::")[0]).is_file(), (name, arg)
    files = [rel for g in groups.values() for rel in g["mutate"]]
    assert len(files) == len(set(files))  # a file is scored in one group only


def test_missing_file_in_a_group_is_a_config_error(tmp_path):
    text = (ROOT / "pyproject.toml").read_text() + '\n[tool.ctxcomp.mutation.bad]\nmutate = ["nope.py"]\ntests = []\n'
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(SystemExit, match=r"tool\.ctxcomp\.mutation\.bad\.mutate: workflow/ctxcomp/nope\.py"):
        mutation.load_groups(tmp_path / "pyproject.toml")
    (tmp_path / "pyproject.toml").write_text(text.replace('mutate = ["nope.py"]\n', ""))
    with pytest.raises(SystemExit, match=r"tool\.ctxcomp\.mutation\.bad lacks \['mutate'\]"):
        mutation.load_groups(tmp_path / "pyproject.toml")


def test_group_pyproject_replaces_only_the_mutmut_table():
    base, groups = mutation.load_groups()
    settings = mutation.group_settings(base, groups["train"])
    assert settings["only_mutate"] == ["src/ctxcomp/train/schedule.py", "src/ctxcomp/train/data.py"]
    assert settings["pytest_add_cli_args_test_selection"] == ["tests/test_train_units.py"]
    original = tomllib.loads((ROOT / "pyproject.toml").read_text())
    new = tomllib.loads(mutation.group_pyproject((ROOT / "pyproject.toml").read_text(), settings))
    assert new["tool"]["mutmut"] == settings
    assert new["tool"]["pytest"] == original["tool"]["pytest"]  # markers and options the tests rely on
    assert new["project"] == original["project"] and new["tool"]["ctxcomp"] == original["tool"]["ctxcomp"]
    with pytest.raises(SystemExit, match="no \\[tool.mutmut\\] table"):
        mutation.group_pyproject("[project]\nname = 'x'\n", settings)


def test_mutated_lines_are_the_plus_lines():
    assert mutation.mutated_lines(DIFF) == "return a - 1"
    assert mutation.mutated_lines("") == ""


def test_summarise_counts_and_equivalents():
    group = {"mutate": ["x.py", "y.py"], "tests": ["tests/t.py"]}
    found = {"m.x_f__mutmut_1": ("x.py", "killed"), "m.x_f__mutmut_2": ("x.py", "survived"),
             "m.x_f__mutmut_3": ("x.py", "survived"), "m.x_f__mutmut_4": ("x.py", "timeout"),
             "m.x_g__mutmut_1": ("y.py", "no tests"), "m.x_g__mutmut_2": ("y.py", "survived")}
    diffs = {m: DIFF for m, (_, s) in found.items() if s not in mutation.DETECTED}
    equivalent = {"m.x_f__mutmut_2": {"mutant": "return a - 1", "why": "w"},       # matches: honoured
                  "m.x_f__mutmut_3": {"mutant": "return a * 1", "why": "w"},       # stale: the line changed
                  "m.x_g__mutmut_1": {"mutant": "return a - 1", "why": "w"}}       # not a survivor: no tests
    s = mutation.summarise("g", group, found, diffs, equivalent, 1.0)
    x, y = s["files"]["x.py"], s["files"]["y.py"]
    assert (x["total"], x["killed"], x["timeout"], x["survived"], x["equivalent"]) == (4, 1, 1, 2, 1)
    assert x["score"] == pytest.approx(2 / 3)  # killed + timeout over the 3 non-equivalent mutants
    assert (y["total"], y["no tests"], y["survived"], y["equivalent"], y["score"]) == (2, 1, 1, 0, 0.0)
    assert s["totals"]["total"] == s["totals"]["population"] == 6 and s["totals"]["score"] == pytest.approx(2 / 5)
    assert s["totals"]["score_ci95"] is None  # every mutant tested: the score is exact
    assert s["equivalent"] == ["m.x_f__mutmut_2"]
    assert s["stale_equivalent"] == ["m.x_f__mutmut_3", "m.x_g__mutmut_1"]
    assert [v["name"] for v in s["survivors"]] == ["m.x_f__mutmut_3", "m.x_g__mutmut_1", "m.x_g__mutmut_2"]


def test_equivalent_file_entries_are_checked(tmp_path):
    p = tmp_path / "eq.yaml"
    p.write_text("a.x_f__mutmut_1:\n  mutant: x\n")
    with pytest.raises(SystemExit, match="a.x_f__mutmut_1: needs exactly the keys `mutant` and `why`"):
        mutation.load_equivalent(p)
    assert mutation.load_equivalent(tmp_path / "absent.yaml") == {}
    entries = mutation.load_equivalent()  # the committed judgments are well-formed
    assert all(e["why"].strip() for e in entries.values())


def test_sample_is_stratified_seeded_and_scored_with_an_interval():
    found = {f"m.x_f__mutmut_{i}": ("x.py", "killed") for i in range(40)}
    found |= {f"m.x_g__mutmut_{i}": ("y.py", "survived" if i < 3 else "killed") for i in range(10)}
    a = mutation.draw_sample(found, 0.25, "grp")
    assert a == mutation.draw_sample(found, 0.25, "grp") != mutation.draw_sample(found, 0.25, "other")
    assert sum(m.startswith("m.x_f") for m in a) == 10 and sum(m.startswith("m.x_g") for m in a) == 3  # ceil, per file
    assert len(mutation.draw_sample(found, 0.01, "grp")) == 2  # at least one per file
    group = {"mutate": ["x.py", "y.py"], "tests": []}
    whole = {m: v for m, v in found.items() if m.startswith("m.x_g")}
    s = mutation.summarise("g", group, whole, {}, {}, 0.0, tested={m for m in whole if m.endswith(("_1", "_5"))})
    y = s["files"]["y.py"]
    assert (y["population"], y["total"], y["survived"], y["killed"], y["score"]) == (10, 2, 1, 1, 0.5)
    # Wilson interval of 1 of 2 at 95 %: centre 0.5, half-width z * sqrt(1/8 + z^2/16) / (1 + z^2/2)
    z = 1.959964
    half = z * (0.125 + z * z / 16) ** 0.5 / (1 + z * z / 2)
    assert y["score_ci95"] == pytest.approx([0.5 - half, 0.5 + half])


def test_survivor_rerun_keeps_the_verdicts_mutmut_reset(tmp_path):
    """mutmut resets every verdict when its configuration (the test list) changes: after re-testing the survivors,
    mutants detected before in an unchanged function get their verdict back; re-tested ones, and ones whose
    function changed, keep what the new run says."""
    import json

    meta = tmp_path / "mutants" / "src" / "ctxcomp" / "m.py.meta"
    meta.parent.mkdir(parents=True)
    names = {k: f"ctxcomp.m.x_{f}__mutmut_{k}" for k, f in [(1, "f"), (2, "f"), (3, "g"), (4, "f"), (5, "f")]}
    before = {"exit_code_by_key": {names[1]: 1, names[2]: 0, names[3]: 36, names[4]: 1, names[5]: 0},
              "hash_by_function_name": {"x_f": "aaa", "x_g": "bbb"}}
    meta.write_text(json.dumps(before))
    state = mutation._meta_state(tmp_path)
    assert state[names[3]] == (36, "bbb")
    # the re-run of the survivors (2, 5): 2 now killed, 5 still survives; mutmut reset 1 and 4 and 3, and g changed
    meta.write_text(json.dumps({"exit_code_by_key": {names[1]: None, names[2]: 1, names[3]: None, names[4]: 0,
                                                     names[5]: 0},
                                "hash_by_function_name": {"x_f": "aaa", "x_g": "ccc"}}))
    restored = mutation.restore_detected(tmp_path, state, {names[2], names[5]})
    assert sorted(restored) == [names[1], names[4]]
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    assert codes == {names[1]: 1, names[2]: 1, names[3]: None, names[4]: 1, names[5]: 0}
