"""dropin's errors, and the one table that maps them to gRPC codes and HTTP statuses.

Each `Status` carries OVMS's base message; a `DropinError` adds the details, giving
"<base> - <details>" exactly as OVMS formats its gRPC status details. A plugin declares the
errors only it raises as `ErrorStatus` values (the image plugin's "Image parsing failed", say)
through the `dropin_declare_vocabulary` hook; they are raised, formatted and answered exactly as
the core's (see vocabulary.py).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import grpc


class Status(enum.Enum):
    """(base message, gRPC code, HTTP status). Base messages are OVMS's `status.cpp` texts."""

    # resolution of model and version
    MODEL_NAME_MISSING = ("Model with requested name is not found", grpc.StatusCode.NOT_FOUND, 404)
    MODEL_VERSION_MISSING = ("Model with requested version is not found", grpc.StatusCode.NOT_FOUND, 404)
    MODEL_VERSION_NOT_LOADED_ANYMORE = ("Model with requested version is retired", grpc.StatusCode.NOT_FOUND, 404)
    MODEL_VERSION_NOT_LOADED_YET = ("Model with requested version is not loaded yet", grpc.StatusCode.UNAVAILABLE, 404)
    INVALID_REQUEST_MESSAGE = ("Invalid request message", grpc.StatusCode.INVALID_ARGUMENT, 400)
    MODEL_SPEC_MISSING = ("model_spec missing in request", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_SIGNATURE_DEF = ("Invalid signature name", grpc.StatusCode.INVALID_ARGUMENT, 400)

    # request validation, in the order it runs (docs/wire-contract.md#validation-order)
    INVALID_NO_OF_INPUTS = ("Invalid number of inputs", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_MISSING_INPUT = ("Missing input with specific name", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_SHAPE = ("Invalid input shape", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_PRECISION = ("Invalid input precision", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_NO_OF_SHAPE_DIMENSIONS = ("Invalid number of shape dimensions", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_BATCH_SIZE = ("Invalid input batch size", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_CONTENT_SIZE = ("Invalid content size of tensor proto", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_VALUE_COUNT = ("Invalid number of values in tensor proto container", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_VALUE = ("Invalid value for the input type", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_OUTPUT_FILTER = ("Invalid output name in output_filter", grpc.StatusCode.INVALID_ARGUMENT, 400)
    TOO_MANY_ELEMENTS = ("Request is too large", grpc.StatusCode.RESOURCE_EXHAUSTED, 413)

    # string inputs, and binary ones (one item per batch entry, see preprocess.check_binary_batch);
    # the image plugin declares its own errors (dropin_image/errors.py)
    STRING_VAL_EMPTY = ("String val is empty", grpc.StatusCode.INVALID_ARGUMENT, 400)
    UNSUPPORTED_STRING_INPUT = (
        "String input is not supported for this model input",
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )

    # serving
    UNSUPPORTED_OUTPUT_PRECISION = ("Unsupported serialization precision", grpc.StatusCode.INTERNAL, 500)
    INFERENCE_ERROR = ("Internal inference error", grpc.StatusCode.INTERNAL, 500)
    PLUGIN_ERROR = ("Plugin error", grpc.StatusCode.INTERNAL, 500)
    SERVER_NOT_READY = ("Server is not ready", grpc.StatusCode.UNAVAILABLE, 503)
    INTERNAL_ERROR = ("Internal server error", grpc.StatusCode.INTERNAL, 500)
    SHUTTING_DOWN = ("Server is shutting down", grpc.StatusCode.UNAVAILABLE, 503)

    # pipelines: a node's result that the pipeline cannot carry on with, a custom node's failure
    PIPELINE_WRONG_DIMENSION_SIZE_TO_DEMULTIPLY = (
        "Wrong dimension size to demultiply", grpc.StatusCode.FAILED_PRECONDITION, 412
    )
    PIPELINE_DEMULTIPLEXER_NO_RESULTS = (
        "Pipeline execution aborted due to no content from custom node", grpc.StatusCode.FAILED_PRECONDITION, 412
    )
    CUSTOM_NODE_INVALID_INPUT = ("Custom node refused its input", grpc.StatusCode.INVALID_ARGUMENT, 400)
    CUSTOM_NODE_FAILED = ("Custom node library execution failed", grpc.StatusCode.INTERNAL, 500)

    # model loading and configuration
    FILE_INVALID = ("File not found or cannot open", grpc.StatusCode.FAILED_PRECONDITION, 412)
    MODEL_LOAD_FAILED = ("Model could not be loaded", grpc.StatusCode.FAILED_PRECONDITION, 412)
    RESHAPE_ERROR = ("Model could not be reshaped with requested shape", grpc.StatusCode.FAILED_PRECONDITION, 412)
    CONFIG_INVALID = ("Invalid configuration", grpc.StatusCode.INVALID_ARGUMENT, 400)
    CONFIG_RELOAD_FAILED = ("Reloading config file failed", grpc.StatusCode.INTERNAL, 500)
    METRICS_REST_PORT_MISSING = ("Missing rest_port parameter in server CLI", grpc.StatusCode.INVALID_ARGUMENT, 400)
    INVALID_METRICS_FAMILY_NAME = ("Invalid name in metrics_list", grpc.StatusCode.INVALID_ARGUMENT, 400)

    # REST front end: URL, method and body. The gRPC codes are used only in logs.
    REST_INVALID_URL = ("Invalid request URL", grpc.StatusCode.INVALID_ARGUMENT, 400)
    REST_UNSUPPORTED_METHOD = ("Unsupported method", grpc.StatusCode.UNIMPLEMENTED, 406)
    REST_NOT_FOUND = ("Requested REST resource not found", grpc.StatusCode.UNIMPLEMENTED, 404)
    PATH_INVALID = ("The provided base path is invalid or doesn't exists", grpc.StatusCode.INVALID_ARGUMENT, 400)
    REST_BODY_TOO_LARGE = ("Request body is too large", grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
    JSON_INVALID = ("The file is not valid json", grpc.StatusCode.INVALID_ARGUMENT, 412)
    REST_BODY_IS_NOT_AN_OBJECT = ("Request body should be JSON object", grpc.StatusCode.INVALID_ARGUMENT, 400)
    REST_PREDICT_UNKNOWN_ORDER = (
        "Invalid JSON structure. Could not detect row or column format", grpc.StatusCode.INVALID_ARGUMENT, 400
    )
    REST_INSTANCES_NOT_AN_ARRAY = (
        "Invalid JSON structure. Nonamed instance is not an array.",
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )
    REST_NAMED_INSTANCE_NOT_AN_OBJECT = (
        "Invalid JSON structure. One of named instances is not a JSON object.", grpc.StatusCode.INVALID_ARGUMENT, 400
    )
    REST_NO_INSTANCES_FOUND = (
        "Invalid JSON structure. Missing instances in row format",
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )
    REST_INSTANCES_NOT_NAMED_OR_NONAMED = (
        "Could not detect neither named or nonamed format",
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )
    REST_COULD_NOT_PARSE_INSTANCE = (
        "Could not parse instance content. Not valid ndarray detected", grpc.StatusCode.INVALID_ARGUMENT, 400
    )
    REST_INSTANCES_BATCH_SIZE_DIFFER = (
        "Invalid JSON structure. Request inputs have different batch sizes", grpc.StatusCode.INVALID_ARGUMENT, 400
    )
    REST_INPUTS_NOT_AN_OBJECT = (
        "Invalid JSON structure. One of inputs is not a JSON object.",
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )
    REST_NO_INPUTS_FOUND = ("Invalid JSON structure, missing inputs", grpc.StatusCode.INVALID_ARGUMENT, 400)
    REST_COULD_NOT_PARSE_INPUT = (
        "Could not parse input content. Not valid ndarray detected",
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )
    INVALID_INPUT_FORMAT = (
        "Inputs inside buffer does not match expected format.",
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )
    REST_PROTO_TO_STRING_ERROR = ("Response parsing to JSON error", grpc.StatusCode.INTERNAL, 500)

    @property
    def message(self) -> str:
        return self.value[0]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return self.value[1]

    @property
    def http_status(self) -> int:
        return self.value[2]


_ERROR_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class ErrorStatus:
    """An error a plugin raises, with what a `Status` has: a name (upper case, unique among the
    core's and every plugin's), OVMS-style base message, gRPC code and HTTP status.

    Declare it as a module constant, register it with ``vocabulary.error(...)`` from the
    `dropin_declare_vocabulary` hook, and raise it as ``DropinError(MY_ERROR, "details")``."""

    name: str
    message: str
    grpc_code: grpc.StatusCode
    http_status: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _ERROR_NAME.fullmatch(self.name):
            raise ValueError(f"error name {self.name!r} must be upper case: letters, digits and _")
        if not isinstance(self.message, str) or not self.message:
            raise ValueError(f"error {self.name} needs a base message")
        if not isinstance(self.grpc_code, grpc.StatusCode) or self.grpc_code is grpc.StatusCode.OK:
            raise ValueError(f"error {self.name}: grpc_code must be a grpc.StatusCode but OK, got {self.grpc_code!r}")
        if not isinstance(self.http_status, int) or not 400 <= self.http_status <= 599:
            raise ValueError(
                f"error {self.name}: http_status must be an HTTP error status, 400-599, not {self.http_status!r}"
            )


#: what a `DropinError` carries: one of the core's statuses or one a plugin declared
AnyStatus = Status | ErrorStatus


class DropinError(Exception):
    """An error with a `Status` (or a plugin's `ErrorStatus`) and optional details; str() is what
    clients see."""

    def __init__(self, status: AnyStatus, details: str | None = None) -> None:
        self.status = status
        self.details = details
        super().__init__(f"{status.message} - {details}" if details else status.message)

    @property
    def message(self) -> str:
        return str(self)
