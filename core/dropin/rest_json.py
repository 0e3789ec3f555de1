"""TF Serving REST JSON -> tensors (docs/wire-contract.md#rest): the :predict body in row (`instances`) and column
(`inputs`) formats, and `{"b64": ...}` binary values (the answers: rest_response.py).

Parsing follows OVMS's TFSRestParser: JSON numbers take the model input's dtype (so REST never
fails the precision check), ragged or empty arrays are "Not valid ndarray", the no-name forms
need a single-input model. The tensors it makes are `RequestTensor`s, so the data plane
validates them exactly as it validates gRPC's.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

try:  # orjson parses ~3x and writes arrays ~25x faster than json; the stdlib is the fallback
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but a packager may drop it
    orjson = None  # type: ignore[assignment]

from .casting import EXACT_FLOAT_INT, cast, refuse_booleans
from .dtypes import DType
from .errors import DropinError, Status
from .shapes import TensorSpec

ROW, COLUMN = "row", "column"
SIGNATURE = "signature_name"
MAX_RANK = 32  # the deepest nesting read as a tensor; it also bounds the recursion over string arrays
_STRING_TF = DType.STRING.tf_enum


class JsonTensor:
    """One input decoded from JSON, seen through the data plane's `RequestTensor` protocol."""

    __slots__ = ("tf_dtype", "shape", "_data")

    def __init__(self, dtype: DType, data: np.ndarray, shape: tuple[int, ...]) -> None:
        self.tf_dtype = dtype.tf_enum
        self.shape = shape
        self._data = data

    def array(self, name: str, dtype: DType) -> np.ndarray:
        data = self._data
        if dtype is DType.STRING or data.dtype == dtype.numpy:
            return data.reshape(self.shape)
        return data.astype(dtype.numpy).reshape(self.shape)

    def strings(self) -> np.ndarray:
        return self._data.reshape(-1)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _int_as_orjson(text: str) -> int | float:
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 64) else _finite_float(text)  # orjson reads wider ones as floats


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # as orjson refuses 1e400
        raise ValueError(f"number is infinity when parsed as double: {text}")
    return value


def loads(body: bytes) -> Any:
    """Parse a request body; invalid JSON (NaN and Infinity included) is 412 JSON_INVALID."""
    try:
        if orjson is not None:
            return orjson.loads(body)
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_int_as_orjson)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DropinError(Status.JSON_INVALID, str(exc)) from None


def dumps(value: Any) -> bytes:
    """Encode a response; numpy arrays and scalars in it are written directly."""
    if orjson is not None:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(value, separators=(",", ":"), default=_numpy_default).encode()


