"""Benchmarks of the platform: each stage against its target and a baseline of the same run.

`python -m bench [names...] [--smoke]` (or `make bench`, `make bench-smoke`) runs them against
a private stack on loopback and writes `bench/results/<name>.json` and `bench/RESULTS.md`.
"""
