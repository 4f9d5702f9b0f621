"""The report index on hand-made inputs: file sizes and hashes against hashlib, every provenance row as written."""
import hashlib

import pandas as pd

from ctxcomp.report import index

PROV = pd.DataFrame([
    {"cell": "d/a/r4", "file": "eval/ko_faitheval.json", "settings_hash": "abcdef0123456789ffff",
     "commit": "1234567890abcdef9999", "dirty": True},
    {"cell": "d/a/r4", "file": "probes/probes.json", "settings_hash": "", "commit": "fedcba9876543210aaaa",
     "dirty": False},
    {"cell": "d/b/r16", "file": None, "settings_hash": None, "commit": None, "dirty": None},
])


def test_sha256_and_artifact_rows(tmp_path):
    big = tmp_path / "report" / "fig.png"
    big.parent.mkdir()
    blob = bytes(range(256)) * 5000  # more than one 1 MiB block
    big.write_bytes(blob)
    assert index.sha256_file(big) == hashlib.sha256(blob).hexdigest()
    small = tmp_path / "report" / "t.md"
    small.write_text("x\n")
    rows = index.artifact_rows(tmp_path, [big, str(small)])
    assert rows == [{"path": "report/fig.png", "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()[:12]},
                    {"path": "report/t.md", "bytes": 2, "sha256": hashlib.sha256(b"x\n").hexdigest()[:12]}]


def test_render_index_in_full(tmp_path):
    art = tmp_path / "report" / "t.md"
    art.parent.mkdir()
    art.write_text("t\n")
    sha = hashlib.sha256(b"t\n").hexdigest()[:12]
    text = index.render_index("Main report", tmp_path, [art], "cfg", PROV.iloc[:1].assign(commit="c1"),
                              commit={"commit": "c9", "dirty": False})
    assert text == (f"# Main report\n\n- Results directory: `{tmp_path.as_posix()}`\n- Config hash: `cfg`\n"
                    "- Report commit: `c9`\n\n## Artifacts\n\n| path | bytes | sha256 |\n|:--|--:|:--|\n"
                    f"| `report/t.md` | 2 | `{sha}` |\n\n## Result provenance per cell\n\n"
                    "| cell | file | settings_hash | commit |\n|:--|:--|:--|:--|\n"
                    "| `d/a/r4` | `eval/ko_faitheval.json` | `abcdef012345` | `c1` (dirty) |\n")
    two = index.render_index("T", tmp_path, [], "h", PROV, commit={"commit": "c"})
    assert two.endswith("\n\nNote: results come from 2 different commits.\n")


def test_index_is_utf8_under_an_ascii_locale(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys, pandas as pd; from ctxcomp.report import index; "
            "index.write_index(sys.argv[1] + '/index.md', 'T \\u2014', sys.argv[1], [], 'h', pd.DataFrame())")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8"))}
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0",
               PYTHONPATH=os.pathsep.join([str(root / "workflow"), env.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True, timeout=120)
    assert (tmp_path / "index.md").read_bytes().startswith("# T \u2014\n".encode())


def test_render_index_lines(tmp_path):
    art = tmp_path / "report" / "table2.md"
    art.parent.mkdir()
    art.write_text("t\n")
    text = index.render_index("Main report", tmp_path, [art], "cfg123", PROV,
                              commit={"commit": "c0ffee", "dirty": True})
    lines = text.splitlines()
    assert lines[:6] == ["# Main report", "", f"- Results directory: `{tmp_path.as_posix()}`",
                         "- Config hash: `cfg123`", "- Report commit: `c0ffee` (uncommitted changes in the work tree)",
                         ""]
    sha = hashlib.sha256(b"t\n").hexdigest()[:12]
    assert "| path | bytes | sha256 |" in lines and f"| `report/table2.md` | 2 | `{sha}` |" in lines
    assert "| `d/a/r4` | `eval/ko_faitheval.json` | `abcdef012345` | `1234567890ab` (dirty) |" in lines
    assert "| `d/a/r4` | `probes/probes.json` | `—` | `fedcba987654` |" in lines
    assert "| `d/b/r16` | (no result files) | `—` | `—` |" in lines
    assert lines[-1] == "Note: results come from 2 different commits." and text.endswith("\n")
    clean = index.render_index("T", tmp_path, [], "h", PROV.iloc[:1], commit={"commit": "c1", "dirty": False})
    assert "- Report commit: `c1`" in clean.splitlines() and "Note:" not in clean
    none = index.render_index("T", tmp_path, [], "h", pd.DataFrame(), commit={})
    assert "- Report commit: `unknown`" in none
    assert none.rstrip().endswith("No result files with provenance were found.")
    nan_hash = index.render_index("T", tmp_path, [], "h", PROV.iloc[:1].assign(settings_hash=float("nan")),
                                  commit={"commit": "c"})
    assert "| `—` |" in nan_hash


def test_write_index(tmp_path):
    path = tmp_path / "report" / "index.md"
    path.parent.mkdir()
    got = index.write_index(path, "Decoder ablation report", tmp_path, [], "h9", PROV)
    assert got == path and path.read_text(encoding="utf-8").startswith("# Decoder ablation report\n")
    assert "`h9`" in path.read_text() and "—" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.md"]  # no temporary left


def test_the_config_note_goes_under_the_title(tmp_path):
    text = index.render_index("Main report", tmp_path, [], "h", pd.DataFrame(), commit={"commit": "c"},
                              note="  Tiny preset: a functional check.\n")
    assert text.startswith(f"# Main report\n\n> Tiny preset: a functional check.\n\n- Results directory: "
                           f"`{tmp_path.as_posix()}`\n")
    assert index.render_index("T", tmp_path, [], "h", pd.DataFrame(), commit={"commit": "c"}, note=" \n") \
        == index.render_index("T", tmp_path, [], "h", pd.DataFrame(), commit={"commit": "c"})
