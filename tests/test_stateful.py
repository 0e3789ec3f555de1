"""Stateful models (OVMS's sequence API) on a real server with numpy-backend models: a running
sum whose answers are compared with the same graph run with numpy over the whole sequence.

gRPC with the special inputs in the typed fields (as tensorflow's make_tensor_proto and OVMS's
docs send them) and in tensor_content, REST, ovmsclient; every OVMS error with its code and
message; the sequence limit; 8 sequences from 8 threads; idle cleanup; a reload during a
sequence; the configuration checks."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dropin.cli import build_parser, settings_from_args
from dropin.config import ConfigError, model_config
from dropin.dtypes import DType
from dropin.testing.client import RestError, outputs_of, predict_request
from dropin.testing.expect import expect_error
from dropin.testing.fake_plugins import SLOW_PLUGIN, install_fake_distribution
from dropin.testing.load import in_threads
from dropin.testing.numpy_models import run_numpy_sequence, running_sum_model, scale_model
from dropin.testing.sequences import END, START, sequence_id_of, special, special_json
from dropin.testing.server import DropinServer, free_port
from dropin.testing.typed_protos import typed

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


def steps(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 2)).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stateful")
    running_sum_model(root / "sum" / "1", delay_seconds=0.005)
    running_sum_model(root / "limited" / "1")
    running_sum_model(root / "reloaded" / "1")
    running_sum_model(root / "picky" / "1", reject=[{"input": "x", "equals": 13, "message": "13 is refused"}])
    scale_model(root / "plain" / "1", shape=(1, 2))
    config = {"model_config_list": [
        {"config": {"name": "sum", "base_path": "sum", "stateful": True, "max_sequence_number": 100}},
        {"config": {"name": "limited", "base_path": "limited", "stateful": True, "max_sequence_number": 2}},
        {"config": {"name": "reloaded", "base_path": "reloaded", "stateful": True}},
        {"config": {"name": "picky", "base_path": "picky", "stateful": True}},
        {"config": {"name": "plain", "base_path": "plain"}},
    ]}
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def server(models: Path):
    srv = DropinServer(["--config_path", str(models / "config.json"), "--rest_port", str(free_port()),
                        "--metrics_enable"])
    try:
        for name in ("sum", "limited", "reloaded", "picky", "plain"):
            srv.wait_for(name, 1)
        yield srv
    finally:
        srv.stop()


def run_sequence(server: DropinServer, name: str, xs: list[np.ndarray], sequence_id: int, typed: bool = True) -> list:
    """Start, middle and end requests over gRPC; every response's y, checking its sequence_id."""
    ys = []
    for i, x in enumerate(xs):
        control = START if i == 0 else END if i == len(xs) - 1 else None
        response = server.predict.Predict(
            predict_request(name, {"x": x, **special(sequence_id, control, typed)}), timeout=30
        )
        assert sequence_id_of(response) == sequence_id
        ys.append(outputs_of(response)["y"])
    return ys


def test_ten_steps_over_grpc_match_the_graph_run_over_the_whole_sequence(server: DropinServer, models: Path) -> None:
    xs = steps(10, seed=1)
    expected = [r["y"] for r in run_numpy_sequence(models / "sum" / "1", [{"x": x} for x in xs])]
    np.testing.assert_allclose(run_sequence(server, "sum", xs, 41), expected, rtol=1e-6)
    # the special inputs in tensor_content (as ovmsclient sends them) work the same
    np.testing.assert_allclose(run_sequence(server, "sum", xs, 42, typed=False), expected, rtol=1e-6)
    # the same id can start again once ended, from a fresh state
    np.testing.assert_allclose(run_sequence(server, "sum", xs[:3], 41), expected[:3], rtol=1e-6)


