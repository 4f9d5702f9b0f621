"""Rule prepare_fineweb: chunk the web-text source into train/eval reconstruction records (ctxcomp.data.fineweb)."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.data import prepare_fineweb  # noqa: E402

prepare_fineweb(dict(snakemake.params.fineweb), str(snakemake.params.tokenizer), dict(snakemake.params.segment),
                int(snakemake.params.seed), snakemake.output.train, snakemake.output.eval, snakemake.output.stats,
                families=dict(getattr(snakemake.params, "families", None) or {}))
