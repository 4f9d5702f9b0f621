"""Hostile edits seen through Snakemake: which jobs a change re-runs (data files, overrides, runtime-only settings),
what an empty or non-UTF-8 data file does to its job, and what a SIGTERM to Snakemake reports.

The parameter checks build the real DAG of the tiny preset (Snakemake's API, as `ctxcomp.plan` does) and read each
job's params, which is what Snakemake compares to decide a re-run. The others run cheap rules for real in a copy of
the repository."""
from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from snakemake_helpers import ROOT, copy_repo, run_snakemake, snakemake_cmd

TINY = ["config.yaml", "workflow/presets/tiny.yaml"]


def dag_params(extra: dict | None, tmp_path: Path, targets: tuple[str, ...] = ("paper", "lora_control"),
               rules: tuple[str, ...] = ("train_compressor", "train_dynamics")) -> dict[tuple, dict]:
    """{(rule, decoder, compressor, ratio) or (rule,): params} of every job of `targets` under the tiny preset (+
    `extra` as one more config file), from the DAG Snakemake builds."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    files = [ROOT / f for f in TINY]
    if extra:
        p = tmp_path / f"extra-{len(list(tmp_path.iterdir()))}.yaml"
        p.write_text(yaml.safe_dump(extra))
        files.append(p)
    out = OutputSettings(quiet={Quietness.ALL, Quietness.RULES, Quietness.PROGRESS, Quietness.HOST,
                                Quietness.REASON}, dryrun=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            SnakemakeApi(out) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=ROOT / "Snakefile", workdir=ROOT,
                          config_settings=ConfigSettings(configfiles=files))
        dag_api = wf.dag(DAGSettings(targets=set(targets), forceall=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        jobs = list(workflow.dag.jobs)
    found = {}
    for job in jobs:
        if job.rule.name in rules:
            wc = job.wildcards_dict
            key = (job.rule.name, *(wc[k] for k in ("decoder", "compressor", "ratio") if k in wc))
            found[key] = dict(job.params.items())
    return found


def changed(before: dict, after: dict) -> set:
    assert before.keys() == after.keys()
    return {k for k in before if json.dumps(before[k], sort_keys=True) != json.dumps(after[k], sort_keys=True)}


@pytest.fixture(scope="module")
def base_params(tmp_path_factory):
    return dag_params(None, tmp_path_factory.mktemp("cfg"), rules=("train_compressor", "train_dynamics",
                                                                      "report_main", "report_ablation"))


def test_short_override_key_changes_only_the_main_decoder_cell(base_params, tmp_path):
    after = dag_params({"train": {"cell_overrides": {"tiny-qwen-s/16": {"lr": 5.0e-3}}}}, tmp_path)
    before = {k: v for k, v in base_params.items() if k[0].startswith("train")}
    assert changed(before, after) == {("train_compressor", "tiny-llama-dec", "tiny-qwen-s", "16")}
    assert after[("train_compressor", "tiny-llama-dec", "tiny-qwen-s", "16")]["settings"]["train"]["lr"] == 5e-3


def test_full_key_addresses_an_ablation_cell(base_params, tmp_path):
    after = dag_params({"train": {"cell_overrides": {"tiny-qwen-m/tiny-qwen-s/16": {"warmup_steps": 3}}}}, tmp_path)
    before = {k: v for k, v in base_params.items() if k[0].startswith("train")}
    assert changed(before, after) == {("train_compressor", "tiny-qwen-m", "tiny-qwen-s", "16")}


def test_dynamics_key_changes_only_the_dynamics_run_and_is_honoured(base_params, tmp_path):
    after = dag_params({"train": {"cell_overrides": {"dynamics": {"lr": 2.0e-3}}},
                        "dynamics": {"max_steps": 120}}, tmp_path)
    before = {k: v for k, v in base_params.items() if k[0].startswith("train")}
    key = ("train_dynamics", "tiny-llama-dec", "tiny-qwen-s", "16")
    assert changed(before, after) == {key}
    tr = after[key]["settings"]["train"]
    assert (tr["lr"], tr["max_steps"], tr["probe_every"], tr["keep_probe_checkpoints"]) == (2e-3, 120, 16, True)
    # the Table 2 cell of the dynamics compressor follows its neighbours' protocol
    table = after[("train_compressor", "tiny-llama-dec", "tiny-qwen-s", "16")]["settings"]["train"]
    assert (table["max_steps"], table["probe_every"], table["keep_probe_checkpoints"]) == (100, 40, False)


def test_finetune_override_switches_one_cell_to_lora(base_params, tmp_path):
    after = dag_params({"train": {"cell_overrides": {"tiny-qwen-m/4": {"finetune": "lora"}}}}, tmp_path)
    key = ("train_compressor", "tiny-llama-dec", "tiny-qwen-m", "4")
    before = {k: v for k, v in base_params.items() if k[0].startswith("train")}
    assert changed(before, after) == {key}
    assert after[key]["settings"]["compressor"]["finetune"] == "lora"
    assert "finetune" not in after[key]["settings"]["train"]


def test_storage_and_placement_settings_change_no_params(base_params, tmp_path):
    """Checkpoint interval/retention, TensorBoard, Slurm partition, job memory/time: nothing re-runs."""
    extra = {"train": {"checkpoint_every": 7, "keep_checkpoints": 3, "keep_final_checkpoints": True,
                       "stale_checkpoints": "delete", "verify_checkpoints": "size", "tensorboard": False,
                       "cell_overrides": {"tiny-qwen-s/4": {"checkpoint_every": 5}}},
             "slurm": {"gpu_partition": "h100", "account": "lab"},
             "models": {"tiny-qwen-s": {"train_resources": {"gpu": 0, "mem_mb": 9000, "runtime": 99}}}}
    after = dag_params(extra, tmp_path, rules=("train_compressor", "train_dynamics", "report_main",
                                               "report_ablation"))
    assert changed(base_params, after) == set()


def test_a_result_setting_changes_the_report_params(base_params, tmp_path):
    after = dag_params({"train": {"lr": 2.0e-3}}, tmp_path, rules=("report_main",))
    assert changed({k: v for k, v in base_params.items() if k[0] == "report_main"}, after) == {("report_main",)}


# ------------------------------------------------------------------------------------- real cheap jobs
@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


def smk(repo: Path, *args: str, extra: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    files = list(TINY)
    if extra:
        (repo / "extra.yaml").write_text(yaml.safe_dump(extra))
        files.append("extra.yaml")
    return run_snakemake(["--profile", "profiles/tiny", *args, "--configfile", *files], cwd=repo, check=check,
                         timeout=600)


FAITH = "results/tiny/data/faitheval.jsonl"
FAITH_SRC = "workflow/data/faitheval/test.jsonl"


@contextlib.contextmanager
def edited(path: Path, content: bytes):
    original = path.read_bytes()
    path.write_bytes(content)
    try:
        yield
    finally:
        path.write_bytes(original)


def test_editing_a_local_data_file_reruns_its_preparation(repo):
    smk(repo, FAITH)
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(smk(repo, "-n", FAITH))
    src = repo / FAITH_SRC
    lines = src.read_bytes().splitlines(keepends=True)
    with edited(src, b"".join(lines[1:])):  # one record fewer
        proc = smk(repo, "-n", FAITH)
        text = proc.stdout + proc.stderr
        assert "prepare_qa" in text and "Updated input files" in text and FAITH_SRC in text


def test_empty_evaluation_set_fails_naming_the_minimum(repo):
    src = repo / FAITH_SRC
    with edited(src, b""):
        proc = smk(repo, "-f", FAITH, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "faitheval: 0 record(s)" in text and "data.faitheval.min_records=10" in text
    assert not (repo / FAITH).exists()


def test_non_utf8_bytes_are_a_malformed_row_with_file_and_line(repo):
    src = repo / FAITH_SRC
    original = src.read_bytes()
    n = original.count(b"\n")
    with edited(src, original + b'{"id": "x\xff\xfe"}\n'):
        proc = smk(repo, "-f", FAITH, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"test.jsonl:{n + 1}: not valid UTF-8 (byte 0xff at column 10)" in text


def test_missing_local_data_path_is_a_missing_input(repo):
    proc = smk(repo, "-n", "-f", FAITH, extra={"data": {"faitheval": {"path": "workflow/data/nowhere.jsonl"}}},
               check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Missing input files for rule prepare_qa" in text
    assert "workflow/data/nowhere.jsonl" in text


def test_question_runtime_settings_rerun_nothing(repo):
    target = "results/tiny/questions/faitheval.jsonl"
    smk(repo, target)
    runtime = {"questions": {"timeout_s": 5, "max_retries": 1, "concurrency": 2, "requests_per_minute": 10,
                             "price_per_mtok": {"input": 9, "output": 9}, "retry_backoff_s": 3,
                             "min_success_fraction": 0.5, "api_key_env": "OTHER_KEY"}}
    proc = smk(repo, "-n", target, extra=runtime)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    proc = smk(repo, "-n", target, extra={"questions": {"per_context": 10}})
    text = proc.stdout + proc.stderr
    assert "generate_questions" in text and "Params have changed" in text


def test_sigterm_to_snakemake_reports_what_happened(repo):
    """The running job finishes and is recorded; Snakemake says it was stopped, not that a job failed."""
    target = "results/tiny/tiny/tokenizers/llama-bpe"
    cmd = snakemake_cmd() + ["--profile", "profiles/tiny", target]
    log = repo / "sigterm.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=repo, stdout=fh, stderr=subprocess.STDOUT)
        end = time.time() + 120
        while "rule train_tokenizer" not in log.read_text():
            assert proc.poll() is None and time.time() < end, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=300)
    text = log.read_text()
    assert rc == 143, text[-3000:]
    assert "Snakemake stopped on SIGTERM" in text and "no job failed" in text
    assert "did not complete successfully" not in text
    assert (repo / target / "tokenizer.json").exists()
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(smk(repo, "-n", target))


def test_yaml_syntax_error_in_config_yaml_names_file_line_and_column(repo):
    cfg = repo / "config.yaml"
    text = cfg.read_text()
    line = text.splitlines().index("train:") + 2  # the line after `train:`, 1-based
    broken = text.replace("train:\n", "train:\n  lr: [1e-4\n", 1)
    with edited(cfg, broken.encode()):
        proc = run_snakemake(["-n", "all"], cwd=repo, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config.yaml:" in text and "YAML syntax error" in text
    assert f"config.yaml:{line + 1}:" in text  # PyYAML marks where the unclosed sequence meets the next key


def test_yaml_syntax_error_in_the_profiles_preset_names_file_line_and_column(repo):
    preset = repo / "workflow/presets/tiny.yaml"
    text = preset.read_text()
    n = len(text.splitlines())
    with edited(preset, (text + "extra:\n  - [unclosed\n").encode()):
        proc = run_snakemake(["--profile", "profiles/tiny", "-n", "paper"], cwd=repo, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "YAML syntax error" in out
    assert f"workflow/presets/tiny.yaml:{n + 3}:" in out  # the unclosed sequence meets the end of the file


def test_unknown_preset_is_a_config_error_naming_the_known_ones(repo):
    proc = run_snakemake(["-n", "paper", "--config", "preset=tinyy"], cwd=repo, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config error at 'preset': no preset 'tinyy' (workflow/presets/: tiny)" in out


def test_schema_error_is_one_line_and_exponent_numbers_are_accepted(repo):
    proc = smk(repo, "-n", "paper", extra={"train": {"lr": "fast"}}, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config error at 'train.lr': 'fast' is not of type 'number'" in text
    assert len(text.splitlines()) < 40  # not the validator's dump of the schema
    (repo / "exp.yaml").write_text("train:\n  lr: 1e-3\n  max_steps: 1e2\n")
    proc = run_snakemake(["--profile", "profiles/tiny", "-n", "paper", "--configfile", *TINY, "exp.yaml"], cwd=repo)
    assert proc.returncode == 0
