"""Rule pretrain_base (placeholder until implemented)."""
raise NotImplementedError("pretrain_base")
