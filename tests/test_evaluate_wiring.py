"""The cell jobs' wiring on stub tasks (milliseconds, no model): which settings reach which task, what each output
file holds, and the dynamics job's checks. The tasks themselves are tested in test_evaluate*.py; one real cell end
to end in test_evaluate_cell.py."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from ctxcomp.config import fill_section
from ctxcomp.evaluate import cell as cell_m
from ctxcomp.evaluate import probes as probes_m
from ctxcomp.evaluate import rag as rag_m
from ctxcomp.evaluate.controls import Bootstrap
from ctxcomp.io import read_jsonl, write_jsonl
from ctxcomp.paths import EVAL_TASKS

PROV = {"commit": "c0ffee", "settings_hash": "s"}


def _settings(segment: dict | None = None, **evaluate) -> dict:
    """Evaluation settings as the rule passes them (ctxcomp.config.eval_settings of a validated config): the given
    keys over the schema's defaults."""
    ev = {"batch_size": 3, "max_records": 2, "recon_max_new_tokens": 11, "answer_max_new_tokens": 7,
          "probe_batch_size": 2, "bootstrap_resamples": 123, "rag": {"top_k": 4}, **evaluate}
    seg = {"segment_tokens": 64, "continuation_tokens": 32, "max_segments": 5} if segment is None else segment
    return {"evaluate": fill_section("evaluate", ev), "segment": fill_section("segment", seg), "seed": 42,
            "cell": {"decoder": "d", "compressor": "c", "ratio": 8}, "gpus": 2}


class Loaded:
    """What _load returns, recording its calls."""

    def __init__(self):
        self.calls = []
        self.model, self.collate = object(), object()

    def __call__(self, final_dir, compressor_dir=None, head_file=None, gpus=None):
        self.calls.append((final_dir, compressor_dir, head_file, gpus))
        return self.model, self.collate, {"provenance": {"settings_hash": "model-hash"}}


def _summary(task: str, value: float) -> dict:
    return {"metric": task, "value": value, "ci95": [value - 0.1, value + 0.1], "n": 2,
            "controls": {"shuffled_z": {"value": value / 2}}}


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    loaded = Loaded()
    calls: dict[str, list] = {}
    monkeypatch.setattr(cell_m, "_load", loaded)
    monkeypatch.setattr(cell_m, "provenance", lambda settings: dict(PROV))

    def record(name, value):
        def fn(model, collate, recs, *args, **kw):
            assert (model, collate) == (loaded.model, loaded.collate)
            calls.setdefault(name, []).append((list(recs), args, kw))
            return _summary(name, value), [{"id": r.get("id", r.get("context_id")), "x": "\u00fc"} for r in recs]
        return fn

    monkeypatch.setattr(cell_m.tasks, "reconstruction", record("recon", 0.31))
    ko_values = iter([0.52, 0.63])
    monkeypatch.setattr(cell_m.tasks, "knowledge_overwriting",
                        lambda *a, **k: record("ko", next(ko_values))(*a, **k))
    sd_values = iter([0.44, 0.55])
    monkeypatch.setattr(cell_m.tasks, "semantic_drift", lambda *a, **k: record("sd", next(sd_values))(*a, **k))

    def trunc(model, collate, datasets, energies, bs, max_seg, boot):
        calls["trunc"] = (dict(datasets), list(energies), bs, max_seg, boot)
        return {"energies": list(energies), "results": [], "full_rank": {"ko_faitheval": 0.5}}

    monkeypatch.setattr(cell_m.tasks, "rank_truncation", trunc)

    def rag(model, collate, recs, top_k, bs, max_new, resamples, seed):
        calls["rag"] = (list(recs), top_k, bs, max_new, resamples, seed)
        return {"em": 0.25, "f1": 0.5, "n": len(recs)}, [{"id": r["id"]} for r in recs]

    monkeypatch.setattr(rag_m, "musique_rag", rag)
    inputs = {"model": str(tmp_path / "final")}
    for name, rows in (("fineweb", [{"id": f"fw{i}", "text": f"t{i}"} for i in range(4)]),
                       ("faitheval", [{"id": f"fe{i}", "context": f"c{i}"} for i in range(3)]),
                       ("conflictqa", [{"id": f"cq{i}"} for i in range(5)]),
                       ("musique", [{"id": f"m{i}"} for i in range(3)]),
                       ("sd_fineweb", [{"context_id": f"s{i}"} for i in range(4)]),
                       ("sd_faitheval", [{"context_id": f"t{i}"} for i in range(3)])):
        inputs[name] = str(tmp_path / f"{name}.jsonl")
        write_jsonl(inputs[name], rows)
    out = tmp_path / "eval"
    outputs = {t: str(out / f"{t}.json") for t in EVAL_TASKS}
    outputs.update({"truncation": str(out / "rank_truncation.json"), "rag": str(out / "rag_musique.json")})
    return loaded, calls, inputs, outputs


