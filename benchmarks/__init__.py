"""Benchmarks of the SGE layer and SGE-ResNet (see RESULTS.md)."""
