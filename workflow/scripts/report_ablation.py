"""Rule report_ablation (placeholder until implemented)."""
raise NotImplementedError("report_ablation")
