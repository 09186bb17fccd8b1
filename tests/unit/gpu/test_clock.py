"""The clocks measurements read: a virtual clock that fires its timers at exact tick times, and the wall clock.

Periods here are powers of two (0.25, 0.125 s...) wherever tick times are compared exactly, so the sums
are exact in binary floating point.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from sdbench.errors import ConfigError
from sdbench.gpu.clock import WALL_CLOCK, Clock, VirtualClock, WallClock

GENEROUS_WAIT_S = 10.0  # a loaded 2-core host may keep a thread waiting; never a bound on timing


def recorder(clock: Clock, log: list[tuple[str, float]], name: str,
             result: bool | None = None) -> Callable[[], bool | None]:
    """A timer callback that logs (name, time now) and returns ``result``."""

    def fn() -> bool | None:
        log.append((name, clock.now_s()))
        return result

    return fn


# ---- VirtualClock ----------------------------------------------------------------------------------
def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock()
    assert clock.virtual and clock.name == "virtual"
    assert clock.now_s() == 0.0
    assert clock.now_s() == 0.0
    clock.sleep(0.5)
    assert clock.now_s() == 0.5
    clock.advance_to(2.0)
    assert clock.now_s() == 2.0
    assert VirtualClock(start_s=7.5).now_s() == 7.5


def test_timers_fire_in_time_order_at_their_tick_times() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []
    clock.every(0.5, recorder(clock, log, "slow"))
    clock.every(0.25, recorder(clock, log, "fast"))
    clock.advance_to(1.0)
    # At a shared tick, the timer queued first for it runs first ("slow" was queued for 0.5 at
    # registration, "fast" only when it fired at 0.25).
    assert log == [("fast", 0.25), ("slow", 0.5), ("fast", 0.5), ("fast", 0.75), ("slow", 1.0), ("fast", 1.0)]
    assert clock.now_s() == 1.0


def test_first_tick_is_one_period_after_registration() -> None:
    clock = VirtualClock(start_s=3.0)
    log: list[tuple[str, float]] = []
    clock.sleep(0.125)
    clock.every(0.25, recorder(clock, log, "t"))
    clock.advance_to(3.3)
    assert log == []  # the first tick is at 3.375
    clock.advance_to(3.375)
    assert log == [("t", 3.375)]


def test_ticks_are_the_same_however_the_clock_gets_there() -> None:
    def ticks(steps: list[float]) -> list[tuple[str, float]]:
        clock = VirtualClock()
        log: list[tuple[str, float]] = []
        clock.every(0.125, recorder(clock, log, "t"))
        for step in steps:
            clock.sleep(step)
        return log

    one_jump = ticks([1.0])
    assert one_jump == [("t", 0.125 * k) for k in range(1, 9)]
    assert ticks([0.0625] * 16) == one_jump
    assert ticks([0.3, 0.2, 0.5]) == one_jump


def test_period_not_a_power_of_two_ticks_once_per_period() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []
    clock.every(0.1, recorder(clock, log, "t"))
    clock.advance_to(1.05)
    assert [t for _, t in log] == pytest.approx([0.1 * k for k in range(1, 11)])


def test_cancelled_timer_never_fires_again() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []
    keep = clock.every(0.25, recorder(clock, log, "keep"))
    drop = clock.every(0.25, recorder(clock, log, "drop"))
    clock.advance_to(0.25)
    assert drop.cancel() is None
    clock.advance_to(1.0)
    assert log == [("keep", 0.25), ("drop", 0.25), ("keep", 0.5), ("keep", 0.75), ("keep", 1.0)]
    assert keep.cancel() is None
    clock.advance_to(2.0)
    assert len(log) == 5


def test_a_timer_returning_false_stops() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []
    clock.every(0.25, recorder(clock, log, "once", result=False))
    clock.every(0.25, recorder(clock, log, "always", result=True))
    clock.advance_to(0.75)
    assert log == [("once", 0.25), ("always", 0.25), ("always", 0.5), ("always", 0.75)]


def test_a_raising_timer_stops_and_cancel_returns_its_error() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []
    calls = []
    error = ValueError("sampler broke")

    def broken() -> None:
        calls.append(clock.now_s())
        raise error

    timer = clock.every(0.25, broken)
    clock.every(0.25, recorder(clock, log, "ok"))
    clock.advance_to(1.0)  # does not raise: the error is kept for the caller
    assert calls == [0.25]
    assert log == [("ok", 0.25 * k) for k in range(1, 5)]
    assert clock.now_s() == 1.0
    assert timer.cancel() is error


def test_listeners_are_called_before_the_clock_moves() -> None:
    clock = VirtualClock()
    seen: list[tuple[float, float]] = []
    clock.listeners.append(lambda t: seen.append((t, clock.now_s())))
    ticks: list[tuple[str, float]] = []
    clock.every(0.25, recorder(clock, ticks, "t"))
    clock.advance_to(0.6)
    # Each move reports its destination while the clock still reads the old time: up to each tick,
    # then on to the destination.
    assert seen == [(0.25, 0.0), (0.5, 0.25), (0.6, 0.5)]
    assert ticks == [("t", 0.25), ("t", 0.5)]


def test_advance_to_never_goes_backwards() -> None:
    clock = VirtualClock()
    moves: list[float] = []
    clock.listeners.append(moves.append)
    clock.advance_to(1.0)
    clock.advance_to(0.5)
    clock.advance_to(1.0)
    clock.sleep(0.0)
    clock.sleep(-3.0)
    assert clock.now_s() == 1.0
    assert moves == [1.0]


def test_a_timer_may_not_advance_the_clock() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []

    def sleeper() -> None:
        clock.advance_to(clock.now_s())  # not moving is fine
        clock.sleep(0.0)
        clock.sleep(1.0)  # moving is not

    bad = clock.every(0.25, sleeper)
    clock.every(0.25, recorder(clock, log, "ok"))
    clock.advance_to(0.5)
    error = bad.cancel()
    assert isinstance(error, RuntimeError) and "may not advance" in str(error)
    assert clock.now_s() == 0.5  # the sleep inside the timer did not move time
    assert log == [("ok", 0.25), ("ok", 0.5)]  # and the clock still fires its other timers afterwards
    clock.sleep(0.25)
    assert log[-1] == ("ok", 0.75)


def test_a_timer_registered_inside_a_timer_starts_from_its_tick() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []

    def register() -> bool:
        clock.every(0.125, recorder(clock, log, "inner"))
        return False

    clock.every(0.25, register)
    clock.advance_to(0.5)
    assert log == [("inner", 0.375), ("inner", 0.5)]


@pytest.mark.parametrize("clock", [VirtualClock(), WallClock()], ids=["virtual", "wall"])
@pytest.mark.parametrize("period_s", [0.0, -1.0])
def test_period_must_be_positive(clock: Clock, period_s: float) -> None:
    with pytest.raises(ConfigError) as info:
        clock.every(period_s, lambda: None)
    assert info.value.field == "period_s"


# ---- WallClock ---------------------------------------------------------------------------------------
def test_wall_clock_is_real_and_monotonic() -> None:
    assert WALL_CLOCK.virtual is False and WALL_CLOCK.name == "wall"
    readings = [WALL_CLOCK.now_s() for _ in range(100)]
    assert readings == sorted(readings)
    WALL_CLOCK.sleep(0.0)
    WALL_CLOCK.sleep(-1.0)  # no-ops
    before = WALL_CLOCK.now_s()
    WALL_CLOCK.sleep(0.01)
    assert WALL_CLOCK.now_s() > before


def test_wall_clock_timer_runs_until_cancelled() -> None:
    ran = threading.Event()
    count = [0]

    def tick() -> None:
        count[0] += 1
        ran.set()

    timer = WallClock().every(0.01, tick, name="test-sampler")
    try:
        assert ran.wait(GENEROUS_WAIT_S)
    finally:
        error = timer.cancel()
    assert error is None
    seen = count[0]
    assert seen >= 1
    WALL_CLOCK.sleep(0.05)
    assert count[0] == seen  # cancel joined the thread: no tick after it


def test_wall_clock_timer_returning_false_runs_once() -> None:
    ran = threading.Event()
    count = [0]

    def once() -> bool:
        count[0] += 1
        ran.set()
        return False

    timer = WALL_CLOCK.every(0.005, once)
    assert ran.wait(GENEROUS_WAIT_S)
    WALL_CLOCK.sleep(0.05)
    assert timer.cancel() is None
    assert count[0] == 1


def test_wall_clock_timer_error_is_returned_by_cancel() -> None:
    ran = threading.Event()
    error = KeyError("sampler broke")

    def broken() -> None:
        ran.set()
        raise error

    timer = WALL_CLOCK.every(0.005, broken)
    assert ran.wait(GENEROUS_WAIT_S)
    assert timer.cancel() is error
