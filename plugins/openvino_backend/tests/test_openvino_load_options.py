"""The OpenVINO backend's load options (layout, shape, batch size, nireq) in-process, compared with
the demo model compiled by OpenVINO directly (f32, bit-for-bit)."""

from __future__ import annotations

from asyncio import run

import numpy as np
import pytest

from dropin.backend import LoadOptions
from dropin.shapes import Dim
from dropin_openvino.backend import OpenVINOBackend
from dropin_openvino.modelgen import DIGITS
from dropin_openvino.modelgen import DIGITS_F32 as F32
from dropin_openvino.modelgen import assert_same_digits as assert_same
from dropin_openvino.modelgen import digit_images as images

# -- load options -----------------------------------------------------------------------------


def test_layout_nchw_nhwc_adds_a_transpose(backend: OpenVINOBackend, expected) -> None:  # type: ignore[no-untyped-def]
    nchw = backend.load(DIGITS, LoadOptions(plugin_config=F32, layout="NCHW:NHWC"))
    try:
        spec = nchw.inputs["image"]
        assert spec.shape_text() == "(-1,1,8,8)" and spec.layout == "NCHW"
        batch = images(5)
        got = run(nchw.infer({"image": np.ascontiguousarray(batch.transpose(0, 3, 1, 2))}))
        assert_same(got, expected(batch))
    finally:
        nchw.close()


def test_shape_with_a_range(backend: OpenVINOBackend, expected) -> None:  # type: ignore[no-untyped-def]
    ranged = backend.load(DIGITS, LoadOptions(plugin_config=F32, shape="(1:8,8,8,1)"))
    try:
        assert ranged.inputs["image"].shape[0] == Dim(1, 8)
        assert ranged.inputs["image"].shape_text() == "([1~8],8,8,1)"
        assert ranged.outputs["label"].shape_text() == "([1~8])"
        batch = images(8)
        assert_same(run(ranged.infer({"image": batch})), expected(batch))
    finally:
        ranged.close()


def test_batch_size_and_nireq(backend: OpenVINOBackend, expected) -> None:  # type: ignore[no-untyped-def]
    batched = backend.load(DIGITS, LoadOptions(plugin_config=F32, batch_size="4", nireq=3))
    try:
        assert batched.inputs["image"].shape_text() == "(4,8,8,1)"
        assert batched.outputs["probabilities"].shape_text() == "(4,10)"
        assert batched.nireq == 3
        batch = images(4)
        assert_same(run(batched.infer({"image": batch})), expected(batch))
    finally:
        batched.close()


def test_shape_takes_precedence_over_batch_size(backend: OpenVINOBackend) -> None:
    mapped = backend.load(DIGITS, LoadOptions(plugin_config=F32, shape={"image": "(2,8,8,1)"}, batch_size=4))
    try:
        assert mapped.inputs["image"].shape_text() == "(2,8,8,1)"
    finally:
        mapped.close()


def test_auto_shape_and_batch_size_keep_the_model_shapes(backend: OpenVINOBackend) -> None:
    auto = backend.load(DIGITS, LoadOptions(plugin_config=F32, shape="auto", batch_size="auto"))
    try:
        assert auto.inputs["image"].shape_text() == "(-1,8,8,1)"
    finally:
        auto.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            LoadOptions(shape="(1,x)"),
            r"^invalid shape '\(1,x\)': expected e\.g\. \(1,3,224,224\), -1 for any size, 1:8 for a range$",
            id="bad shape text",
        ),
        pytest.param(
            LoadOptions(shape="(1,8,8)"),
            r"^the model cannot be reshaped to \{'image': '\[1,8,8\]'\}: ",
            id="shape of the wrong rank",
        ),
        pytest.param(
            LoadOptions(shape={"nope": "(1,8,8,1)"}),
            r"^shape is given for 'nope', which is not an input of the model \(inputs: image\)$",
            id="shape for an unknown input",
        ),
        pytest.param(
            LoadOptions(layout={"nope": "NHWC"}),
            r"^layout is given for 'nope', which is not an input or output of the model "
            r"\(inputs: image; outputs: probabilities, label\)$",
            id="layout for an unknown input",
        ),
        pytest.param(LoadOptions(layout="NH!C"), r"^invalid layout 'NH!C': ", id="bad layout text"),
        pytest.param(
            LoadOptions(layout="NHW"), r"^cannot apply layout 'NHW': .*not compatible", id="layout of the wrong rank"
        ),
        pytest.param(
            LoadOptions(batch_size="x"),
            r"^invalid batch_size 'x': expected a positive number, -1 or a range like 1:8$",
            id="bad batch_size",
        ),
        pytest.param(
            LoadOptions(target_device="NO_SUCH_DEVICE"),
            r"^OpenVINO could not compile model\.xml for device 'NO_SUCH_DEVICE': .*NO_SUCH_DEVICE",
            id="unknown device",
        ),
        pytest.param(
            LoadOptions(plugin_config={"INFERENCE_PRECISION_HINT": "f77"}),
            r"^OpenVINO could not compile model\.xml for device 'CPU': .*f77.*INFERENCE_PRECISION_HINT",
            id="bad plugin config value",
        ),
    ],
)
def test_invalid_load_options(backend: OpenVINOBackend, options: LoadOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        backend.load(DIGITS, options).close()
    assert ".cpp" not in str(info.value)
