"""What a model's inputs and outputs are served as: their names, dtypes, shapes and layouts."""

from __future__ import annotations

from typing import Any

import openvino as ov

from dropin.dtypes import DType
from dropin.shapes import Dim, TensorSpec

_DTYPES: dict[str, DType] = {
    "f32": DType.FP32,
    "f64": DType.FP64,
    "f16": DType.FP16,
    "i64": DType.I64,
    "i32": DType.I32,
    "i16": DType.I16,
    "i8": DType.I8,
    "u64": DType.U64,
    "u32": DType.U32,
    "u16": DType.U16,
    "u8": DType.U8,
    "boolean": DType.BOOL,
    "string": DType.STRING,
}


def port_names(model: ov.Model) -> tuple[list[str], list[str]]:
    """The names dropin serves the inputs and outputs under, in port order.

    A tensor name where the model has one (`get_any_name()`); otherwise the parameter's friendly
    name, or the producing node's friendly name (with ":<port>" for nodes with several outputs).
    """
    inputs = [_name(port, port.get_node().get_friendly_name()) for port in model.inputs]
    outputs = []
    for port in model.outputs:
        source = port.get_node().input_value(0)  # the port feeds a Result node
        fallback = source.get_node().get_friendly_name()
        if source.get_node().get_output_size() > 1:
            fallback += f":{source.get_index()}"
        outputs.append(_name(port, fallback))
    for kind, names in (("input", inputs), ("output", outputs)):
        if len(set(names)) != len(names):
            raise ValueError(f"the model has several {kind}s named alike: {', '.join(names)}")
    return inputs, outputs


def _name(port: Any, fallback: str) -> str:
    try:
        return port.get_any_name()
    except RuntimeError:
        names = sorted(port.get_names())
        return names[0] if names else fallback


def tensor_spec(name: str, port: Any, layout: ov.Layout | None, kind: str) -> TensorSpec:
    type_name = port.get_element_type().get_type_name()
    dtype = _DTYPES.get(type_name)
    if dtype is None:
        raise ValueError(
            f"{kind} {name!r} has element type {type_name}, which dropin does not serve "
            f"(supported: {', '.join(_DTYPES)})"
        )
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ValueError(f"{kind} {name!r} has a dynamic rank; give its shape with the shape option")
    return TensorSpec(name, dtype, tuple(_dim(d) for d in shape), layout_letters(layout))


def _dim(d: ov.Dimension) -> Dim:
    if d.is_static:
        return Dim.static(d.get_length())
    high = d.get_max_length()
    return Dim(max(d.get_min_length(), 0), None if high < 0 else high)


def layout_letters(layout: ov.Layout | None) -> str | None:
    """"[N,H,W,C]" -> "NHWC", "[N,...]" -> "N...", "[?,C,H,W]" -> "?CHW"; None when unset or named
    with longer words."""
    if layout is None or layout.empty:
        return None
    parts = layout.to_string().strip("[]").split(",")
    if parts == ["..."] or not all(len(p) == 1 or p == "..." for p in parts):
        return None
    return "".join(parts)
