"""Reading result files: missing files become NaN, corrupt ones raise, per-context joins are right."""
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import results_fixture as rf
from ctxcomp.report import collect


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return rf.write_results(tmp_path_factory.mktemp("collect") / "run")


def test_parse_cell():
    assert collect.parse_cell("dec/comp-1/r16") == {"decoder": "dec", "compressor": "comp-1", "ratio": 16}
    with pytest.raises(ValueError):
        collect.parse_cell("dec/comp/16")


def test_load_eval(run):
    ev = collect.load_eval(run["out"], run["cells"], run["models"]).set_index("cell")
    assert ev.loc["dec/qwen-l/r16", "ko_conflictqa"] == pytest.approx(rf.value("dec/qwen-l/r16", "ko_conflictqa"))
    assert ev.loc["dec/qwen-l/r16", "family"] == "Qwen3" and ev.loc["dec/qwen-l/r16", "params_b"] == 4.0
    assert ev.loc[rf.MISSING, list(collect.TASKS)].isna().all()


def test_corrupt_file_raises(tmp_path):
    p = tmp_path / "eval" / "d/c/r4" / "recon_fineweb.json"
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="recon_fineweb.json"):
        collect.load_eval(tmp_path, ["d/c/r4"], {})


def test_load_probes_and_losses(run):
    pr = collect.load_probes(run["out"], run["cells"], run["models"]).set_index("cell")
    assert pr.loc["dec/qwen-s/r4", "erank"] == pytest.approx(10 / 1.6)
    assert "entropy_fineweb" in pr and math.isnan(pr.loc[rf.MISSING, "entropy_mean"])
    losses = collect.load_losses(run["out"], run["cells"])
    assert set(losses) == set(run["cells"]) - {rf.MISSING}
    assert {"step", "loss_re", "loss_nt"} <= set(losses["dec/qwen-s/r4"].columns)


def test_entropy_drift_join(run):
    ed = collect.load_entropy_drift(run["out"], run["cells"])
    assert len(ed) == 7 * 2 * rf.N_CONTEXTS
    cell = "dec/qwen-s/r4"
    rows = [json.loads(x) for x in (Path(run["out"]) / "eval" / cell / "sd_faitheval.samples.jsonl").open()]
    want = sum(r["correct"] for r in rows if r["context_id"] == "faitheval-2") / 2
    got = ed[(ed.cell == cell) & (ed.source == "faitheval") & (ed.context_id == "faitheval-2")]
    assert len(got) == 1 and got["drift_accuracy"].iloc[0] == pytest.approx(want)
    assert got["n_questions"].iloc[0] == 2 and got["entropy"].iloc[0] == pytest.approx(
        2.2 + 0.05 * ((sum(map(ord, cell)) + 2) % 4))


def test_rank_truncation_and_dynamics(run):
    rt = collect.load_rank_truncation(run["out"], run["cells"], run["models"])
    one = rt[rt.cell == "dec/qwen-s/r4"]
    assert one["setting"].tolist() == ["0.5", "0.9", "0.99", "full"]
    assert rt[rt.cell == rf.MISSING]["setting"].tolist() == ["full"]
    dyn = collect.load_dynamics(run["out"], run["dynamics_cell"])
    assert list(dyn.columns) == ["step", "erank", "entropy", "ko_faitheval", "ko_conflictqa"]
    assert collect.load_dynamics(run["out"], None) is None
    assert collect.load_train_dynamics(run["out"], "dec/qwen-l/r4") is None


def test_provenance_rows(run):
    prov = collect.provenance_rows(run["out"], run["cells"])
    miss = prov[prov.cell == rf.MISSING]
    assert len(miss) == 1 and pd.isna(miss["file"].iloc[0])
    got = prov[(prov.cell == "dec/qwen-s/r4") & (prov.file == "eval/ko_faitheval.json")]
    assert got["commit"].iloc[0] == rf.COMMIT and len(got["settings_hash"].iloc[0]) == 64
