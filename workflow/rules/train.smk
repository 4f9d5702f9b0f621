# One compressor per (decoder, compressor, ratio) cell; frozen decoder; loss L_re + L_nt.
# Checkpoints live in <cell>/checkpoints (not a declared output, so a failed or preempted job keeps them and the
# retry resumes from the last one). No output is temp(): probe_checkpoints (large for the dynamics cell) is what
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
