"""Backends load model versions from a private copy of their files, never from the user's files.

Runtimes memory-map weights (OpenVINO maps IR `.bin` files and ONNX external data, ONNX Runtime
maps external initializers): the pages of a loaded model are then the pages of the file. A file
rewritten in place (`cp new/model.bin m/1/model.bin`) would change a served model's weights
under it, and a truncated one kills the process with SIGBUS at the next access to a lost page.

So each version directory is copied into a private directory (mode 0700, under the temporary
directory: `TMPDIR`), the backend loads the copy, and the copy is deleted as soon as the load
returns: a mapping keeps its deleted file alive, and no path reaches that file any more, so
nothing can change it. This protects every backend, third-party ones included. A rewrite of the
user's files is then a change like any other: the version reloads once the files settle.

The user's files are compared before and after copying (per file: inode, size, modification and
change times): a copy taken while they were being written is refused (`CopyError`), and the
load is retried once they have settled.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "dropin-load-"  # then the pid of the process that loads, a dash, and a random part


class CopyError(Exception):
    """The version directory could not be copied (consistently) for loading; says why."""


@contextmanager
def private_copy(version_dir: Path) -> Iterator[Path]:
    """A private copy of `version_dir` (at `<private dir>/<model dir name>/<version dir name>`) to
    load from; deleted on exit, so that what a backend mapped from it stays valid and out of
    anyone's reach."""
    version_dir = Path(version_dir)
    _remove_stale_copies()
    try:
        root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    except OSError as exc:
        raise CopyError(f"cannot create a private directory to load {version_dir} from in {tempfile.gettempdir()} "
                        f"(set TMPDIR to a writable directory): {exc.strerror or exc}") from None
    try:
        copy = root / version_dir.parent.name / version_dir.name  # e.g. .../resnet/1 in messages
        before = file_states(version_dir)
        try:
            shutil.copytree(version_dir, copy, copy_function=shutil.copyfile, ignore_dangling_symlinks=True)
        except (OSError, shutil.Error) as exc:
            raise CopyError(
                f"cannot copy {version_dir} into {root} (TMPDIR) to load it from there: {_reason(exc)}"
            ) from None
        if file_states(version_dir) != before:
            raise CopyError(
                f"the files of {version_dir} changed while they were being read; they load again once they have settled"
            )
        yield copy
    finally:
        _remove(root)


def _remove(root: Path) -> None:
    # copytree gives each directory its source's mode: a read-only one could not be emptied
    for directory, _, _ in os.walk(root):
        try:
            os.chmod(directory, 0o700)
        except OSError:
            pass
    shutil.rmtree(root, ignore_errors=True)


_stale_removed = False


def _remove_stale_copies() -> None:
    """Once per process: delete the copies left by processes killed while loading (a copy whose
    load finished was deleted then)."""
    global _stale_removed
    if _stale_removed:
        return
    _stale_removed = True
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX):].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's, or not a pid: leave it
    return True


def file_states(directory: Path) -> tuple[tuple[str, int, int, int, int], ...]:
    """Every file under `directory` (links followed, as the copy does): relative path, inode, size,
    modification and change times. Any write, truncation or replacement changes it."""
    states = []
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # a dangling link: not copied either
            states.append((os.path.relpath(path, directory), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(states)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, shutil.Error):  # copytree's list of (source, destination, why)
        errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        return "; ".join(str(why) for _, _, why in errors[:3]) or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)
