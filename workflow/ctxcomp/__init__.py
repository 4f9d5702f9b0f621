"""ctxcomp: context compression scaling experiments (compressor LLM -> memory Z -> frozen decoder LLM)."""
__version__ = "0.1.0"
