"""Drift detection: river detectors per sample, evidently over windows, what the monitor keeps per model version, and seeded shifted streams."""
