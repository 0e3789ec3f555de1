"""Thin gRPC servicers for tensorflow.serving.PredictionService and ModelService.

Each opens a data plane request scope, decodes its request there and encodes the result as TF
Serving's message (tfs_messages.py); every error becomes a gRPC status through the one table in
errors.py. Classify, Regress and MultiInference are not declared, so gRPC answers them
UNIMPLEMENTED.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import message_factory

from ._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)
from .dataplane import DataPlane
from .errors import DropinError, Status
from .metrics import GRPC, METADATA, PREDICT, STATUS
from .tensor_proto import ProtoTensor
from .tfs_messages import METADATA_FIELD, metadata_response, predict_response, status_response

log = logging.getLogger("dropin.grpc")

R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]


class Undecodable:
    """What a request that is not a valid protobuf message deserializes to: the servicer answers
    it INVALID_ARGUMENT (gRPC's own deserializer would make it UNKNOWN, a server error)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Turn DropinError into its gRPC status, and anything unexpected into INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        try:
            if type(request) is Undecodable:
                raise DropinError(Status.INVALID_REQUEST_MESSAGE, request.reason)
            return await method(self, request, context)
        except DropinError as exc:
            await context.abort(exc.status.grpc_code, exc.message)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"Internal server error: {type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")

    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    @_rpc
    async def Predict(self, request: predict_pb2.PredictRequest, context: Context) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        with self.dataplane.request(GRPC, PREDICT) as scope:
            await scope.resolve(spec.name, spec.version.value)
            tensors = request.inputs  # iterated by key: a protobuf map's items() is a Python-level view
            inputs = {name: ProtoTensor(tensors[name]) for name in tensors}
            result = await scope.infer(inputs, request.output_filter)
            return predict_response(result)

    @_rpc
    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: Context
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise DropinError(Status.MODEL_SPEC_MISSING)
        if list(request.metadata_field) != [METADATA_FIELD]:
            raise DropinError(Status.INVALID_SIGNATURE_DEF)
        with self.dataplane.request(GRPC, METADATA) as scope:
            return metadata_response(await scope.metadata(request.model_spec.name, request.model_spec.version.value))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, dataplane: DataPlane, reload_config: Callable[[Any], Awaitable[bool]]) -> None:
        self.dataplane = dataplane
        self._reload_config = reload_config

    @_rpc
    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: Context
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        with self.dataplane.request(GRPC, STATUS) as scope:
            return status_response(scope.status(spec.name, spec.version.value))

    @_rpc
    async def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: Context
    ) -> model_management_pb2.ReloadConfigResponse:
        # A refusal raises (INVALID_ARGUMENT, as TF Serving answers); not enabled: OVMS's empty OK
        response = model_management_pb2.ReloadConfigResponse()
        if await self._reload_config(request.config):
            response.status.error_code = 0  # type: ignore[assignment]  # the stubs want a Code, an int
            response.status.error_message = "OK"
        return response


def _tolerant(message_class: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except Exception as exc:  # DecodeError, RecursionError on hostile nesting, ...
            return Undecodable(f"{message_class.DESCRIPTOR.full_name}: {exc}")

    return deserialize


def _handlers(service: Any, servicer: Any) -> grpc.GenericRpcHandler:
    """The service's unary methods, registered with request deserializers that never raise."""
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_tolerant(request_class),
            response_serializer=response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def add_services(server: grpc.aio.Server, prediction: PredictionService, models: ModelService) -> None:
    prediction_descriptor = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    model_descriptor = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    server.add_generic_rpc_handlers((_handlers(prediction_descriptor, prediction), _handlers(model_descriptor, models)))
