"""Hostile inputs without Snakemake: bad config files and values, malformed and empty data, NaN results, question
endpoint outages and short API keys. Each asserts the clear error (culprit named) or the correct result."""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from ctxcomp import config as C
from ctxcomp.data.qa import prepare_qa
from ctxcomp.data.readers import DataError, read_rows
from ctxcomp.io import read_jsonl, write_json, write_jsonl
from ctxcomp.questions.backends import RedactingFilter, redact
from ctxcomp.questions.run import QuestionsIncomplete, generate_questions
from openai_stub_server import error, questions_json, reply, stub_server  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
TINY = [ROOT / "config.yaml", ROOT / "workflow/presets/tiny.yaml"]


def tiny_raw() -> dict:
    cfg: dict = {}
    for p in TINY:
        cfg = C.deep_merge(cfg, yaml.safe_load(p.read_text()))
    return cfg


# ------------------------------------------------------------------------------------------------ config files
def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "preset.yaml"
    bad.write_text("run_name: tiny\ntrain: {lr: 1\nseed: 3\n")  # flow mapping never closed
    with pytest.raises(C.ConfigError) as err:
        C.load_config(TINY[0], bad)
    msg = str(err.value)
    assert f"{bad}:3:" in msg and "YAML syntax error" in msg
    bad.write_text("a: b: c\n")  # the second ':' is at line 1, column 5
    with pytest.raises(C.ConfigError, match=rf"{bad}:1:5: YAML syntax error: mapping values are not allowed"):
        C.load_config(bad)


