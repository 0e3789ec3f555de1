"""When is a version directory ready to load? When its files have stopped changing.

A directory renamed into place arrives whole: it is ready at once (after a short grace period in
which a real copy would show its first writes). Anything else (a `cp -r` in progress, files being
replaced) is ready once it has been quiet: no file-system events and the same fingerprint over
`quiet` seconds. On file systems without events, two rescans `quiet` apart that see the same
fingerprint are enough.

Removals need no settling, except one that leaves the policy nothing to select: the model then
retires everything, so the emptiness must have lasted a grace period (`rm -r old && cp -r new`
shows the new directory within it).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

# How long after a directory is renamed into place we wait for signs that it is really a copy.
ATOMIC_GRACE_SECONDS = 0.03


@dataclass
class _Seen:
    fingerprint: Hashable
    since: float


class SettleTracker:
    """Per model: the last file-system events in each version directory, and the fingerprints
    seen while waiting for a directory to settle. Times are `loop.time()` values."""

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self._last_event: dict[int, float] = {}
        self._arrived_whole: dict[int, float] = {}
        self._seen: dict[int, _Seen] = {}
        self._empty_since: float | None = None

    def event(self, number: int, whole: bool, now: float) -> float:
        """Record a change in version `number`; `whole` when the directory itself was renamed or
        created in place. Returns when the version might next be ready."""
        if whole:
            self._arrived_whole[number] = now
            return now + ATOMIC_GRACE_SECONDS
        self._last_event[number] = now
        return now + self.quiet

    def ready(self, number: int, fingerprint: Hashable | None, now: float) -> float | None:
        """None if version `number` (whose files now have `fingerprint`) is ready to load, otherwise
        the time to look again."""
        last_event = self._last_event.get(number, float("-inf"))
        arrived = self._arrived_whole.get(number)
        if arrived is not None and last_event < arrived and fingerprint:
            if now >= arrived + ATOMIC_GRACE_SECONDS:
                self.forget(number)
                return None
            return arrived + ATOMIC_GRACE_SECONDS
        seen = self._seen.get(number)
        if seen is None or seen.fingerprint != fingerprint or last_event > seen.since:
            seen = self._seen[number] = _Seen(fingerprint, now)
        if now >= seen.since + self.quiet:
            self.forget(number)
            return None
        return seen.since + self.quiet

    def empty(self, now: float) -> float | None:
        """The repository shows no version the policy selects. None once it has shown none for
        ATOMIC_GRACE_SECONDS (the next step of a swap has had time to appear), otherwise the time
        to look again."""
        if self._empty_since is None:
            self._empty_since = now
        ready_at = self._empty_since + ATOMIC_GRACE_SECONDS
        return None if now >= ready_at else ready_at

    def not_empty(self) -> None:
        self._empty_since = None

    def forget(self, number: int) -> None:
        self._last_event.pop(number, None)
        self._arrived_whole.pop(number, None)
        self._seen.pop(number, None)

    def keep_only(self, numbers: Iterable[int]) -> None:
        """Forget the versions no longer on disk: a directory removed whole must not make a later
        copy under the same number look whole when the copy's own events were not seen."""
        keep = set(numbers)
        for number in {*self._last_event, *self._arrived_whole, *self._seen} - keep:
            self.forget(number)
