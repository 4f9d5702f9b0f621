"""Rule generate_questions: semantic-drift questions for the first N contexts of a FineWeb or FaithEval set.

The params carry what determines the questions; how they are fetched (timeouts, retries, concurrency, rate, prices,
key variable, failure threshold) is read here from the config, so editing it re-runs nothing.
"""
from ctxcomp.logs import setup_job

setup_job(snakemake)  # noqa: F821

from ctxcomp import config as C  # noqa: E402
from ctxcomp.io import read_jsonl  # noqa: E402
from ctxcomp.questions.run import generate_questions  # noqa: E402

path = snakemake.input.contexts  # noqa: F821
rows = read_jsonl(path)
n = int(snakemake.params.n_contexts or 0)  # noqa: F821
contexts = [{"id": str(r["id"]), "source": r["source"], "context": r["context"] if "context" in r else r["text"]}
            for r in (rows[:n] if n > 0 else rows)]
if not contexts:
    raise SystemExit(f"{path}: no contexts to ask questions about (empty file?)")
live = snakemake.config["questions"]  # noqa: F821
qcfg = {**snakemake.params.questions, **{k: live[k] for k in C.QUESTION_RUNTIME_KEYS if k in live}}  # noqa: F821
generate_questions(contexts, qcfg, snakemake.output.questions,  # noqa: F821
                   snakemake.output.report, snakemake.params.cache_dir)  # noqa: F821
