"""Cost of inference per model version: measured seconds, priced, budgeted and reported."""
