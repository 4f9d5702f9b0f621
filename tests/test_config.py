"""Config validation (schema + references) and the DAG of the real config (dry runs)."""
from __future__ import annotations

import copy

import pytest
import yaml

from ctxcomp import config as C
from snakemake_helpers import ROOT, dry_run, run_snakemake


@pytest.fixture(scope="module")
def real() -> dict:
    return C.load_config(ROOT / "config.yaml")


def test_real_config_matrix(real):
    assert len(C.main_cells(real)) == 27
    assert len(C.ablation_cells(real)) == 6
    assert {c.decoder for c in C.main_cells(real)} == {"llama3-8b-instruct"}
    assert real["models"]["qwen3-4b"]["hf_id"] == "Qwen/Qwen3-4B"
    dyn = C.dynamics_cell(real)
    assert (dyn.compressor, dyn.ratio) == ("qwen3-0.6b", 16)


def test_tiny_preset_has_two_families_three_sizes():
    cfg = C.load_config(ROOT / "config.yaml", ROOT / "workflow/presets/tiny.yaml")
    fams = {}
    for name in cfg["compressors"]:
        spec = cfg["models"][name]
        fams.setdefault(spec["build"]["arch"], set()).add(spec["size"])
    assert fams == {"qwen3": {"S", "M", "L"}, "llama": {"S", "M", "L"}}
    assert cfg["ratios"] == [4, 16, 64]


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda c: c.update(colour="blue"), "unknown key"),
        (lambda c: c["train"].update(lr=-1), "train.lr"),
        (lambda c: c["train"].update(learning_rate=1e-4), "train"),
        (lambda c: c["models"]["qwen3-4b"].update(finetune="partial"), "models.qwen3-4b.finetune"),
        (lambda c: c.update(ratios=[4, 16, 7]), "ratios.2"),
        (lambda c: c.update(decoder="gpt-5"), "decoder"),
        (lambda c: c["train"].update(cell_overrides={"qwen3-4b/32": {"lr": 1e-5}}), "cell_overrides.qwen3-4b/32"),
        (lambda c: c["models"]["qwen3-4b"]["train_resources"].update(gpu="four"), "train_resources.gpu"),
    ],
)
def test_bad_values_are_named(real, mutate, fragment):
    bad = copy.deepcopy(yaml.safe_load((ROOT / "config.yaml").read_text()))
    mutate(bad)
    with pytest.raises(C.ConfigError) as err:
        C.validate(bad)
    assert fragment in str(err.value)


def test_cell_override_changes_only_that_cell(real):
    """`compressor/ratio` is the main decoder's cell only; an ablation cell is addressed with its decoder."""
    cfg = copy.deepcopy(real)
    before = {c: C.train_settings(cfg, c) for c in C.all_cells(cfg)}
    cfg["train"]["cell_overrides"] = {"qwen3-4b/16": {"lr": 5e-5}, "qwen3-0.6b/qwen3-8b/16": {"lr": 2e-5}}
    C.validate(cfg)
    changed = {(c.decoder, c.compressor, c.ratio): C.train_settings(cfg, c)["train"]["lr"]
               for c in C.all_cells(cfg) if C.train_settings(cfg, c) != before[c]}
    assert changed == {("llama3-8b-instruct", "qwen3-4b", 16): 5e-5, ("qwen3-0.6b", "qwen3-8b", 16): 2e-5}


def test_dry_run_all_plans_27_training_jobs():
    counts = dry_run(["all"])
    assert counts["train_compressor"] == 27
    assert counts["evaluate_cell"] == 27  # evaluation and probes of a cell: one job
    assert "probe_cell" not in counts
    assert counts["probe_dynamics"] == 1
    assert counts["report_main"] == 1
    assert counts["prepare_qa"] == 2 and counts["generate_questions"] == 2 and counts["prepare_fineweb"] == 1
    assert "train_tokenizer" not in counts and "pretrain_base" not in counts  # hub models need no pretraining


def test_dry_run_paper_adds_the_ablation():
    counts = dry_run(["paper"])
    assert counts["train_compressor"] == 33
    assert counts["report_ablation"] == 1


def test_dry_run_single_cell_by_output_path():
    counts = dry_run(["results/paper/eval/llama3-8b-instruct/qwen3-4b/r16/ko_faitheval.json"])
    assert counts["train_compressor"] == 1 and counts["evaluate_cell"] == 1
    assert "probe_dynamics" not in counts and "report_main" not in counts


def test_dry_run_single_cell_probes_by_output_path():
    """A cell's probes come from its evaluation job: asking for them plans that one job (and its training)."""
    counts = dry_run(["results/paper/probes/llama3-8b-instruct/qwen3-4b/r16/probes.json"])
    assert counts["train_compressor"] == 1 and counts["evaluate_cell"] == 1
    assert set(counts) <= {"train_compressor", "evaluate_cell", "prepare_fineweb", "prepare_qa", "generate_questions",
                           "total"}, counts


def test_snakemake_rejects_bad_config_with_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: fast\n")
    proc = run_snakemake(["-n", "--nolock", "all", "--configfile", "config.yaml", str(bad)], check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "lr" in text and "fast" in text


def test_snakemake_rejects_unknown_model_reference(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("decoder: no-such-model\n")
    proc = run_snakemake(["-n", "--nolock", "all", "--configfile", "config.yaml", str(bad)], check=False)
    assert proc.returncode != 0
    assert "no-such-model" in proc.stdout + proc.stderr
