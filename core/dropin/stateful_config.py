"""The configuration of a stateful model: OVMS's model keys `stateful`, `max_sequence_number`,
`idle_sequence_cleanup` and `low_latency_transformation`, with OVMS's defaults, checked as OVMS
checks them (config.json and the single-model CLI flags share this code)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the model keys read here
STATEFUL_KEYS = frozenset({"stateful", "max_sequence_number", "idle_sequence_cleanup", "low_latency_transformation"})

DEFAULT_MAX_SEQUENCE_NUMBER = 500
_UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class StatefulSettings:
    """How a stateful model keeps its sequences."""

    #: most sequences open at once per version; a start beyond it is refused (UNAVAILABLE)
    max_sequence_number: int = DEFAULT_MAX_SEQUENCE_NUMBER
    #: the sequence cleaner removes this model's sequences idle for a whole poll period
    idle_sequence_cleanup: bool = True


def _bool(entry: Mapping[str, Any], key: str, default: bool, name: str) -> bool:
    value = entry.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"model {name!r}: {key} must be true or false, got {value!r}")
    return value


def _is_auto(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_is_auto(v) for v in value.values())
    return isinstance(value, str) and value.strip().lower() == "auto"


def parse_stateful(entry: Mapping[str, Any], name: str) -> StatefulSettings | None:
    """The stateful settings of one model entry; None for a stateless model. Raises ValueError
    (the configuration's error message) for a combination OVMS refuses (and dynamic batching, which has no meaning
    for requests that each carry their own sequence's state)."""
    stateful = _bool(entry, "stateful", False, name)
    low_latency = _bool(entry, "low_latency_transformation", False, name)
    idle_cleanup = _bool(entry, "idle_sequence_cleanup", True, name)
    limit = entry.get("max_sequence_number", DEFAULT_MAX_SEQUENCE_NUMBER)
    if limit is None:
        limit = DEFAULT_MAX_SEQUENCE_NUMBER
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= _UINT32_MAX:
        raise ValueError(f"model {name!r}: max_sequence_number must be an integer from 0 to {_UINT32_MAX}, "
                            f"got {limit!r}")
    if not stateful:
        if low_latency:
            raise ValueError(f"model {name!r}: Stateful model config parameter used for non stateful model "
                                f"(low_latency_transformation needs stateful: true)")
        return None
    if _is_auto(entry.get("batch_size")) or _is_auto(entry.get("shape")):
        raise ValueError(f"model {name!r}: Dynamic shape and dynamic batch size are not supported for stateful "
                            f"models (batch_size or shape \"auto\")")
    if entry.get("dynamic_batching") not in (None, ""):
        raise ValueError(f"model {name!r}: dynamic_batching cannot be used with a stateful model: each request "
                            f"runs with its own sequence's state, so requests cannot share an inference")
    return StatefulSettings(limit, idle_cleanup)
