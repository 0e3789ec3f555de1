"""Waiting on a server in end-to-end tests: polling until a condition holds, and a model's
versions as GetModelStatus reports them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import DropinServer

#: ModelVersionStatus states, as numbers
AVAILABLE, LOADING, END = 30, 20, 50


def states(server: DropinServer, name: str = "m") -> dict[int, tuple[int, int, str]]:
    """version -> (state, error code, error message), from GetModelStatus."""
    return {
        v.version: (v.state, v.status.error_code, v.status.error_message)
        for v in server.status(name).model_version_status
    }


def wait_until(condition: Callable[[], object], timeout: float = 30, message: str = "") -> None:
    """Poll `condition()` every 20 ms until it is true; TimeoutError(`message`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(message or "condition never held")
