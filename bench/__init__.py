"""Benchmarks for Tierhost: `make bench` runs them and writes docs/BENCHMARKS.md.

Every figure is measured in the same run as its baseline, on the same machine and the
same models, and reported as a median over several runs with the ratio to the baseline.
"""
