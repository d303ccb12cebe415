"""Kafka side: consume requests, batch them through the worker pools, produce predictions and
dead letters, and commit offsets only behind what the broker has acknowledged."""
