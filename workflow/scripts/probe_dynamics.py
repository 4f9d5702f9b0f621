"""Rule probe_dynamics: knowledge-overwriting accuracy at each probe checkpoint of the dynamics cell."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.evaluate.cell import probe_dynamics  # noqa: E402

probe_dynamics(snakemake.params.settings, dict(snakemake.input.items()), snakemake.output[0])
