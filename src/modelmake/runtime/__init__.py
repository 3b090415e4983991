"""ONNX and ONNX Runtime: model metadata, sessions with settings, batched and timed runs. Imported lazily by passes, metrics and the package."""
