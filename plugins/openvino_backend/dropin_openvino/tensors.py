"""How a request's arrays reach OpenVINO's tensors: STRING inputs as fixed-width bytes, within
limits (`string_tensor`), and numeric inputs copied into the input tensors an infer request owns
(`InferSlot`), without OpenVINO's Python input dispatcher (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import openvino as ov

from dropin.errors import DropinError, Status

#: STRING inputs reach OpenVINO as numpy fixed-width bytes, every item padded to the longest:
#: one long string among many short ones would cost gigabytes (1 MiB and 30000 empty strings:
#: 30 GiB). Refused when the padded array would exceed this multiple of the string bytes sent,
#: and this floor (below it, any mix of lengths is fine).
PAD_FACTOR = 16
PAD_FLOOR_BYTES = 16 << 20


def string_tensor(name: str, values: np.ndarray) -> np.ndarray:
    """A STRING input as OpenVINO's Python API takes it: fixed-width bytes."""
    check_strings(name, values)
    return np.asarray(values, dtype=np.bytes_)


def check_strings(name: str, values: np.ndarray) -> None:
    """Refuse strings OpenVINO cannot be given as they are.

    numpy's fixed-width bytes, the only way strings reach OpenVINO from Python (its `bytes_data`
    setter too), drop trailing NUL bytes: values ending in one are refused rather than changed.
    A plain loop: the items are Python objects, which numpy cannot vectorise over (measured: a
    join of the items plus a numpy index of their last bytes costs the same per item, and more
    for a few items). And the padding to the longest item must stay within PAD_FACTOR times
    what was sent."""
    for value in values.flat:
        if value[-1:] == b"\0":
            raise DropinError(
                Status.UNSUPPORTED_STRING_INPUT,
                f"input {name}: the OpenVINO backend cannot pass strings that end in a NUL byte",
            )
    count = values.size
    if count < 2:
        return
    longest = max(map(len, values.flat))
    padded = count * longest
    if padded <= PAD_FLOOR_BYTES:
        return
    sent = sum(map(len, values.flat))
    if padded > PAD_FACTOR * sent:
        raise DropinError(
            Status.TOO_MANY_ELEMENTS,
            f"input {name}: {count} strings padded to the longest ({longest} bytes) would take {padded} "
            f"bytes in the OpenVINO backend, more than {PAD_FACTOR} times the {sent} bytes sent; send strings of "
            f"similar lengths, or fewer in one request",
        )


#: Inputs up to this size in all run on the event loop when the model is fast (serving.py), and
#: go straight into a free infer request's tensors (`InferSlot.fill`).
INLINE_BYTES = 64 << 10
#: Writable inputs larger than this are shared with OpenVINO instead of copied.
SHARE_BYTES = 64 << 10


class InferSlot:
    """One infer request with input tensors of its own, which requests are copied into.

    Numeric inputs sent as `tensor_content` are read-only views of the request's bytes, which
    OpenVINO cannot share: its input dispatcher copies them anyway, through several Python layers
    (about 12 us per call). Copying straight into tensors the slot owns costs one numpy copy, the
    same bytes. Large writable arrays (decoded images, JSON) are shared instead, without a copy.
    """

    __slots__ = ("request", "views")

    def __init__(self, request: ov.InferRequest, inputs: int) -> None:
        self.request = request
        # numpy views of the slot's own input tensors, by port; None while the port holds a
        # shared tensor (or none yet)
        self.views: list[np.ndarray | None] = [None] * inputs

    def set_inputs(self, feed: dict[int, np.ndarray], types: Sequence[ov.Type]) -> None:
        request = self.request
        views = self.views
        for index, array in feed.items():
            if array.nbytes > SHARE_BYTES and array.flags.writeable and array.flags.c_contiguous:
                request.set_input_tensor(index, ov.Tensor(array, shared_memory=True))
                views[index] = None
                continue
            view = views[index]
            if view is None or view.shape != array.shape:
                tensor = ov.Tensor(types[index], ov.Shape(array.shape))
                request.set_input_tensor(index, tensor)
                view = views[index] = tensor.data  # the view keeps the tensor alive
            view[...] = array

    def fill(self, inputs: Mapping[str, np.ndarray], index: Mapping[str, int]) -> bool:
        """`set_inputs` of a small request (up to INLINE_BYTES) whose every input has the shape its
        port's tensor has already (the common request: the same shapes as the one before), in
        fewer steps. False, with some inputs copied or none, for any other request (a missing or
        unknown input too): `set_inputs` then sets every input, or `_feed` says what is wrong."""
        views = self.views
        if len(inputs) != len(views):
            return False
        size = 0
        for name, array in inputs.items():
            port = index.get(name)
            if port is None:
                return False
            view = views[port]
            size += array.nbytes
            if view is None or view.shape != array.shape or size > INLINE_BYTES:
                return False
            view[...] = array
        return True
