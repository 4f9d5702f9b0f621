# Probes of the memory: effective rank of Z over a batch and the decoder's teacher-forced conditional entropy,
# per cell; and, for the dynamics cell, knowledge-overwriting accuracy at every probe checkpoint.


rule probe_cell:
    input:
        model=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/final",
        fineweb=f"{OUT}/data/fineweb/eval.jsonl",
        faitheval=f"{OUT}/data/faitheval.jsonl",
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        probes=f"{OUT}/probes/{{decoder}}/{{compressor}}/r{{ratio}}/probes.json",
        samples=f"{OUT}/probes/{{decoder}}/{{compressor}}/r{{ratio}}/entropy.samples.jsonl",
    params:
        settings=lambda wc: C.eval_settings(config, cell_of(wc)),
    log:
        f"{OUT}/logs/probe_cell/{{decoder}}/{{compressor}}/r{{ratio}}.log",
    threads: model_threads("eval")
    resources:
        **model_resources("eval"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/probe_cell.py"


rule probe_dynamics:
    input:
        model=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/final",
        probe_checkpoints=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/probe_checkpoints",
        dynamics=f"{OUT}/train/{{decoder}}/{{compressor}}/r{{ratio}}/dynamics.csv",
        faitheval=f"{OUT}/data/faitheval.jsonl",
        conflictqa=f"{OUT}/data/conflictqa.jsonl",
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        f"{OUT}/dynamics/{{decoder}}/{{compressor}}/r{{ratio}}/checkpoints.csv",
    params:
        settings=lambda wc: C.eval_settings(config, cell_of(wc)),
    log:
        f"{OUT}/logs/probe_dynamics/{{decoder}}/{{compressor}}/r{{ratio}}.log",
    threads: model_threads("eval")
    resources:
        **model_resources("eval"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/probe_dynamics.py"
