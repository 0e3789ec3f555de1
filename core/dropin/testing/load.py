"""Concurrent load for tests: calls from several threads at once, every failure kept for the test
to assert on (an exception in a plain thread would only be printed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

R = TypeVar("R")


def in_threads(task: Callable[[int], R], count: int, timeout: float = 120.0) -> list[R]:
    """`task(k)` for k in range(count), each in a thread of its own, released together; their
    results in order. Raises AssertionError with the failures when any task raised."""
    results: dict[int, R] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(k: int) -> None:
        try:
            start.wait(10)
            results[k] = task(k)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not errors, errors
    assert len(results) == count, f"{count - len(results)} task(s) still running after {timeout} s"
    return [results[k] for k in range(count)]


class Hammer:
    """`call()` over and over from `threads` threads for as long as the `with` block runs;
    `answered` counts the calls that returned, `failures` keeps what the others raised."""

    def __init__(self, call: Callable[[], object], threads: int) -> None:
        self.answered = 0
        self.failures: list[Exception] = []
        self._call = call
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._call()
            except Exception as exc:  # noqa: BLE001  (collected for the test)
                self.failures.append(exc)
                continue
            with self._lock:
                self.answered += 1

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
