"""Predict request validation, in OVMS's order (docs/wire-contract.md#validation-order), protocol-neutral.

`InputPlan` holds what can be computed once per model version (the expected dtype, the batch
position, the converter a preprocessor claimed), so the per-request work is a few comparisons.
An `ExactPlan` lets a front end skip even those for the common request, and `convert_inputs`
runs the preprocessors of the inputs that need one, after validation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from math import prod
from typing import NamedTuple, Protocol

import numpy as np

from ._proto.tensorflow.core.framework.tensor_shape_pb2 import TensorShapeProto
from .dtypes import DType, tf_precision_name
from .errors import DropinError, Status
from .preprocess import InputConverter
from .sequences import SEQUENCE_ID
from .shapes import TensorSpec, format_shape

log = logging.getLogger("dropin.validation")


class RequestTensor(Protocol):
    """One input tensor of a request, as a protocol front end received it."""

    @property
    def tf_dtype(self) -> int:
        """The request's `tensorflow.DataType` value."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The declared shape (dims may be negative: validation rejects them)."""

    def array(self, name: str, dtype: DType) -> np.ndarray:
        """The data as `dtype` in `shape`; raise INVALID_CONTENT_SIZE / INVALID_VALUE_COUNT."""

    def strings(self) -> np.ndarray:
        """A DT_STRING tensor's raw entries as a 1-D object array of bytes."""


@dataclass(frozen=True)
class InputPlan:
    """How to validate and convert one model input; built at load time."""

    spec: TensorSpec
    converter: InputConverter | None = None
    converter_plugin: str = ""
    #: "batch" (batch_size "auto") or "shape" (shape "auto"): a request this input's batch or
    #: shape does not fit asks for a reshape reload (ReshapeRequired) instead of failing
    auto: str = ""
    # derived from spec once, because every request reads them
    tf_dtype: int = field(init=False, repr=False, compare=False)
    static_shape: tuple[int, ...] | None = field(init=False, repr=False, compare=False)
    # None: no batch dim, or a static one
    dynamic_batch_index: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = self.spec
        object.__setattr__(self, "tf_dtype", spec.dtype.tf_enum)
        static = all(d.is_static for d in spec.shape)
        object.__setattr__(self, "static_shape", tuple(d.low for d in spec.shape) if static else None)
        batch = spec.batch_index
        dynamic = batch is not None and batch < spec.rank and not spec.shape[batch].is_static
        object.__setattr__(self, "dynamic_batch_index", batch if dynamic else None)

    def check_shape(self, shape: Sequence[int]) -> None:
        """Rank, batch and other dims against the model (steps 6 to 8)."""
        if shape == self.static_shape:
            return
        spec = self.spec
        name = spec.name
        if len(shape) != spec.rank:
            raise DropinError(
                Status.INVALID_NO_OF_SHAPE_DIMENSIONS,
                f"Expected: {spec.shape_text()}; Actual: {format_shape(shape)}; input name: {name}",
            )
        batch = spec.batch_index
        if batch is not None and not spec.shape[batch].accepts(shape[batch]):
            if self.auto:
                raise ReshapeRequired()
            raise DropinError(
                Status.INVALID_BATCH_SIZE,
                f"Expected: {spec.shape[batch]}; Actual: {shape[batch]}; input name: {name}",
            )
        for i, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
            if i != batch and not want.accepts(got):
                if self.auto == "shape":
                    raise ReshapeRequired()
                raise DropinError(
                    Status.INVALID_SHAPE,
                    f"Expected: {spec.shape_text()}; Actual: {format_shape(shape)}; input name: {name}",
                )


class ReshapeRequired(Exception):
    """A request fits the model only once reloaded with its shapes (batch_size or shape "auto");
    `shapes` holds every input's requested shape (set by `validate_request`)."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
        super().__init__()
        self.shapes: Mapping[str, tuple[int, ...]] = shapes or {}


@dataclass(frozen=True)
class Conversion:
    """A request input a preprocessor converts (after validation, maybe in a worker thread)."""

    plan: InputPlan
    shape: tuple[int, ...]
    values: np.ndarray


class ExactInput(NamedTuple):
    """One input of an `ExactPlan`: what a request's tensor must be, exactly."""

    name: str
    dtype: DType
    # the shape as a gRPC request's TensorShapeProto holds it: `==` compares the two in C, where
    # reading the request's dims one by one would make a Python object of each
    tf_shape: TensorShapeProto
    shape: tuple[int, ...]
    nbytes: int


