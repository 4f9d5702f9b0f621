"""Rule probe_dynamics (placeholder until implemented)."""
raise NotImplementedError("probe_dynamics")
