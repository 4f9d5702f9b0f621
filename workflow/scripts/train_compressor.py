"""Rule train_compressor: train one (decoder, compressor, ratio) cell; resumes from its last checkpoint."""
from ctxcomp.logs import setup_job

setup_job(snakemake)
from ctxcomp.train.launch import launch_training  # noqa: E402

launch_training(
    settings=snakemake.params.settings,
    train_path=snakemake.input.train,
    probe_path=snakemake.input.probe,
    run_dir=snakemake.params.run_dir,
    outputs={k: snakemake.output[k] for k in ("final", "probe_checkpoints", "loss", "dynamics", "summary")},
    log_path=snakemake.log[0],
)