def test_missing_and_non_mapping_config_files(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        C.load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(C.ConfigError, match="must hold a mapping"):
        C.load_config(tmp_path / "list.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"run_name: caf\xe9\n")
    with pytest.raises(C.ConfigError, match="not UTF-8"):
        C.load_config(tmp_path / "latin1.yaml")


@pytest.mark.parametrize("raw, key, value", [
    ("1e-3", ("train", "lr"), 0.001),
    ("5E-4", ("train", "lr"), 0.0005),
    ("1e3", ("train", "max_steps"), 1000),
    ("2e1", ("train", "warmup_steps"), 20),
])
def test_yaml11_exponent_numbers_are_numbers(tmp_path, raw, key, value):
    extra = tmp_path / "extra.yaml"
    extra.write_text(f"{key[0]}:\n  {key[1]}: {raw}\n")
    assert isinstance(yaml.safe_load(extra.read_text())[key[0]][key[1]], str)  # what PyYAML hands over
    cfg = C.load_config(*TINY, extra)
    assert cfg[key[0]][key[1]] == value and type(cfg[key[0]][key[1]]) is type(value)


def test_non_integral_string_is_still_rejected_where_an_integer_is_asked(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("train:\n  max_steps: 2.5e0\n")  # a number, but not an integer
    with pytest.raises(C.ConfigError, match=r"config error at 'train.max_steps': '2.5e0' is not of type"):
        C.load_config(*TINY, extra)


def test_schema_error_is_one_line_naming_the_key():
    cfg = tiny_raw()
    cfg["train"]["lr"] = "fast"
    cfg["questions"]["concurrency"] = 0
    with pytest.raises(C.ConfigError) as err:
        C.validate(cfg)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400
    assert msg.startswith("config error at 'questions.concurrency'") or msg.startswith("config error at 'train.lr'")
    assert "(and 1 more problem(s))" in msg


def override_cfg(overrides: dict, **top) -> dict:
    cfg = tiny_raw()
    cfg["train"]["cell_overrides"] = overrides
    cfg.update(top)
    return cfg


@pytest.mark.parametrize("mutate, fragment", [
    (lambda c: c["train"].update(cell_overrides={"tiny-qwen-s/32": {"lr": 1e-3}}),
     "'train.cell_overrides.tiny-qwen-s/32': no compressor/ratio cell of the main decoder 'tiny-llama-dec'"),
    (lambda c: c["train"].update(cell_overrides={"tiny-llama-dec/tiny-qwen-s/5": {"lr": 1e-3}}),
     "'train.cell_overrides.tiny-llama-dec/tiny-qwen-s/5': no such decoder/compressor/ratio cell"),
    (lambda c: c["train"].update(cell_overrides={"tiny-qwen-s/16": {"lr": 1e-3},
                                                 "tiny-llama-dec/tiny-qwen-s/16": {"lr": 2e-3}}),
     "also overridden as"),
    (lambda c: c["train"].update(cell_overrides={"dynamics": {"max_steps": 50}}),
     "'train.cell_overrides.dynamics.max_steps': the dynamics run takes max_steps from 'dynamics.max_steps'"),
    (lambda c: c["train"].update(cell_overrides={"tiny-qwen-s/4": {"global_batch_size": 12}}),
     "'train.cell_overrides.tiny-qwen-s/4.global_batch_size': 12 is not a multiple of micro_batch_size=8"),
    (lambda c: c["train"].update(cell_overrides={"tiny-qwen-s/4": {"learning_rate": 1e-3}}),
     "'train.cell_overrides.tiny-qwen-s/4': unknown key"),
    (lambda c: c["train"].update(cell_overrides={"tiny-qwen-s/4": {"finetune": "partial"}}),
     "train.cell_overrides.tiny-qwen-s/4.finetune"),
    (lambda c: c["train"].update(cell_overrides={"Tiny Qwen/4": {"lr": 1e-3}}), "train.cell_overrides"),
    (lambda c: c["train"].update(cell_overrides={"tiny-qwen-s/4": {"lora": {"r": 4, "alpha": 8}}}),
     "'train.cell_overrides.tiny-qwen-s/4.lora': 'tiny-qwen-s' is fully fine-tuned in this run"),
    (lambda c: c["train"].update(global_batch_size=12), "'train.global_batch_size': 12 is not a multiple"),
    (lambda c: c["train"].update(keep_checkpoints=1), "'train.keep_checkpoints': 1 is less than the minimum of 2"),
    (lambda c: c["train"].update(stale_checkpoints="keep"), "train.stale_checkpoints"),
    (lambda c: c["dynamics"].update(probe_every=500), "'dynamics.probe_every': 500 is more than"),
    (lambda c: c["dynamics"].update(compressor="tiny-llama-dec"), "'dynamics.compressor'"),
    (lambda c: c["ablation"].update(decoders=["gpt-5"]), "'ablation.decoders.0': model 'gpt-5' is not defined"),
    (lambda c: c.update(lora_control={"compressors": ["tiny-qwen-m"], "ratios": [16]}),
     "'lora_control.compressors.0': model 'tiny-qwen-m' has finetune 'full', expected lora"),
    (lambda c: c.update(lora_control={"compressors": ["tiny-qwen-l"], "ratios": [16]}),
     "'lora_control.compressors.0': no full-fine-tune entry of 'compressors' has the weights of 'tiny-qwen-l'"),
    (lambda c: c.update(lora_control={"compressors": ["tiny-qwen-m-lora"], "ratios": [5]}),
     "'lora_control.ratios.0': ratio 5 does not divide 64"),
    (lambda c: c["data"]["musique"].update(min_records=30), "'data.musique.min_records': 30 is more than"),
    (lambda c: c["questions"].update(min_success_fraction=1.5), "questions.min_success_fraction"),
    (lambda c: c["models"]["tiny-qwen-s"]["build"].update(tokenizer="gpt-bpe"), "unknown tokenizer 'gpt-bpe'"),
    (lambda c: c["models"]["tiny-qwen-s"]["build"].update(num_key_value_heads=3), "must divide heads"),
])
def test_bad_cross_references_are_named(mutate, fragment):
    cfg = tiny_raw()
    mutate(cfg)
    with pytest.raises(C.ConfigError) as err:
        C.validate(cfg)
    assert fragment in str(err.value)


def test_lora_control_cells_and_twins():
    cfg = C.load_config(*TINY)
    assert C.lora_control_cells(cfg) == [C.Cell("tiny-llama-dec", "tiny-qwen-m-lora", 16)]
    assert C.lora_twin(cfg, "tiny-qwen-m-lora") == "tiny-qwen-m"
    # the twin starts from the same pretrained base; LoRA is how its settings train it
    s = C.train_settings(cfg, C.lora_control_cells(cfg)[0])
    assert s["compressor"]["source"] == "results/tiny/base/tiny-qwen-m" and s["compressor"]["finetune"] == "lora"
    real = C.load_config(ROOT / "config.yaml")
    assert [C.lora_twin(real, c.compressor) for c in C.lora_control_cells(real)] == ["qwen3-4b", "qwen3-8b"]


def test_dynamics_run_and_table_cell_differ_only_in_protocol():
    cfg = C.load_config(*TINY)
    cell = C.dynamics_cell(cfg)
    table, dyn = C.train_settings(cfg, cell), C.train_settings(cfg, cell, dynamics=True)
    assert (table["train"]["max_steps"], table["train"]["probe_every"]) == (100, 40)
    assert (dyn["train"]["max_steps"], dyn["train"]["probe_every"]) == (160, 16)
    assert dyn["train"]["keep_probe_checkpoints"] and not table["train"]["keep_probe_checkpoints"]
    assert dyn["run"] == "dynamics" and "run" not in table
    with pytest.raises(C.ConfigError, match="not the dynamics cell"):
        C.train_settings(cfg, C.Cell("tiny-llama-dec", "tiny-qwen-m", 16), dynamics=True)
    real = C.load_config(ROOT / "config.yaml")
    d = C.train_settings(real, C.dynamics_cell(real), dynamics=True)["train"]
    probes = list(range(d["probe_every"], d["max_steps"] + 1, d["probe_every"]))
    assert len(probes) == 32 and sum(s > 2000 for s in probes) == 24  # ~25 checkpoints after a step-2,000 peak


def test_runtime_keys_are_not_settings_but_reach_the_job():
    cfg = C.load_config(*TINY)
    cfg["train"]["cell_overrides"] = {"tiny-qwen-s/4": {"checkpoint_every": 5, "lr": 2e-3}}
    C.validate(cfg)
    cell = C.Cell("tiny-llama-dec", "tiny-qwen-s", 4)
    s = C.train_settings(cfg, cell)
    assert not set(C.RUNTIME_TRAIN_KEYS) & set(s["train"]) and s["train"]["lr"] == 2e-3
    rt = C.train_runtime(cfg, cell)
    assert rt == {"checkpoint_every": 5, "keep_checkpoints": 2, "keep_final_checkpoints": False,
                  "stale_checkpoints": "move", "verify_checkpoints": "sha256", "tensorboard": True}


# ---------------------------------------------------------------------------------------------- data files
def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_non_utf8_line_is_a_malformed_row(tmp_path):
    p = write(tmp_path / "a.jsonl", b'{"id": 1}\n{"id": "caf\xe9"}\n{"id": 3}\n\xff\n')
    with pytest.raises(DataError) as err:
        read_rows(p)
    msg = str(err.value)
    assert msg.startswith("2 malformed row(s)")
    assert f"{p}:2: not valid UTF-8 (byte 0xe9 at column 12)" in msg and f"{p}:4: not valid UTF-8 (byte 0xff" in msg


def test_non_utf8_inside_a_json_array_names_the_element(tmp_path):
    p = write(tmp_path / "a.json", b'[\n {"id": 1},\n {"id": "\xff"},\n {"id": 3}\n]\n')
    with pytest.raises(DataError, match=r"a.json:3: line 3: not valid UTF-8 \(byte 0xff at column 10\)"):
        read_rows(p)
    good = write(tmp_path / "b.json", b'[\n {"id": 1},\n {"id": 3}\n]\n')
    assert [r.line for r in read_rows(good)] == [2, 3]


def test_byte_order_mark_is_accepted(tmp_path):
    p = write(tmp_path / "bom.jsonl", b'\xef\xbb\xbf{"id": 1}\n{"id": 2}\n')
    assert [r.data["id"] for r in read_rows(p)] == [1, 2]
    q = write(tmp_path / "bom.json", b'\xef\xbb\xbf[{"id": 1}]')
    assert [r.data["id"] for r in read_rows(q)] == [1]


def test_read_jsonl_names_a_non_utf8_line(tmp_path):
    p = write(tmp_path / "r.jsonl", b'{"a": 1}\n{"a": "\xc3"}\n')
    with pytest.raises(ValueError, match=rf"{p}:2: not valid UTF-8 \(byte 0xc3 at column 8\)"):
        read_jsonl(p)


@pytest.mark.parametrize("content", [b"", b"\n\n", b'{"id": "only-one", "question": "q"}\n'])
def test_empty_or_gutted_evaluation_set_fails(tmp_path, content):
    src = write(tmp_path / "test.jsonl", content)
    out, stats = tmp_path / "faitheval.jsonl", tmp_path / "faitheval.stats.json"
    source = {"source": "jsonl", "path": str(src), "max_records": 0, "min_records": 10}
    with pytest.raises(DataError) as err:
        prepare_qa("faitheval", source, 0, str(out), str(stats))
    if content.strip():
        assert "malformed" in str(err.value) or "fewer than data.faitheval.min_records=10" in str(err.value)
    else:
        assert "faitheval: 0 record(s)" in str(err.value) and "min_records=10" in str(err.value)
    assert not out.exists() and not stats.exists()


def test_missing_data_path_is_named(tmp_path):
    source = {"source": "jsonl", "path": str(tmp_path / "nowhere"), "max_records": 0, "min_records": 1}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_qa("faitheval", source, 0, str(tmp_path / "o.jsonl"), str(tmp_path / "s.json"))


def test_results_are_standard_json_with_null_for_nan(tmp_path):
    obj = {"value": float("nan"), "ci95": [float("-inf"), np.float32(0.5)], "n": np.int64(3),
           "nested": {"x": np.array([1.0, np.nan])}, "ok": True, "name": "NaN"}
    write_json(tmp_path / "r.json", obj)
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert back == {"value": None, "ci95": [None, 0.5], "n": 3, "nested": {"x": [1.0, None]}, "ok": True,
                    "name": "NaN"}
    write_jsonl(tmp_path / "r.jsonl", [{"entropy": math.inf}, {"entropy": 1.25}])
    assert [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()] == [{"entropy": None},
                                                                                         {"entropy": 1.25}]


# ----------------------------------------------------------------------------------------- question endpoint
KEY_ENV = "CTXCOMP_HOSTILE_KEY"


def qcfg(base_url: str, **over) -> dict:
    cfg = {"backend": "openai", "base_url": base_url, "model": "deepseek-reasoner", "api_key_env": KEY_ENV,
           "per_context": 9, "unanswerable_per_context": 2, "temperature": 0.6, "max_tokens": 512, "timeout_s": 5,
           "max_retries": 0, "max_attempts": 1, "concurrency": 2, "requests_per_minute": 60000,
           "retry_backoff_s": 0.01}
    cfg.update(over)
    return cfg


def ctx(i: int) -> dict:
    return {"id": f"c{i}", "source": "fineweb",
            "context": f"[ctx-{i:02d}] The Harbor Board approved a new ferry route to Elm Island in 2024. "
                       "Its chair, Dana Ruiz, said the route would carry 300 passengers daily."}


def good(i: int) -> str:
    return questions_json(ctx(i)["context"], 7, 2)


def test_endpoint_down_fails_the_job_with_the_count_and_last_error(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-a-long-enough-test-key")
    out, rep = tmp_path / "q.jsonl", tmp_path / "q.report.json"
    with pytest.raises(QuestionsIncomplete) as err:
        generate_questions([ctx(i) for i in range(12)], qcfg("http://127.0.0.1:9/v1"), str(out), str(rep),
                           str(tmp_path / "cache"))
    msg = str(err.value)
    assert "only 0 of 12 contexts got valid questions" in msg and "min_success_fraction=0.95 needs 12" in msg
    assert "APIConnectionError" in msg
    assert not out.exists() and not rep.exists()


def test_partial_outage_keeps_successes_and_the_rerun_asks_only_for_the_rest(tmp_path, monkeypatch, stub_server):
    monkeypatch.setenv(KEY_ENV, "sk-a-long-enough-test-key")
    for i in range(4):
        stub_server.script(f"[ctx-{i:02d}]", reply(good(i)) if i < 2 else error(503, "down"))
    contexts = [ctx(i) for i in range(4)]
    out, rep, cache = tmp_path / "q.jsonl", tmp_path / "q.report.json", str(tmp_path / "cache")
    with pytest.raises(QuestionsIncomplete, match=r"only 2 of 4 .* needs 4\. Last error: request failed: .*503"):
        generate_questions(contexts, qcfg(stub_server.base_url), str(out), str(rep), cache)
    assert not out.exists()
    for i in (2, 3):  # the endpoint recovers
        stub_server.script(f"[ctx-{i:02d}]", reply(good(i)))
    report = generate_questions(contexts, qcfg(stub_server.base_url), str(out), str(rep), cache)
    assert [stub_server.count(f"[ctx-{i:02d}]") for i in range(4)] == [1, 1, 2, 2]
    assert report["cache_hits"] == 2 and report["requests_sent"] == 2 and report["valid"] == 4
    # a threshold of 0.75 accepts 3 of 4
    stub_server.script("[ctx-04]", error(503))
    report = generate_questions(contexts[:3] + [ctx(4)], qcfg(stub_server.base_url, min_success_fraction=0.75),
                                str(out), str(rep), cache)
    assert (report["valid"], report["failed"]) == (3, 1)


def test_short_key_is_not_a_secret_and_results_stay_intact(tmp_path, monkeypatch, stub_server, caplog):
    monkeypatch.setenv(KEY_ENV, "x")
    stub_server.script("[ctx-00]", reply(good(0)))
    stub_server.script("[ctx-01]", error(500, "box of x", echo_auth=True))
    out, rep = tmp_path / "q.jsonl", tmp_path / "q.report.json"
    with caplog.at_level(logging.WARNING):
        report = generate_questions([ctx(0), ctx(1)], qcfg(stub_server.base_url, min_success_fraction=0.5),
                                    str(out), str(rep), str(tmp_path / "cache"))
    assert "treated as a placeholder, not as a secret" in caplog.text
    text = rep.read_text()
    assert "***" not in text and "per_context" in text and "max_tokens" not in text
    assert set(report) >= {"per_context", "unanswerable_per_context", "n_contexts", "tokens", "estimated_cost_usd"}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert "***" not in out.read_text() and rows[0]["context"] == ctx(0)["context"]
    assert "box of x" in rows[1]["reason"]


def test_redaction_only_for_real_secrets_and_in_log_records():
    key = "sk-0123456789abcdef"
    assert redact(f"header Bearer {key}.", key) == "header Bearer ***."
    assert redact("per_context", "x") == "per_context" and redact("abc", None) == "abc"
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed with %s", (f"Bearer {key}",), None)
    assert RedactingFilter(key).filter(record) and record.getMessage() == "failed with Bearer ***"
    plain = logging.LogRecord("t", logging.ERROR, __file__, 1, "x marks %s", ("the spot",), None)
    assert RedactingFilter("x").filter(plain) and plain.getMessage() == "x marks the spot"


def test_deep_merge_and_stable_hash():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    snapshot = copy.deepcopy(base)
    merged = C.deep_merge(base, {"a": {"c": [3], "e": {"f": 1}}, "d": None})
    assert merged == {"a": {"b": 1, "c": [3], "e": {"f": 1}}, "d": None}
    assert base == snapshot  # inputs untouched
    import hashlib

    assert C.stable_hash({"b": [1, 2], "a": "x"}) == hashlib.sha256(b'{"a":"x","b":[1,2]}').hexdigest()
    assert C.stable_hash({"a": 1, "b": 2}) == C.stable_hash({"b": 2, "a": 1})
    assert C.stable_hash({"lr": 1e-3}) != C.stable_hash({"lr": 1e-4})
