"""`streaminfer demo`: the demo model built in code, the run that shows predictions flowing, and the drifting stream of `demo --drift`."""
