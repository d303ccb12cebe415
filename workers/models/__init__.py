"""The model store: versions on disk, aliases and their audit log, FP16/INT8 variants."""
