"""Alerting on the Kafka side: the rules consumer (events in, notifications out) and webhook delivery."""
