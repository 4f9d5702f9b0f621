"""Rule probe_cell: effective rank of Z and teacher-forced conditional entropy of one cell."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.evaluate.cell import probe_cell  # noqa: E402

probe_cell(snakemake.params.settings, dict(snakemake.input.items()), dict(snakemake.output.items()))
