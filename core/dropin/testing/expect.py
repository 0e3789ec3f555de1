"""Assertions on the errors a client gets, exactly: a gRPC call's status code and details, a REST
reply's HTTP status and error message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from .raw_http import Reply


def expect_error(call: Callable[..., Any], request: Any, code: grpc.StatusCode, message: str) -> None:
    """`call(request)` fails with `code` and exactly `message` as its details."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=20)
    assert info.value.code() == code, info.value.details()
    assert info.value.details() == message


def expect(reply: Reply, status: int, message: str) -> None:
    """`reply` is an error with `status` and exactly `message`."""
    assert (reply.status, reply.error) == (status, message), reply.body


def expect_prefix(reply: Reply, status: int, message: str) -> None:
    """`reply` is an error with `status` and `message`, possibly followed by " - " and details."""
    assert reply.status == status, reply.body
    assert reply.error == message or reply.error.startswith(message + " - "), reply.error
