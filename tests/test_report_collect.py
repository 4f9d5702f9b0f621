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


def _entropy_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_entropy_drift_join_edge_cases(tmp_path):
    out = tmp_path
    # cell a: no semantic-drift rows at all (skipped); cell b after it: integer context ids in both files
    _entropy_rows(out / "probes" / "d/a/r4" / "entropy.samples.jsonl",
                  [{"context_id": 1, "source": "fineweb", "entropy": 2.0, "n_tokens": 5}])
    _entropy_rows(out / "probes" / "d/b/r4" / "entropy.samples.jsonl",
                  [{"context_id": 7, "source": "fineweb", "entropy": 3.0, "n_tokens": 5},
                   {"context_id": 8, "source": "fineweb", "entropy": 4.0, "n_tokens": 6}])
    _entropy_rows(out / "eval" / "d/b/r4" / "sd_fineweb.samples.jsonl",
                  [{"context_id": 7, "correct": True}, {"context_id": 7, "correct": False},
                   {"context_id": 8, "correct": True}])
    ed = collect.load_entropy_drift(out, ["d/a/r4", "d/b/r4"], {})
    assert ed.index.tolist() == [0, 1] and ed["cell"].tolist() == ["d/b/r4", "d/b/r4"]
    assert ed[["context_id", "entropy", "drift_accuracy", "n_questions"]].values.tolist() == [
        ["7", 3.0, 0.5, 2], ["8", 4.0, 1.0, 1]]
    ent = collect.load_entropy_samples(out, ["d/a/r4", "d/b/r4"], {})
    assert list(ent.columns)[:11] == [*collect.CELL_COLUMNS, "source", "context_id", "entropy", "n_tokens"]
    assert ent.index.tolist() == [0, 1, 2]
    # the same (source, context) twice with different numbers: refused, naming the file, the count and the first
    _entropy_rows(out / "probes" / "d/b/r4" / "entropy.samples.jsonl",
                  [{"context_id": 7, "source": "fineweb", "entropy": 3.0}, {"context_id": 7, "source": "fineweb",
                                                                            "entropy": 3.5},
                   {"context_id": 9, "source": "fineweb", "entropy": 1.0}, {"context_id": 9, "source": "fineweb",
                                                                            "entropy": 1.0}])
    with pytest.raises(ValueError, match=r"probes/d/b/r4/entropy\.samples\.jsonl: 4 rows share a \(source, "
                                         r"context_id\), e\.g\. \['fineweb', '7'\]"):
        collect.load_entropy_drift(out, ["d/b/r4"], {})
    _entropy_rows(out / "probes" / "d/c/r4" / "entropy.samples.jsonl", [{"context_id": "x", "source": "s",
                                                                          "entropy": 1.0}])
    old = collect.load_entropy_samples(out, ["d/c/r4"], {})  # an older file without n_tokens: NaN, numeric
    assert old["n_tokens"].dtype == float and old["n_tokens"].isna().all()


def test_cell_frame_and_eval_dtypes(run, tmp_path):
    cf = collect.cell_frame(["d/unknown-x/r8"], {})
    assert cf.iloc[0].tolist()[:6] == ["d/unknown-x/r8", "d", "unknown-x", 8, "?", "unknown-x"]
    assert math.isnan(cf.iloc[0]["params_b"])
    assert list(collect.cell_frame([], {}).columns) == list(collect.CELL_COLUMNS)
    ev = collect.load_eval(run["out"], run["cells"], run["models"])
    assert str(ev["ko_faitheval_no_memory_distinguishable"].dtype) == "boolean"
    assert str(ev["ko_faitheval_above_chance"].dtype) == "boolean"
    assert all(str(ev[f"ko_faitheval_{k}"].dtype) == "Int64" for k in ("n", "resamples", "seed"))
    line = next(x for x in ev.to_csv(index=False).splitlines()[1:] if x.startswith("dec/qwen-s/r4"))
    assert ",200," in line and ",1234," in line and ",200.0," not in line  # counts stay integers in the CSV


