"""Benchmarks: ``python -m bench.<name> [--quick]``; results in ``bench/results/<name>.json``."""
