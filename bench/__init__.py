"""Benchmarks: ``python -m bench`` runs them all and prints JSON lines (see BENCHMARKS.md)."""
