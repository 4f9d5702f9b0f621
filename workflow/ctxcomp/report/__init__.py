"""Report: collect result files, render Tables 2/3 and the figures, and index every artifact with provenance."""
from .build import (
                    ablation_report_files,
                    build_ablation_report,
                    build_lora_control_report,
                    build_main_report,
                    main_report_files,
)

__all__ = ["ablation_report_files", "build_ablation_report", "build_lora_control_report", "build_main_report",
           "main_report_files"]
