"""The consume → decode → batch → infer → produce → commit path, one concern per module."""
