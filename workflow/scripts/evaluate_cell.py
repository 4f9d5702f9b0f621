"""Rule evaluate_cell: reconstruction, knowledge overwriting, semantic drift and rank truncation of one cell."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.evaluate.cell import evaluate_cell  # noqa: E402

evaluate_cell(snakemake.params.settings, dict(snakemake.input.items()), dict(snakemake.output.items()))