def test_evaluate_cell_passes_the_settings_and_writes_every_task(stubbed):
    loaded, calls, inputs, outputs = stubbed
    s = _settings(truncation_energy=[0.7, 1.0])
    results = cell_m.evaluate_cell(s, inputs, outputs)
    assert results == {"recon_fineweb": 0.31, "ko_faitheval": 0.52, "ko_conflictqa": 0.63, "sd_fineweb": 0.44,
                       "sd_faitheval": 0.55, "rag_musique": 0.25}
    assert loaded.calls == [(inputs["model"], None, None, 2)]  # loaded once, on the job's GPUs
    assert torch.initial_seed() == 42
    boot = Bootstrap(123, 42)
    (recs, args, kw), = calls["recon"]
    assert [r["id"] for r in recs] == ["fw0", "fw1"] and args == (3, 11) and kw == {"boot": boot, "controls": True}
    assert [([r["id"] for r in c[0]], c[1], c[2]) for c in calls["ko"]] == [
        (["fe0", "fe1"], (3, 5), {"boot": boot, "controls": True}),
        (["cq0", "cq1"], (3, 5), {"boot": boot, "controls": True})]
    # semantic drift reads every context of its question file (max_records caps evaluation sets, not questions)
    assert [([r["context_id"] for r in c[0]], c[1], c[2]) for c in calls["sd"]] == [
        (["s0", "s1", "s2", "s3"], (3, 5, 7), {"boot": boot, "controls": True}),
        (["t0", "t1", "t2"], (3, 5, 7), {"boot": boot, "controls": True})]
    datasets, energies, bs, max_seg, tboot = calls["trunc"]
    assert {k: [r["id"] for r in v] for k, v in datasets.items()} == {"faitheval": ["fe0", "fe1"],
                                                                        "conflictqa": ["cq0", "cq1"]}
    assert (energies, bs, max_seg, tboot) == ([0.7, 1.0], 3, 5, boot)
    assert calls["rag"][1:] == (4, 3, 7, 123, 42) and [r["id"] for r in calls["rag"][0]] == ["m0", "m1"]
    for task, value in results.items():
        if task == "rag_musique":
            continue
        summary = json.loads(Path(outputs[task]).read_text(encoding="utf-8"))
        assert summary == {"task": task, **_summary({"recon_fineweb": "recon"}.get(task, task[:2]), value),
                           "cell": s["cell"], "samples": f"{task}.samples.jsonl",
                           "provenance": {**PROV, "model_settings_hash": "model-hash"}}
        samples = read_jsonl(Path(outputs[task]).with_name(f"{task}.samples.jsonl"))
        assert samples and all(r["x"] == "\u00fc" for r in samples)
    trunc = json.loads(Path(outputs["truncation"]).read_text())
    assert trunc["cell"] == s["cell"] and trunc["energies"] == [0.7, 1.0] and trunc["provenance"]["commit"] == "c0ffee"
    assert json.loads(Path(outputs["rag"]).read_text())["em"] == 0.25


