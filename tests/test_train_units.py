"""Pure pieces of training with hand-computed numbers: the learning-rate schedule, the data order, rank slices,
checkpoint pruning and manifests, atomic writes."""
from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest

from ctxcomp.io import atomic_dir, atomic_write, write_json
from ctxcomp.train import checkpoint as ckpt
from ctxcomp.train.data import JsonlIndex, batch_indices, rank_slice
from ctxcomp.train.schedule import lr_at


@pytest.mark.parametrize("step, expected", [
    (0, 1e-4),      # warm-up: base * (step + 1) / warmup
    (4, 5e-4),
    (9, 1e-3),      # last warm-up step reaches the base rate
    (10, 1e-3),     # cosine starts at progress 0: coefficient 1
    (55, 5.5e-4),   # progress 0.5: 0.1 + 0.9 * 0.5 = 0.55 of base
    (100, 1e-4),    # the end: base * min_lr_ratio
    (250, 1e-4),    # flat after max_steps
])
def test_lr_schedule_hand_values(step, expected):
    assert lr_at(step, 1e-3, 10, 100, 0.1) == pytest.approx(expected, rel=1e-12)


def test_lr_schedule_quarter_point_and_no_warmup():
    # progress 0.25: 0.5 * (1 + cos(pi / 4)) = 0.853553...; lr = 1e-3 * (0.1 + 0.9 * 0.853553) = 8.6820e-4
    assert lr_at(32, 1e-3, 10, 98, 0.1) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.sqrt(0.5))))
    assert lr_at(0, 2e-4, 0, 10, 0.0) == pytest.approx(2e-4)
    assert lr_at(5, 2e-4, 0, 10, 0.0) == pytest.approx(1e-4)


def test_lr_schedule_edges():
    # one warm-up step: step 0 is already at the base rate (1 / 1), step 1 starts the cosine at coefficient 1
    assert lr_at(0, 1e-3, 1, 11, 0.1) == pytest.approx(1e-3, rel=1e-12)
    assert lr_at(1, 1e-3, 1, 11, 0.1) == pytest.approx(1e-3, rel=1e-12)
    # warm-up as long as the run: no cosine at all, the floor from max_steps on
    assert lr_at(9, 1e-3, 10, 10, 0.1) == pytest.approx(1e-3, rel=1e-12)
    assert lr_at(10, 1e-3, 10, 10, 0.1) == pytest.approx(1e-4, rel=1e-12)
    # a cosine span of one step: its only step is at progress 0
    assert lr_at(10, 1e-3, 10, 11, 0.1) == pytest.approx(1e-3, rel=1e-12)
    assert lr_at(11, 1e-3, 10, 11, 0.1) == pytest.approx(1e-4, rel=1e-12)


def test_batch_indices_cover_each_epoch_once_without_repeats():
    n, batch, seed = 10, 3, 7
    per_epoch = n // batch  # 3 full batches; one record per epoch is left out
    epoch0 = np.concatenate([batch_indices(s, batch, n, seed) for s in range(per_epoch)])
    assert len(epoch0) == 9 and len(set(epoch0.tolist())) == 9 and set(epoch0.tolist()) <= set(range(n))
    # the same permutation as numpy's generator seeded with (seed, epoch): an independent reference
    perm = np.random.default_rng([seed, 0]).permutation(n)
    assert epoch0.tolist() == perm[:9].tolist()
    epoch1 = np.concatenate([batch_indices(s, batch, n, seed) for s in range(per_epoch, 2 * per_epoch)])
    assert epoch1.tolist() == np.random.default_rng([seed, 1]).permutation(n)[:9].tolist()
    assert epoch1.tolist() != epoch0.tolist()
    assert batch_indices(4, batch, n, seed).tolist() == batch_indices(4, batch, n, seed).tolist()  # pure
    with pytest.raises(ValueError, match="fewer than one batch"):
        batch_indices(0, 11, n, seed)
    # exactly one batch per epoch: every step is a whole permutation (seeded by its epoch = the step)
    for step in (0, 1, 5):
        assert batch_indices(step, n, n, seed).tolist() == np.random.default_rng([seed, step]).permutation(n).tolist()


def _jsonl(path, lines):
    path.write_bytes("".join(lines).encode())
    return path


