"""Weights rewritten in place under a served version (`cp other/table.npy m/1/table.npy`,
`truncate -s 0`), on the real server under Predict load: backends memory-map weights (the numpy
backend maps its .npy files, as OpenVINO and ONNX Runtime map theirs), and the server must never
read them from the user's files (it used to die of SIGBUS). A rewrite is a reload like any other
change; a broken rewrite leaves the last good files serving, with the reason in the version's
status. Also the private copy the core loads from, on its own. (Each backend plugin runs the same
check with its own weights files: dropin.testing.rewrite.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin import private_copy as private_copy_module
from dropin.private_copy import CopyError, private_copy
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.rewrite import ROWS, WIDTH, check_weights_rewritten_in_place
from dropin.testing.status import AVAILABLE, states, wait_until


def numpy_gather(version_dir: Path, seed: int) -> str:
    modelgen.gather_model(version_dir, ROWS, WIDTH, seed)
    return "table.npy"


def numpy_reference(version_dir: Path, ids: np.ndarray) -> np.ndarray:
    """numpy run directly on the files of `version_dir`."""
    return modelgen.run_numpy(version_dir, {"ids": ids})["emb"]


def test_weights_rewritten_in_place_under_load_reload_and_never_crash(start_server, tmp_path: Path) -> None:
    check_weights_rewritten_in_place(start_server, tmp_path, numpy_gather, (), numpy_reference)


def test_a_version_read_while_it_is_being_written_loads_once_the_writes_end(start_server, tmp_path: Path) -> None:
    """The torn copy: the server starts (and loads at once) while table.npy is rewritten in place,
    again and again, between two sets of weights. The copy taken meanwhile is refused, with the
    reason in the status; once the writes end and the files settle, the last weights written load.
    No answer ever comes from a mix of the two."""
    repo, weights = tmp_path / "m", {}
    for name, seed in (("a", 1), ("b", 2)):
        modelgen.gather_model(tmp_path / name, ROWS, WIDTH, seed)
        weights[name] = (tmp_path / name / "table.npy").read_bytes()
    shutil.copytree(tmp_path / "a", repo / "1")
    refused = threading.Event()
    written: list[str] = []

    def writer() -> None:  # rewrites table.npy in place (same size), a -> b -> a ..., 64 KiB at a time
        deadline = time.monotonic() + 20
        with open(repo / "1" / "table.npy", "r+b") as f:
            while not written or (not refused.is_set() and time.monotonic() < deadline):
                name = "b" if not written or written[-1] == "a" else "a"
                f.seek(0)
                for start in range(0, len(weights[name]), 64 << 10):
                    f.write(weights[name][start:start + (64 << 10)])
                    f.flush()
                    time.sleep(0.001)
                written.append(name)

    writing = threading.Thread(target=writer)
    writing.start()
    try:
        server = start_server("--model_name", "m", "--model_path", str(repo), "--version_settle_seconds", "0.2")
        ids = np.arange(0, ROWS, 997, dtype=np.int32)
        expected = {name: numpy_reference(tmp_path / name, ids) for name in ("a", "b")}
        answers: list[str] = []

        def answered() -> bool:
            try:
                emb = outputs_of(server.predict.Predict(predict_request("m", {"ids": ids}), timeout=20))["emb"]
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND, exc  # not loaded yet
                return False
            answers.append(next((name for name, value in expected.items() if np.array_equal(emb, value)), "a mix"))
            return True

        def copy_refused() -> bool:
            answered()
            found = states(server).get(1)
            return found is not None and "changed while they were being read" in found[2]

        wait_until(copy_refused, timeout=20, message="no load was refused while the file was being written")
        refused.set()
    finally:
        refused.set()
        writing.join(30)
    server.wait_for("m", 1)
    wait_until(answered)
    assert answers and set(answers) <= {"a", "b"}, answers  # never the weights of a torn copy
    assert answers[-1] == written[-1]
    assert states(server)[1] == (AVAILABLE, 0, "OK")


# -- the private copy on its own -------------------------------------------------------------


def test_private_copy_is_removed_after_the_load_and_what_was_mapped_stays(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(private_copy_module.tempfile, "tempdir", None)  # re-read TMPDIR
    version = tmp_path / "m" / "1"
    (version / "sub").mkdir(parents=True)
    (version / "model.bin").write_bytes(b"w" * 4096)
    (version / "sub" / "extra.txt").write_text("x")
    with private_copy(version) as copy:
        assert copy.parts[-2:] == ("m", "1") and copy.parent.parent.parent == tmp_path / "tmp"
        assert oct(copy.parent.parent.stat().st_mode & 0o777) == "0o700"
        assert (copy / "model.bin").read_bytes() == b"w" * 4096 and (copy / "sub" / "extra.txt").read_text() == "x"
        mapped = np.memmap(copy / "model.bin", mode="r")
    assert list((tmp_path / "tmp").iterdir()) == []  # deleted: no path reaches it
    os.truncate(version / "model.bin", 0)  # the user's file is not the one mapped
    assert bytes(mapped[:4]) == b"wwww"


def test_copies_left_by_a_process_killed_while_loading_are_removed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(private_copy_module.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(private_copy_module, "_stale_removed", False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = [tmp_path / f"{private_copy_module.PREFIX}{pid}-x1" for pid in (dead.pid, os.getppid())]
    for path in left:
        (path / "m" / "1").mkdir(parents=True)
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    with private_copy(version):
        pass
    assert sorted(tmp_path.glob(f"{private_copy_module.PREFIX}*")) == [left[1]]  # the live process's stays


def test_a_copy_taken_while_the_files_change_is_refused(tmp_path: Path, monkeypatch) -> None:
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.xml").write_text("<net/>")
    (version / "model.bin").write_bytes(b"\0" * 1024)
    copyfile = shutil.copyfile

    def copy_while_the_user_writes(src, dst, **kwargs):  # type: ignore[no-untyped-def]
        result = copyfile(src, dst, **kwargs)
        if src.endswith("model.bin"):
            with open(src, "ab") as f:  # the writer is not done yet
                f.write(b"\1" * 1024)
        return result

    monkeypatch.setattr(shutil, "copyfile", copy_while_the_user_writes)
    with pytest.raises(
        CopyError,
        match=r"^the files of .*/1 changed while they were being read; they load again once they have settled$",
    ):
        with private_copy(version):
            pass


def test_a_copy_that_cannot_be_made_says_why(tmp_path: Path, monkeypatch) -> None:
    version = tmp_path / "1"
    version.mkdir()
    os.mkfifo(version / "model.bin")  # nothing to copy: a named pipe
    with pytest.raises(CopyError, match=r"^cannot copy .*/1 into .* \(TMPDIR\) to load it from there: .*named pipe"):
        with private_copy(version):
            pass
    monkeypatch.setattr(private_copy_module.tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(
        CopyError, match=r"^cannot create a private directory to load .*/1 from in .*/missing \(set TMPDIR"
    ):
        with private_copy(version):
            pass
