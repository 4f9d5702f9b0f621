"""Rule generate_questions: semantic-drift questions for the first N contexts of a FineWeb or FaithEval set."""
from ctxcomp.logs import setup_job

setup_job(snakemake)  # noqa: F821

from ctxcomp.io import read_jsonl  # noqa: E402
from ctxcomp.questions import generate_questions  # noqa: E402

rows = read_jsonl(snakemake.input.contexts)  # noqa: F821
n = int(snakemake.params.n_contexts or 0)  # noqa: F821
contexts = [{"id": str(r["id"]), "source": r["source"], "context": r["context"] if "context" in r else r["text"]}
            for r in (rows[:n] if n > 0 else rows)]
generate_questions(contexts, dict(snakemake.params.questions), snakemake.output.questions,  # noqa: F821
                   snakemake.output.report, snakemake.params.cache_dir)  # noqa: F821
