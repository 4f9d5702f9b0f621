# Tables 2 and 3, Figures 1-4, rank truncation, the LoRA control, and an index of every artifact with its
# provenance. Every artifact is flagged for `snakemake --report report.html` (or report.zip) with a caption from
# workflow/report/<artifact>.rst and a category from ctxcomp.paths.REPORT_CATEGORIES.

REPORT_MODELS = {k: {f: v[f] for f in ("family", "size", "params_b")} for k, v in config["models"].items()}
# LoRA control (optional config section): (LoRA cell, its full fine-tune twin), both with the main decoder.
LORA_PAIRS = (
    [(c, C.Cell(c.decoder, C.lora_twin(config, c.compressor), c.ratio)) for c in C.lora_control_cells(config)]
    if config.get("lora_control")
    else []
)


def reported(files):
    """Report outputs flagged for the Snakemake report, each with its caption and category."""
    out = []
    for f in files:
        name = paths.artifact_name(f)
        labels = {"artifact": name, "format": Path(f).name.split(".", 1)[1]}
        # `report(` must not start a line: the Snakemake parser would read it as the `report:` keyword
        out.append(report(f, caption=f"../report/{name}.rst", category=paths.REPORT_CATEGORIES[name],
                          subcategory=name, labels=labels))
    return out


def dynamics_inputs():
    """The dynamics run's files Figures 3b/3c/4b read: everything probe_dynamics writes, and the training-time
    probe log (erank/entropy per step) it reads, for the dynamics cell."""
    if not DYNAMICS_CELL:
        return []
    wc = {"decoder": DYNAMICS_CELL.decoder, "compressor": DYNAMICS_CELL.compressor, "ratio": DYNAMICS_CELL.ratio}
    files = [expand(f, **wc)[0] for f in rules.probe_dynamics.output]
    return files + [expand(rules.probe_dynamics.input.dynamics, **wc)[0]]


def main_report_inputs():
    """Every file rule report_main reads (the targets list them too: see the Snakefile)."""
    return cell_results(MAIN_CELLS) + dynamics_inputs()


def _require_lora_pairs():
    if not LORA_PAIRS:
        raise WorkflowError("target lora_control: config has no `lora_control` section (compressors, ratios)")


def lora_control_target(wildcards):
    """Target lora_control: an input function, so that only asking for it without the config section fails."""
    _require_lora_pairs()
    return lora_control_outputs()


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
    log:
        P.log("report_ablation"),
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_ablation.py"


def lora_control_cells_input(wildcards):
    """Per-cell files of each LoRA cell and its twin; asking for the report without the config section fails."""
    _require_lora_pairs()
    return cell_results([c for pair in LORA_PAIRS for c in pair])


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
