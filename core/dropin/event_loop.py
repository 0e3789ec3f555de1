"""The event loop dropin serves on: uvloop where it is installed, else asyncio's own.

Every request's gRPC work runs as callbacks on this loop (grpc.aio), so the loop's own cost per
callback is part of every request. uvloop (libuv, in Cython) cut the event-loop thread's CPU time
per request by about 10 % for dropin and 20 % for a bare echo server on the 1x10 model at
concurrency 16 (docs/performance.md). `--event_loop asyncio` keeps the standard loop, e.g. to
rule the loop out when debugging.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import TypeVar

from .config import ConfigError

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory(kind: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop to use; None for asyncio's default. "uvloop" requires it."""
    if kind not in CHOICES:
        raise ConfigError(f"unknown event loop {kind!r}: expected one of {', '.join(CHOICES)}")
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ConfigError("--event_loop uvloop: the uvloop package is not installed") from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[object, object, T], kind: str = "auto") -> T:
    """asyncio.run on the chosen loop."""
    factory = loop_factory(kind)
    if sys.version_info < (3, 11):  # no asyncio.Runner
        return _run_on(main, (factory or asyncio.new_event_loop)())
    with asyncio.Runner(loop_factory=factory) as runner:
        logging.getLogger("dropin").info("event loop: %s", loop_name(runner.get_loop()))
        return runner.run(main)


def _run_on(main: Coroutine[object, object, T], loop: asyncio.AbstractEventLoop) -> T:
    """What asyncio.Runner does, for Python 3.10: run `main`, cancel what it left, close the loop."""
    logging.getLogger("dropin").info("event loop: %s", loop_name(loop))
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
