"""Rule train_tokenizer: a byte-level BPE for one tiny architecture family."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.tiny.tokenizer import train_tokenizer  # noqa: E402

train_tokenizer(snakemake.input.corpus, snakemake.output[0], **snakemake.params.spec)
