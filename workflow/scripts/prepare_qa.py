"""Rule prepare_qa: one evaluation set (faitheval | conflictqa | musique) as validated records (ctxcomp.data.qa)."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.data import prepare_qa  # noqa: E402

prepare_qa(snakemake.wildcards.qa, dict(snakemake.params.source), int(snakemake.params.seed),
           snakemake.output.records, snakemake.output.stats)