def test_evaluate_cell_defaults(stubbed):
    loaded, calls, inputs, outputs = stubbed
    del outputs["rag"]
    # the schema's defaults reach the tasks: max_records 0 (no cap), max_segments 4, the five truncation energies
    s = _settings(segment={"segment_tokens": 64, "continuation_tokens": 32}, max_records=0)
    results = cell_m.evaluate_cell(s, inputs, outputs)
    assert "rag_musique" not in results and "rag" not in calls  # RAG only when the rule asks for its file
    assert len(calls["recon"][0][0]) == 4 and calls["ko"][1][1] == (3, 4)
    assert calls["trunc"][1] == [0.5, 0.8, 0.9, 0.95, 0.99]


def test_rag_cell_alone(stubbed):
    loaded, calls, inputs, outputs = stubbed
    s = _settings(rag={})
    summary = cell_m.rag_cell(s, inputs, outputs["rag"])
    assert summary == {"em": 0.25, "f1": 0.5, "n": 2} and loaded.calls == [(inputs["model"], None, None, 2)]
    assert calls["rag"][1:] == (5, 3, 7, 123, 42)  # top_k 5 by default
    written = json.loads(Path(outputs["rag"]).read_text())
    assert written == {**summary, "cell": s["cell"], "provenance": PROV}
    assert read_jsonl(Path(outputs["rag"]).with_name("rag_musique.samples.jsonl")) == [{"id": "m0"}, {"id": "m1"}]


def test_probe_cell_rows_and_means(stubbed, tmp_path, monkeypatch):
    loaded, calls, inputs, outputs = stubbed
    seen = {}

    class Collate:
        def __call__(self, recs):
            seen["batch"] = [r["id"] for r in recs]
            return {"comp_ids": torch.zeros(2, 3), "ids": ["not a tensor"]}

    loaded.collate = Collate()
    loaded.model = torch.nn.Linear(1, 1)

    def probe_batch(model, batch, chunk):
        seen["probe"] = (sorted(batch), chunk)
        return {"erank": 3.5, "batch": 2, "z": torch.zeros(2, 4, 6)}

    def context_entropy(model, collate, texts, max_seg, bs, chunk):
        seen.setdefault("entropy", []).append((list(texts), max_seg, bs, chunk))
        return [(1.0 + i + len(texts), 10 * (i + 1), i + 1) for i in range(len(texts))]

    monkeypatch.setattr(probes_m, "probe_batch", probe_batch)
    monkeypatch.setattr(probes_m, "context_entropy", context_entropy)
    out = {"probes": str(tmp_path / "probes" / "probes.json"), "samples": str(tmp_path / "probes" / "e.jsonl")}
    s = _settings(entropy_vocab_chunk=99)
    got = cell_m.probe_cell(s, inputs, out)
    assert seen["batch"] == ["fw0", "fw1"] and seen["probe"] == (["comp_ids", "ids"], 99)  # probe_batch_size rows
    assert seen["entropy"] == [(["t0", "t1"], 5, 3, 99), (["c0", "c1"], 5, 3, 99)]  # capped, drift segments
    rows = read_jsonl(out["samples"])
    assert rows == [{"context_id": "fw0", "source": "fineweb", "entropy": 3.0, "n_tokens": 10, "segments": 1},
                    {"context_id": "fw1", "source": "fineweb", "entropy": 4.0, "n_tokens": 20, "segments": 2},
                    {"context_id": "fe0", "source": "faitheval", "entropy": 3.0, "n_tokens": 10, "segments": 1},
                    {"context_id": "fe1", "source": "faitheval", "entropy": 4.0, "n_tokens": 20, "segments": 2}]
    assert got == json.loads(Path(out["probes"]).read_text())
    assert (got["erank"], got["erank_batch"], got["erank_shape"], got["entropy_mean"]) == (3.5, 2, [2, 4, 6], 3.5)
    assert got["entropy_by_source"] == {"fineweb": 3.5, "faitheval": 3.5} and got["max_segments"] == 5
    assert got["cell"] == s["cell"] and got["provenance"] == PROV


