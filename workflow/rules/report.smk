# Tables 2 and 3, Figures 1-4, rank truncation, and an index of every artifact with its provenance.


rule report_main:
    input:
        cells=cell_results(MAIN_CELLS),
        dynamics=[P.dynamics("checkpoints.csv", DYNAMICS_CELL)] if DYNAMICS_CELL else [],
        train_dynamics=[P.dynamics_train("dynamics.csv", DYNAMICS_CELL)] if DYNAMICS_CELL else [],
    output:
        main_report_outputs(),
    params:
        out=report_dir,
        cells=[c.path for c in MAIN_CELLS],
        dynamics_cell=DYNAMICS_CELL.path if DYNAMICS_CELL else None,
        models={k: {f: v[f] for f in ("family", "size", "params_b")} for k, v in config["models"].items()},
        config_hash=C.results_hash(config),
    log:
        P.log("report_main"),
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_main.py"


rule report_ablation:
    input:
        cells=cell_results(ABLATION_CELLS),
    output:
        ablation_report_outputs(),
    params:
        out=report_dir,
        cells=[c.path for c in ABLATION_CELLS],
        models={k: {f: v[f] for f in ("family", "size", "params_b")} for k, v in config["models"].items()},
        config_hash=C.results_hash(config),
    log:
        P.log("report_ablation"),
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_ablation.py"
