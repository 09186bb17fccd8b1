"""The clock a measurement reads: the host's wall clock for a real GPU, a virtual clock for the simulated one.

Every timestamp a measurement takes (window edges, step marks, power and telemetry samples, waits for the
energy counter) comes from the measured device's clock, ``device.clock``. A real GPU runs in real time, so
its clock is :data:`WALL_CLOCK` (``time.perf_counter``). The simulated GPU keeps its own
:class:`VirtualClock`: time moves only when the device does modelled work or the caller sleeps on it, so
simulated time and energy follow the device's physical model and its seeded noise, never the host's load.

Periodic samplers (the power timeline, telemetry) register with :meth:`Clock.every`: on the wall clock a
background thread calls them; on a virtual clock they run synchronously at their exact tick times while
the clock advances, so every sample lands where it would on a real device, the same on every host.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sdbench.errors import ConfigError, SdbenchError

__all__ = ["WALL_CLOCK", "Clock", "PeriodicThread", "Timer", "VirtualClock", "WallClock"]


class Timer:
    """A periodic callback registered with :meth:`Clock.every`; :meth:`cancel` ends it and returns the
    error its callback raised, if any (samplers re-raise it in the caller's thread)."""

    def cancel(self) -> BaseException | None:  # pragma: no cover - interface
        raise NotImplementedError


class Clock:
    """What a measurement needs of time: read it, wait on it, run something every period."""

    #: True when time moves only as the simulated device works or is slept on.
    virtual: bool = False
    name: str = "clock"

    def now_s(self) -> float:
        raise NotImplementedError

    def sleep(self, duration_s: float) -> None:
        raise NotImplementedError

    def every(self, period_s: float, fn: Callable[[], bool | None], name: str = "sampler") -> Timer:
        """Call ``fn()`` every ``period_s`` (first call one period from now) until it returns False,
        raises, or the timer is cancelled."""
        raise NotImplementedError


class _ThreadTimer(Timer):
    """A daemon thread calling ``fn`` on whole-period deadlines (missed deadlines are skipped, not burst)."""

    def __init__(self, period_s: float, fn: Callable[[], bool | None], name: str) -> None:
        self._period_s = period_s
        self._fn = fn
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_t = time.perf_counter() + self._period_s
        while not self._stop.wait(max(0.0, next_t - time.perf_counter())):
            try:
                keep_going = self._fn()
            except Exception as exc:  # handed to the caller by cancel()
                self.error = exc
                return
            if keep_going is False:
                return
            next_t += self._period_s
            now = time.perf_counter()
            if next_t < now:
                next_t = now + self._period_s

    def cancel(self) -> BaseException | None:
        self._stop.set()
        self._thread.join()
        return self.error


class WallClock(Clock):
    """The host's monotonic clock (``time.perf_counter``): what a real GPU runs on."""

    name = "wall"

    def now_s(self) -> float:
        return time.perf_counter()

    def sleep(self, duration_s: float) -> None:
        if duration_s > 0:
            time.sleep(duration_s)

    def every(self, period_s: float, fn: Callable[[], bool | None], name: str = "sampler") -> Timer:
        _check_period(period_s)
        return _ThreadTimer(period_s, fn, name)


WALL_CLOCK = WallClock()


@dataclass(order=True)
class _Pending:
    due_s: float
    seq: int
    timer: _VirtualTimer = field(compare=False)


class _VirtualTimer(Timer):
    def __init__(self, clock: VirtualClock, period_s: float, fn: Callable[[], bool | None]) -> None:
        self.clock = clock
        self.period_s = period_s
        self.fn = fn
        self.active = True
        self.error: BaseException | None = None

    def cancel(self) -> BaseException | None:
        self.active = False
        return self.error


class VirtualClock(Clock):
    """A clock that moves only when told to (:meth:`advance_to`, :meth:`sleep`), firing due timers in order.

    ``listeners`` are called as ``listener(t_s)`` before the clock moves to ``t_s`` (the simulated GPU
    integrates its power and temperature up to each timer tick before the timer reads it). Not
    thread-safe by design: a virtual measurement runs in one thread.
    """

    virtual = True
    name = "virtual"

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)
        self._queue: list[_Pending] = []
        self._seq = itertools.count()
        self._firing = False
        self.listeners: list[Callable[[float], None]] = []

    def now_s(self) -> float:
        return self._now_s

    def _move(self, t_s: float) -> None:
        for listener in self.listeners:
            listener(t_s)
        self._now_s = t_s

    def advance_to(self, t_s: float) -> None:
        """Move to ``t_s`` (never backwards), running every timer due on the way at its own tick time."""
        if not math.isfinite(t_s):
            raise ConfigError("t_s", t_s, reason="a virtual clock moves to finite times only")
        if t_s <= self._now_s:
            return
        if self._firing:
            # A timer callback never moves time; guard against one that sleeps.
            raise RuntimeError("a virtual-clock timer callback may not advance the clock")
        while self._queue and self._queue[0].due_s <= t_s:
            pending = heapq.heappop(self._queue)
            timer = pending.timer
            if not timer.active:
                continue
            self._move(max(pending.due_s, self._now_s))
            self._firing = True
            try:
                keep_going = timer.fn()
            except Exception as exc:
                timer.error = exc
                timer.active = False
                continue
            finally:
                self._firing = False
            if keep_going is False:
                timer.active = False
                continue
            heapq.heappush(self._queue, _Pending(pending.due_s + timer.period_s, next(self._seq), timer))
        self._move(t_s)

    def sleep(self, duration_s: float) -> None:
        if duration_s > 0:
            self.advance_to(self._now_s + duration_s)

    def every(self, period_s: float, fn: Callable[[], bool | None], name: str = "sampler") -> Timer:
        _check_period(period_s)
        timer = _VirtualTimer(self, period_s, fn)
        heapq.heappush(self._queue, _Pending(self._now_s + period_s, next(self._seq), timer))
        return timer


def _check_period(period_s: float) -> None:
    if not period_s > 0:
        raise ConfigError("period_s", period_s, reason="must be positive")


class PeriodicThread:
    """Calls ``sample()`` about ``rate_hz`` times a second on ``clock`` (the measured device's clock).

    On the wall clock a daemon thread does it; on a virtual clock the calls happen at their exact tick
    times as the clock advances (see :mod:`sdbench.gpu.clock`). ``sample`` returns ``False`` to end the
    loop early. An exception raised by ``sample`` ends the loop and is re-raised by :meth:`stop` in the
    caller's thread (nothing is swallowed).
    """

    def __init__(self, sample: Callable[[], bool | None], rate_hz: float, name: str,
                 clock: Clock = WALL_CLOCK) -> None:
        if not rate_hz > 0:
            raise ConfigError("rate_hz", rate_hz, reason="must be positive")
        self._sample = sample
        self.period_s = 1.0 / rate_hz
        self._name = name
        self._clock = clock
        self._timer: Timer | None = None

    def start(self) -> None:
        """Start sampling (the first call to ``sample`` happens one period from now)."""
        if self._timer is not None:
            raise SdbenchError(f"{self._name} is already running")
        self._timer = self._clock.every(self.period_s, self._sample, self._name)

    def stop(self) -> None:
        """Stop sampling; re-raise an exception the sampling function raised."""
        timer, self._timer = self._timer, None
        if timer is None:
            return
        error = timer.cancel()
        if error is not None:
            raise error
