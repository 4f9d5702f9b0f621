"""Rule rag_cell: downstream RAG on MuSiQue with compressed passages."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.evaluate.cell import rag_cell  # noqa: E402

rag_cell(snakemake.params.settings, dict(snakemake.input.items()), snakemake.output.summary)
