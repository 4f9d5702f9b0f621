"""Rule report_ablation: Table 3 (decoder ablation) and its index (ctxcomp.report)."""
from ctxcomp.logs import setup_job

setup_job(snakemake)  # noqa: F821 - injected by Snakemake

from ctxcomp.report import build_ablation_report  # noqa: E402

build_ablation_report(
    out=snakemake.params.out,  # noqa: F821
    cells=list(snakemake.params.cells),  # noqa: F821
    models=dict(snakemake.params.models),  # noqa: F821
    config_hash=snakemake.params.config_hash,  # noqa: F821
    outputs=list(snakemake.output),  # noqa: F821
    note=snakemake.params.note,  # noqa: F821
)
