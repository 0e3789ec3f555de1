"""Health: the standard grpc.health.v1.Health service and server reflection on the gRPC port, and
the readiness answers of the KServe-style REST checks (/v2/health/*, /v2/models/.../ready).

The server is live as soon as it listens, and ready once the initial model loading has
finished (OVMS: the servable manager module is INITIALIZED).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._proto.tensorflow_serving.apis import model_service_pb2, prediction_service_pb2
from .errors import DropinError, Status
from .models import ModelTable, State

SERVED = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)
HEALTH_SERVICE = health.SERVICE_NAME
REFLECTION_SERVICE = reflection.SERVICE_NAME


class GrpcHealth:
    """grpc.health.v1.Health: NOT_SERVING until the server is ready, then SERVING, for the
    server as a whole ("") and for each TF Serving service; NOT_SERVING again on shutdown."""

    def __init__(self, server: grpc.Server) -> None:
        # non-blocking: a Watch stream holds no thread of the server while it waits for a change
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", *SERVED):
            self.servicer.set(service, status)

    def shutdown(self) -> None:
        self.servicer.enter_graceful_shutdown()


def add_reflection(server: grpc.Server) -> None:
    """gRPC server reflection (v1alpha, what grpcurl and most tools ask) listing every service."""
    reflection.enable_server_reflection((*SERVED, HEALTH_SERVICE, REFLECTION_SERVICE), server)


def model_ready(table: ModelTable, name: str, version: int) -> DropinError | None:
    """None if the version (0: the default version) is AVAILABLE. Otherwise the error to answer:
    a missing model or version is a DropinError with a 404 status; a known version that is not
    AVAILABLE (loading, failed, retired) is the reason it cannot serve, answered 503."""
    model = table.get(name)  # raises MODEL_NAME_MISSING
    if version == 0:
        if model.default is not None:
            return None
        if not model.versions:
            raise DropinError(Status.MODEL_VERSION_MISSING)
        if any(v.state < State.AVAILABLE for v in model.versions.values()):
            return DropinError(Status.MODEL_VERSION_NOT_LOADED_YET)
        return DropinError(Status.MODEL_VERSION_NOT_LOADED_ANYMORE)
    found = model.versions.get(version)
    if found is None:
        raise DropinError(Status.MODEL_VERSION_MISSING)
    if found.state == State.AVAILABLE:
        return None
    if found.state > State.AVAILABLE:
        return DropinError(Status.MODEL_VERSION_NOT_LOADED_ANYMORE)
    return DropinError(Status.MODEL_VERSION_NOT_LOADED_YET)
