# Probes of the memory: effective rank of Z over a batch and the decoder's teacher-forced conditional entropy,
# per cell; and knowledge-overwriting accuracy at every probe checkpoint of the dynamics run (dynamics/<cell>/).


rule probe_cell:
    input:
        model=P.train("final"),
        fineweb=P.fineweb("eval.jsonl"),
        faitheval=P.qa("faitheval"),
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        probes=P.probes("probes.json"),
        samples=P.probes("entropy.samples.jsonl"),
    params:
        settings=lambda wc: C.eval_settings(config, cell_of(wc)),
    log:
        P.log("probe_cell", None),
    benchmark:
        P.benchmark("probe_cell", None)
    threads: model_threads("eval")
    resources:
        **model_resources("eval"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/probe_cell.py"


rule probe_dynamics:
    input:
        model=P.dynamics_train("final"),
        probe_checkpoints=P.dynamics_train("probe_checkpoints"),
        dynamics=P.dynamics_train("dynamics.csv"),
        faitheval=P.qa("faitheval"),
        conflictqa=P.qa("conflictqa"),
        models=lambda wc: model_inputs(wc.compressor, wc.decoder),
    output:
        checkpoints=P.dynamics("checkpoints.csv"),
        samples=P.dynamics("checkpoints.samples.jsonl"),
    params:
        settings=lambda wc: C.eval_settings(config, cell_of(wc)),
    log:
        P.log("probe_dynamics", None),
    benchmark:
        P.benchmark("probe_dynamics", None)
    threads: model_threads("eval")
    resources:
        **model_resources("eval"),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/probe_dynamics.py"
