"""Benchmarks behind `keycam bench`."""
