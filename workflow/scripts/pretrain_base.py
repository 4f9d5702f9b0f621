"""Rule pretrain_base: build a tiny model from its config and pretrain it briefly on the corpus."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.tiny.pretrain import pretrain  # noqa: E402

pretrain(snakemake.params.build, snakemake.input.tokenizer, snakemake.input.corpus, snakemake.output[0],
         seed=snakemake.params.seed, **snakemake.params.pretrain)
