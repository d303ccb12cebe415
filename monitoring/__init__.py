"""Prometheus metrics, and later drift detection and alerting."""
