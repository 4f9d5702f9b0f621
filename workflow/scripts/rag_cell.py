"""Rule rag_cell (placeholder until implemented)."""
raise NotImplementedError("rag_cell")
