"""Rule prepare_qa (placeholder until implemented)."""
raise NotImplementedError("prepare_qa")
