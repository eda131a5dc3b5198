"""Benchmarks: the gateway against a bare floor proxy and a direct call."""
