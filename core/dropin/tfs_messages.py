"""TF Serving's response messages, built from what the data plane returns.

One place for the PredictResponse, GetModelMetadataResponse (its SignatureDef map) and
GetModelStatusResponse that OVMS sends. gRPC serializes these messages; REST renders the metadata
and status messages as JSON (its Predict body is JSON made straight from the output arrays, see
rest_json.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._proto.tensorflow.core.protobuf import meta_graph_pb2
from ._proto.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2
from .dataplane import ModelMetadata, PredictResult
from .dtypes import DType
from .errors import DropinError, Status
from .models import ModelVersion
from .sequences import SEQUENCE_ID
from .shapes import TensorSpec
from .tensor_proto import fill_proto

SIGNATURE_KEY = "serving_default"
METADATA_FIELD = "signature_def"  # the only metadata field a GetModelMetadataRequest may ask for


def predict_response(result: PredictResult) -> predict_pb2.PredictResponse:
    """PredictResponse: the model spec that served, and every output as a TensorProto."""
    response = predict_pb2.PredictResponse()
    spec = response.model_spec
    spec.name = result.model_name
    spec.version.value = result.version
    spec.signature_name = SIGNATURE_KEY
    outputs = response.outputs
    for name, array in result.outputs.items():
        try:
            dtype = DType.from_numpy(array.dtype) if array.dtype != object else DType.STRING
        except ValueError:
            raise DropinError(Status.UNSUPPORTED_OUTPUT_PRECISION, f"output {name} has type {array.dtype}") from None
        fill_proto(outputs[name], array, dtype)
        if name == SEQUENCE_ID and dtype is DType.U64 and array.size == 1:  # in uint64_val, where OVMS puts it
            outputs[name].ClearField("tensor_content")
            outputs[name].uint64_val.append(int(array.reshape(-1)[0]))
    return response


def _tensor_info(spec: TensorSpec) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=spec.name, dtype=spec.dtype.tf_enum)  # type: ignore[arg-type]  # an int
    for d in spec.shape:
        info.tensor_shape.dim.add().size = d.metadata_size
    return info


def metadata_response(meta: ModelMetadata) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataResponse as OVMS builds it: one "serving_default" SignatureDef, packed in
    an Any under "signature_def", dynamic dimensions as -1."""
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
    """GetModelStatusResponse: one entry (state, error code and message) per version."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for version in versions:
        entry = response.model_version_status.add()
        entry.version = version.number
        # the stubs want the enums' own types (State, Code), which are ints
        entry.state = int(version.state)  # type: ignore[assignment]
        entry.status.error_code = version.error_code  # type: ignore[assignment]
        entry.status.error_message = version.error_message
    return response
