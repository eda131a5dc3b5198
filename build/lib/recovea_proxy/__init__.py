"""Recovea proxy: a self-hosted, drop-in LLM API gateway."""

__version__ = "0.1.0"
