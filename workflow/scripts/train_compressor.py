"""Rule train_compressor (placeholder until implemented)."""
raise NotImplementedError("train_compressor")