def test_a_start_without_an_id_gets_a_unique_one(server: DropinServer) -> None:
    x = np.ones((1, 2), np.float32)
    ids = set()
    for _ in range(3):
        response = server.predict.Predict(predict_request("sum", {"x": x, **special(control=START)}), timeout=30)
        ids.add(sequence_id_of(response))
    assert len(ids) == 3 and 0 not in ids
    for sequence_id in ids:  # each is a sequence of its own
        out = server.client.predict("sum", {"x": x, **special(sequence_id, END)})
        np.testing.assert_array_equal(out["y"], 2 * x)
        assert out["sequence_id"].tolist() == [sequence_id]


def test_rest_sequence(server: DropinServer, models: Path) -> None:
    assert server.rest is not None
    xs = steps(10, seed=2)
    expected = [r["y"] for r in run_numpy_sequence(models / "sum" / "1", [{"x": x} for x in xs])]
    sequence_id = 0
    for i, x in enumerate(xs):
        control = START if i == 0 else END if i == 9 else None
        out = server.rest.predict("sum", {"x": x, **special_json(None if i == 0 else sequence_id, control)})
        if i == 0:
            sequence_id = int(out["sequence_id"][0])
        assert out["sequence_id"].tolist() == [sequence_id]
        np.testing.assert_allclose(out["y"], expected[i], rtol=1e-6)


def test_ovmsclient_sequence(server: DropinServer, models: Path) -> None:
    from ovmsclient import make_grpc_client

    client = make_grpc_client(f"127.0.0.1:{server.port}")
    xs = steps(10, seed=3)
    expected = [r["y"] for r in run_numpy_sequence(models / "sum" / "1", [{"x": x} for x in xs])]
    for i, x in enumerate(xs):
        inputs = {"x": x, "sequence_id": np.array([77], np.uint64)}
        if i in (0, 9):
            inputs["sequence_control_input"] = np.array([START if i == 0 else END], np.uint32)
        out = client.predict(inputs, "sum")
        assert out["sequence_id"].tolist() == [77]
        np.testing.assert_allclose(out["y"], expected[i], rtol=1e-6)


def test_eight_sequences_from_eight_threads_never_mix(server: DropinServer, models: Path) -> None:
    results = in_threads(
        lambda k: run_sequence(server, "sum", steps(10, seed=100 + k), 1000 + k, typed=k % 2 == 0), 8
    )
    for k in range(8):
        xs = steps(10, seed=100 + k)
        expected = [r["y"] for r in run_numpy_sequence(models / "sum" / "1", [{"x": x} for x in xs])]
        np.testing.assert_allclose(results[k], expected, rtol=1e-6)


