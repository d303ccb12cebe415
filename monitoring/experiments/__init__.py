"""Traffic experiments: per-arm evidence, always-valid sequential tests, comparisons against the control, and sample-ratio checks."""
