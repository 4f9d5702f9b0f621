"""Rule report_main (placeholder until implemented)."""
raise NotImplementedError("report_main")
