"""The benchmark: streaminfer against its limits, baselines and peers, side by side."""
