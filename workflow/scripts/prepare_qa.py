"""Rule prepare_qa: one evaluation set (faitheval | conflictqa | musique) as validated records (ctxcomp.data.qa).

The params carry what determines the records; the failure threshold (data.<set>.min_records) is read here from the
config, so editing it re-runs nothing.
"""
from ctxcomp.logs import setup_job

setup_job(snakemake)  # noqa: F821
from ctxcomp.data import prepare_qa  # noqa: E402

name = snakemake.wildcards.qa  # noqa: F821
source = {**snakemake.params.source, "min_records": snakemake.config["data"][name]["min_records"]}  # noqa: F821
prepare_qa(name, source, int(snakemake.params.seed), snakemake.output.records, snakemake.output.stats)  # noqa: F821
