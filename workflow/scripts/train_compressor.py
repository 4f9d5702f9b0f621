"""Rules train_compressor and train_dynamics: train one run of a cell; resumes from its last verified checkpoint.

The params carry what determines the result; how the run is stored (checkpoint interval, retention, verification,
TensorBoard) is read here from the config, so editing it re-runs nothing.
"""
from ctxcomp.logs import setup_job

setup_job(snakemake)  # noqa: F821
from ctxcomp import config as C  # noqa: E402
from ctxcomp.train.launch import launch_training  # noqa: E402

settings = dict(snakemake.params.settings)  # noqa: F821
cell = C.Cell(**settings["cell"])
dynamics = settings.get("run") == C.DYNAMICS_KEY
settings["runtime"] = C.train_runtime(snakemake.config, cell, dynamics=dynamics)  # noqa: F821
launch_training(
    settings=settings,
    train_path=snakemake.input.train,  # noqa: F821
    probe_path=snakemake.input.probe,  # noqa: F821
    run_dir=snakemake.params.run_dir,  # noqa: F821
    outputs={k: snakemake.output[k]  # noqa: F821
             for k in ("final", "probe_checkpoints", "loss", "dynamics", "summary")},
)