class ExactPlan(NamedTuple):
    """Inputs of given names, types and shapes that a model version accepts: a request with
    exactly those, `tensor_content` of exactly their sizes, needs no validation beyond that
    comparison (a front end makes the arrays itself, tensor_proto.decode_exact). Made once per
    version for numeric inputs of static shapes, else from the shapes of the last request that
    passed validation (`Servable.exact`); any other request takes `validate_request`, which also
    says what is wrong."""

    inputs: tuple[ExactInput, ...]
    by_name: dict[str, ExactInput]  # the same, for a request that names its inputs
    elements: int  # in all inputs, against --max_elements
    largest: int  # bytes of the largest input, against the largest tensor a message may hold


def exact_plan(plans: Sequence[InputPlan], shapes: Mapping[str, tuple[int, ...]] | None = None) -> ExactPlan | None:
    """The ExactPlan of these inputs in their static shapes, or in `shapes` (those of a request
    that passed validation); None when an input is a string or has no shape to take."""
    inputs = []
    for plan in plans:
        spec = plan.spec
        shape = plan.static_shape if shapes is None else shapes.get(spec.name)
        if shape is None or spec.dtype is DType.STRING or min(shape, default=1) <= 0:
            return None
        tf_shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=size) for size in shape])
        inputs.append(ExactInput(spec.name, spec.dtype, tf_shape, shape, prod(shape) * spec.dtype.itemsize))
    elements = sum(prod(i.shape) for i in inputs)
    return ExactPlan(tuple(inputs), {i.name: i for i in inputs}, elements, max((i.nbytes for i in inputs), default=0))


def validate_request(
    plans: Sequence[InputPlan],
    request: Mapping[str, RequestTensor],
    max_elements: int = 0,
    max_tensor_bytes: int = 0,
    special_inputs: int = 0,
) -> tuple[dict[str, np.ndarray], list[Conversion]]:
    """Validate a request against a model's inputs (`plans` sorted by name) and return the
    arrays ready for the backend plus the inputs a preprocessor still has to convert.

    Every size is checked on the declared shape, before any data is made: an input larger than
    `max_tensor_bytes` (the largest tensor a client could send in one message; 0: no limit) is
    refused, so that one typed value filling a huge shape cannot allocate more than that.
    `special_inputs`: how many special inputs of a stateful model the request had (taken out of
    `request` already), counted in the message as OVMS counts them."""
    if len(request) != len(plans):
        raise DropinError(
            Status.INVALID_NO_OF_INPUTS,
            f"Expected: {len(plans) + special_inputs}; Actual: {len(request) + special_inputs}",
        )
    for plan in plans:
        if plan.spec.name not in request:
            raise DropinError(Status.INVALID_MISSING_INPUT, f"Required input: {plan.spec.name}")

    arrays: dict[str, np.ndarray] = {}
    conversions: list[Conversion] = []
    total_elements = 0
    batch_seen: tuple[int, str] | None = None  # (batch size, input) of the first input with a dynamic batch dim
    reshape = False  # an "auto" input does not fit: the other checks still run, then ReshapeRequired
    for plan in plans:
        spec = plan.spec
        name = spec.name
        tensor = request[name]
        shape = tensor.shape
        if shape and min(shape) <= 0:
            raise DropinError(
                Status.INVALID_SHAPE,
                f"Negative or zero dimension size is not acceptable: {format_shape(shape)}; input name: {name}",
            )
        elements = prod(shape)
        total_elements += elements
        if max_elements and total_elements > max_elements:
            raise DropinError(
                Status.TOO_MANY_ELEMENTS,
                f"Expected at most {max_elements} elements in all inputs; input name: {name} "
                f"brings the request to {total_elements}",
            )
        tf_dtype = tensor.tf_dtype
        if max_tensor_bytes and elements * _FILLED_ITEMSIZE.get(tf_dtype, 0) > max_tensor_bytes:
            _too_large(name, shape, elements, tf_dtype, max_tensor_bytes)
        converter = plan.converter
        if converter is not None and tf_dtype != plan.tf_dtype:
            request_dtype = DType.from_tf(tf_dtype)
            if request_dtype in converter.accepts:
                values = tensor.strings() if request_dtype is DType.STRING else tensor.array(name, request_dtype)
                conversions.append(Conversion(plan, shape, values))
                continue
        if tf_dtype != plan.tf_dtype:
            raise DropinError(
                Status.INVALID_PRECISION,
                f"Expected: {spec.dtype.value}; Actual: {tf_precision_name(tf_dtype)}; input name: {name}",
            )
        try:
            plan.check_shape(shape)
        except ReshapeRequired:
            reshape = True
        batch = plan.dynamic_batch_index
        if batch is not None and not reshape:
            # inputs with a dynamic batch dim share one batch size (as --batch_size sets it for all
            # of them); a disagreement would otherwise fail inside the backend
            if batch_seen is None:
                batch_seen = (shape[batch], name)
            elif shape[batch] != batch_seen[0]:
                raise DropinError(
                    Status.INVALID_BATCH_SIZE,
                    f"Expected: {batch_seen[0]} (the batch size of input {batch_seen[1]}); Actual: {shape[batch]}; "
                    f"input name: {name}",
                )
        arrays[name] = tensor.array(name, spec.dtype)
    if reshape:
        raise ReshapeRequired({name: tuple(tensor.shape) for name, tensor in request.items()})
    return arrays, conversions


