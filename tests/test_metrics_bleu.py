"""BLEU equals the sacrebleu command line, on the 0-1 scale, with reference = original text."""
import math
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import ctxcomp  # noqa: F401
except ImportError:  # not installed: use the work tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from ctxcomp.metrics import bleu

REFS = [
    "The quick brown fox jumps over the lazy dog.",
    "Compression of long contexts into a short memory is lossy.",
    "Larger compressors do not always reconstruct better, surprisingly.",
]
HYPS = [
    "The quick brown fox jumped over a lazy dog.",
    "Compression of long context into short memory is lossy.",
    "Larger compressors always reconstruct better.",
]


def _cli_bleu(tmp_path: Path, hyps: list[str], refs: list[str]) -> float:
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("\n".join(refs) + "\n")
    hyp.write_text("\n".join(hyps) + "\n")
    exe = Path(sys.executable).with_name("sacrebleu")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sacrebleu"]
    # -w 16: full precision, so the comparison can be to 1e-9 on the 0-1 scale.
    out = subprocess.run(cmd + [str(ref), "-i", str(hyp), "-m", "bleu", "-b", "-w", "16"], capture_output=True,
                         text=True, check=True, timeout=60)
    return float(out.stdout.strip().split()[0])


def test_corpus_bleu_matches_cli(tmp_path):
    res = bleu.corpus_bleu(HYPS, REFS)
    cli = _cli_bleu(tmp_path, HYPS, REFS)
    assert res["n"] == 3
    assert res["score"] == pytest.approx(cli / 100, abs=1e-9)
    assert res["score"] == pytest.approx(res["score_100"] / 100, abs=1e-12)
    assert res["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")


def test_cli_plain_invocation_agrees(tmp_path):
    """`sacrebleu ref.txt -i hyp.txt -b` (default metric = BLEU) prints the same score, rounded to 1 decimal."""
    (tmp_path / "ref.txt").write_text("\n".join(REFS) + "\n")
    (tmp_path / "hyp.txt").write_text("\n".join(HYPS) + "\n")
    exe = Path(sys.executable).with_name("sacrebleu")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sacrebleu"]
    out = subprocess.run(cmd + [str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"), "-b"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert bleu.corpus_bleu(HYPS, REFS)["score_100"] == pytest.approx(float(out.stdout.split()[0]), abs=0.051)


def test_direction_not_swapped():
    # A hypothesis that is a 5-token prefix of a 10-token reference has all n-gram precisions 1 and only the
    # brevity penalty exp(1 - 10/5); swapping the arguments would give n-gram precisions < 1 and no penalty.
    ref, hyp = ["a b c d e f g h i j"], ["a b c d e"]
    assert bleu.corpus_bleu(hyp, ref)["score"] == pytest.approx(math.exp(-1.0), abs=1e-12)
    assert bleu.corpus_bleu(ref, hyp)["score"] != pytest.approx(math.exp(-1.0), abs=1e-3)


def test_exact_copy_scores_one():
    assert bleu.corpus_bleu(REFS, REFS)["score"] == pytest.approx(1.0, abs=1e-9)
    assert bleu.sentence_bleu(REFS[0], REFS[0]) == pytest.approx(1.0, abs=1e-9)


def test_sentence_bleu_scale_and_effective_order():
    from sacrebleu.metrics import BLEU

    s = bleu.sentence_bleu("the cat sat", "the cat sat on the mat")
    ref = BLEU(effective_order=True).sentence_score("the cat sat", ["the cat sat on the mat"]).score / 100
    assert s == pytest.approx(ref, abs=1e-12)
    assert 0.0 < s < 1.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        bleu.corpus_bleu(["a"], ["a", "b"])
