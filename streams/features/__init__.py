"""Streaming features: a Faust app that joins requests with their predictions, aggregates them
per entity over time windows, and a sink that writes both into a Feast feature repository."""
