"""dropin's test kit, for dropin itself and for plugin authors.

Installed with dropin and registered as a pytest plugin (entry point `pytest11`), so a plugin's
tests get these fixtures without any import:

- `dropin_repository`: a temporary `ModelRepository` (versions appear by rename, as in production);
- `dropin_server`: starts `dropin serve` processes (`DropinServer`), all stopped after the test;
- `dropin_grpc_client`, `dropin_rest_client`: clients for a server or an address;
- `dropin_conformance_models`: the test-model writer of the backend under `--dropin-backend`.

A backend of its own, `numpy` (`numpy_backend`, an entry point of dropin that claims only
`numpy_model.json` directories), serves the models `numpy_models` writes, with no runtime but
numpy: dropin's core tests run on it.

Helpers that test files share (they import them; they never import each other): `client`
(predict_request, outputs_of), `expect` (exact gRPC and REST errors), `raw_http` (one HTTP
request, nothing hidden), `status` (wait_until, version states), `fake_plugins` (a plugin
installed as a distribution on PYTHONPATH), `typed_protos`, and `rewrite` (weights rewritten in
place under load, a check any backend that maps its weights runs).

And the backend conformance suite, which any backend plugin runs against itself:

    pytest --dropin-backend=NAME --pyargs dropin.testing.conformance

See docs/plugins.md, "Testing a plugin".
"""

from __future__ import annotations

from typing import Any

from .models import ALL_DTYPES, ConformanceModels

__all__ = [
    "ALL_DTYPES",
    "ConformanceModels",
    "DropinServer",
    "GrpcClient",
    "ModelRepository",
    "RestClient",
    "RestError",
    "free_port",
    "outputs_of",
    "predict_request",
]


def __getattr__(name: str) -> Any:  # the server and clients import grpc: only when asked for
    if name in ("DropinServer", "free_port"):
        from . import server

        return getattr(server, name)
    if name in ("GrpcClient", "RestClient", "RestError", "outputs_of", "predict_request"):
        from . import client

        return getattr(client, name)
    if name == "ModelRepository":
        from .repository import ModelRepository

        return ModelRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
