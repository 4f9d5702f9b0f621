"""Rule generate_questions (placeholder until implemented)."""
raise NotImplementedError("generate_questions")
