"""TF Serving's response messages, built from what the data plane returns.

One place for the PredictResponse, GetModelMetadataResponse (its SignatureDef map) and
GetModelStatusResponse that OVMS sends. gRPC serializes these messages; REST renders the metadata
and status messages as JSON (its Predict body is JSON made straight from the output arrays, see
rest_json.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from math import prod

import numpy as np

from ._proto.tensorflow.core.protobuf import meta_graph_pb2
from ._proto.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2
from .dtypes import DType
from .errors import DropinError, Status
from .models import ModelVersion
from .request_scope import ModelMetadata, PredictResult
from .sequences import SEQUENCE_ID
from .shapes import TensorSpec
from .tensor_proto import fill_proto

SIGNATURE_KEY = "serving_default"
#: responses whose outputs hold more bytes than this are built by protobuf each time: copying the
#: bytes costs more than building the message, and a layout's first response costs two
LAYOUT_MAX_BYTES = 1 << 20
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


def predict_response_bytes(result: PredictResult) -> bytes:
    """`predict_response(result)`, serialized. Responses of a model version whose outputs have the
    same names, types and shapes differ only in the outputs' bytes: protobuf serializes such a
    response once (`_layout`), and each one after it is that serialization with its own output
    bytes in their places, which costs a fraction of building and serializing the message."""
    outputs = result.outputs
    if len(outputs) == 1:  # the common answer, in fewer steps
        ((name, array),) = outputs.items()
        arrays: list[np.ndarray] = [array]
        key: tuple[tuple[str, np.dtype, tuple[int, ...]], ...] = ((name, array.dtype, array.shape),)
    else:
        arrays = list(outputs.values())
        # a comprehension: here it costs half what zip and map with strict do (docs/performance.md)
        key = tuple([(name, array.dtype, array.shape) for name, array in outputs.items()])
    layout = _layout(result.model_name, result.version, key)
    if layout is None:
        return predict_response(result).SerializeToString()
    pieces, order = layout
    if len(arrays) == 1:
        return b"".join((pieces[0], arrays[0].tobytes(), pieces[1]))
    chunks = [pieces[0]]
    for i, index in enumerate(order):
        chunks.append(arrays[index].tobytes())  # C order whatever the strides, as fill_proto writes
        chunks.append(pieces[i + 1])
    return b"".join(chunks)


@lru_cache(maxsize=1024)
def _layout(
    model_name: str, version: int, outputs: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]
) -> tuple[tuple[bytes, ...], tuple[int, ...]] | None:
    """The serialized PredictResponse of outputs of these names, types and shapes, cut where the
    outputs' bytes go: (the pieces around them, which output comes at each cut). The bytes are
    found by making each output of distinct random bytes and looking for them: a layout whose
    marks are not each found exactly once is not used (None), nor one for the outputs the
    general path writes otherwise (strings, sequence_id, empty or converted tensors)."""
    if sum(prod(shape) * dtype.itemsize for _, dtype, shape in outputs) > LAYOUT_MAX_BYTES:
        return None
    for _ in range(3):  # a mark of a few bytes may happen to occur elsewhere in the message: draw again
        marks = []
        for name, dtype, shape in outputs:
            try:
                kind = DType.from_numpy(dtype) if dtype.kind != "O" else DType.STRING
            except ValueError:
                return None  # predict_response raises the error
            nbytes = prod(shape) * dtype.itemsize
            if kind is DType.STRING or kind.numpy != dtype or name == SEQUENCE_ID or nbytes == 0:
                return None
            marks.append(os.urandom(nbytes))
        arrays = {
            name: np.frombuffer(mark, dtype).reshape(shape)
            for (name, dtype, shape), mark in zip(outputs, marks, strict=True)
        }
        serialized = predict_response(PredictResult(model_name, version, arrays)).SerializeToString()
        places = [serialized.find(mark) for mark in marks]
        if all(p >= 0 and serialized.find(mark, p + 1) < 0 for p, mark in zip(places, marks, strict=True)):
            order = sorted(range(len(marks)), key=places.__getitem__)
            cuts = [0]
            for index in order:
                cuts += [places[index], places[index] + len(marks[index])]
            cuts.append(len(serialized))
            pieces = tuple(serialized[cuts[i] : cuts[i + 1]] for i in range(0, len(cuts), 2))
            return pieces, tuple(order)
    return None


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