def test_task_fields_controls_chance_boundary_and_norm_interval():
    res = {"value": 0.5, "n": 10, "ci95": [0.25, 0.7], "bootstrap": {"resamples": 50, "seed": 3},
           "controls": {"shuffled_z": {"value": 0.3, "ci95": [0.2, 0.4], "diff_ci95": [0.1, 0.3],
                                       "distinguishable": True},
                        "no_memory": {"value": 0.45, "ci95": [0.35, 0.55], "diff_ci95": [-0.1, 0.2],
                                      "distinguishable": False},
                        "chance": {"value": 0.25}},
           "details": {"accuracy_norm": {"value": 0.55, "ci95": [0.4, 0.65]}}}
    f = collect.task_fields(res, "ko_x")
    assert (f["ko_x_shuffled_z_ci_low"], f["ko_x_shuffled_z_ci_high"]) == (0.2, 0.4)
    assert (f["ko_x_no_memory_diff_ci_low"], f["ko_x_no_memory_distinguishable"]) == (-0.1, False)
    assert f["ko_x_chance"] == 0.25 and f["ko_x_above_chance"] is False  # the interval starts AT chance
    assert (f["ko_x_norm"], f["ko_x_norm_ci_low"], f["ko_x_norm_ci_high"]) == (0.55, 0.4, 0.65)
    assert (f["ko_x_resamples"], f["ko_x_seed"], f["ko_x_n"]) == (50, 3, 10)
    bare = collect.task_fields({**res, "details": {"accuracy_norm": 0.6}}, "ko_x")  # older: a bare number
    assert bare["ko_x_norm"] == 0.6 and math.isnan(bare["ko_x_norm_ci_low"])


def test_rank_truncation_reading_details(tmp_path):
    d = tmp_path / "eval" / "d/c/r4"
    d.mkdir(parents=True)
    (d / "rank_truncation.json").write_text(json.dumps({
        "variant": "batch",  # an older file: the variant once, for all rows
        "results": [{"energy": 0.9, "ko_faitheval": {"value": 0.4, "ci95": [0.3, 0.5]}, "mean_rank": 3.0},
                    {"energy": 0.5, "ko_faitheval": {"value": 0.2, "ci95": [0.1, 0.3]}, "mean_rank": 1.0},
                    {"variant": "other", "energy": 0.7, "ko_faitheval": 0.1, "mean_rank": 2.0}],
        "full_rank": {"ko_faitheval": {"value": 0.6, "ci95": [0.5, 0.7]}}}))
    rt = collect.load_rank_truncation(tmp_path, ["d/c/r4"], {}).set_axis(range(4))
    assert rt["variant"].tolist() == ["batch", "batch", "other", "full"]  # unknown variants before the reference
    assert rt["energy"].tolist()[:3] == [0.5, 0.9, 0.7] and math.isnan(rt["energy"].iloc[3])
    assert rt[["ko_faitheval_ci_low", "ko_faitheval_ci_high"]].values.tolist()[:2] == [[0.1, 0.3], [0.3, 0.5]]
    assert rt.at[3, "ko_faitheval"] == 0.6 and rt.at[3, "ko_faitheval_ci_high"] == 0.7
    assert "index" not in rt and math.isnan(rt.at[3, "mean_rank"])
    (d / "rank_truncation.json").write_text(json.dumps({"results": [{"energy": 0.5, "ko_faitheval": 0.3}]}))
    assert collect.load_rank_truncation(tmp_path, ["d/c/r4"], {})["variant"].tolist() == ["per_sample", "full"]
    empty = collect.load_rank_truncation(tmp_path, [], {})
    assert empty.empty and list(empty.columns)[:10] == [*collect.CELL_COLUMNS, "variant", "setting", "energy"]


def test_parse_cell_accepts_surrounding_slashes_and_names_a_bad_path():
    assert collect.parse_cell("/dec/c/r4/") == {"decoder": "dec", "compressor": "c", "ratio": 4}
    with pytest.raises(ValueError, match=r"not a cell path 'decoder/compressor/r<ratio>': 'dec/c/x4'"):
        collect.parse_cell("dec/c/x4")


def test_result_files_are_read_as_utf8_whatever_the_locale(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "r.json").write_bytes('{"note": "M\u00fcller \u2014 ok"}'.encode())
    code = ("import sys; from ctxcomp.report import collect; "
            "assert collect.read_json_or_none(sys.argv[1])['note'] == 'M\\u00fcller \\u2014 ok'")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8"))}
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0",
               PYTHONPATH=os.pathsep.join([str(root / "workflow"), env.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.json")], env=env, check=True, timeout=120)
