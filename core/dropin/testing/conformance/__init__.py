"""The backend conformance suite: what every dropin backend must do, tested against any backend.

    pytest --dropin-backend=NAME --pyargs dropin.testing.conformance

The backend's plugin provides the test models (`dropin_register_conformance_models`, see
`dropin.testing.models`). `test_backend.py` drives the backend in-process (metadata, dynamic
shapes, every dtype it declares, errors, concurrency, an event loop that never blocks, close);
`test_server.py` runs it inside a real `dropin serve` (the same through gRPC and REST, failing
inference answered INTERNAL, load and unload, hot swap with zero failed requests).
"""
