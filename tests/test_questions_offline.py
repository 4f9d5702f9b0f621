"""The offline backend: deterministic, valid question sets through the same validation code, and the rule script."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ctxcomp.questions import DIMENSIONS
from ctxcomp.questions.offline import offline_questions
from ctxcomp.questions.run import generate_questions
from ctxcomp.questions.settings import QuestionSettings

ROOT = Path(__file__).resolve().parents[1]
QCFG = {"backend": "offline", "per_context": 20, "unanswerable_per_context": 4}


def sample_contexts(n: int = 25) -> list[dict]:
    fe = [json.loads(line) for line in open(ROOT / "workflow/data/faitheval/test.jsonl")][:n]
    c4 = [json.loads(line) for line in open(ROOT / "workflow/data/c4/c4_sample.jsonl")][:n]
    return ([{"id": r["id"], "source": "faitheval", "context": r["context"]} for r in fe]
            + [{"id": f"fw-{i}", "source": "fineweb", "context": r["text"]} for i, r in enumerate(c4)])


def run(tmp_path: Path, contexts: list[dict], qcfg: dict = QCFG, tag: str = "a") -> tuple[dict, list[dict], bytes]:
    out, rep = tmp_path / f"{tag}.jsonl", tmp_path / f"{tag}.report.json"
    report = generate_questions(contexts, qcfg, str(out), str(rep), str(tmp_path / "cache"))
    assert json.loads(rep.read_text()) == report
    return report, [json.loads(line) for line in out.read_text().splitlines()], out.read_bytes()


def test_offline_is_valid_on_real_passages(tmp_path):
    contexts = sample_contexts()
    report, rows, _ = run(tmp_path, contexts)
    assert [r["context_id"] for r in rows] == [c["id"] for c in contexts]
    assert report["valid"] == len(contexts) and report["failed"] == 0 and report["repaired"] == 0
    assert report["requests_sent"] == 0 and report["n_questions"] == 20 * len(contexts)
    for row, ctx in zip(rows, contexts):
        assert row["status"] == "ok" and row["reason"] is None and row["context"] == ctx["context"]
        qs = row["questions"]
        assert [q["qid"] for q in qs] == [f"{ctx['id']}-q{i:02d}" for i in range(20)]
        assert {q["dimension"] for q in qs if q["answerable"]} == set(DIMENSIONS)
        unans = [q for q in qs if not q["answerable"]]
        assert len(unans) == 4 and all(q["answer"] is None and q["dimension"] == "unanswerable" for q in unans)
        assert all(q["answer"] in ctx["context"] for q in qs if q["answerable"])  # raw substring
        assert len({q["question"].lower() for q in qs}) == 20


def test_offline_is_deterministic_and_seeded_by_id(tmp_path):
    contexts = sample_contexts(8)
    _, _, first = run(tmp_path, contexts, tag="a")
    _, _, second = run(tmp_path, contexts, tag="b")
    assert first == second
    s = QuestionSettings.from_partial(QCFG)
    text = contexts[0]["context"]
    assert offline_questions("x", text, s) == offline_questions("x", text, s)
    assert any(offline_questions(f"id{i}", text, s) != offline_questions("x", text, s) for i in range(5))


def test_offline_small_mix_and_degenerate_contexts(tmp_path):
    contexts = [{"id": "one", "source": "fineweb", "context": "Paris."},
                {"id": "none", "source": "fineweb", "context": "  ... "}]
    report, rows, _ = run(tmp_path, contexts, {"backend": "offline", "per_context": 5, "unanswerable_per_context": 1,
                                               "min_success_fraction": 0.5})
    assert rows[0]["status"] == "ok" and len(rows[0]["questions"]) == 5
    assert rows[1]["status"] == "failed" and rows[1]["questions"] == [] and "expected exactly 5" in rows[1]["reason"]
    assert report["failed"] == 1 and report["failures"] == [{"context_id": "none", "reason": rows[1]["reason"]}]


def test_rule_script_maps_rows_and_takes_first_n(tmp_path):
    src = tmp_path / "eval.jsonl"
    text = "The Northwind Company acquired Contoso in 2021 for 40 million dollars."
    rows = [{"id": f"fw{i}", "source": "fineweb", "doc_id": i, "continuation": "x", "text": f"Doc {i}: {text}"}
            for i in range(3)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    smk = {"input": {"contexts": str(src)}, "output": {"questions": str(tmp_path / "q.jsonl"),
                                                        "report": str(tmp_path / "q.report.json")},
           "params": {"questions": QCFG, "n_contexts": 2, "cache_dir": str(tmp_path / "cache")},
           "log": [str(tmp_path / "job.log")], "config": {"questions": {**QCFG, "timeout_s": 1}}}
    code = (
        "import json, runpy, sys\n"
        "from types import SimpleNamespace as NS\n"
        "d = json.loads(sys.argv[1])\n"
        "smk = NS(input=NS(**d['input']), output=NS(**d['output']), params=NS(**d['params']), log=d['log'],\n"
        "         threads=1, config=d['config'])\n"
        "runpy.run_path(sys.argv[2], init_globals={'snakemake': smk}, run_name='__main__')\n"
    )
    script = ROOT / "workflow/scripts/generate_questions.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}  # this checkout's package, as the Snakefile sets it
    subprocess.run([sys.executable, "-c", code, json.dumps(smk), str(script)], check=True, timeout=60, env=env)
    out = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [r["context_id"] for r in out] == ["fw0", "fw1"] and out[0]["context"] == rows[0]["text"]
    assert json.loads((tmp_path / "q.report.json").read_text())["valid"] == 2
    assert "valid" in (tmp_path / "job.log").read_text()
