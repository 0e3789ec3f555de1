"""`batch_size: "auto"` and `shape: "auto"`: reload a version with the shapes a request needs.

As in OVMS, a request whose batch size (batch_size "auto") or shape (shape "auto") the loaded
model does not take is not refused: the version is loaded again with that batch size or shape
(through the loader, as load options the backend applies) and the request is answered by it.
Unlike OVMS, the version stays AVAILABLE meanwhile: the previous servable keeps answering the
requests of its own shape and retires once they have finished. Reloads of one version run one at
a time, so concurrent requests that need the same new shape cause one reload; each request is
answered by the servable its reload produced, so requests of alternating shapes reload at each
change (as OVMS does) but always make progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from .backend import LoadOptions
from .config import ModelConfig
from .errors import DropinError, Status
from .models import ModelTable, Servable, State
from .shapes import format_shape
from .validation import InputPlan, ReshapeRequired

if TYPE_CHECKING:
    from .loader import Loader  # the loader marks plans with mark_auto

log = logging.getLogger("dropin.manager")

AUTO = "auto"
Shapes = Mapping[str, tuple[int, ...]]


def _is_auto(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def auto_mode(load: LoadOptions, name: str) -> str:
    """"shape" if input `name` has shape "auto", "batch" if the model has batch_size "auto", else ""."""
    shape = load.shape
    if _is_auto(shape) or (isinstance(shape, Mapping) and _is_auto(shape.get(name))):
        return "shape"
    return "batch" if _is_auto(load.batch_size) else ""


def mark_auto(load: LoadOptions, plans: tuple[InputPlan, ...]) -> tuple[InputPlan, ...]:
    """The plans, with the inputs that reshape on demand marked (unchanged without "auto")."""
    if not (_is_auto(load.batch_size) or _is_auto(load.shape) or isinstance(load.shape, Mapping)):
        return plans
    return tuple(replace(plan, auto=auto_mode(load, plan.spec.name)) for plan in plans)


def reshaped_options(load: LoadOptions, plans: tuple[InputPlan, ...], shapes: Shapes) -> LoadOptions:
    """The load options that give the "auto" inputs the requested shapes (the others keep theirs)."""
    fixed = {k: v for k, v in load.shape.items() if not _is_auto(v)} if isinstance(load.shape, Mapping) else {}
    shape: dict[str, str] = dict(fixed)
    batch_size = load.batch_size
    for plan in plans:
        wanted = shapes[plan.spec.name]
        if plan.auto == "shape":
            shape[plan.spec.name] = format_shape(wanted)
        elif plan.auto == "batch" and plan.spec.batch_index is not None and plan.spec.batch_index < len(wanted):
            batch_size = str(wanted[plan.spec.batch_index])
    if _is_auto(batch_size):
        batch_size = None
    return replace(load, shape=shape or (None if _is_auto(load.shape) else load.shape), batch_size=batch_size)


def fits(plans: tuple[InputPlan, ...], shapes: Shapes) -> bool:
    """Whether every input's requested shape is accepted as the plans stand (no reload)."""
    try:
        for plan in plans:
            plan.check_shape(shapes[plan.spec.name])
    except (DropinError, ReshapeRequired):
        return False
    return True


class Reshaper:
    """Reloads versions of "auto" models with the shapes requests need (see the module's text)."""

    def __init__(self, loader: Loader, table: ModelTable) -> None:
        self.loader = loader
        self.table = table
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def reshaped(self, servable: Servable, shapes: Shapes) -> Servable:
        """A servable of the same version that takes `shapes`, counted in flight for the caller
        (who still releases `servable`). FAILED_PRECONDITION if the model cannot take them."""
        key = (servable.model_name, servable.version)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            model = self.table.models.get(servable.model_name)
            version = model.versions.get(servable.version) if model is not None else None
            current = version.servable if version is not None else None
            if current is not None and fits(current.plans, shapes) and current.take():
                return current  # another request's reload already made it
            if model is None or servable.path is None:
                raise DropinError(Status.RESHAPE_ERROR, "the version is no longer served")
            wanted = ", ".join(f"{name} {format_shape(shape)}" for name, shape in sorted(shapes.items()))
            load = reshaped_options(model.config.load, servable.plans, shapes)
            config: ModelConfig = replace(model.config, load=load)
            started = time.monotonic()
            try:
                fresh = await asyncio.to_thread(self.loader.load, config, servable.version, servable.path)
            except Exception as exc:
                reason = str(exc).replace(f" could not load {servable.path}", "")  # no server paths for clients
                log.warning("model %s version %d: cannot reshape to %s: %s", *key, wanted, reason)
                raise DropinError(Status.RESHAPE_ERROR, f"{wanted}: {reason}") from None
            fresh.plans = mark_auto(model.config.load, fresh.plans)
            if not fits(fresh.plans, shapes):
                asyncio.get_running_loop().create_task(_close_when_drained(fresh))
                got = ", ".join(f"{p.spec.name} {p.spec.shape_text()}" for p in fresh.plans)
                raise DropinError(
                    Status.RESHAPE_ERROR, f"{wanted}: backend {fresh.backend} loaded {got} instead (it cannot reshape)"
                )
            fresh.take()  # new: never retired yet
            elapsed_ms = (time.monotonic() - started) * 1000
            serving = version is not None and version.state == State.AVAILABLE and not version.loading
            if version is not None and serving and version.servable is current:  # not retired or reloaded meanwhile
                version.servable = fresh
                log.info("model %s version %d: reshaped to %s in %.0f ms", *key, wanted, elapsed_ms)
                if current is not None:
                    asyncio.get_running_loop().create_task(_close_when_drained(current))
            else:  # this request's servable only
                log.info("model %s version %d: reshaped to %s for one request", *key, wanted)
                asyncio.get_running_loop().create_task(_close_when_drained(fresh))
            return fresh


async def _close_when_drained(servable: Servable) -> None:
    await servable.drained()
    try:
        await asyncio.to_thread(servable.model.close)
    except Exception as exc:
        log.error("model %s version %d: backend %s failed to close it: %s",
                  servable.model_name, servable.version, servable.backend, exc)
