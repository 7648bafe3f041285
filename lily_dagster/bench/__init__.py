"""Benchmarks behind `lily bench …` (CONTRACT.md §2)."""
