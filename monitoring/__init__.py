"""Monitoring: drift detection, label-joined model quality, experiments, alerting rules, and Prometheus metrics."""
