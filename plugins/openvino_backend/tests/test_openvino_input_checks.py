"""Inputs the OpenVINO backend must refuse rather than compute wrongly, found by the backend
conformance suite: missing inputs, strings ending in NUL or padded past reason, 64-bit tensors."""

from __future__ import annotations

from asyncio import run
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from dropin.backend import LoadOptions
from dropin_openvino.backend import OpenVINOBackend
from dropin_openvino.modelgen import DIGITS
from dropin_openvino.modelgen import DIGITS_F32 as F32
from dropin_openvino.modelgen import digit_images as images
from dropin_openvino.serving import OpenVINOModel

# -- found by the backend conformance suite ---------------------------------------------------


def test_missing_inputs_are_refused_not_computed_on_stale_data(model: OpenVINOModel) -> None:
    # An infer request keeps its last input tensor: without this check, a request missing an
    # input was answered from the previous request's data.
    run(model.infer({"image": images(2)}))
    with pytest.raises(KeyError, match=r"missing input\(s\) image \(inputs: image\)"):
        run(model.infer({}))


def _string_model(directory: Path) -> Path:
    x = ops.parameter(ov.PartialShape([-1]), ov.Type.string, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.reshape(x, ops.shape_of(x), special_zero=False)
    y.output(0).get_tensor().set_names({"y"})
    directory.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([ops.result(y)], [x], "strings"), str(directory / "model.xml"))
    return directory


def test_strings_ending_in_nul_are_refused_not_truncated(backend: OpenVINOBackend, tmp_path: Path) -> None:
    from dropin.errors import DropinError

    loaded = backend.load(_string_model(tmp_path), LoadOptions(nireq=1))
    try:
        ok = np.array([b"a", b"", b"in\x00side", "caf\u00e9".encode()], dtype=object)
        assert run(loaded.infer({"x": ok}))["y"].tolist() == ok.tolist()
        with pytest.raises(
            DropinError, match=r"^String input is not supported for this model input - input x: .*NUL byte"
        ):
            run(loaded.infer({"x": np.array([b"ok", b"end\x00"], dtype=object)}))
    finally:
        loaded.close()


def test_strings_that_padding_would_blow_up_are_refused(backend: OpenVINOBackend, tmp_path: Path) -> None:
    from dropin.errors import DropinError

    loaded = backend.load(_string_model(tmp_path), LoadOptions(nireq=1))
    try:
        big = b"x" * (1 << 20)
        similar = np.array([big] * 20, dtype=object)  # 20 MiB padded, as much as sent
        assert run(loaded.infer({"x": similar}))["y"].tolist() == similar.tolist()
        mixed = np.array([big] * 2 + [b"a"] * 20, dtype=object)  # 22 MiB padded from 2 MiB: over the floor, within 16x
        assert run(loaded.infer({"x": mixed}))["y"].tolist() == mixed.tolist()
        bomb = np.array([big] + [b""] * 30_000, dtype=object)  # would be 30 GiB
        message = (r"^Request is too large - input x: 30001 strings padded to the longest \(1048576 bytes\) would take "
                   r"31458328576 bytes in the OpenVINO backend, more than 16 times the 1048576 bytes sent")
        with pytest.raises(DropinError, match=message):
            run(loaded.infer({"x": bomb}))
        with pytest.raises(DropinError, match=message):
            loaded.check_inputs({"x": bomb})
    finally:
        loaded.close()


def test_64_bit_tensors_are_warned_about(
    backend: OpenVINOBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = ops.parameter(ov.PartialShape([-1]), ov.Type.i64, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.convert(ops.add(x, ops.constant(np.int64(1))), ov.Type.f64)
    y.output(0).get_tensor().set_names({"y"})
    ov.save_model(ov.Model([ops.result(y)], [x], "wide"), str(tmp_path / "model.xml"))
    with caplog.at_level("WARNING", logger="dropin.openvino"):
        backend.load(tmp_path, LoadOptions(nireq=1)).close()
    assert (
        "OpenVINO's CPU plugin computes input x (I64: 32-bit integers), output y (FP64: 32-bit floats)" in caplog.text
    )
    assert caplog.records[-1].levelname == "WARNING"
    caplog.clear()
    with caplog.at_level("INFO", logger="dropin.openvino"):
        backend.load(DIGITS, LoadOptions(nireq=1, plugin_config=F32)).close()  # label is I64 too
    assert "output label (I64: 32-bit integers)" in caplog.text
    assert caplog.records[-1].levelname == "INFO"  # only outputs: a note, not a warning
