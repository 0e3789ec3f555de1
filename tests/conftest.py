"""Fixtures: a real `dropin serve` process on a temporary model repository, and gRPC stubs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import dropin_openvino  # noqa: F401  (the first import of openvino, with its telemetry off)
import grpc
import pytest

from dropin._proto.tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

F32_CONFIG = '{"INFERENCE_PRECISION_HINT":"f32"}'
GIB = 1 << 30


def free_port() -> int:
    """A TCP port nobody listens on now (for --rest_port, where 0 means "no REST")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DropinServer:
    """`python -m dropin serve ...` as a child process, with its log captured."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_lines: list[str] = []
        self._port_seen = threading.Event()
        self.port = 0
        self.rest_port = 0  # set when started with --rest_port: the REST server's port
        self._wants_rest = "--rest_port" in args and args[args.index("--rest_port") + 1] != "0"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dropin", "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",  # native libraries may log bytes that are not UTF-8
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 30
        while not self._port_seen.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(5)
                self.stop()
                raise RuntimeError("dropin did not start listening:\n" + self.log)
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}",
            options=[("grpc.max_receive_message_length", GIB), ("grpc.max_send_message_length", GIB)],
        )
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log_lines.append(line)
            match = re.search(r"(gRPC|REST) server listening on .*:(\d+)$", line.strip())
            if match:
                if match.group(1) == "gRPC":
                    self.port = int(match.group(2))
                else:
                    self.rest_port = int(match.group(2))
                if self.port and (self.rest_port or not self._wants_rest):
                    self._port_seen.set()

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def status(self, name: str, version: int = 0) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version:
            request.model_spec.version.value = version
        return self.models.GetModelStatus(request, timeout=10)

    def wait_for(self, name: str, version: int, state: int = 30, timeout: float = 60) -> None:
        """Wait until GetModelStatus shows `version` of `name` in `state` (AVAILABLE by default)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dropin exited with {self.proc.returncode}:\n{self.log}")
            try:
                last = self.status(name)
                if any(v.version == version and v.state == state for v in last.model_version_status):
                    return
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"{name} v{version} never reached state {state}; last status {last}\n{self.log}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "channel"):
            self.channel.close()
        return self.proc.returncode


@pytest.fixture
def start_server() -> Iterator:
    """Start servers with `start_server(args...)`; all are stopped at the end of the test."""
    servers: list[DropinServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> DropinServer:
        server = DropinServer(list(args), env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty model repository directory."""
    path = tmp_path / "models"
    path.mkdir()
    return path
