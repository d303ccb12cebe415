"""Running a model: the ONNX Runtime session, the Ray actor around it, the pool of actors, and in-process inference."""
