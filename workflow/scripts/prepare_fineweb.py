"""Rule prepare_fineweb (placeholder until implemented)."""
raise NotImplementedError("prepare_fineweb")