def _numpy_default(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class PredictRequest:
    """A :predict body: its format (row or column) and the JSON given for the inputs.

    `may_hold_literals` is False when the body has no `true`, `false` or `null` token at all
    (`may_hold_literals(body)`), which spares numeric inputs the check that no boolean hides
    among their numbers. `quotes` is the number of `"` in the body (None: not counted)."""

    def __init__(self, doc: Any, may_hold_literals: bool = True, quotes: int | None = None) -> None:
        if not isinstance(doc, dict):
            raise DropinError(Status.REST_BODY_IS_NOT_AN_OBJECT)
        has_instances, has_inputs = "instances" in doc, "inputs" in doc
        if has_instances == has_inputs:
            raise DropinError(Status.REST_PREDICT_UNKNOWN_ORDER)
        self.order = ROW if has_instances else COLUMN
        node = self.node = doc["instances"] if has_instances else doc["inputs"]  # signature_name is ignored
        self.may_hold_literals = may_hold_literals
        # Whether the inputs may hold strings: each key, and a signature_name, is a string of
        # two quotes; any other string, or a quote escaped in a key, adds quotes.
        strings = 2 * (len(doc) + (len(node) if isinstance(node, dict) else 0) + isinstance(doc.get(SIGNATURE), str))
        self.may_hold_strings = quotes is None or quotes != strings

    @classmethod
    def parse(cls, body: bytes) -> PredictRequest:
        return cls(loads(body), may_hold_literals(body), body.count(b'"'))

    def tensors(self, specs: Mapping[str, TensorSpec]) -> dict[str, JsonTensor]:
        """The request's tensors, typed after the model's inputs `specs`. The parsed JSON is let
        go here: its Python objects take several times the body's size, the tensors far less."""
        tensors = self._rows(specs) if self.order == ROW else self._columns(specs)
        self.node = None
        return tensors

    def _rows(self, specs: Mapping[str, TensorSpec]) -> dict[str, JsonTensor]:
        node = self.node
        bad = Status.REST_COULD_NOT_PARSE_INSTANCE
        if not isinstance(node, list):
            raise DropinError(Status.REST_INSTANCES_NOT_AN_ARRAY)
        if not node:
            raise DropinError(Status.REST_NO_INSTANCES_FOUND)
        first = node[0]
        if isinstance(first, dict) and not _is_binary(first):
            columns: dict[str, list[Any]] = {}
            for instance in node:
                if not isinstance(instance, dict):
                    raise DropinError(Status.REST_NAMED_INSTANCE_NOT_AN_OBJECT)
                if not instance:
                    raise DropinError(bad, "an instance has no inputs")
                for name, value in instance.items():
                    columns.setdefault(name, []).append(value)
            if len({len(values) for values in columns.values()}) > 1:
                raise DropinError(Status.REST_INSTANCES_BATCH_SIZE_DIFFER)
            return {name: self._tensor(values, name, specs, bad) for name, values in columns.items()}
        if isinstance(first, (list, str, dict)) or _is_number(first):
            name = _only_input(specs)
            return {name: self._tensor(node, name, specs, bad)}
        raise DropinError(Status.REST_INSTANCES_NOT_NAMED_OR_NONAMED)

    def _columns(self, specs: Mapping[str, TensorSpec]) -> dict[str, JsonTensor]:
        node = self.node
        bad = Status.REST_COULD_NOT_PARSE_INPUT
        if isinstance(node, list):
            name = _only_input(specs)
            return {name: self._tensor(node, name, specs, bad)}
        if not isinstance(node, dict):
            raise DropinError(Status.REST_INPUTS_NOT_AN_OBJECT)
        if not node:
            raise DropinError(Status.REST_NO_INPUTS_FOUND)
        return {name: self._tensor(value, name, specs, bad) for name, value in node.items()}

    def _tensor(self, data: Any, name: str, specs: Mapping[str, TensorSpec], bad: Status) -> JsonTensor:
        return to_tensor(data, specs.get(name), bad, name, self.may_hold_literals)


# the letters as ints: `in` with an int is a memchr at once, with bytes a buffer request first (10x)
_U, _L = ord("u"), ord("l")


def may_hold_literals(body: bytes) -> bool:
    """Whether `body` may have a `true`, `false` or `null` token. Searching for the words costs
    about 0.5 ms per MB; the letters u and l are found by memchr in ~10 us per MB and, in a body
    of numbers, only in a few keys ("inputs", "serving_default"), so the words are looked for there."""
    if _U not in body and _L not in body:  # the row format without a signature_name
        return False
    for letter, words in ((b"u", ((b"true", 2), (b"null", 1))), (b"l", ((b"false", 2),))):  # (word, letter's index)
        at = body.find(letter, 1)
        for _ in range(16):
            if at < 0:
                break
            for word, offset in words:
                if at >= offset and body.startswith(word, at - offset):
                    return True
            at = body.find(letter, at + 1)
        else:  # the letter is common here (strings): search for the words themselves
            for word, _ in words:
                if word in body:
                    return True
    return False


def _only_input(specs: Mapping[str, TensorSpec]) -> str:
    if len(specs) != 1:
        raise DropinError(
            Status.INVALID_INPUT_FORMAT,
            f"inputs without names need a model with exactly one input; this model has {len(specs)}: "
            f"{', '.join(sorted(specs))}",
        )
    return next(iter(specs))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_binary(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def to_tensor(
    data: Any, spec: TensorSpec | None, bad: Status, name: str = "", may_hold_booleans: bool = True
) -> JsonTensor:
    """One input's JSON value (the whole tensor, batch included) as a tensor. Numbers take the
    dtype of the model input `spec` (None: an input the model does not have, typed I32 or FP32
    as OVMS guesses, for validation to reject), refusing any value that type would change
    (`casting.cast`); `{"b64": ...}` and, for U8 and STRING inputs, plain strings make a
    DT_STRING tensor. Empty arrays make a tensor with a zero dim, which validation refuses."""
    leaf = data
    for _ in range(MAX_RANK + 1):
        if not isinstance(leaf, list):
            break
        if not leaf:
            return _empty_tensor(data, spec, bad)
        leaf = leaf[0]
    else:
        raise DropinError(bad, f"arrays nested deeper than {MAX_RANK} levels")
    if isinstance(leaf, (dict, str)):
        return _string_tensor(data, spec, bad)
    if isinstance(leaf, bool) and spec is not None and spec.dtype is DType.BOOL:
        kinds = "b"
    elif _is_number(leaf):
        kinds = "iu" if spec is not None and spec.dtype is DType.BOOL else "iuf"
    elif isinstance(leaf, bool) and spec is not None and spec.dtype is not DType.STRING:
        kinds = "biuf"  # booleans where numbers belong: refused below, naming the input
    else:
        raise DropinError(bad, f"unexpected value {json.dumps(leaf)}")
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise DropinError(bad, "arrays of different lengths (ragged) or mixed values") from None
    if raw.dtype.kind not in kinds:
        raise DropinError(bad, "arrays of different lengths (ragged) or values that are not numbers")
    if spec is None or spec.dtype is DType.STRING:
        if spec is not None:
            raise DropinError(bad, f"numbers given for STRING input {spec.name}")
        return JsonTensor(DType.FP32 if raw.dtype.kind == "f" else DType.I32, raw, raw.shape)
    if may_hold_booleans and kinds != "b":  # numpy reads true as 1 among numbers
        refuse_booleans(np.asarray(data, dtype=object), spec.dtype, name)
    if raw.dtype.kind == "f" and spec.dtype in (DType.I64, DType.U64) and np.abs(raw).max() > EXACT_FLOAT_INT:
        raw = _exact_integers(data, spec.dtype, raw)
    return JsonTensor(spec.dtype, cast(raw, spec.dtype, name), raw.shape)


def _exact_integers(data: Any, dtype: DType, floats: np.ndarray) -> np.ndarray:
    """numpy reads integers beyond int64 mixed with smaller ones as float64, losing digits: read
    them again as `dtype` when all are integers in its range (else the floats, for `cast` to refuse)."""
    objects = np.asarray(data, dtype=object).reshape(-1)
    if set(map(type, objects)) == {int}:
        try:
            return np.array(objects.tolist(), dtype=dtype.numpy).reshape(floats.shape)
        except OverflowError:
            pass
    return floats


def _empty_tensor(data: Any, spec: TensorSpec | None, bad: Status) -> JsonTensor:
    """Nested empty arrays as a tensor of the shape they have, with a zero dim (`[[], []]`: (2,0))."""
    try:
        shape = np.asarray(data).shape
    except (ValueError, TypeError):
        shape = ()
    if 0 not in shape:
        raise DropinError(bad, "arrays of different lengths (ragged) or an array that is empty")
    dtype = spec.dtype if spec is not None else DType.FP32
    return JsonTensor(dtype, np.empty(shape, dtype.numpy), shape)


def _string_tensor(data: Any, spec: TensorSpec | None, bad: Status) -> JsonTensor:
    plain_ok = spec is not None and spec.dtype in (DType.U8, DType.STRING)
    shape: list[int] = []
    values: list[bytes] = []

    def leaf(item: Any) -> None:
        if _is_binary(item):
            try:
                values.append(base64.b64decode(item["b64"], validate=True))
            except (binascii.Error, ValueError):
                raise DropinError(bad, "invalid base64 in a b64 value") from None
        elif isinstance(item, str) and plain_ok:
            values.append(item.encode())
        elif isinstance(item, str):
            raise DropinError(bad, 'strings need {"b64": ...} unless the model input is U8 or STRING')
        else:
            raise DropinError(bad, f"unexpected value {json.dumps(item)[:40]} among strings")

    _walk_rectangular(data, shape, leaf, bad)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return JsonTensor(DType.STRING, array, tuple(shape))


def _walk_rectangular(data: Any, shape: list[int], leaf: Callable[[Any], None], bad: Status) -> None:
    """Depth-first over nested lists, recording each level's length on first sight (`shape`)
    and requiring every later list at that level to have the same length."""
    sealed = False  # once a value is seen, no new level may appear

    def visit(node: Any, depth: int) -> None:
        nonlocal sealed
        if isinstance(node, list):
            if not node:
                raise DropinError(bad, "an array is empty")
            if depth == len(shape):
                if sealed:
                    raise DropinError(bad, "arrays nested to different depths")
                shape.append(len(node))
            elif shape[depth] != len(node):
                raise DropinError(bad, "arrays of different lengths (ragged)")
            for item in node:
                visit(item, depth + 1)
        else:
            if depth != len(shape):
                raise DropinError(bad, "arrays nested to different depths")
            sealed = True
            leaf(node)

    visit(data, 0)
