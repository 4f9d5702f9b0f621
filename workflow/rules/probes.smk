# Knowledge-overwriting accuracy at every probe checkpoint of the dynamics run (dynamics/<cell>/). The probes of a
# cell (effective rank of Z, decoder entropy: probes/<cell>/) are computed by its evaluate_cell job.


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
