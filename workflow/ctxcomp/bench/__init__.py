"""Benchmarks: print figures, commit their output beside them."""
