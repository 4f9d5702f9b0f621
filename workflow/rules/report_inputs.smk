# What the report rules read and how their outputs are flagged for the Snakemake report (functions and lists
# only; the rules are in report.smk, which is included after every rule these functions name).

flag_for_report = report  # snakemake.io.report, the flag of a report artifact
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
        # an alias: snakefmt may start a line with the call, and the parser would read `report(` as the keyword
        out.append(
            flag_for_report(
                f,
                caption=f"../report/{name}.rst",
                category=paths.REPORT_CATEGORIES[name],
                subcategory=name,
                labels=labels,
            )
        )
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
    """Every file that report_main reads (the targets list them too; see the Snakefile)."""
    return cell_results(MAIN_CELLS) + dynamics_inputs()


def _require_lora_pairs():
    if not LORA_PAIRS:
        raise WorkflowError("target lora_control: config has no `lora_control` section (compressors, ratios)")


def lora_control_target(wildcards):
    """Target lora_control: an input function, so that only asking for it without the config section fails."""
    _require_lora_pairs()
    return lora_control_outputs()


def lora_control_cells_input(wildcards):
    """Per-cell files of each LoRA cell and its twin; asking for the report without the config section fails."""
    _require_lora_pairs()
    return cell_results([c for pair in LORA_PAIRS for c in pair])
