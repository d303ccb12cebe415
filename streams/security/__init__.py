"""Connecting to a secured Kafka: TLS, SASL (PLAIN, SCRAM, OAUTHBEARER), one model for every client."""
