"""Composition root: CLI, settings, and the wiring of streams, workers and monitoring."""

__version__ = "0.1.0"
