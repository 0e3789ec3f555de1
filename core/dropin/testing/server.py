"""A real `dropin serve` as a child process, for end-to-end tests of dropin and of its plugins."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from .client import GrpcClient, RestClient

GIB = 1 << 30
AVAILABLE = "AVAILABLE"


def free_port() -> int:
    """A TCP port nobody listens on now (for --rest_port, where 0 means "no REST")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DropinServer:
    """`python -m dropin serve --port 0 ARGS...` as a child process, with its log captured.

    The constructor returns once the server listens (gRPC, and REST when `--rest_port` is given)
    and raises RuntimeError with the log if it exits or does not listen within `start_timeout`.
    Models may still be loading then: `wait_for(name, version)`.

    - `client`: a `GrpcClient` (numpy in, numpy out); `rest`: a `RestClient` when REST is on;
    - `predict`, `models`: the raw TF Serving gRPC stubs (PredictionService, ModelService);
    - `log`: everything the server wrote to stderr so far; `stop()` ends it (SIGTERM, then KILL).

    `env` is added to this process's environment; `python` is the interpreter to run (a venv
    with the plugins under test installed)."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        start_timeout: float = 30.0,
    ) -> None:
        self.args = list(args)
        self.log_lines: list[str] = []
        self._port_seen = threading.Event()
        self.port = 0
        self.rest_port = 0  # set when started with --rest_port: the REST server's port
        self._wants_rest = "--rest_port" in self.args and self.args[self.args.index("--rest_port") + 1] != "0"
        self.proc = subprocess.Popen(
            [python, "-m", "dropin", "serve", "--port", "0", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",  # native libraries may log bytes that are not UTF-8
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + start_timeout
        while not self._port_seen.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(5)
                self.stop()
                raise RuntimeError("dropin did not start listening:\n" + self.log)
        self.client = GrpcClient(f"127.0.0.1:{self.port}")
        self.channel = self.client.channel
        self.predict = self.client.predict_stub
        self.models = self.client.model_stub
        self.rest = RestClient(f"http://127.0.0.1:{self.rest_port}") if self.rest_port else None

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

    def status(self, name: str, version: int = 0):  # type: ignore[no-untyped-def]
        """The raw GetModelStatusResponse (see `client.status` for a plain dict)."""
        return self.client.status_response(name, version)

    def wait_for(self, name: str, version: int, state: int | str = AVAILABLE, timeout: float = 60) -> None:
        """Wait until GetModelStatus shows `version` of `name` in `state` (a name such as
        "AVAILABLE" or "END", or its number); raises TimeoutError with the log, or RuntimeError
        if the server exits."""
        self.client.wait_for(name, version, state, timeout, alive=self._alive)

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"dropin exited with {self.proc.returncode}:\n{self.log}")

    def wait_for_log(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Wait until a log line matches the regular expression `pattern`; return the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.log_lines):
                match = regex.search(line)
                if match:
                    return match
            self._alive()
            time.sleep(0.02)
        raise TimeoutError(f"no log line matched {pattern!r}:\n{self.log}")

    def stop(self) -> int:
        """Stop the server (SIGTERM, SIGKILL after 30 s) and close the clients; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "client"):
            self.client.close()
        return self.proc.returncode

    def __enter__(self) -> DropinServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
