# Tables 2 and 3, Figures 1-4, rank truncation, the LoRA control, and an index of every artifact with its
# provenance. Every artifact is flagged for `snakemake --report report.html` (or report.zip) with a caption from
# workflow/report/<artifact>.rst and a category from ctxcomp.paths.REPORT_CATEGORIES.


rule report_main:
    input:
        cells=cell_results(MAIN_CELLS),
        dynamics=dynamics_inputs(),
    output:
        reported(main_report_outputs()),
    params:
        out=report_dir,
        cells=[c.path for c in MAIN_CELLS],
        dynamics_cell=DYNAMICS_CELL.path if DYNAMICS_CELL else None,
        models=REPORT_MODELS,
        config_hash=C.results_hash(config),
        note=config["report_note"],
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
        reported(ablation_report_outputs()),
    params:
        out=report_dir,
        cells=[c.path for c in ABLATION_CELLS],
        models=REPORT_MODELS,
        config_hash=C.results_hash(config),
        note=config["report_note"],
    log:
        P.log("report_ablation"),
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_ablation.py"


rule report_lora_control:
    input:
        cells=lora_control_cells_input,
    output:
        reported(P.lora_control_report_files()),
    params:
        out=report_dir,
        pairs=[[lora.path, full.path] for lora, full in LORA_PAIRS],
        models=REPORT_MODELS,
    log:
        P.log("report_lora_control"),
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_lora_control.py"
