"""Prometheus metrics, each process's /metrics endpoint, and the file-based discovery that lists them."""
