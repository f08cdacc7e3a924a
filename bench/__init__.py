"""Benchmarks: spawn servers, relay video, print tables (not imported by the product)."""
