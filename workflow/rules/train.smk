# One compressor per (decoder, compressor, ratio) cell; frozen decoder; loss L_re + L_nt.
# Checkpoints live in <cell>/checkpoints (not a declared output, so a failed or preempted job keeps them and the
# retry resumes from the last one).


rule train_compressor:
    input:
        train=f"{OUT}/data/fineweb/train.jsonl",
        probe=f"{OUT}/data/fineweb/eval.jsonl",
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        final=directory(f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/final"),
        probe_checkpoints=directory(f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/probe_checkpoints"),
        loss=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/loss.csv",
        dynamics=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/dynamics.csv",
        summary=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/summary.json",
    params:
        settings=lambda wc: C.train_settings(config, cell_of(wc)),
        run_dir=lambda wc: cell_dir("train", cell_of(wc)),
    log:
        f"{OUT}/logs/train_compressor/{{decoder}}/{{compressor}}/r{{ratio}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_compressor/{{decoder}}/{{compressor}}/r{{ratio}}.tsv"
    threads: model_threads("train")
    resources:
        **model_resources("train"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/train_compressor.py"
