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
import pytest

from dropin.testing import numpy_models as modelgen
from dropin.testing.server import DropinServer
from dropin.testing.status import AVAILABLE, END, LOADING, states, wait_until
from dropin.testing.versions import make_version, served_factor


def seconds_until(server: DropinServer, version: int, state: int, timeout: float = 10, name: str = "m") -> float:
    """From now until GetModelStatus shows `version` in `state`, polling every millisecond."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            if server.status(name, version).model_version_status[0].state == state:
                return time.perf_counter() - start
        except grpc.RpcError:
            pass
        time.sleep(0.001)
    raise TimeoutError(f"version {version} never reached state {state}:\n{server.log}")


class Client:
    """Predict on the default version in a loop from two threads, recording every failure."""

    def __init__(self, server: DropinServer) -> None:
        self.server = server
        self.failures: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(2)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                served_factor(self.server)
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")
            self.sent += 1

    def check(self, min_sent: int) -> None:
        assert self.sent > min_sent
        assert not self.failures, f"{len(self.failures)} failed, first {self.failures[0]}:\n{self.server.log}"

    def __enter__(self) -> Client:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


def serve(start_server, repo: Path, *args: str) -> DropinServer:
    return start_server("--model_name", "m", "--model_path", str(repo), *args)


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
    assert (
        info.value.code() == grpc.StatusCode.NOT_FOUND
        and info.value.details() == "Model with requested version is retired"
    )


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
    (broken / "numpy_model.json").write_text("not a graph")
    os.rename(broken, repo / "2")
    wait_until(lambda: states(server).get(2, (0,))[0] == LOADING and states(server)[2][1] != 0)
    state, code, message = states(server)[2]
    assert code == 2 and "numpy_model.json" in message  # the real reason, not just "UNKNOWN"
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
    for name in modelgen.SCALE_FILES:
        os.replace(staging / "new" / name, repo / "1" / name)
    wait_until(lambda: served_factor(server) == 3.0, message="the changed files were never served")
    assert states(server) == {1: (AVAILABLE, 0, "OK")}
    server.wait_for_log("model m version 1: reloaded")


def test_slow_copy_never_shows_a_failed_load(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo, "--version_settle_seconds", "0.5")
    server.wait_for("m", 1)
    source = modelgen.scale_model(staging / "big", shape=(-1, 2), factor=2.0)
    # pad the weights file so that the copy takes a while: np.load maps only the array's bytes
    with open(source / "factor.npy", "ab") as f:
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
        for name in reversed(modelgen.SCALE_FILES):  # a slow writer: 64 KiB every 10 ms
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


# -- a version no longer selected retires once its successor is AVAILABLE ----------------------


def test_deleted_version_serves_until_its_copied_successor_is_available(
    start_server, repo: Path, staging: Path
) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo)  # a copy settles for 0.5 s before it loads
    server.wait_for("m", 1)
    new = modelgen.scale_model(staging / "new", shape=(-1, 2), factor=2.0)
    with Client(server) as client:
        shutil.copytree(new, repo / "2")  # cp -r staged m/2 && rm -r m/1
        shutil.rmtree(repo / "1")
        time.sleep(0.2)  # the removal has been seen, the copy is still settling
        state, code, message = states(server)[1]
        assert (state, code) == (AVAILABLE, 0)
        assert message == "OK (its directory is gone: serving until version 2 is AVAILABLE)"
        server.wait_for("m", 2)
        server.wait_for("m", 1, END)
        wait_until(lambda: served_factor(server) == 2.0)
    client.check(min_sent=20)
    assert states(server) == {1: (END, 0, "OK"), 2: (AVAILABLE, 0, "OK")}


def test_successor_that_fails_to_load_keeps_the_deleted_version_serving(
    start_server, repo: Path, staging: Path
) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo)
    server.wait_for("m", 1)
    broken = staging / "broken"
    broken.mkdir()
    (broken / "numpy_model.json").write_text("not a graph")
    with Client(server) as client:
        os.rename(broken, repo / "2")
        shutil.rmtree(repo / "1")
        wait_until(lambda: states(server).get(2, (0, 0))[1] != 0)
        time.sleep(0.3)
        assert states(server)[1] == (AVAILABLE, 0, "OK (its directory is gone: serving until version 2 is AVAILABLE)")
        assert served_factor(server) == 1.0
        # fixed in place: the new version loads, and only then does the old one retire
        fixed = modelgen.scale_model(staging / "fixed", shape=(-1, 2), factor=2.0)
        for name in modelgen.SCALE_FILES:
            os.replace(fixed / name, repo / "2" / name)
        server.wait_for("m", 2)
        server.wait_for("m", 1, END)
    client.check(min_sent=20)
    assert served_factor(server) == 2.0


def test_model_left_without_a_successor_retires_at_once(start_server, repo: Path, staging: Path) -> None:
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo)
    server.wait_for("m", 1)
    shutil.rmtree(repo / "1")  # the base path is empty: nothing can succeed version 1
    assert seconds_until(server, 1, END) < 0.3
    with pytest.raises(grpc.RpcError) as info:
        served_factor(server)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # and back: a new version is served again
    make_version(repo, 2, 2.0, staging)
    server.wait_for("m", 2)
    assert served_factor(server) == 2.0


# -- removals are seen through file-system events ---------------------------------------------


def test_removals_are_seen_within_milliseconds(start_server, tmp_path: Path, repo: Path, staging: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_version(repo, 1, 1.0, staging)
    server = serve(start_server, repo, "--model_version_policy", '{"all":{}}')
    server.wait_for("m", 1)
    delays = {}
    for number, how in ((2, "renamed out"), (3, "rm -r")):
        make_version(repo, number, float(number), staging)
        server.wait_for("m", number)
        if how == "renamed out":
            os.rename(repo / str(number), elsewhere / str(number))
        else:
            shutil.rmtree(repo / str(number))
        delays[how] = seconds_until(server, number, END)
    # the base directory itself renamed away: nothing is left to serve
    os.rename(repo, tmp_path / "models.old")
    delays["base renamed out"] = seconds_until(server, 1, END)
    assert max(delays.values()) < 0.3, delays  # the rescan alone would take up to 1 s
    # a new base directory renamed into place is followed
    base = tmp_path / "new-models"
    base.mkdir()
    make_version(base, 5, 5.0, staging)
    os.rename(base, repo)
    server.wait_for("m", 5, timeout=10)
    shutil.rmtree(repo)  # and a deleted one too
    assert seconds_until(server, 5, END) < 0.3


# -- a version number spelled twice -----------------------------------------------------------


def test_version_spelled_twice_serves_the_plain_number_and_warns_once(
    start_server, tmp_path: Path, staging: Path
) -> None:
    spellings = {"a": [("007", 1.0), ("7", 7.0)], "b": [("7", 7.0), ("007", 1.0)], "c": [("07", 2.0), ("007", 3.0)]}
    for name, dirs in spellings.items():
        for directory, factor in dirs:  # created in this order
            modelgen.scale_model(tmp_path / name / directory, shape=(-1, 2), factor=factor)
    config = tmp_path / "config.json"
    write_config(config, {name: {"base_path": name} for name in spellings})
    server = start_server("--config_path", str(config), "--file_system_poll_wait_seconds", "0.1")
    for name in spellings:
        server.wait_for(name, 7)
    time.sleep(0.5)  # several rescans
    assert served_factor(server, "a") == 7.0 and served_factor(server, "b") == 7.0
    assert served_factor(server, "c") == 3.0  # no plain "7": the name that sorts first
    for name, chosen, other in (("a", "7", "007"), ("b", "7", "007"), ("c", "007", "07")):
        first, second = sorted((chosen, other))
        line = f"{tmp_path / name}: directories {first} and {second} are both version 7; serving {chosen}"
        assert server.log.count(line) == 1, server.log


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
def test_version_policies(
    start_server, repo: Path, staging: Path, policy: str, served: set[int], after_adding_4: set[int]
) -> None:
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
    entries = [{"config": {"name": name, **cfg}} for name, cfg in models.items()]
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

    def switched_to(new: int, old: int, factor: float) -> None:
        server.wait_for("m", new)
        server.wait_for("m", old, END)
        wait_until(lambda: served_factor(server) == factor)

    swaps = 0
    with Client(server) as client:
        for round_ in range(3):
            n = 2 + 2 * round_
            make_version(repo, n, float(n), staging)  # add a newer version
            server.wait_for("m", n)
            server.wait_for("m", n - 1, END)
            modelgen.scale_model(staging / f"v{n}b", shape=(-1, 2), factor=n + 0.5)  # replace its files in place
            for name in modelgen.SCALE_FILES:
                os.replace(staging / f"v{n}b" / name, repo / str(n) / name)
            wait_until(lambda n=n: served_factor(server) == n + 0.5)
            broken = staging / f"broken{n}"  # a corrupt newer version
            broken.mkdir()
            (broken / "numpy_model.json").write_text("garbage")
            os.rename(broken, repo / str(n + 1))
            wait_until(lambda n=n: states(server).get(n + 1, (0, 0))[1] != 0)
            shutil.rmtree(repo / str(n + 1))  # restored: a good one
            make_version(repo, n + 1, n + 1.0, staging)
            server.wait_for("m", n + 1)
            shutil.rmtree(repo / str(n + 1))  # removed again: back to n
            server.wait_for("m", n + 1, END)
            server.wait_for("m", n)
            wait_until(lambda n=n: served_factor(server) == n + 0.5)
            swaps += 5
        # the ordinary rollout: cp -r new && rm -r old
        shutil.copytree(modelgen.scale_model(staging / "v7", shape=(-1, 2), factor=7.0), repo / "7")
        shutil.rmtree(repo / "6")
        switched_to(7, 6, 7.0)
        # the whole base directory swapped by rename: mv base base.old && mv base.new base
        modelgen.scale_model(staging / "base8" / "8", shape=(-1, 2), factor=8.0)
        os.rename(repo, repo.with_name("models.old"))
        os.rename(staging / "base8", repo)
        switched_to(8, 7, 8.0)
        # the base directory deleted and created again with only the new version
        modelgen.scale_model(staging / "base9" / "9", shape=(-1, 2), factor=9.0)
        shutil.rmtree(repo)
        shutil.copytree(staging / "base9", repo)
        switched_to(9, 8, 9.0)
        # the weights file overwritten in place (same size, other weights)
        other = modelgen.scale_model(staging / "v9b", shape=(-1, 2), factor=9.5)
        assert (other / "factor.npy").stat().st_size == (repo / "9" / "factor.npy").stat().st_size
        shutil.copyfile(other / "factor.npy", repo / "9" / "factor.npy")
        wait_until(lambda: served_factor(server) == 9.5)
        swaps += 4
    print(f"{swaps} version changes, {client.sent} requests during them, {len(client.failures)} failed")
    client.check(min_sent=100)
