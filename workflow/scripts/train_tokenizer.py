"""Rule train_tokenizer (placeholder until implemented)."""
raise NotImplementedError("train_tokenizer")
