"""The model repository, end to end on a real server process: numbered versions appear, change and
disappear while the server runs; version policies; config.json edits; and a client that never sees
a failed request through all of it."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

import modelgen
from conftest import F32_CONFIG, DropinServer
from test_grpc_api import outputs_of, predict_request

AVAILABLE, LOADING, END = 30, 20, 50
X = np.ones((1, 2), np.float32)


def make_version(repo: Path, number: int, factor: float, staging: Path) -> Path:
    """Build a version in a staging directory and rename it into place, as deployment tools do."""
    staged = staging / f"{repo.name}-{number}-{time.monotonic_ns()}"
    modelgen.scale_model(staged, shape=(-1, 2), factor=factor)
    target = repo / str(number)
    os.rename(staged, target)
    return target


def served_factor(server: DropinServer, name: str = "m", version: int = 0) -> float:
    response = server.predict.Predict(predict_request(name, {"x": X}, version=version), timeout=20)
    return float(outputs_of(response)["y"][0, 0])


def states(server: DropinServer, name: str = "m") -> dict[int, tuple[int, int, str]]:
    return {
        v.version: (v.state, v.status.error_code, v.status.error_message)
        for v in server.status(name).model_version_status
    }


def wait_until(condition, timeout: float = 30, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(message or "condition never held")


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


def serve(start_server, repo: Path, *args: str) -> DropinServer:
    return start_server("--model_name", "m", "--model_path", str(repo), "--plugin_config", F32_CONFIG, *args)


# -- versions come and go ---------------------------------------------------------------------


def test_new_version_loads_then_the_old_one_retires(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo)
    server.wait_for("m", 1)
    make_version(repo, 2, 2.0, staging)
    server.wait_for("m", 2)
    server.wait_for("m", 1, END)
    assert served_factor(server) == 2.0
    assert states(server) == {1: (END, 0, "OK"), 2: (AVAILABLE, 0, "OK")}
    server.wait_for_log("model m version 2: AVAILABLE")
    server.wait_for_log("model m version 1: END")
    with pytest.raises(grpc.RpcError) as info:
        served_factor(server, version=1)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details() == "Model with requested version is retired"


def test_removed_version_retires_and_the_previous_one_returns(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    make_version(repo, 2, 2.0, staging)
    server = serve(start_server, repo)
    server.wait_for("m", 2)
    shutil.rmtree(repo / "2")
    server.wait_for("m", 2, END)
    server.wait_for("m", 1)
    assert served_factor(server) == 1.0
    # a directory that reappears loads again under the same number
    make_version(repo, 2, 4.0, staging)
    server.wait_for("m", 2)
    wait_until(lambda: served_factor(server) == 4.0)


def test_failed_version_keeps_the_old_one_serving_until_fixed(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo)
    server.wait_for("m", 1)
    broken = staging / "broken"
    broken.mkdir()
    (broken / "model.xml").write_text("<net>not IR</net>")
    (broken / "model.bin").write_bytes(b"\0")
    os.rename(broken, repo / "2")
    wait_until(lambda: states(server).get(2, (0,))[0] == LOADING and states(server)[2][1] != 0)
    state, code, message = states(server)[2]
    assert code == 2 and "model.xml" in message  # the real reason, not just "UNKNOWN"
    assert served_factor(server) == 1.0
    assert states(server)[1] == (AVAILABLE, 0, "OK")
    # fix it in place: the load is retried once the files have settled
    shutil.rmtree(repo / "2")
    make_version(repo, 2, 2.0, staging)
    server.wait_for("m", 2)
    server.wait_for("m", 1, END)
    assert served_factor(server) == 2.0


def test_changed_files_reload_the_version(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo)
    server.wait_for("m", 1)
    modelgen.scale_model(staging / "new", shape=(-1, 2), factor=3.0)
    for name in ("model.bin", "model.xml"):
        os.replace(staging / "new" / name, repo / "1" / name)
    wait_until(lambda: served_factor(server) == 3.0, message="the changed files were never served")
    assert states(server) == {1: (AVAILABLE, 0, "OK")}
    server.wait_for_log("model m version 1: reloaded")


def test_slow_copy_never_shows_a_failed_load(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo, "--version_settle_seconds", "0.5")
    server.wait_for("m", 1)
    source = modelgen.scale_model(staging / "big", shape=(-1, 2), factor=2.0)
    # pad the weights file so that the copy takes a while: OpenVINO ignores trailing bytes
    with open(source / "model.bin", "ab") as f:
        f.write(b"\0" * (2 << 20))
    errors: list[dict] = []
    stop = threading.Event()

    def watch_status() -> None:
        while not stop.is_set():
            seen = states(server)
            if any(code != 0 for _, code, _ in seen.values()):
                errors.append(seen)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_status)
    watcher.start()
    try:
        target = repo / "2"
        target.mkdir()
        for name in ("model.xml", "model.bin"):  # a slow writer: 64 KiB every 10 ms
            data = (source / name).read_bytes()
            with open(target / name, "wb") as f:
                for start in range(0, len(data), 64 << 10):
                    f.write(data[start : start + (64 << 10)])
                    f.flush()
                    time.sleep(0.01)
        server.wait_for("m", 2)
    finally:
        stop.set()
        watcher.join()
    assert errors == []
    assert served_factor(server) == 2.0


def test_rescans_alone_find_new_versions(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo, "--file_system_watch", "off", "--file_system_poll_wait_seconds", "0.2")
    server.wait_for("m", 1)
    make_version(repo, 2, 2.0, staging)
    server.wait_for("m", 2, timeout=10)
    assert served_factor(server) == 2.0


def test_poll_wait_zero_turns_monitoring_off(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo, "--file_system_poll_wait_seconds", "0")
    server.wait_for("m", 1)
    make_version(repo, 2, 2.0, staging)
    time.sleep(1.5)
    assert 2 not in states(server)
    assert served_factor(server) == 1.0


def test_non_numeric_directories_are_ignored_with_one_log_line(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    for name in ("tmp", "2_tmp", "0", "-3"):
        (repo / name).mkdir()
    server = serve(start_server, repo, "--file_system_poll_wait_seconds", "0.1")
    server.wait_for("m", 1)
    time.sleep(0.5)  # several rescans
    assert set(states(server)) == {1}
    assert server.log.count("2_tmp: not a version directory") == 1


# -- version policies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy,served,after_adding_4",
    [
        ('{"latest":{"num_versions":2}}', {2, 3}, {3, 4}),
        ('{"all":{}}', {1, 2, 3}, {1, 2, 3, 4}),
        ('{"specific":{"versions":[1,3,4]}}', {1, 3}, {1, 3, 4}),
    ],
    ids=["latest 2", "all", "specific 1,3,4"],
)
def test_version_policies(start_server, repo: Path, staging: Path, policy: str, served: set[int], after_adding_4: set[int]) -> None:
    for number in (1, 2, 3):
        make_version(repo, number, float(number), staging)
    server = serve(start_server, repo, "--model_version_policy", policy)
    for number in served:
        server.wait_for("m", number)
    assert {n for n, (state, _, _) in states(server).items() if state == AVAILABLE} == served
    for number in {1, 2, 3} - served:
        with pytest.raises(grpc.RpcError) as info:
            served_factor(server, version=number)
        assert info.value.details() == "Model with requested version is not found"
    assert served_factor(server) == float(max(served))
    make_version(repo, 4, 4.0, staging)
    wait_until(lambda: {n for n, (s, _, _) in states(server).items() if s == AVAILABLE} == after_adding_4)
    for number in after_adding_4:
        assert served_factor(server, version=number) == float(number)


# -- config.json ------------------------------------------------------------------------------


def write_config(path: Path, models: dict[str, dict]) -> None:
    entries = [{"config": {"name": name, "plugin_config": {"INFERENCE_PRECISION_HINT": "f32"}, **cfg}} for name, cfg in models.items()]
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps({"model_config_list": entries}))
    os.replace(staged, path)


def test_config_file_edits_add_remove_and_reconfigure_models(start_server, tmp_path: Path, staging: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        make_version(tmp_path / name, 1, 1.0 if name == "a" else 10.0, staging)
        make_version(tmp_path / name, 2, 2.0 if name == "a" else 20.0, staging)
    config = tmp_path / "config.json"
    write_config(config, {"a": {"base_path": "a"}})
    server = start_server("--config_path", str(config))
    server.wait_for("a", 2)
    write_config(config, {"a": {"base_path": "a"}, "b": {"base_path": "b"}})
    server.wait_for("b", 2)
    assert served_factor(server, "b") == 20.0
    # an invalid file changes nothing, and the log says why
    config.write_text('{"model_config_list": [{"config": {"name": "a"}}]}')
    wait_until(lambda: "the current configuration stays" in server.log)
    server.wait_for_log("needs a 'base_path'")
    assert served_factor(server, "a") == 2.0 and served_factor(server, "b") == 20.0
    # a new policy applies without reloading what stays; a removed model retires
    write_config(config, {"a": {"base_path": "a", "model_version_policy": {"all": {}}}})
    server.wait_for("a", 1)
    server.wait_for("b", 2, END)
    assert served_factor(server, "a", version=1) == 1.0
    with pytest.raises(grpc.RpcError) as info:
        served_factor(server, "b")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_invalid_config_file_refuses_to_start(start_server, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{not json")
    with pytest.raises(RuntimeError, match="not valid JSON"):
        start_server("--config_path", str(config))


# -- no request fails while versions change ---------------------------------------------------


def test_zero_failed_requests_while_versions_change(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo, "--version_settle_seconds", "0.2")
    server.wait_for("m", 1)
    failures: list[str] = []
    sent = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal sent
        while not stop.is_set():
            try:
                served_factor(server)
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")
            sent += 1

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    swaps = 0
    try:
        for round_ in range(3):
            n = 2 + 2 * round_
            make_version(repo, n, float(n), staging)  # add a newer version
            server.wait_for("m", n)
            server.wait_for("m", n - 1, END)
            modelgen.scale_model(staging / f"v{n}b", shape=(-1, 2), factor=n + 0.5)  # replace its files in place
            for name in ("model.bin", "model.xml"):
                os.replace(staging / f"v{n}b" / name, repo / str(n) / name)
            wait_until(lambda: served_factor(server) == n + 0.5)
            broken = staging / f"broken{n}"  # a corrupt newer version
            broken.mkdir()
            (broken / "model.xml").write_text("garbage")
            (broken / "model.bin").write_bytes(b"")
            os.rename(broken, repo / str(n + 1))
            wait_until(lambda: states(server).get(n + 1, (0, 0))[1] != 0)
            shutil.rmtree(repo / str(n + 1))  # restored: a good one
            make_version(repo, n + 1, n + 1.0, staging)
            server.wait_for("m", n + 1)
            shutil.rmtree(repo / str(n + 1))  # removed again: back to n
            server.wait_for("m", n + 1, END)
            server.wait_for("m", n)
            wait_until(lambda: served_factor(server) == n + 0.5)
            swaps += 5
    finally:
        stop.set()
        for t in threads:
            t.join()
    print(f"{swaps} version changes, {sent} requests during them, {len(failures)} failed")
    assert sent > 100
    assert failures == []
