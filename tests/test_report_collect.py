"""Reading result files: missing files become NaN, corrupt ones raise, per-context joins are right."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

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
    cell = "dec/qwen-l/r16"
    v = rf.stored_value(cell, "ko_conflictqa")
    assert ev.loc[cell, "ko_conflictqa"] == pytest.approx(v)
    assert ev.loc[cell, "family"] == "Qwen3" and ev.loc[cell, "params_b"] == 4.0
    assert ev.loc[rf.MISSING, list(collect.TASKS)].isna().all()
    # interval, controls and flags of the contract
    assert ev.loc[cell, "ko_conflictqa_ci_low"] == pytest.approx(v - rf.CI_HALF)
    assert ev.loc[cell, "ko_conflictqa_n"] == rf.N_ITEMS and ev.loc[cell, "ko_conflictqa_seed"] == 1234
    assert ev.loc[cell, "ko_conflictqa_no_memory_value"] == pytest.approx(v - 0.2)
    assert ev.loc[cell, "ko_conflictqa_chance"] == rf.CHANCE and bool(ev.loc[cell, "ko_conflictqa_above_chance"])
    assert bool(ev.loc["dec/qwen-l/r4", "sd_fineweb_shuffled_z_distinguishable"]) is False
    assert bool(ev.loc["dec/llama-s/r16", "ko_conflictqa_above_chance"]) is False
    assert "sd_fineweb_no_memory_value" not in ev  # the no-memory control is a KO control only
    assert pd.isna(ev.loc[rf.MISSING, "ko_faitheval_shuffled_z_distinguishable"])


def test_old_format_result_gives_unknown_flags(tmp_path):
    d = tmp_path / "eval" / "dec/qwen-s/r4"
    d.mkdir(parents=True)
    (d / "ko_faitheval.json").write_text(json.dumps({"value": 0.5, "n": 4, "details": {"chance": 0.25}}))
    ev = collect.load_eval(tmp_path, ["dec/qwen-s/r4"], rf.MODELS).iloc[0]
    assert ev["ko_faitheval"] == 0.5 and ev["ko_faitheval_chance"] == 0.25
    assert math.isnan(ev["ko_faitheval_ci_low"]) and pd.isna(ev["ko_faitheval_above_chance"])
    assert pd.isna(ev["ko_faitheval_shuffled_z_distinguishable"])


def test_corrupt_file_raises(tmp_path):
    p = tmp_path / "eval" / "d/c/r4" / "recon_fineweb.json"
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="recon_fineweb.json"):
        collect.load_eval(tmp_path, ["d/c/r4"], {})
    bad = tmp_path / "eval" / "d/c/r4" / "sd_fineweb.samples.jsonl"
    bad.write_text('{"context_id": "a", "correct": true}\n{oops\n')
    with pytest.raises(ValueError, match=r"sd_fineweb.samples.jsonl:2"):
        collect.load_samples(tmp_path, "d/c/r4", "sd_fineweb")


def test_load_probes_and_losses(run):
    pr = collect.load_probes(run["out"], run["cells"], run["models"]).set_index("cell")
    assert pr.loc["dec/qwen-s/r4", "erank"] == pytest.approx(10 / 1.6)
    assert pr.loc["dec/qwen-s/r4", "erank_batch"] == 16 and math.isnan(pr.loc[rf.MISSING, "erank_batch"])
    for src in rf.SOURCES:
        want = sum(rf.entropy_of("dec/llama-s/r16", src, i) for i in range(rf.N_CONTEXTS)) / rf.N_CONTEXTS
        assert pr.loc["dec/llama-s/r16", f"entropy_{src}"] == pytest.approx(want)
    assert "entropy_fineweb" in pr and math.isnan(pr.loc[rf.MISSING, "entropy_mean"])
    losses = collect.load_losses(run["out"], run["cells"])
    assert set(losses) == set(run["cells"]) - {rf.MISSING}
    assert losses["dec/qwen-s/r4"]["loss"].iloc[-1] == pytest.approx(rf.loss_at("dec/qwen-s/r4", 120))


def test_entropy_samples_carry_cell_metadata(run):
    ent = collect.load_entropy_samples(run["out"], run["cells"], run["models"])
    assert len(ent) == 7 * 2 * rf.N_CONTEXTS
    one = ent[(ent["cell"] == "dec/llama-s/r4") & (ent["source"] == "faitheval") & (ent["context_id"] == "ctx-3")]
    assert len(one) == 1 and one["family"].iloc[0] == "LLaMA-3.2" and one["ratio"].iloc[0] == 4
    assert one["entropy"].iloc[0] == pytest.approx(rf.entropy_of("dec/llama-s/r4", "faitheval", 3))


def test_duplicate_context_rows_are_refused(tmp_path):
    rf.write_cell(tmp_path, "dec/qwen-s/r4", rag=False)
    path = tmp_path / "probes" / "dec/qwen-s/r4" / "entropy.samples.jsonl"
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="entropy.samples.jsonl"):
        collect.load_entropy_drift(tmp_path, ["dec/qwen-s/r4"], rf.MODELS)


def test_rank_truncation_and_dynamics(run):
    rt = collect.load_rank_truncation(run["out"], run["cells"], run["models"])
    one = rt[rt.cell == "dec/qwen-s/r4"]
    assert one["setting"].tolist() == ["0.5", "0.9", "0.99"] * 2 + ["full"]
    assert one["variant"].tolist() == ["per_sample"] * 3 + ["batch"] * 3 + ["full"]
    assert rt[rt.cell == rf.MISSING]["setting"].tolist() == ["full"]
    files = collect.DynamicsFiles.of_run(run["out"], run["dynamics_cell"])
    assert files.train == Path(run["out"]) / "dynamics" / run["dynamics_cell"] / "train" / "dynamics.csv"
    assert collect.DynamicsFiles.from_paths([str(files.train), str(files.samples), str(files.checkpoints)]) == files
    dyn = collect.load_dynamics(files)
    assert list(dyn.columns) == ["step", "erank", "entropy", "ko_faitheval", "ko_conflictqa"]
    assert len(dyn) == rf.N_CHECKPOINTS and dyn["erank"].idxmax() == rf.PEAK_INDEX
    s = collect.load_checkpoint_samples(files)
    assert len(s) == rf.N_CHECKPOINTS * 2 * rf.N_DYN_ITEMS
    acc = s[(s.step == 100) & (s.task == "ko_faitheval")]["correct"].mean()
    assert acc == pytest.approx(dyn.loc[dyn.step == 100, "ko_faitheval"].iloc[0])
    assert collect.load_dynamics(collect.DynamicsFiles.of_run(run["out"], None)) is None
    assert collect.load_train_dynamics(collect.DynamicsFiles.of_run(run["out"], "dec/qwen-l/r4")) is None
    assert collect.load_checkpoint_samples(collect.DynamicsFiles()) is None


def test_provenance_rows(run):
    prov = collect.provenance_rows(run["out"], run["cells"])
    miss = prov[prov.cell == rf.MISSING]
    assert len(miss) == 1 and miss[["file", "settings_hash", "commit", "dirty"]].isna().all(axis=None)
    got = prov[(prov.cell == "dec/qwen-s/r4") & (prov.file == "eval/ko_faitheval.json")]
    assert got["commit"].iloc[0] == rf.COMMIT and len(got["settings_hash"].iloc[0]) == 64


def test_load_rag_values_and_missing_cells(run):
    rag = collect.load_rag(run["out"], run["cells"], run["models"]).set_index("cell")
    cell = "dec/qwen-l/r16"
    assert bool(rag.at[cell, "present"]) and rag.at[cell, "em"] == 0.2 and rag.at[cell, "n"] == 24
    assert rag.at[cell, "f1"] == pytest.approx(0.3 + 0.01 * (rf._seed(cell) % 7))
    assert not bool(rag.at[rf.MISSING, "present"]) and rag.loc[rf.MISSING, ["em", "f1", "n"]].isna().all()
    assert rag["present"].tolist() == [c != rf.MISSING for c in rag.index]


def test_sd_breakdown_fields_intervals_and_the_older_format(run, tmp_path):
    sd, dims = collect.load_sd_breakdown(run["out"], run["cells"], run["models"])
    cell = "dec/qwen-s/r16"
    got = sd[(sd["cell"] == cell) & (sd["source"] == "fineweb")].iloc[0]
    assert got["task"] == "sd_fineweb" and got["compressor"] == "qwen-s" and got["ratio"] == 16
    rows = rf.sd_rows(cell, "sd_fineweb")
    una = [r["correct"] for r in rows if not r["answerable"]]
    v = sum(una) / len(una)
    # the fixture writes each part's interval as value -/+ 0.1 (clipped to [0, 1]) and its question count
    assert got["unanswerable"] == pytest.approx(v) and got["unanswerable_n"] == len(una) == rf.N_CONTEXTS
    assert (got["unanswerable_ci_low"], got["unanswerable_ci_high"]) == pytest.approx(tuple(rf.interval(v, 0.1)))
    assert got["all_ci_low"] == pytest.approx(rf.interval(rf.stored_value(cell, "sd_fineweb"))[0])
    assert got["em"] == pytest.approx(rf.stored_value(cell, "sd_fineweb") - 0.01)
    assert "dim_unanswerable" not in sd  # the unanswerable dimension is the `unanswerable` part
    # older files: bare answerable/unanswerable accuracies, no intervals, no dimensions
    old = tmp_path / "eval" / "d/c/r4"
    old.mkdir(parents=True)
    (old / "sd_faitheval.json").write_text(json.dumps(
        {"value": 0.5, "details": {"answerable_accuracy": 0.6, "unanswerable_accuracy": 0.2}}))
    sd, dims = collect.load_sd_breakdown(tmp_path, ["d/c/r4"], {})
    assert dims == [] and sd["source"].tolist() == ["fineweb", "faitheval"]
    fe = sd.iloc[1]
    assert (fe["all"], fe["answerable"], fe["unanswerable"]) == (0.5, 0.6, 0.2)
    assert math.isnan(fe["answerable_ci_low"]) and math.isnan(fe["answerable_n"])
    fw = sd.iloc[0]  # no file at all: every part NaN, never 0
    assert all(math.isnan(fw[c]) for c in ("all", "answerable", "unanswerable", "em", "em_ci_high", "all_n"))
    none, dims = collect.load_sd_breakdown(tmp_path, [], {})  # no cells yet: the columns still exist, numeric
    for part in ("all", "answerable", "unanswerable", "em"):
        for c in (part, f"{part}_ci_low", f"{part}_ci_high", f"{part}_n"):
            assert none[c].dtype == float, c
    assert none.empty and dims == []


def test_provenance_rows_of_a_partly_computed_cell(tmp_path):
    cell = "dec/qwen-s/r4"
    rf.write_cell(tmp_path, cell, rag=False)
    (tmp_path / "eval" / cell / "ko_faitheval.json").unlink()  # one result missing in the middle of the list
    (tmp_path / "probes" / cell / "probes.json").write_text(json.dumps(
        {"provenance": {"commit": "abc", "settings_hash": "h1", "dirty": True}}))
    (tmp_path / "eval" / cell / "rank_truncation.json").write_text("[1, 2]")  # not an object: no provenance
    prov = collect.provenance_rows(tmp_path, [cell]).set_index("file")
    want = {f"eval/{t}.json" for t in collect.TASKS if t != "ko_faitheval"}
    assert set(prov.index) == want | {"eval/rank_truncation.json", "probes/probes.json", "train/summary.json"}
    assert prov.at["probes/probes.json", "dirty"] is True and prov.at["probes/probes.json", "commit"] == "abc"
    assert prov.at["eval/sd_fineweb.json", "dirty"] is False
    assert prov.loc["eval/rank_truncation.json", ["settings_hash", "commit", "dirty"]].isna().all()
    empty = collect.provenance_rows(tmp_path, [])
    assert empty.empty and list(empty.columns) == ["cell", "file", "settings_hash", "commit", "dirty"]


def test_dynamics_files_from_paths_without_checkpoints_and_empty_samples(run, tmp_path):
    train = Path(run["out"]) / "dynamics" / run["dynamics_cell"] / "train" / "dynamics.csv"
    files = collect.DynamicsFiles.from_paths([str(train)])
    assert files == collect.DynamicsFiles(None, None, train)
    tdyn = collect.load_train_dynamics(files)
    assert tdyn["step"].tolist() == [rf.PROBE_EVERY * (k + 1) for k in range(rf.N_CHECKPOINTS)]
    assert tdyn["erank"].tolist() == pytest.approx([rf.dyn_erank(k) + 0.5 for k in range(rf.N_CHECKPOINTS)])
    (tmp_path / "checkpoints.samples.jsonl").write_text("")
    empty = collect.DynamicsFiles(samples=tmp_path / "checkpoints.samples.jsonl")
    assert collect.load_checkpoint_samples(empty) is None
