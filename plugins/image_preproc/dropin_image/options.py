"""The image plugin's model keys, checked when the configuration is read (no OpenCV here).

These checks refuse values of the wrong JSON type, as OVMS's schema did; whether a value works
for a model's input (a colour format it supports, as many means as channels, a limit under the
server's) is decided when a version loads (`ImagePreprocessor.claim`), and a value that does
not fails that version's load with the reason in GetModelStatus.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from typing import Any

from . import DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS


def _per_input(value: Any, check_one: Any, expected: str) -> Any:
    """`value`, or each value of a per-input mapping ({"image": ...}), checked by `check_one`."""
    items = value.values() if isinstance(value, Mapping) else [value]
    if isinstance(value, Mapping) and not all(isinstance(k, str) for k in value):
        raise ValueError(f"must be {expected}, or an object of them by input name, got {value!r}")
    for item in items:
        if not check_one(item):
            raise ValueError(f"must be {expected}, or an object of them by input name, got {value!r}")
    return value


def check_color_format(value: Any) -> Any:
    return _per_input(value, lambda v: v is None or isinstance(v, str), "a string (BGR, RGB or GRAY)")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number_or_numbers(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(map(_is_number, value))
    return value is None or _is_number(value)


def check_mean_or_scale(value: Any) -> Any:
    return _per_input(value, _number_or_numbers, "a number or a list of numbers")


def check_max_pixels(value: Any) -> Any:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def number_or_list(text: str) -> float | list[float]:
    """The text of --mean or --scale: a number or a JSON list of numbers."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if _is_number(value) or (isinstance(value, list) and all(map(_is_number, value))):
        return value
    raise ValueError(f"must be a number or a JSON list of numbers, got {text!r}")


def server_max_pixels(environ: Mapping[str, str] = os.environ) -> int:
    """The server-wide pixel limit: DROPIN_IMAGE_MAX_PIXELS, else 64 Mi pixels."""
    text = environ.get(ENV_MAX_PIXELS, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{ENV_MAX_PIXELS} must be a positive number of pixels, got {text!r}")
    return value
