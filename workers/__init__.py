"""Model repository, ONNX Runtime sessions, and the Ray actor pool that runs them in batches."""
