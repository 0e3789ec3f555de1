"""dropin-onnxruntime: the ONNX Runtime backend plugin for dropin (see plugin.py and backend.py)."""
