"""Rule evaluate_cell: reconstruction, knowledge overwriting, semantic drift, rank truncation and the probes
(effective rank, entropy) of one cell, its models loaded once."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.evaluate.cell import evaluate_and_probe_cell  # noqa: E402

evaluate_and_probe_cell(snakemake.params.settings, dict(snakemake.input.items()), dict(snakemake.output.items()))
