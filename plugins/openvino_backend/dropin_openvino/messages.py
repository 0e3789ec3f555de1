"""OpenVINO's error messages, made readable for clients and logs."""

from __future__ import annotations

import re


def ov_message(exc: BaseException) -> str:
    """OpenVINO's error text without its source locations ("Exception from src/...cpp:NN:",
    "Check '...' failed at src/...cpp:NN:"), on one line."""
    text = _OV_NOISE.sub(" ", str(exc))
    return " ".join(text.split()) or str(exc).strip() or type(exc).__name__


_OV_NOISE = re.compile(r"Exception from \S+:\d+:|Check '.*?' failed at \S+:\d+:")
