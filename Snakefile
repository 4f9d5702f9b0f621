# Context-compression scaling experiments: the whole DAG of the paper.
#   snakemake -n all                               plan the 27 cells of Table 2 (config.yaml)
#   snakemake --profile profiles/tiny paper        every table and figure with the tiny CPU preset
#   snakemake --profile profiles/slurm paper       the same on a Slurm GPU cluster
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
from ctxcomp.config import checked_configfile, preset_path  # noqa: E402


# checked first, so that a YAML syntax error names the file, line and column
configfile: checked_configfile("config.yaml")


# A preset named on the command line (`--config preset=tiny`, as profiles/tiny does) is merged over config.yaml and
# under anything else given there; read here rather than by --configfile, so that its YAML errors are named too.
if config.get("preset"):
    workflow.configfile(checked_configfile(preset_path(config["preset"])))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/tiny.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/questions.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/report_inputs.smk"
include: "workflow/rules/report.smk"


# Targets list the per-cell results the reports read as well: Snakemake re-plans a job for a missing input of a
# target, not for a missing intermediate file, so a deleted result is re-made (and its report follows).


rule all:
    """Table 2 and Figures 1-4 for the main decoder (27 cells with config.yaml)."""
    input:
        main_report_outputs(),
        main_report_inputs(),


rule ablation:
    """Table 3: the decoder ablation."""
    input:
        ablation_report_outputs(),
        cell_results(ABLATION_CELLS),


rule paper:
    """Every table and figure of the paper."""
    input:
        main_report_outputs(),
        main_report_inputs(),
        ablation_report_outputs(),
        cell_results(ABLATION_CELLS),


rule lora_control:
    """The LoRA control (config `lora_control`): each LoRA cell beside its full-fine-tune twin."""
    input:
        lora_control_target,
