"""Inference wrappers for exported face recognition models (``onnx_recognizer``); onnxruntime is imported lazily."""