def test_every_sequence_error_over_grpc(server: DropinServer) -> None:
    x = np.ones((1, 2), np.float32)
    call = server.predict.Predict

    def request(**inputs: object) -> object:
        return predict_request("sum", {"x": x, **inputs})

    missing_id = "Sequence ID has not been provided in request inputs"
    expect_error(call, predict_request("sum", {"x": x}), INVALID, f"{missing_id} - every request to a stateful model "
                 "but one with sequence_control_input 1 (start) needs a sequence_id other than 0")
    with pytest.raises(grpc.RpcError) as info:
        call(request(**special(0, END)), timeout=20)
    assert (info.value.code(), info.value.details().split(" - ")[0]) == (INVALID, missing_id)
    expect_error(call, request(**special(5, 3)), INVALID,
                 "Unexpected value of sequence control input - Expected: 0 (none), 1 (start) or 2 (end); Actual: 3")
    expect_error(call, request(**special(123456)), NOT_FOUND,
                 "Sequence with provided ID does not exist - sequence_id: 123456 is not open on model sum version 1 "
                 "(never started, ended, removed as idle, or dropped when this version was loaded again)")
    call(request(**special(9, START)), timeout=20)
    with pytest.raises(grpc.RpcError) as info:
        call(request(**special(9, START)), timeout=20)
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.ALREADY_EXISTS, "Sequence with provided ID already exists - sequence_id: 9"
    )
    call(request(**special(9, END)), timeout=20)
    with pytest.raises(grpc.RpcError) as info:  # ended: gone
        call(request(**special(9)), timeout=20)
    assert info.value.code() == NOT_FOUND
    # the special inputs' type and shape
    expect_error(call, request(sequence_id=typed(DType.I64, (1,), [5])), INVALID,
                 "Could not find sequence id in expected tensor proto field uint64_val - Expected: U64; "
                 "input name: sequence_id")
    expect_error(call, request(**special(5), sequence_control_input=typed(DType.I32, (1,), [1])), INVALID,
                 "Could not find sequence control input in expected tensor proto field uint32_val - Expected: U32; "
                 "input name: sequence_control_input")
    expect_error(call, request(sequence_id=typed(DType.U64, (1,), [])), INVALID,
                 "Could not find sequence id in expected tensor proto field uint64_val - Invalid content size of "
                 "tensor proto - Expected: 8 bytes; Actual: 0 bytes; input name: sequence_id")
    expect_error(call, request(sequence_id=typed(DType.U64, (), [5])), INVALID,
                 "Special input proto does not contain tensor shape information - input name: sequence_id")
    expect_error(call, request(sequence_id=typed(DType.U64, (1, 1), [5])), INVALID,
                 "Invalid number of shape dimensions - Required shape for sequence_id is: (1); Actual: (1,1)")
    expect_error(call, request(sequence_id=typed(DType.U64, (2,), [5, 6])), INVALID,
                 "Invalid input shape - Required shape for sequence_id is: (1); Actual: (2)")
    # the model's own inputs are validated after the special ones, as before
    expect_error(call, predict_request("sum", {"x": np.ones((1, 3), np.float32), **special(5)}), INVALID,
                 "Invalid input shape - Expected: (1,2); Actual: (1,3); input name: x")
    # the special inputs count as inputs in OVMS's message
    expect_error(call, predict_request("sum", {"x": x, "z": x, **special(5)}), INVALID,
                 "Invalid number of inputs - Expected: 2; Actual: 3")
    # a stateless model knows no special inputs
    expect_error(call, predict_request("plain", {"x": x, **special(5, START)}), INVALID,
                 "Invalid number of inputs - Expected: 1; Actual: 3")


def test_sequence_errors_over_rest(server: DropinServer) -> None:
    rest = server.rest
    assert rest is not None
    x = [[1.0, 2.0]]
    cases = [
        ({}, 400, "Sequence ID has not been provided in request inputs"),
        (special_json(5, 7), 400, "Unexpected value of sequence control input"),
        (special_json(987654), 404, "Sequence with provided ID does not exist"),
    ]
    for special_inputs, status, message in cases:
        with pytest.raises(RestError) as info:
            rest.predict("sum", {"x": x, **special_inputs})
        assert info.value.status == status and info.value.message.startswith(message), info.value
    rest.predict("sum", {"x": x, **special_json(31, START)})
    with pytest.raises(RestError) as info:
        rest.predict("sum", {"x": x, **special_json(31, START)})
    assert info.value.status == 409
    assert info.value.message == "Sequence with provided ID already exists - sequence_id: 31"
    rest.predict("sum", {"x": x, **special_json(31, END)})


def test_failed_requests_leave_a_sequence_usable(server: DropinServer) -> None:
    """A start that fails frees its id; a middle request that fails keeps the state before it;
    an end that fails still ends the sequence."""
    one, bad = np.ones((1, 2), np.float32), np.full((1, 2), 13, np.float32)
    refused = "Invalid value for the input type - input x: 13 is refused"
    call = server.predict.Predict
    expect_error(call, predict_request("picky", {"x": bad, **special(4, START)}), INVALID, refused)
    server.client.predict("picky", {"x": one, **special(4, START)})  # the id is free again
    expect_error(call, predict_request("picky", {"x": bad, **special(4)}), INVALID, refused)
    np.testing.assert_array_equal(server.client.predict("picky", {"x": one, **special(4)})["y"], 2 * one)
    expect_error(call, predict_request("picky", {"x": bad, **special(4, END)}), INVALID, refused)
    with pytest.raises(grpc.RpcError) as info:
        call(predict_request("picky", {"x": one, **special(4)}), timeout=20)
    assert info.value.code() == NOT_FOUND