def test_evaluate_and_probe_cell_loads_the_cell_once_for_tasks_and_probes(stubbed, tmp_path, monkeypatch):
    """The evaluate_cell rule's entry: one load, every task file and both probe files, the tasks seeded first."""
    loaded, calls, inputs, outputs = stubbed
    loaded.model = torch.nn.Linear(1, 1)
    loaded.collate = lambda recs: {"comp_ids": torch.zeros(len(recs), 3)}
    order = []
    for name in ("reconstruction", "knowledge_overwriting", "semantic_drift"):
        fn = getattr(cell_m.tasks, name)
        monkeypatch.setattr(cell_m.tasks, name, lambda *a, _fn=fn, _n=name, **k: (order.append(_n), _fn(*a, **k))[1])

    def probe_batch(model, batch, chunk):
        assert model is loaded.model and torch.initial_seed() == 42
        order.append("probe_batch")
        return {"erank": 2.5, "batch": 2, "z": torch.zeros(2, 4, 6)}

    def context_entropy(model, collate, texts, max_seg, bs, chunk):
        assert (model, collate) == (loaded.model, loaded.collate)
        return [(2.0, 5, 1) for _ in texts]

    monkeypatch.setattr(probes_m, "probe_batch", probe_batch)
    monkeypatch.setattr(probes_m, "context_entropy", context_entropy)
    outputs.update({"probes": str(tmp_path / "probes" / "probes.json"),
                    "probes_samples": str(tmp_path / "probes" / "entropy.samples.jsonl")})
    got = cell_m.evaluate_and_probe_cell(_settings(), inputs, outputs)
    assert loaded.calls == [(inputs["model"], None, None, 2)]  # one load serves the tasks and the probes
    assert got == {"recon_fineweb": 0.31, "ko_faitheval": 0.52, "ko_conflictqa": 0.63, "sd_fineweb": 0.44,
                   "sd_faitheval": 0.55, "rag_musique": 0.25, "erank": 2.5, "entropy_mean": 2.0}
    assert order[-1] == "probe_batch" and order.count("probe_batch") == 1  # probes after every task
    for key in (*EVAL_TASKS, "truncation", "rag"):
        assert Path(outputs[key]).is_file(), key
    probes = json.loads(Path(outputs["probes"]).read_text())
    assert (probes["erank"], probes["entropy_mean"], probes["cell"]) == (2.5, 2.0, _settings()["cell"])
    assert [r["context_id"] for r in read_jsonl(outputs["probes_samples"])] == ["fw0", "fw1", "fe0", "fe1"]


def test_margin():
    assert cell_m._margin({"loglik_sum": [-1.0, -3.0, -2.5], "correct_index": 0}) == 1.5
    assert cell_m._margin({"loglik_sum": [-4.0, -3.0, -2.5], "correct_index": 1}) == -0.5
    assert math.isnan(cell_m._margin({"loglik_sum": [-1.0], "correct_index": 0}))


