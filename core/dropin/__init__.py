"""dropin: a model server that speaks the TensorFlow Serving API, built as a small core plus plugins."""

__version__ = "0.1.0"
