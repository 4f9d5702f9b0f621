"""Result files are UTF-8 whatever the locale of the node that writes them (a job on an ISO-8859-1 or ASCII node
must neither crash after hours of evaluation nor write bytes another node reads differently)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = "M\u00fcller \u2014 \u201cquoted\u201d \u2248 \u4e2d"


def test_writers_use_utf8_under_an_ascii_locale(tmp_path):
    code = ("import sys\nfrom pathlib import Path\nfrom ctxcomp.io import atomic_write, read_jsonl, "
            "write_json, write_jsonl\n"
            f"d, text = Path(sys.argv[1]), {json.dumps(TEXT)}\n"  # ASCII-escaped: argv would be decoded as ASCII
            "write_jsonl(d / 'rows.jsonl', [{'text': text}])\n"
            "write_json(d / 'summary.json', {'text': text})\n"
            "with atomic_write(d / 'table.md') as fh:\n    fh.write(text)\n"
            "assert read_jsonl(d / 'rows.jsonl') == [{'text': text}]\n"
            "(d / 'utf8.jsonl').write_bytes(('{\"t\": \"' + text + '\"}\\n').encode())\n"
            "assert read_jsonl(d / 'utf8.jsonl') == [{'t': text}]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8", "PYTHONIOENCODING"))}
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0", PYTHONIOENCODING="utf-8",
               PYTHONPATH=os.pathsep.join([str(ROOT / "workflow"), env.get("PYTHONPATH", "")]))
    probe = subprocess.run([sys.executable, "-c", "import locale; print(locale.getpreferredencoding(False))"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() in ("ANSI_X3.4-1968", "ascii", "US-ASCII")  # the locale really is ASCII
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True, timeout=120)
    assert json.loads((tmp_path / "rows.jsonl").read_bytes().decode("utf-8")) == {"text": TEXT}
    assert (tmp_path / "rows.jsonl").read_bytes().decode("utf-8").count("\u2014") == 1  # raw UTF-8, not escaped
    assert (tmp_path / "table.md").read_bytes() == TEXT.encode("utf-8")
    assert json.loads((tmp_path / "summary.json").read_bytes().decode("utf-8")) == {"text": TEXT}
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["text"] == TEXT
