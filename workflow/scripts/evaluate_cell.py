"""Rule evaluate_cell (placeholder until implemented)."""
raise NotImplementedError("evaluate_cell")
