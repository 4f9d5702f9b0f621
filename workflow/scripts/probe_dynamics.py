"""Rule probe_dynamics: knowledge-overwriting accuracy at each probe checkpoint of the dynamics run."""
from ctxcomp.logs import setup_job

setup_job(snakemake)  # noqa: F821
from ctxcomp.evaluate.cell import probe_dynamics  # noqa: E402

probe_dynamics(snakemake.params.settings, dict(snakemake.input.items()), dict(snakemake.output.items()))  # noqa: F821
