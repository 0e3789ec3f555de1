"""Hostile and vanishing clients, on a real server process, with raw sockets as the clients:
REST header, body and idle timeouts and connection limit, hang-ups and cancellations that must
not log tracebacks, normal clients (ovmsclient, large but fast bodies, slow but steady bodies)
left unaffected; gRPC handshake and idle timeouts and connection limit."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin._proto.tensorflow_serving.apis import prediction_service_pb2_grpc
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.fake_plugins import SLOW_PLUGIN, install_fake_distribution
from dropin.testing.server import DropinServer, free_port

HEADER_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT = 1.0, 1.0, 4.0
SLACK = 2.0  # the event loop's and this machine's lateness under load
PREDICT = "/v1/models/m:predict"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transport")
    modelgen.scale_model(root / "m" / "1", shape=(-1, -1), factor=2.0)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> DropinServer:
    """Short timeouts, so that the tests are quick."""
    srv = DropinServer([
        "--model_name", "m", "--model_path", str(repo / "m"),
        "--file_system_poll_wait_seconds", "0", "--rest_port", str(free_port()), "--rest_bind_address", "127.0.0.1",
        "--rest_header_timeout_seconds", str(HEADER_TIMEOUT), "--rest_body_timeout_seconds", str(BODY_TIMEOUT),
        "--rest_idle_timeout_seconds", str(IDLE_TIMEOUT),
    ])
    try:
        srv.wait_for("m", 1)
        yield srv
    finally:
        srv.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(path: str = PREDICT, length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server closes `sock` (EOF or reset) within `within` seconds, reading and
    discarding whatever it sends."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except TimeoutError:
        return True
    except ConnectionError:
        return False


def rest_predict(sock: socket.socket, rows: list[list[float]]) -> dict:
    """One predict on an open keep-alive connection; its JSON answer."""
    body = json.dumps({"instances": rows}).encode()
    sock.sendall(head(length=len(body)) + body)
    return read_response(sock)


def read_response(sock: socket.socket) -> dict:
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    header, body = data.split(b"\r\n\r\n", 1)
    assert header.startswith(b"HTTP/1.1 200"), header
    length = int(
        next(line.split(b":")[1] for line in header.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += sock.recv(65536)
    return json.loads(body)


def expected(rows: list[list[float]], repo: Path) -> list[list[float]]:
    return modelgen.run_numpy(repo / "m" / "1", {"x": np.array(rows, np.float32)})["y"].tolist()


def hard_close(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed client or a proxy dropping it does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- timeouts ------------------------------------------------------------------------------


def test_slow_headers_are_cut_after_the_header_timeout(server: DropinServer, repo: Path) -> None:
    socks = [connect(server.rest_port) for _ in range(20)]
    started = time.monotonic()
    for sock in socks:
        sock.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: test\r\n")
    cut: dict[int, float] = {}
    while len(cut) < len(socks) and time.monotonic() - started < HEADER_TIMEOUT + SLACK + 1:
        for i, sock in enumerate(socks):  # one more header line now and then: never a complete head
            if i not in cut:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except ConnectionError:
                    cut[i] = time.monotonic() - started
                    continue
                if not still_open(sock):
                    cut[i] = time.monotonic() - started
        time.sleep(0.2)
    assert len(cut) == len(socks), (
        f"{len(socks) - len(cut)} slow connections still open after {time.monotonic() - started:.1f} s"
    )
    # cut by the header timeout, not by the (longer) idle timeout, although bytes kept coming
    assert HEADER_TIMEOUT - 0.1 <= min(cut.values()) and max(cut.values()) < IDLE_TIMEOUT, cut
    rows = [[1.0, 2.0]]
    with connect(server.rest_port) as sock:  # everybody else is served
        assert rest_predict(sock, rows)["predictions"] == expected(rows, repo)
    server.wait_for_log(r"\[INFO\]\[dropin.rest\] REST client .*: no complete request head within 1 s")
    for sock in socks:
        sock.close()


def test_a_stalled_body_is_cut_after_the_body_timeout(server: DropinServer) -> None:
    socks = [connect(server.rest_port) for _ in range(20)]
    for sock in socks:  # promise 100 MB, send 1 KB, stall
        sock.sendall(head(length=100_000_000) + b"[" * 1000)
    started = time.monotonic()
    for sock in socks:
        assert closed_by_server(sock, BODY_TIMEOUT + SLACK), "a stalled body still holds its connection"
        sock.close()
    assert time.monotonic() - started >= BODY_TIMEOUT - 0.1
    server.wait_for_log(r"REST client .*: request body stalled for 1 s")


def test_a_stalled_body_after_a_slow_one_on_the_same_connection_is_cut(server: DropinServer, repo: Path) -> None:
    rows = [[1.0, 2.0]]
    body = json.dumps({"instances": rows}).encode()
    with connect(server.rest_port) as sock:
        sock.sendall(head(length=len(body)) + body[:5])  # a body in two pieces: timed
        time.sleep(0.2)
        sock.sendall(body[5:])
        assert read_response(sock)["predictions"] == expected(rows, repo)
        sock.sendall(head(length=len(body)) + body[:5])  # the next request on the connection stalls
        started = time.monotonic()
        assert closed_by_server(sock, BODY_TIMEOUT + SLACK), "a stalled second body still holds its connection"
        assert time.monotonic() - started >= BODY_TIMEOUT - 0.3


def test_a_slow_but_steady_body_is_served(server: DropinServer, repo: Path) -> None:
    """The body timeout bounds pauses, not the whole upload: a body sent in pieces over three
    body timeouts is answered."""
    rows = [[float(i), 1.0] for i in range(200)]
    body = json.dumps({"instances": rows}).encode()
    pieces = 10
    step = len(body) // pieces + 1
    with connect(server.rest_port) as sock:
        sock.sendall(head(length=len(body)))
        for i in range(0, len(body), step):
            sock.sendall(body[i:i + step])
            time.sleep(3 * BODY_TIMEOUT / pieces)
        assert read_response(sock)["predictions"] == expected(rows, repo)


def test_an_idle_keepalive_connection_is_closed_after_the_idle_timeout(server: DropinServer, repo: Path) -> None:
    rows = [[3.0, 4.0]]
    with connect(server.rest_port) as used, connect(server.rest_port) as silent:
        assert rest_predict(used, rows)["predictions"] == expected(rows, repo)
        time.sleep(IDLE_TIMEOUT / 4)
        assert rest_predict(used, rows)["predictions"] == expected(rows, repo)  # a request restarts the clock
        answered = time.monotonic()
        assert still_open(used)
        assert closed_by_server(used, IDLE_TIMEOUT + SLACK)
        assert time.monotonic() - answered >= IDLE_TIMEOUT - 0.1
        assert closed_by_server(silent, SLACK)  # never sent anything: opened earlier, closed already


# -- connection limit ------------------------------------------------------------------------


def test_connections_beyond_the_limit_are_closed_while_existing_ones_are_served(start_server, repo: Path) -> None:
    limit = 10
    srv = start_server(
        "--model_name", "m", "--model_path", str(repo / "m"),
        "--file_system_poll_wait_seconds", "0", "--rest_port", str(free_port()), "--rest_bind_address", "127.0.0.1",
        "--rest_max_connections", str(limit),
    )
    srv.wait_for("m", 1)
    rows = [[5.0, 6.0]]
    client = connect(srv.rest_port)
    assert rest_predict(client, rows)["predictions"] == expected(rows, repo)
    held = [connect(srv.rest_port) for _ in range(limit - 1)]  # idle: they send nothing
    time.sleep(0.3)
    assert all(still_open(sock) for sock in held)
    for _ in range(5):
        with connect(srv.rest_port) as extra:  # the kernel accepts; the server closes it at once
            started = time.monotonic()
            assert closed_by_server(extra, 2.0), "a connection beyond --rest_max_connections was kept"
            assert time.monotonic() - started < 1.0
        assert rest_predict(client, rows)["predictions"] == expected(rows, repo)  # the existing client is served
    assert all(still_open(sock) for sock in held)  # and the held ones are untouched
    held.pop().close()  # a free slot: a new connection is served again
    time.sleep(0.3)
    with connect(srv.rest_port) as late:
        assert rest_predict(late, rows)["predictions"] == expected(rows, repo)
    srv.wait_for_log(r"\[WARNING\]\[dropin.rest\] REST connection limit reached \(10 open, --rest_max_connections\)")
    assert sum("connection limit" in line for line in srv.log_lines) == 1  # one warning, not one per connection
    for sock in [client, *held]:
        sock.close()


# -- clients that vanish ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> DropinServer:
    """A model that takes 1 s per request, on gRPC and REST, with the default REST limits."""
    root = tmp_path_factory.mktemp("slow")
    site = root / "site"
    install_fake_distribution(site, "dropin_slow", {"slow": "slow_plugin"}, {"slow_plugin": SLOW_PLUGIN})
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "slow.txt").write_text("1.0")
    srv = DropinServer(
        ["--model_name", "slow", "--model_path", str(root / "m"), "--file_system_poll_wait_seconds", "0",
         "--rest_port", str(free_port()), "--rest_bind_address", "127.0.0.1"],
        env={"PYTHONPATH": str(site)},
    )
    try:
        srv.wait_for("slow", 1)
        yield srv
    finally:
        srv.stop()


def test_hang_ups_mid_body_log_no_traceback(slow_server: DropinServer) -> None:
    srv = slow_server
    before = len(srv.log)
    for i in range(200):
        sock = connect(srv.rest_port)
        sock.sendall(head(path="/v1/models/slow:predict", length=100_000) + b'{"instances": [' + b"[1.0, 2.0], " * 500)
        if i % 2:
            hard_close(sock)
        else:
            sock.close()
    x = [[7.0, 8.0]]
    with connect(srv.rest_port) as sock:  # still serving
        body = json.dumps({"instances": x}).encode()
        sock.sendall(head(path="/v1/models/slow:predict", length=len(body)) + body)
        assert read_response(sock) == {"predictions": [[14.0, 16.0]]}
    time.sleep(0.5)  # let the server see the last hang-ups
    written = srv.log[before:]
    assert "Traceback" not in written and "ERROR" not in written, written[:3000]
    assert len(written) < 2000, written[:3000]  # hang-ups are DEBUG: nothing at INFO


def test_clients_vanishing_during_inference_or_the_answer_log_no_traceback(slow_server: DropinServer) -> None:
    srv = slow_server
    before = len(srv.log)
    x = np.ones((1, 2), np.float32)
    # REST: the client leaves while the model runs, with a plain close and with a reset
    for close in (socket.socket.close, hard_close):
        sock = connect(srv.rest_port)
        body = json.dumps({"instances": x.tolist()}).encode()
        sock.sendall(head(path="/v1/models/slow:predict", length=len(body)) + body)
        time.sleep(0.3)
        close(sock)
    # REST: a large answer the client does not read, then leaves
    big = np.ones((20000, 2), np.float32)
    body = json.dumps({"instances": big.tolist()}).encode()
    sock = connect(srv.rest_port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(head(path="/v1/models/slow:predict", length=len(body)) + body)
    time.sleep(1.5)  # the model answers after 1 s; the answer fills the socket buffers
    hard_close(sock)
    # gRPC: the client cancels during inference, and one gives up by its deadline
    future = srv.predict.Predict.future(predict_request("slow", {"x": x}))
    time.sleep(0.3)
    future.cancel()
    with pytest.raises(grpc.RpcError) as info:
        srv.predict.Predict(predict_request("slow", {"x": x}), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.5)  # every abandoned inference finishes
    # still serving, on both ports
    np.testing.assert_array_equal(
        outputs_of(srv.predict.Predict(predict_request("slow", {"x": x}), timeout=30))["y"], x * 2
    )
    with connect(srv.rest_port) as sock:
        body = json.dumps({"instances": x.tolist()}).encode()
        sock.sendall(head(path="/v1/models/slow:predict", length=len(body)) + body)
        assert read_response(sock) == {"predictions": (x * 2).tolist()}
    written = srv.log[before:]
    assert "Traceback" not in written and "ERROR" not in written and "WARNING" not in written, written[:3000]
    assert len(written) < 1000, written[:3000]



def test_requests_that_are_not_http_get_400_and_no_traceback(slow_server: DropinServer) -> None:
    srv = slow_server
    before = len(srv.log)
    body = b'{"instances": [[1.0, 2.0]]}'
    garbage = [
        b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"ins\r\nzz\r\n',
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n",
        b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /v1/models/m HTTP/1.1\r\nno colon here\r\n\r\n",
        # a valid request, then bytes that are not HTTP on the same connection
        head(path="/v1/models/slow:predict", length=len(body))
        + body
        + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        + b"\x00" * 40
        + b"\r\n\r\n",
    ]
    for data in garbage:
        with connect(srv.rest_port) as sock:
            sock.sendall(data)
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert b" 400 " in answer.split(b"\r\n")[0] or b"HTTP/1.1 200" in answer, answer[:300]
            assert b'{"error": "Invalid HTTP request - ' in answer, answer[-300:]
    with connect(srv.rest_port) as sock:  # still serving
        sock.sendall(head(path="/v1/models/slow:predict", length=len(body)) + body)
        assert read_response(sock) == {"predictions": [[2.0, 4.0]]}
    time.sleep(0.3)
    written = srv.log[before:]
    assert "Traceback" not in written and "ERROR" not in written, written[:3000]


# -- normal clients ----------------------------------------------------------------------------


def test_normal_clients_are_unaffected(server: DropinServer, repo: Path) -> None:
    from ovmsclient import make_http_client

    client = make_http_client(f"127.0.0.1:{server.rest_port}")
    x = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    outputs = client.predict({"x": x}, "m")
    np.testing.assert_array_equal(np.asarray(outputs, np.float32), modelgen.run_numpy(repo / "m" / "1", {"x": x})["y"])
    # a large body sent at full speed: far more than one read, well within the timeouts
    rows = np.random.default_rng(4).standard_normal((100_000, 10)).astype(np.float32)
    body = json.dumps({"inputs": rows.tolist()}).encode()
    assert len(body) > 10 << 20
    with connect(server.rest_port) as sock:
        sock.sendall(head(length=len(body)) + body)
        got = np.asarray(read_response(sock)["outputs"], np.float32)
        np.testing.assert_array_equal(got, modelgen.run_numpy(repo / "m" / "1", {"x": rows})["y"])
        # the same connection, kept alive, serves more requests
        assert rest_predict(sock, [[1.0, 1.0]])["predictions"] == expected([[1.0, 1.0]], repo)
    # a head that arrives in several pieces, quickly, is served
    small = json.dumps({"instances": [[2.0, 2.0]]}).encode()
    with connect(server.rest_port) as sock:
        message = head(length=len(small)) + small
        for i in range(0, len(message), 7):
            sock.sendall(message[i:i + 7])
            time.sleep(0.005)
        assert read_response(sock)["predictions"] == expected([[2.0, 2.0]], repo)


# -- the gRPC port ----------------------------------------------------------------------------


def test_grpc_handshake_and_idle_timeouts(start_server, repo: Path) -> None:
    srv = start_server(
        "--model_name",
        "m",
        "--model_path",
        str(repo / "m"),
        "--file_system_poll_wait_seconds",
        "0",
        "--grpc_handshake_timeout_seconds",
        "1",
        "--grpc_idle_timeout_seconds",
        "1",
    )
    srv.wait_for("m", 1)
    x = np.ones((1, 2), np.float32)
    silent = [connect(srv.port) for _ in range(10)]  # TCP only: no HTTP/2 preface
    partial = [connect(srv.port) for _ in range(10)]
    for sock in partial:
        sock.sendall(b"PRI * HTTP/2.0\r\n")  # half of the preface
    started = time.monotonic()
    for sock in silent + partial:
        assert closed_by_server(sock, 1 + SLACK), "a gRPC connection without a handshake is still open"
        sock.close()
    assert time.monotonic() - started >= 0.9
    # a channel whose connection has no call for the idle timeout is sent away; it reconnects
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    states: list[grpc.ChannelConnectivity] = []
    channel.subscribe(states.append)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    np.testing.assert_array_equal(outputs_of(stub.Predict(predict_request("m", {"x": x}), timeout=30))["y"], x * 2)
    ready, idle = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE

    def idle_after_ready() -> bool:  # the callbacks arrive on gRPC's thread, maybe after Predict returned
        return ready in states and idle in states[states.index(ready):]

    deadline = time.monotonic() + 1 + SLACK + 1
    while not idle_after_ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert idle_after_ready(), states
    np.testing.assert_array_equal(outputs_of(stub.Predict(predict_request("m", {"x": x}), timeout=30))["y"], x * 2)
    channel.close()


def test_grpc_connections_beyond_the_limit_are_closed_while_existing_ones_are_served(start_server, repo: Path) -> None:
    limit = 5
    srv = start_server(
        "--model_name", "m", "--model_path", str(repo / "m"),
        "--file_system_poll_wait_seconds", "0", "--grpc_max_connections", str(limit),
    )
    srv.wait_for("m", 1)  # over the test kit's channel: one connection
    x = np.ones((1, 2), np.float32)
    held = [connect(srv.port) for _ in range(limit - 1)]
    time.sleep(0.3)
    for _ in range(3):
        with connect(srv.port) as extra:
            assert closed_by_server(extra, 1.0), "a gRPC connection beyond --grpc_max_connections was kept"
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(predict_request("m", {"x": x}), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # the connection already open is served
        np.testing.assert_array_equal(
            outputs_of(srv.predict.Predict(predict_request("m", {"x": x}), timeout=30))["y"], x * 2
        )
    held.pop().close()
    time.sleep(0.3)
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        np.testing.assert_array_equal(outputs_of(stub.Predict(predict_request("m", {"x": x}), timeout=30))["y"], x * 2)
    for sock in held:
        sock.close()
    assert "Traceback" not in srv.log

