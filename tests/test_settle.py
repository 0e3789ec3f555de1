"""When a version directory counts as ready to load (settle.py), without a server."""

from __future__ import annotations

from dropin.settle import ATOMIC_GRACE_SECONDS, SettleTracker


def test_a_directory_renamed_into_place_is_ready_after_the_grace_period() -> None:
    tracker = SettleTracker(quiet=0.5)
    assert tracker.event(3, whole=True, now=10.0) == 10.0 + ATOMIC_GRACE_SECONDS
    assert tracker.ready(3, ("files",), now=10.0) == 10.0 + ATOMIC_GRACE_SECONDS
    assert tracker.ready(3, ("files",), now=10.0 + ATOMIC_GRACE_SECONDS) is None


def test_writes_after_creation_mean_a_copy_which_must_be_quiet() -> None:
    tracker = SettleTracker(quiet=0.5)
    tracker.event(3, whole=True, now=10.0)  # mkdir by cp -r ...
    tracker.event(3, whole=False, now=10.01)  # ... then its files
    assert tracker.ready(3, ("a",), now=10.05) == 10.55
    tracker.event(3, whole=False, now=10.3)  # still being written
    assert tracker.ready(3, ("a", "b"), now=10.31) == 10.81
    assert tracker.ready(3, ("a", "b"), now=10.81) is None


def test_an_empty_directory_is_never_taken_as_whole() -> None:
    tracker = SettleTracker(quiet=0.5)
    tracker.event(4, whole=True, now=1.0)
    assert tracker.ready(4, (), now=1.1) == 1.6  # waits for quiet instead
    assert tracker.ready(4, (), now=1.6) is None  # and then loads (and fails, with the reason shown)


def test_without_events_two_equal_fingerprints_a_quiet_period_apart() -> None:
    tracker = SettleTracker(quiet=1.0)
    assert tracker.ready(5, ("x", 1), now=0.0) == 1.0
    assert tracker.ready(5, ("x", 2), now=1.0) == 2.0  # it changed: start again
    assert tracker.ready(5, ("x", 2), now=1.5) == 2.0
    assert tracker.ready(5, ("x", 2), now=2.0) is None


def test_forget_clears_a_version() -> None:
    tracker = SettleTracker(quiet=1.0)
    tracker.ready(6, ("x",), now=0.0)
    tracker.forget(6)
    assert tracker.ready(6, ("x",), now=0.5) == 1.5


def test_a_repository_left_empty_counts_once_it_stayed_empty_for_the_grace_period() -> None:
    tracker = SettleTracker(quiet=0.5)
    assert tracker.empty(now=2.0) == 2.0 + ATOMIC_GRACE_SECONDS  # rm -r old: cp -r new may follow
    assert tracker.empty(now=2.01) == 2.0 + ATOMIC_GRACE_SECONDS
    tracker.not_empty()  # it did
    assert tracker.empty(now=3.0) == 3.0 + ATOMIC_GRACE_SECONDS  # emptied again: a new grace period
    assert tracker.empty(now=3.0 + ATOMIC_GRACE_SECONDS) is None


def test_a_version_removed_whole_is_forgotten_once_a_pass_sees_it_gone() -> None:
    tracker = SettleTracker(quiet=0.5)
    tracker.event(6, whole=True, now=1.0)  # its directory deleted
    tracker.keep_only([1])  # the next pass lists only version 1
    # copied back later with its events unseen (the base directory was being re-watched): not whole
    assert tracker.ready(6, ("partial",), now=2.0) == 2.5