def test_jsonl_index_random_access_skips_blank_lines(tmp_path):
    recs = [{"id": 0, "text": "a"}, {"id": 1, "text": "ünï"}, {"id": 2, "text": "c" * 300}]
    lines = [json.dumps(recs[0]) + "\n", "\n", "  \n", json.dumps(recs[1], ensure_ascii=False) + "\n",
             json.dumps(recs[2])]  # blank lines between records, no newline at the end
    index = JsonlIndex(_jsonl(tmp_path / "t.jsonl", lines))
    assert len(index) == 3
    # byte offsets: the first record at 0, the second after the record and the two blank lines (bytes, not chars)
    first = len(lines[0].encode())
    assert index.offsets.tolist() == [0, first + 1 + 3, first + 4 + len(lines[3].encode())]
    assert [index[i] for i in (2, 0, 1, 1)] == [recs[2], recs[0], recs[1], recs[1]]  # any order, repeatedly
    assert index.path == tmp_path / "t.jsonl"
    # only a newline ends a record, when indexing and when reading: a bare carriage return is JSON whitespace
    index = JsonlIndex(_jsonl(tmp_path / "cr.jsonl", ['{"a":\r 1}\n', '{"b": 2}\n']))
    assert len(index) == 2 and index[0] == {"a": 1} and index[1] == {"b": 2}


def test_jsonl_index_pickles_without_its_file_handle(tmp_path):
    index = JsonlIndex(_jsonl(tmp_path / "t.jsonl", ['{"v": 1}\n', '{"v": 2}\n']))
    assert index[1] == {"v": 2}  # opens the file
    state = index.__getstate__()
    assert state["_fh"] is None and index._fh is not None  # the live object keeps its handle
    clone = pickle.loads(pickle.dumps(index))  # what a DataLoader worker receives
    assert clone[0] == {"v": 1} and clone[1] == {"v": 2} and len(clone) == 2


def test_jsonl_index_rejects_empty_and_broken_files(tmp_path):
    with pytest.raises(ValueError, match=r"empty\.jsonl: no records"):
        JsonlIndex(_jsonl(tmp_path / "empty.jsonl", ["\n", " \n"]))
    index = JsonlIndex(_jsonl(tmp_path / "bad.jsonl", ['{"v": 1}\n', '{"v": \n']))
    assert index[0] == {"v": 1}
    with pytest.raises(ValueError, match=r"bad\.jsonl: record 1 is not valid JSON \(Expecting value\)"):
        index[1]


def test_rank_slice_is_strided_and_even():
    idx = np.arange(10, 18)
    assert rank_slice(idx, 0, 2).tolist() == [10, 12, 14, 16]
    assert rank_slice(idx, 1, 2).tolist() == [11, 13, 15, 17]
    parts = [rank_slice(idx, r, 4).tolist() for r in range(4)]
    assert parts == [[10, 14], [11, 15], [12, 16], [13, 17]]
    assert sorted(sum(parts, [])) == idx.tolist()


def make_ckpt(root, step, complete=True):
    d = ckpt.step_dir(root, step)
    d.mkdir(parents=True)
    (d / "state.pt").write_bytes(bytes(range(step % 256)) * 3)
    if complete:
        ckpt.finalize(d, step, "h")
    return d


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path):
    for s in (10, 20, 30, 40):
        make_ckpt(tmp_path, s)
    partial = make_ckpt(tmp_path, 50, complete=False)  # a save cut short: never counted, never listed
    ckpt.prune(tmp_path, 2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [30, 40]
    assert partial.exists() and ckpt.latest_checkpoint(tmp_path)[0] == 40


def test_manifest_records_sizes_and_hashes(tmp_path):
    import hashlib

    d = make_ckpt(tmp_path, 7)
    (d / "sub").mkdir()
    m = ckpt.read_manifest(d)
    blob = (d / "state.pt").read_bytes()
    assert m["step"] == 7 and m["run_hash"] == "h"
    assert m["files"] == {"state.pt": {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}}
    assert ckpt.verify(d) == []
    (d / "state.pt").write_bytes(blob[:-1])
    assert ckpt.verify(d) == [f"{d / 'state.pt'}: {len(blob) - 1} bytes, the manifest says {len(blob)} (truncated?)"]
    (d / "state.pt").unlink()
    assert ckpt.verify(d) == [f"{d / 'state.pt'}: missing"]


def test_rank_shares_cover_every_file_once(tmp_path):
    d = tmp_path / "step_00000003"
    d.mkdir()
    for i in range(5):
        (d / f"f{i}.pt").write_bytes(b"x" * i)
    for r in range(2):
        ckpt.write_share(d, r, 2)
    ckpt.finalize(d, 3, "h", world=2)
    assert sorted(ckpt.read_manifest(d)["files"]) == [f"f{i}.pt" for i in range(5)]
    assert not list(d.glob(".manifest-*")) and ckpt.verify(d, rank=1, world=2) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "v": 1\n}\n'  # the old complete file, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left behind
    new = tmp_path / "new.csv"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(new) as fh:
            fh.write("a,b\n")
            raise KeyboardInterrupt
    assert not new.exists()


def test_atomic_dir_is_all_or_nothing(tmp_path):
    target = tmp_path / "final"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(OSError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise OSError("disk full")
    assert sorted(os.listdir(target)) == ["a"] and sorted(os.listdir(tmp_path)) == ["final"]
