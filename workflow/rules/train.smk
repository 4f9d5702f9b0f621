# One compressor per (decoder, compressor, ratio) cell; frozen decoder; loss L_re + L_nt.
# Checkpoints live in <run dir>/checkpoints (not a declared output, so a failed or preempted job keeps them and the
# retry resumes from the last verified one; they carry the hash of the run's settings and data, so a changed cell
# starts fresh). Params hold only what determines the result: the storage keys (C.RUNTIME_TRAIN_KEYS) are read by
# the job from the config. No output is temp(): probe_checkpoints (large for the dynamics run) is what
# probe_dynamics reads, and deleting it would make any rerun of probe_dynamics retrain the dynamics cell.


rule train_compressor:
    input:
        train=P.fineweb("train.jsonl"),
        probe=P.fineweb("eval.jsonl"),
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        final=directory(P.train("final")),
        probe_checkpoints=directory(P.train("probe_checkpoints")),
        loss=P.train("loss.csv"),
        dynamics=P.train("dynamics.csv"),
        summary=P.train("summary.json"),
    params:
        settings=lambda wc: C.train_settings(config, cell_of(wc)),
        run_dir=lambda wc: cell_dir("train", cell_of(wc)),
    log:
        P.log("train_compressor", None),
    benchmark:
        P.benchmark("train_compressor", None)
    threads: model_threads("train")
    resources:
        **model_resources("train"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/train_compressor.py"


# The dynamics run (Figures 3b/3c, 4b/4c): the dynamics cell trained again, separately, for dynamics.max_steps with
# a probe checkpoint every dynamics.probe_every steps; override key `dynamics` under train.cell_overrides.
rule train_dynamics:
    input:
        train=P.fineweb("train.jsonl"),
        probe=P.fineweb("eval.jsonl"),
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        final=directory(P.dynamics_train("final")),
        probe_checkpoints=directory(P.dynamics_train("probe_checkpoints")),
        loss=P.dynamics_train("loss.csv"),
        dynamics=P.dynamics_train("dynamics.csv"),
        summary=P.dynamics_train("summary.json"),
    params:
        settings=lambda wc: C.train_settings(config, cell_of(wc), dynamics=True),
        run_dir=lambda wc: P.dynamics_train("", cell_of(wc)).rstrip("/"),
    log:
        P.log("train_dynamics", None),
    benchmark:
        P.benchmark("train_dynamics", None)
    threads: model_threads("train")
    resources:
        **model_resources("train"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/train_compressor.py"
