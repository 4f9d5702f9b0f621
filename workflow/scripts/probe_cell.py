"""Rule probe_cell (placeholder until implemented)."""
raise NotImplementedError("probe_cell")