# bytes per element of the numeric types (strings are counted by the values sent, never filled)
_FILLED_ITEMSIZE: dict[int, int] = {d.tf_enum: d.itemsize for d in DType if d is not DType.STRING}


def _too_large(name: str, shape: Sequence[int], elements: int, tf_dtype: int, limit: int) -> None:
    dtype = DType.from_tf(tf_dtype)
    assert dtype is not None
    raise DropinError(
        Status.TOO_MANY_ELEMENTS,
        f"Expected: at most {limit} bytes in one input (--grpc_max_message_size); Actual: {elements * dtype.itemsize} "
        f"bytes ({dtype.value} of shape {format_shape(shape)}); input name: {name}",
    )


async def convert_inputs(conversions: list[Conversion], arrays: dict[str, np.ndarray], executor: Executor) -> None:
    """Run the preprocessors of a validated request, those that block (decoders) in `executor`,
    and put what they return, checked, into `arrays`."""
    loop = asyncio.get_running_loop()
    for conversion in conversions:
        plan = conversion.plan
        converter = plan.converter
        assert converter is not None
        try:
            if converter.blocking:
                array = await loop.run_in_executor(
                    executor, converter.convert, plan.spec.name, conversion.shape, conversion.values
                )
            else:
                array = converter.convert(plan.spec.name, conversion.shape, conversion.values)
        except DropinError:
            raise
        except Exception as exc:
            log.exception("preprocessor %s failed on input %s", plan.converter_plugin, plan.spec.name)
            raise DropinError(
                Status.PLUGIN_ERROR,
                f"preprocessor {plan.converter_plugin!r} failed on input {plan.spec.name}: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        arrays[plan.spec.name] = check_converted(conversion, array)


def check_converted(conversion: Conversion, array: np.ndarray) -> np.ndarray:
    """A preprocessor's result must fit the model input; a mismatch is the plugin's fault."""
    plan = conversion.plan
    spec = plan.spec
    if not isinstance(array, np.ndarray) or array.dtype != spec.dtype.numpy:
        got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise DropinError(
            Status.PLUGIN_ERROR,
            f"preprocessor {plan.converter_plugin!r} returned {got} for input {spec.name}; "
            f"the model expects {spec.dtype.value}",
        )
    try:
        plan.check_shape(array.shape)
    except (DropinError, ReshapeRequired) as exc:  # a reshape reload happens before conversion, never after
        raise DropinError(
            Status.PLUGIN_ERROR,
            f"preprocessor {plan.converter_plugin!r} returned shape {format_shape(array.shape)} for input "
            f"{spec.name}, which the model does not accept: {exc}",
        ) from None
    return array


def check_output_filter(
    outputs_spec: Mapping[str, TensorSpec], output_filter: Sequence[str], stateful: bool = False
) -> None:
    """Every name a request's output_filter asks for is an output (a stateful model's
    sequence_id too); else INVALID_OUTPUT_FILTER, as OVMS says it."""
    for name in output_filter:
        if name not in outputs_spec and not (stateful and name == SEQUENCE_ID):
            raise DropinError(
                Status.INVALID_OUTPUT_FILTER, f"Expected one of: {', '.join(sorted(outputs_spec))}; Actual: {name}"
            )
