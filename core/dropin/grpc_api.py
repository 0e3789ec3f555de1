"""Thin gRPC servicers for tensorflow.serving.PredictionService and ModelService.

They decode protos, call the data plane, and encode its results; every error becomes a gRPC
status through the one table in errors.py. Classify, Regress and MultiInference are not
declared, so gRPC answers them UNIMPLEMENTED.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import grpc
from google.protobuf import message_factory

from ._proto.tensorflow.core.protobuf import meta_graph_pb2
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
from .dataplane import DataPlane, ModelMetadata
from .dtypes import DType
from .errors import DropinError, Status
from .metrics import GRPC, METADATA, PREDICT, STATUS, Metrics
from .models import ModelVersion
from .shapes import TensorSpec
from .tensor_proto import ProtoTensor, fill_proto

log = logging.getLogger("dropin.grpc")

SIGNATURE_KEY = "serving_default"
METADATA_FIELD = "signature_def"

R = TypeVar("R")


class Undecodable:
    """What a request that is not a valid protobuf message deserializes to: the servicer answers
    it INVALID_ARGUMENT (gRPC's own deserializer would make it UNKNOWN, a server error)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Turn DropinError into its gRPC status, and anything unexpected into INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
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


def _tensor_info(spec: TensorSpec) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=spec.name, dtype=spec.dtype.tf_enum)
    for d in spec.shape:
        info.tensor_shape.dim.add().size = d.metadata_size
    return info


def metadata_response(meta: ModelMetadata) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataResponse as OVMS builds it (docs/wire-contract.md); REST prints it as JSON."""
    signature = meta_graph_pb2.SignatureDef()
    for name, spec in meta.inputs.items():
        signature.inputs[name].CopyFrom(_tensor_info(spec))
    for name, spec in meta.outputs.items():
        signature.outputs[name].CopyFrom(_tensor_info(spec))
    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.signature_def[SIGNATURE_KEY].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = meta.model_name
    response.model_spec.version.value = meta.version
    response.metadata[METADATA_FIELD].Pack(signatures)
    return response


def status_response(versions: Iterable[ModelVersion]) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusResponse for these versions (docs/wire-contract.md); REST prints it as JSON."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for version in versions:
        entry = response.model_version_status.add()
        entry.version = version.number
        entry.state = int(version.state)
        entry.status.error_code = version.error_code
        entry.status.error_message = version.error_message
    return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, dataplane: DataPlane, metrics: Metrics | None = None) -> None:
        self.dataplane = dataplane
        self.metrics = metrics

    @_rpc
    async def Predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext) -> predict_pb2.PredictResponse:
        probe = self.metrics.probe(GRPC, PREDICT) if self.metrics is not None else None
        try:
            spec = request.model_spec
            tensors = request.inputs  # iterated by key: a protobuf map's items() is a Python-level view
            inputs = {name: ProtoTensor(tensors[name]) for name in tensors}
            result = await self.dataplane.predict(spec.name, spec.version.value, inputs, request.output_filter, probe)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = result.model_name
            response.model_spec.version.value = result.version
            response.model_spec.signature_name = SIGNATURE_KEY
            outputs = response.outputs
            for name, array in result.outputs.items():
                try:
                    dtype = DType.from_numpy(array.dtype) if array.dtype != object else DType.STRING
                except ValueError:
                    raise DropinError(Status.UNSUPPORTED_OUTPUT_PRECISION, f"output {name} has type {array.dtype}") from None
                fill_proto(outputs[name], array, dtype)
        except Exception:
            if probe is not None:
                probe.done(False)
            raise
        if probe is not None:
            probe.done(True)
        return response

    @_rpc
    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise DropinError(Status.MODEL_SPEC_MISSING)
        if list(request.metadata_field) != [METADATA_FIELD]:
            raise DropinError(Status.INVALID_SIGNATURE_DEF)
        probe = self.metrics.probe(GRPC, METADATA) if self.metrics is not None else None
        meta = await self.dataplane.metadata(request.model_spec.name, request.model_spec.version.value, probe)
        response = metadata_response(meta)
        if probe is not None:
            probe.done(True)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self,
        dataplane: DataPlane,
        reload_config: Callable[[Any], Awaitable[bool]],
        metrics: Metrics | None = None,
    ) -> None:
        self.dataplane = dataplane
        self._reload_config = reload_config
        self.metrics = metrics

    @_rpc
    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        probe = self.metrics.probe(GRPC, STATUS) if self.metrics is not None else None
        try:
            response = status_response(self.dataplane.status(spec.name, spec.version.value, probe))
        except Exception:
            if probe is not None:
                probe.done(False)
            raise
        if probe is not None:
            probe.done(True)
        return response

    @_rpc
    async def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        # A refusal raises (INVALID_ARGUMENT, as TF Serving answers); not enabled: OVMS's empty OK
        response = model_management_pb2.ReloadConfigResponse()
        if await self._reload_config(request.config):
            response.status.error_code = 0
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