def test_the_sequence_limit(server: DropinServer) -> None:
    x = np.ones((1, 2), np.float32)
    client = server.client
    client.predict("limited", {"x": x, **special(1, START)})
    client.predict("limited", {"x": x, **special(2, START)})
    expect_error(server.predict.Predict, predict_request("limited", {"x": x, **special(3, START)}),
                 grpc.StatusCode.UNAVAILABLE, "Max sequence number has been reached. Could not create new sequence. - "
                 "model limited version 1 has 2 open sequences (max_sequence_number 2)")
    assert server.rest is not None
    with pytest.raises(RestError) as info:
        server.rest.predict("limited", {"x": x, **special_json(3, START)})
    assert info.value.status == 503
    # the active sequences gauge
    status, text = server.rest.request("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text if isinstance(text, str) else "")}
    samples = {s.labels["name"]: s.value for s in families["dropin_active_sequences"].samples}
    assert samples["limited"] == 2
    client.predict("limited", {"x": x, **special(1, END)})  # an ended sequence frees its place
    out = client.predict("limited", {"x": x, **special(3, START)})
    np.testing.assert_array_equal(out["y"], x)


def test_a_reload_or_a_retired_version_drops_its_sequences(server: DropinServer, models: Path) -> None:
    x = np.ones((1, 2), np.float32)
    client = server.client
    client.predict("reloaded", {"x": x, **special(8, START)})
    np.testing.assert_array_equal(client.predict("reloaded", {"x": x, **special(8)})["y"], 2 * x)
    running_sum_model(models / "reloaded" / "1", width=2, delay_seconds=0.001)  # new files: a reload
    server.wait_for_log(r"model reloaded version 1: reloaded", timeout=30)
    expect_error(server.predict.Predict, predict_request("reloaded", {"x": x, **special(8)}), NOT_FOUND,
                 "Sequence with provided ID does not exist - sequence_id: 8 is not open on model reloaded version 1 "
                 "(never started, ended, removed as idle, or dropped when this version was loaded again)")
    out = client.predict("reloaded", {"x": x, **special(8, START)})  # the id starts afresh
    np.testing.assert_array_equal(out["y"], x)
    # a new version retires version 1 and its sequences with it
    running_sum_model(models / "reloaded" / "2")
    server.wait_for("reloaded", 1, "END", timeout=30)
    expect_error(server.predict.Predict, predict_request("reloaded", {"x": x, **special(8)}), NOT_FOUND,
                 "Sequence with provided ID does not exist - sequence_id: 8 is not open on model reloaded version 2 "
                 "(never started, ended, removed as idle, or dropped when this version was loaded again)")
    expect_error(server.predict.Predict, predict_request("reloaded", {"x": x, **special(8)}, version=1), NOT_FOUND,
                 "Model with requested version is retired")


def test_idle_sequences_are_removed_after_the_poll_period(tmp_path: Path) -> None:
    running_sum_model(tmp_path / "idle" / "1")
    running_sum_model(tmp_path / "kept" / "1")
    config = {"model_config_list": [
        {"config": {"name": "idle", "base_path": "idle", "stateful": True}},
        {"config": {"name": "kept", "base_path": "kept", "stateful": True, "idle_sequence_cleanup": False}},
    ]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    # 0.005 minutes: a cleaner pass every 0.3 s; a sequence idle between two passes is removed
    with DropinServer(["--config_path", str(tmp_path / "config.json"),
                       "--sequence_cleaner_poll_wait_minutes", "0.005"]) as srv:
        srv.wait_for("idle", 1)
        srv.wait_for("kept", 1)
        x = np.ones((1, 2), np.float32)
        for name in ("idle", "kept"):
            srv.client.predict(name, {"x": x, **special(5, START)})
        srv.wait_for_log(r"model idle version 1: 1 idle sequence\(s\) removed", timeout=10)
        expect_error(srv.predict.Predict, predict_request("idle", {"x": x, **special(5)}), NOT_FOUND,
                     "Sequence with provided ID does not exist - sequence_id: 5 is not open on model idle version 1 "
                     "(never started, ended, removed as idle, or dropped when this version was loaded again)")
        np.testing.assert_array_equal(srv.client.predict("kept", {"x": x, **special(5)})["y"], 2 * x)


def test_stateful_flags_on_the_command_line(tmp_path: Path) -> None:
    running_sum_model(tmp_path / "m" / "1")
    with DropinServer(["--model_name", "m", "--model_path", str(tmp_path / "m"), "--stateful",
                       "--max_sequence_number", "1", "--idle_sequence_cleanup=false"]) as srv:
        srv.wait_for("m", 1)
        x = np.ones((1, 2), np.float32)
        srv.client.predict("m", {"x": x, **special(1, START)})
        expect_error(srv.predict.Predict, predict_request("m", {"x": x, **special(2, START)}),
                     grpc.StatusCode.UNAVAILABLE, "Max sequence number has been reached. Could not create new "
                     "sequence. - model m version 1 has 1 open sequences (max_sequence_number 1)")
        assert "ignored" not in srv.log, srv.log  # the flags have a meaning now


def test_a_backend_without_sequences_refuses_a_stateful_model(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_fake_distribution(site, "dropin_slow", {"slow": "slow_plugin"}, {"slow_plugin": SLOW_PLUGIN})
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "slow.txt").write_text("0")
    with DropinServer(["--model_name", "m", "--model_path", str(tmp_path / "m"), "--stateful"],
                      env={"PYTHONPATH": str(site)}) as srv:
        srv.wait_for_log("does not serve stateful models", timeout=30)
        state, _, message = srv.client.status("m")[1]
        assert state == "LOADING"
        assert message.endswith("backend slow does not serve stateful models (model m is stateful)"), message


def test_configuration_checks() -> None:
    base = {"name": "m", "base_path": "/m"}
    stateful = model_config({**base, "stateful": True}).stateful
    assert stateful is not None and (stateful.max_sequence_number, stateful.idle_sequence_cleanup) == (500, True)
    assert model_config(base).stateful is None
    assert model_config({**base, "stateful": True, "low_latency_transformation": True}).load.low_latency_transformation
    refused = {
        "dynamic_batching cannot be used with a stateful model": {
            "stateful": True, "dynamic_batching": {"max_batch_size": 4, "batch_timeout_micros": 100}},
        "Dynamic shape and dynamic batch size are not supported for stateful models": {
            "stateful": True, "batch_size": "auto"},
        "Stateful model config parameter used for non stateful model": {"low_latency_transformation": True},
        "max_sequence_number must be an integer": {"stateful": True, "max_sequence_number": -1},
        "stateful must be true or false": {"stateful": "yes"},
    }
    for message, keys in refused.items():
        with pytest.raises(ConfigError) as info:
            model_config({**base, **keys})
        assert message in str(info.value), info.value
    args = build_parser().parse_args(["serve", "--model_name", "m", "--model_path", "/m", "--stateful",
                                      "--max_sequence_number", "0", "--sequence_cleaner_poll_wait_minutes", "0.5"])
    settings = settings_from_args(args)
    assert settings.models[0].stateful is not None and settings.models[0].stateful.max_sequence_number == 0
    assert settings.sequence_cleaner_poll_wait_minutes == 0.5
