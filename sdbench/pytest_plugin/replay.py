"""Replaying the Runner's times into pytest-benchmark.

pytest-benchmark's time columns are the Runner's synchronised per-image times (one per measured round),
replayed through a timer that returns them; ``extra_info`` holds the rest of the record. Each session has its
own timer, kept in ``config.stash`` (:func:`replay_timer`).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sdbench.pytest_plugin.state import SessionState


class ReplayTimer:
    """A pytest-benchmark timer that returns the Runner's measured per-image times.

    pytest-benchmark times a round as `timer()` after minus `timer()` before. This timer advances
    by the next measured duration on every second call, so each pedantic round records exactly one
    synchronised per-image time that the Runner measured.
    """

    __name__ = "sdbench_replay_timer"

    def __init__(self) -> None:
        self._durations: collections.deque[float] = collections.deque()
        self._now_s = 0.0
        self._in_round = False

    def load(self, durations_s: list[float]) -> None:
        self._durations = collections.deque(durations_s)
        self._in_round = False

    def __call__(self) -> float:
        if self._in_round and self._durations:
            self._now_s += self._durations.popleft()
        self._in_round = not self._in_round
        return self._now_s

    def __repr__(self) -> str:
        # The name pytest-benchmark shows and saves for this timer, unchanged since the timer was one global.
        return "sdbench.pytest_plugin.REPLAY_TIMER"


#: The session's replay timer: the one every measuring test's benchmark marker names.
SESSION_TIMER = pytest.StashKey[ReplayTimer]()


def replay_timer(config: pytest.Config) -> ReplayTimer:
    """The session's replay timer, made at the first call."""
    return config.stash.setdefault(SESSION_TIMER, ReplayTimer())


def keep_and_report(benchmark: Any, state: SessionState, record: dict[str, Any]) -> None:
    """Replay the record's per-round times into pytest-benchmark and attach the record as extra_info."""
    from sdbench.record.io import json_safe

    samples = record.get("time_per_image_s_samples") or []
    if samples:
        replay_timer(state.config).load(samples)
        benchmark.pedantic(lambda: None, rounds=len(samples), iterations=1, warmup_rounds=0)
    # extra_info must be mutated in place (a replaced dict is silently lost).
    benchmark.extra_info.update(json_safe(record))
    state.keep(record)