def _dynamics_inputs(tmp_path, steps, probed):
    ck = tmp_path / "probe_checkpoints"
    ck.mkdir(parents=True)
    for s in steps:
        d = ck / f"step_{s:08d}"
        (d / ("compressor_lora" if s == steps[-1] else "compressor")).mkdir(parents=True)
    (ck / "notes.txt").write_text("not a checkpoint")
    with open(tmp_path / "dynamics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "erank", "entropy"])
        w.writerows([[s, 10.0 + s, 2.0 - s / 100] for s in probed])
    inputs = {"model": str(tmp_path / "final"), "probe_checkpoints": str(ck),
              "dynamics": str(tmp_path / "dynamics.csv")}
    for name in ("faitheval", "conflictqa"):
        inputs[name] = str(tmp_path / f"{name}.jsonl")
        write_jsonl(inputs[name], [{"id": f"{name}{i}"} for i in range(3)])
    return inputs


def test_probe_dynamics_evaluates_every_probe_checkpoint(tmp_path, monkeypatch):
    loaded = Loaded()
    monkeypatch.setattr(cell_m, "_load", loaded)
    seen = []

    def ko(model, collate, recs, bs, max_seg, *rest, **kw):
        seen.append(([r["id"] for r in recs], bs, max_seg, rest, kw))
        rows = [{"id": r["id"], "correct": i == 0, "loglik_sum": [-1.0, -2.0 - i], "correct_index": i % 2}
                for i, r in enumerate(recs)]
        return {"value": 0.5 + len(seen) / 100}, rows

    monkeypatch.setattr(cell_m.tasks, "knowledge_overwriting", ko)
    inputs = _dynamics_inputs(tmp_path, [20, 10], [10, 20, 30])
    out = {"checkpoints": str(tmp_path / "out" / "checkpoints.csv"), "samples": str(tmp_path / "out" / "s.jsonl")}
    rows = cell_m.probe_dynamics(_settings(), inputs, out)
    ck = Path(inputs["probe_checkpoints"])
    assert loaded.calls == [
        (inputs["model"], str(ck / "step_00000010" / "compressor_lora"), str(ck / "step_00000010" / "head.pt"), 2),
        (inputs["model"], str(ck / "step_00000020" / "compressor"), str(ck / "step_00000020" / "head.pt"), 2)]
    assert seen[0] == (["faitheval0", "faitheval1"], 3, 5, (), {})  # capped, no controls at checkpoints
    assert rows == [{"step": 10, "erank": 20.0, "entropy": 1.9, "ko_faitheval": 0.51, "ko_conflictqa": 0.52},
                    {"step": 20, "erank": 30.0, "entropy": 1.8, "ko_faitheval": 0.53, "ko_conflictqa": 0.54}]
    with open(out["checkpoints"], newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == cell_m.DYNAMICS_COLUMNS and [float(r["ko_conflictqa"]) for r in table] == [0.52, 0.54]
    samples = read_jsonl(out["samples"])
    assert len(samples) == 2 * 2 * 2
    assert samples[:2] == [{"step": 10, "task": "ko_faitheval", "id": "faitheval0", "correct": True, "margin": 1.0},
                           {"step": 10, "task": "ko_faitheval", "id": "faitheval1", "correct": False, "margin": -2.0}]
    assert [s["task"] for s in samples] == ["ko_faitheval"] * 2 + ["ko_conflictqa"] * 2 + ["ko_faitheval"] * 2 + [
        "ko_conflictqa"] * 2


def test_probe_dynamics_refuses_missing_or_unprobed_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(cell_m, "_load", Loaded())
    out = {"checkpoints": str(tmp_path / "c.csv"), "samples": str(tmp_path / "s.jsonl")}
    inputs = _dynamics_inputs(tmp_path / "a", [10, 40, 50], [10])
    with pytest.raises(ValueError, match=r"dynamics\.csv: no erank/entropy row for probe checkpoint\(s\) "
                                         r"\['step_00000040', 'step_00000050'\]"):
        cell_m.probe_dynamics(_settings(), inputs, out)
    empty = _dynamics_inputs(tmp_path / "b", [], [10])
    with pytest.raises(FileNotFoundError, match=r"probe_checkpoints: no probe checkpoints \(was this run trained"):
        cell_m.probe_dynamics(_settings(), empty, out)
    assert not Path(out["checkpoints"]).exists() and not Path(out["samples"]).exists()


def test_cap():
    assert cell_m._cap([1, 2, 3], 2) == [1, 2] and cell_m._cap([1, 2, 3], 0) == [1, 2, 3]


def _diag_memory(sigmas, m=2, d=3):
    z = torch.zeros(m, d, dtype=torch.float64)
    for i, s in enumerate(sigmas):
        z[i, i] = s
    return z


def test_rank_truncation_variants_on_designed_spectra(monkeypatch):
    """Memories with known singular values; the stub KO scorer returns the total energy (sum of squares) of the
    memories it was given, so every row can be checked against a hand computation."""
    from ctxcomp.evaluate import tasks

    class Model:
        num_memory = 2

    zs = {"fa": [_diag_memory([3.0, 1.0]), torch.cat([_diag_memory([2.0, 0.0]), _diag_memory([1.0, 1.0])])],
          "cq": [_diag_memory([1.0, 1.0])]}
    datasets = {"fa": [{"context": "fa0"}, {"context": "fa1"}], "cq": [{"context": "cq0"}]}
    monkeypatch.setattr(tasks, "compress_texts",
                        lambda model, collate, texts, max_seg, bs: zs["fa" if texts[0].startswith("fa") else "cq"])
    seen = []

    def ko(model, collate, recs, bs, max_seg, memories, *, boot):
        seen.append((recs[0]["context"][:2], bs, max_seg, boot))
        energy = float(sum((z.double() ** 2).sum() for z in memories))
        return {"value": energy, "ci95": [energy - 1, energy + 1]}, []

    monkeypatch.setattr(tasks, "knowledge_overwriting", ko)
    boot = Bootstrap(77, 3)
    out = tasks.rank_truncation(Model(), None, datasets, [0.5, 0.95], 4, 2, boot)
    assert out["energies"] == [0.5, 0.95] and out["variants"] == ["per_sample", "batch"]
    assert out["full_rank"] == {"ko_fa": 9 + 1 + 4 + 2, "ko_cq": 2.0}
    assert all(s[1:] == (4, 2, boot) for s in seen)
    rows = {(r["variant"], r["energy"]): r for r in out["results"]}
    assert list(rows) == [("per_sample", 0.5), ("per_sample", 0.95), ("batch", 0.5), ("batch", 0.95)]
    # per sample, 50 %: the first memory keeps sigma 3 (9 of 10); the second (a context of two segments, stacked
    # 4 x 3: its first column holds 2 and 1, so sigma^2 = 5 and 1) keeps sqrt(5) (5 of 6); cq (1, 1) keeps one
    r = rows[("per_sample", 0.5)]
    assert (r["ko_fa"], r["rank_fa"], r["ko_cq"], r["rank_cq"]) == (pytest.approx(9 + 5, rel=1e-6), 1.0,
                                                                      pytest.approx(1.0, rel=1e-6), 1.0)
    assert r["ko_fa_ci95"] == [pytest.approx(13.0, rel=1e-6), pytest.approx(15.0, rel=1e-6)] and r["mean_rank"] == 1.0
    r = rows[("per_sample", 0.95)]  # 9/10 and 5/6 are below 95 %: two directions each, everything kept
    assert (r["ko_fa"], r["rank_fa"], r["rank_cq"]) == (pytest.approx(16.0, rel=1e-6), 2.0, 2.0)
    assert r["mean_rank"] == 2.0
    # batch: fa's three segment memories flattened to rows of M*d = 6, one SVD over them, a shared k
    flat = torch.stack([zs["fa"][0].reshape(-1), zs["fa"][1][:2].reshape(-1), zs["fa"][1][2:].reshape(-1)])
    s = torch.linalg.svdvals(flat)
    k95 = int((torch.cumsum(s ** 2, 0) / (s ** 2).sum() < 0.95).sum()) + 1
    assert rows[("batch", 0.95)]["rank_fa"] == float(k95)
    assert rows[("batch", 0.95)]["ko_fa"] == pytest.approx(float((s[:k95] ** 2).sum()))
    assert rows[("batch", 0.5)]["ko_fa"] == pytest.approx(float(s[0] ** 2))
