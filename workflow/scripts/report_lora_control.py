"""Rule report_lora_control: each LoRA compressor beside its full fine-tune twin (ctxcomp.report)."""
from ctxcomp.logs import setup_job

setup_job(snakemake)  # noqa: F821 - injected by Snakemake

from ctxcomp.report import build_lora_control_report  # noqa: E402

build_lora_control_report(
    out=snakemake.params.out,  # noqa: F821
    pairs=[tuple(p) for p in snakemake.params.pairs],  # noqa: F821
    models=dict(snakemake.params.models),  # noqa: F821
    outputs=list(snakemake.output),  # noqa: F821
)
