"""Thin gRPC servicers for tensorflow.serving.PredictionService and ModelService.

They run in the threads of grpc's thread-pool server. A Predict whose model offers `infer_now`
(a stateful model: `infer_sequence_now`) is served entirely in its handler thread (parse,
validate, infer, serialize: OpenVINO releases the GIL while it infers), which costs less per
request than a grpc.aio call on the event loop (docs/performance.md); so is a pipeline whose
nodes run in turn on such models. Everything else (waiting for a version being loaded,
conversions, reshape reloads, batching, models without `infer_now`, the other methods) runs on
the event loop, the handler thread waiting for it. Each opens a data plane request scope,
decodes its request there and encodes the result as TF Serving's message (tfs_messages.py).

Handler threads contend for the GIL, so each microsecond of Python per request costs several
under load. The common request, whose inputs are exactly the model's (or those of the last
request that passed validation), skips validation (`decode_exact`), and every Predict answers
bytes spliced into a serialization made once (`predict_response_bytes`).

Every error becomes a gRPC status through the one table in
errors.py. Classify, Regress and MultiInference are not declared, so gRPC answers them
UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable, Coroutine
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
from .tensor_proto import ProtoTensor, decode_exact
from .tfs_messages import METADATA_FIELD, metadata_response, predict_response_bytes, status_response

log = logging.getLogger("dropin.grpc")

R = TypeVar("R")
Context = grpc.ServicerContext


class Undecodable:
    """What a request that is not a valid protobuf message deserializes to: the servicer answers
    it INVALID_ARGUMENT (gRPC's own deserializer would make it UNKNOWN, a server error)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _rpc(method: Callable[..., R]) -> Callable[..., R]:
    """Turn DropinError into its gRPC status, and anything unexpected into INTERNAL."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: Context) -> R:
        try:
            if type(request) is Undecodable:
                raise DropinError(Status.INVALID_REQUEST_MESSAGE, request.reason)
            return method(self, request, context)
        except DropinError as exc:
            context.abort(exc.status.grpc_code, exc.message)
        except concurrent.futures.CancelledError:  # the call ended (client gone, deadline) while on the loop
            context.abort(grpc.StatusCode.CANCELLED, "cancelled")
        except Exception as exc:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"Internal server error: {type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")

    return wrapper


class OnLoop:
    """Runs a coroutine on the server's event loop from a handler thread and waits for it; it is
    cancelled when the call ends first."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, context: Context, coroutine: Coroutine[Any, Any, R]) -> R:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)

        def cancel() -> None:  # no effect once done
            future.cancel()

        context.add_callback(cancel)
        return future.result()


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, dataplane: DataPlane, on_loop: OnLoop) -> None:
        self.dataplane = dataplane
        self.on_loop = on_loop

    @_rpc
    def Predict(self, request: predict_pb2.PredictRequest, context: Context) -> bytes:
        """The serialized PredictResponse (predict_response_bytes)."""
        spec = request.model_spec
        with self.dataplane.request(GRPC, PREDICT) as scope:
            tensors = request.inputs
            exact = scope.resolve_exact_now(spec.name, spec.version.value)
            if exact is not None:
                arrays = decode_exact(exact, tensors)
                if arrays is not None:  # the common request: nothing validation would refuse
                    return predict_response_bytes(scope.infer_exact_now(arrays, request.output_filter))
            elif not scope.resolved:  # waits for a version being loaded, or raises why there is none
                self.on_loop(context, scope.resolve(spec.name, spec.version.value))
            # iterated by key: a protobuf map's items() is a Python-level view
            inputs = {name: ProtoTensor(tensors[name]) for name in tensors}
            result = scope.infer_now(inputs, request.output_filter)
            if result is None:
                result = self.on_loop(context, scope.infer(inputs, request.output_filter))
            return predict_response_bytes(result)

    @_rpc
    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: Context
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise DropinError(Status.MODEL_SPEC_MISSING)
        if list(request.metadata_field) != [METADATA_FIELD]:
            raise DropinError(Status.INVALID_SIGNATURE_DEF)
        return self.on_loop(context, self._metadata(request.model_spec))

    async def _metadata(self, spec: Any) -> get_model_metadata_pb2.GetModelMetadataResponse:
        with self.dataplane.request(GRPC, METADATA) as scope:
            return metadata_response(await scope.metadata(spec.name, spec.version.value))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self, dataplane: DataPlane, reload_config: Callable[[Any], Coroutine[Any, Any, bool]], on_loop: OnLoop
    ) -> None:
        self.dataplane = dataplane
        self._reload_config = reload_config
        self.on_loop = on_loop

    @_rpc
    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: Context
    ) -> get_model_status_pb2.GetModelStatusResponse:
        return self.on_loop(context, self._status(request.model_spec))

    async def _status(self, spec: Any) -> get_model_status_pb2.GetModelStatusResponse:
        with self.dataplane.request(GRPC, STATUS) as scope:
            return status_response(scope.status(spec.name, spec.version.value))

    @_rpc
    def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: Context
    ) -> model_management_pb2.ReloadConfigResponse:
        # A refusal raises (INVALID_ARGUMENT, as TF Serving answers); not enabled: OVMS's empty OK
        response = model_management_pb2.ReloadConfigResponse()
        if self.on_loop(context, self._reload_config(request.config)):
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
            # Predict answers bytes already (tfs_messages.predict_response_bytes)
            response_serializer=None if method.name == "Predict" else response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def add_services(server: grpc.Server, prediction: PredictionService, models: ModelService) -> None:
    prediction_descriptor = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    model_descriptor = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    server.add_generic_rpc_handlers((_handlers(prediction_descriptor, prediction), _handlers(model_descriptor, models)))
