"""Energy instruments: NVML energy counter, NVML power timeline, CPU RAPL, and none.

Every meter has ``name``, ``start()`` and ``stop() -> EnergyReading``. A meter that cannot
measure returns a reading with ``available=False``, ``energy_j=None`` and the reason; it never
makes a number up. :func:`select_energy_meter` picks one and records any fallback.

Times are seconds on the measured device's clock (``device.clock``: the wall clock for a real GPU, a
virtual clock for the simulated one) throughout, so phase marks taken by the runner on the same clock
can be given energy with :meth:`PowerTimelineMeter.energy_between_j`. RAPL measures the host, so it
reads the wall clock and is unavailable beside a virtual-clock device.
"""

from __future__ import annotations

import bisect
import math
import statistics
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdbench.errors import ConfigError, SdbenchError
from sdbench.gpu.base import GpuDevice, GpuNoPermission, GpuNotSupported
from sdbench.gpu.clock import WALL_CLOCK, Clock, PeriodicThread
from sdbench.measure.telemetry import NO_DEVICE_REASON

__all__ = [
    "ENERGY_PREFERENCES",
    "EnergyMeter",
    "EnergyReading",
    "IdlePower",
    "NullMeter",
    "NvmlCounterMeter",
    "PowerTimelineMeter",
    "RaplMeter",
    "counter_delta_j",
    "detect_counter_period_s",
    "energy_between_j",
    "measure_idle_power_w",
    "net_energy_j",
    "select_energy_meter",
    "trapezoid_energy_j",
]

ENERGY_PREFERENCES: tuple[str, ...] = ("auto", "counter", "timeline", "rapl", "none")

# A counter delta implying more than this average power is a counter reset, not energy.
_MAX_PLAUSIBLE_POWER_W = 100_000.0
# Counter polling interval: well under NVML's 100 ms update, cheap next to an NVML call.
_COUNTER_POLL_S = 0.0005


# ---- pure arithmetic -------------------------------------------------------------------------
def counter_delta_j(start_mj: int, end_mj: int, wrap_mj: int = 2**64) -> float:
    """Energy in joules between two millijoule counter readings, assuming at most one wrap at
    ``wrap_mj`` (the counter's modulus) when ``end_mj < start_mj``."""
    if end_mj >= start_mj:
        return (end_mj - start_mj) / 1000.0
    return (wrap_mj - start_mj + end_mj) / 1000.0


def trapezoid_energy_j(samples: Sequence[tuple[float, float]]) -> float:
    """Trapezoid integral of ``(t_s, power_w)`` samples (times non-decreasing); 0 with < 2 samples."""
    total_j = 0.0
    for (t_a, p_a), (t_b, p_b) in zip(samples, samples[1:]):
        if t_b < t_a:
            raise ConfigError("samples", f"t={t_b} after t={t_a}", reason="timestamps must be non-decreasing")
        total_j += 0.5 * (p_a + p_b) * (t_b - t_a)
    return total_j


class TimelineIntegral:
    """The running integral of ``(t_s, power_w)`` samples, built once, queried for any sub-window.

    Power is interpolated linearly between samples, so adjacent windows add up exactly to the
    window that spans them, and the window from first to last sample equals
    :func:`trapezoid_energy_j`. Parts of a window outside the sampled span count as zero.
    Per-step and per-phase attribution asks hundreds of windows of one timeline: one pass, then
    a bisection per query.
    """

    def __init__(self, samples: Sequence[tuple[float, float]]) -> None:
        self.samples = list(samples)
        self.times = [t for t, _ in self.samples]
        self.cum = [0.0]
        for (t_a, p_a), (t_b, p_b) in zip(self.samples, self.samples[1:]):
            if t_b < t_a:
                raise ConfigError("samples", f"t={t_b} after t={t_a}", reason="timestamps must be non-decreasing")
            self.cum.append(self.cum[-1] + 0.5 * (p_a + p_b) * (t_b - t_a))

    def _to(self, x: float) -> float:
        """Integral from the first sample to ``x`` (clamped to the sampled span)."""
        times = self.times
        x = min(max(x, times[0]), times[-1])
        i = bisect.bisect_right(times, x) - 1
        if i >= len(times) - 1:
            return self.cum[-1]
        (t_i, p_i), (t_next, p_next) = self.samples[i], self.samples[i + 1]
        # bisect_right guarantees t_i <= x < t_next, so the span is positive.
        dt = x - t_i
        p_x = p_i + (p_next - p_i) * dt / (t_next - t_i)
        return self.cum[i] + 0.5 * (p_i + p_x) * dt

    def between_j(self, t0_s: float, t1_s: float) -> float:
        """Energy in joules between two times on the samples' clock."""
        if t1_s < t0_s:
            raise ConfigError("t1_s", t1_s, reason=f"window ends before it starts (t0_s={t0_s})")
        if len(self.samples) < 2:
            return 0.0
        return self._to(t1_s) - self._to(t0_s)


def energy_between_j(samples: Sequence[tuple[float, float]], t0_s: float, t1_s: float) -> float:
    """Energy in joules between ``t0_s`` and ``t1_s`` from ``(t_s, power_w)`` samples (see TimelineIntegral)."""
    return TimelineIntegral(samples).between_j(t0_s, t1_s)


def net_energy_j(gross_j: float, idle_power_w: float, duration_s: float) -> float:
    """Energy above idle: ``gross_j - idle_power_w * duration_s``.

    Returned as is, even when negative (noise, or idle measured hotter than the run): clamping
    at zero would bias averages of many small differences upwards.
    """
    return gross_j - idle_power_w * duration_s


# ---- readings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnergyReading:
    """Energy over one measured window.

    ``reason`` says why the reading is unavailable, or, for an available reading, a caveat about
    its source (e.g. a power source that is a 1 s average). ``components_j`` breaks the energy
    down where the meter sees parts (RAPL domains).
    """

    energy_j: float | None
    duration_s: float
    source: str
    resolution_s: float | None
    available: bool
    reason: str | None
    simulated: bool
    components_j: dict[str, float] | None = None

    @property
    def power_w(self) -> float | None:
        """Average power over the window, in watts."""
        if self.energy_j is None or self.duration_s <= 0:
            return None
        return self.energy_j / self.duration_s

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class IdlePower:
    """Power of a quiet device, to subtract from runs (see :func:`net_energy_j`)."""

    power_w: float | None
    duration_s: float
    source: str
    available: bool
    reason: str | None


class EnergyMeter(ABC):
    """``start()``, then ``stop()`` returns the :class:`EnergyReading` for the window between."""

    name: str = "abstract"
    #: Why :func:`select_energy_meter` did not give the preferred meter (``None`` if it did).
    fallback_reason: str | None = None

    @abstractmethod
    def start(self) -> None:
        """Begin a window."""

    @abstractmethod
    def stop(self) -> EnergyReading:
        """End the window and return its reading."""


class NullMeter(EnergyMeter):
    """Measures nothing and says why."""

    name = "none"

    def __init__(self, reason: str, clock: Clock = WALL_CLOCK) -> None:
        self.reason = reason
        self._clock = clock
        self._t0_s: float | None = None

    def start(self) -> None:
        self._t0_s = self._clock.now_s()

    def stop(self) -> EnergyReading:
        duration_s = 0.0 if self._t0_s is None else self._clock.now_s() - self._t0_s
        return EnergyReading(None, duration_s, self.name, None, False, self.reason, False)


# ---- NVML energy counter ---------------------------------------------------------------------
def _wait_for_counter_change(device: GpuDevice, timeout_s: float) -> tuple[float, int] | None:
    """Poll until the counter moves; ``(device clock time, new value)`` or ``None`` on timeout."""
    clock = device.clock
    deadline = clock.now_s() + timeout_s
    first = device.total_energy_mj()
    while True:
        value = device.total_energy_mj()
        now = clock.now_s()
        if value != first:
            return now, value
        if now >= deadline:
            return None
        clock.sleep(_COUNTER_POLL_S)


def detect_counter_period_s(device: GpuDevice, timeout_s: float = 2.0, changes: int = 6) -> float | None:
    """Median interval between changes of the energy counter (about 0.1 s on an H100).

    Polls tightly for up to ``timeout_s``, stopping early after ``changes`` changes. ``None`` if
    fewer than two changes were seen. Raises :class:`GpuNotSupported` if there is no counter.
    """
    clock = device.clock
    deadline = clock.now_s() + timeout_s
    last = device.total_energy_mj()
    change_times_s: list[float] = []
    while len(change_times_s) < changes:
        value = device.total_energy_mj()
        now = clock.now_s()
        if value != last:
            change_times_s.append(now)
            last = value
        if now >= deadline:
            break
        clock.sleep(_COUNTER_POLL_S)
    if len(change_times_s) < 2:
        return None
    return float(statistics.median(b - a for a, b in zip(change_times_s, change_times_s[1:])))


# Detection takes a few update periods; do it once per device object.
_PERIOD_CACHE: weakref.WeakKeyDictionary[GpuDevice, float | None] = weakref.WeakKeyDictionary()
_PERIOD_CACHE_LOCK = threading.Lock()


def _cached_counter_period_s(device: GpuDevice) -> float | None:
    with _PERIOD_CACHE_LOCK:
        if device in _PERIOD_CACHE:
            return _PERIOD_CACHE[device]
    period_s = detect_counter_period_s(device)
    with _PERIOD_CACHE_LOCK:
        _PERIOD_CACHE[device] = period_s
    return period_s


class NvmlCounterMeter(EnergyMeter):
    """Delta of the device's cumulative energy counter (``total_energy_mj``).

    The counter moves in steps (100 ms on an H100), so a window's error is up to one update
    period of power at each end: keep windows many periods long. ``resolution_s`` is the
    detected update period (detected on first use unless given).
    """

    name = "nvml_counter"

    def __init__(self, device: GpuDevice, resolution_s: float | None = None) -> None:
        self.device = device
        self.resolution_s = resolution_s
        self._start: tuple[float, int] | None = None
        self._start_error: str | None = None

    def start(self) -> None:
        self._start_error = None
        try:
            if self.resolution_s is None:
                self.resolution_s = _cached_counter_period_s(self.device)
            start_mj = self.device.total_energy_mj()
        except (GpuNotSupported, GpuNoPermission) as exc:
            self._start_error = f"counter not supported: {exc}"
            self._start = (self.device.clock.now_s(), 0)
            return
        self._start = (self.device.clock.now_s(), start_mj)

    def stop(self) -> EnergyReading:
        if self._start is None:
            raise SdbenchError("NvmlCounterMeter.stop() called before start()")
        t0_s, start_mj = self._start
        self._start = None
        simulated = self.device.simulated
        if self._start_error is not None:
            return EnergyReading(None, self.device.clock.now_s() - t0_s, self.name, None, False, self._start_error, simulated)
        try:
            end_mj = self.device.total_energy_mj()
        except (GpuNotSupported, GpuNoPermission) as exc:
            return EnergyReading(
                None, self.device.clock.now_s() - t0_s, self.name, None, False, f"counter not supported: {exc}", simulated
            )
        duration_s = self.device.clock.now_s() - t0_s
        energy_j = counter_delta_j(start_mj, end_mj)
        if end_mj < start_mj and energy_j > _MAX_PLAUSIBLE_POWER_W * max(duration_s, 1.0):
            return EnergyReading(
                None,
                duration_s,
                self.name,
                self.resolution_s,
                False,
                f"energy counter went backwards ({start_mj} -> {end_mj} mJ): driver reload or GPU reset",
                simulated,
            )
        return EnergyReading(energy_j, duration_s, self.name, self.resolution_s, True, None, simulated)


# ---- NVML power timeline ---------------------------------------------------------------------
class PowerTimelineMeter(EnergyMeter):
    """Samples ``power_instant_w()`` in a background thread and integrates by trapezoid.

    The samples are kept (:meth:`timeline`), so any sub-window (a step, a phase) can be given
    energy afterwards with :meth:`energy_between_j`. ``rate_hz`` must be at least 50 so that
    100 ms phases get several samples.
    """

    name = "power_timeline"
    min_rate_hz = 50.0

    def __init__(self, device: GpuDevice, rate_hz: float = 100.0) -> None:
        if not rate_hz >= self.min_rate_hz:
            raise ConfigError("rate_hz", rate_hz, allowed=f">= {self.min_rate_hz:g} Hz")
        self.device = device
        self.rate_hz = float(rate_hz)
        self._samples: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._thread: PeriodicThread | None = None
        self._error: str | None = None
        self._t0_s: float | None = None

    def _sample(self) -> bool:
        """Take one sample; on an unsupported or refused read, remember why and stop sampling."""
        before_s = self.device.clock.now_s()
        try:
            power_w = self.device.power_instant_w()
        except (GpuNotSupported, GpuNoPermission) as exc:
            self._error = f"power readings not supported: {exc}"
            return False
        # The reading happened somewhere inside the call; the midpoint halves the timing error.
        t_s = 0.5 * (before_s + self.device.clock.now_s())
        with self._lock:
            self._samples.append((t_s, power_w))
        return True

    def start(self) -> None:
        with self._lock:
            self._samples = []
        self._error = None
        self._t0_s = self.device.clock.now_s()
        if not self._sample():
            return
        self._thread = PeriodicThread(self._sample, self.rate_hz, name="sdbench-power-timeline",
                                      clock=self.device.clock)
        self._thread.start()

    def stop(self) -> EnergyReading:
        if self._t0_s is None:
            raise SdbenchError("PowerTimelineMeter.stop() called before start()")
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
        if self._error is None:
            self._sample()
        t0_s, self._t0_s = self._t0_s, None
        duration_s = self.device.clock.now_s() - t0_s
        simulated = self.device.simulated
        if self._error is not None:
            return EnergyReading(None, duration_s, self.name, None, False, self._error, simulated)
        samples = self.timeline()
        return EnergyReading(
            trapezoid_energy_j(samples),
            samples[-1][0] - samples[0][0],
            self.name,
            1.0 / self.rate_hz,
            True,
            self.device.power_instant_fallback_reason,
            simulated,
        )

    def timeline(self) -> list[tuple[float, float]]:
        """``(t_s, power_w)`` samples of the last window (seconds on the device's clock)."""
        with self._lock:
            return list(self._samples)

    def energy_between_j(self, t0_s: float, t1_s: float) -> float:
        """Energy in joules between two times on the device's clock within the sampled window."""
        return energy_between_j(self.timeline(), t0_s, t1_s)

    def integral(self) -> TimelineIntegral:
        """The samples so far as one integral (many sub-window queries, one pass over the samples)."""
        return TimelineIntegral(self.timeline())

    @property
    def achieved_rate_hz(self) -> float | None:
        """Samples per second actually taken in the last window."""
        samples = self.timeline()
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return None
        return (len(samples) - 1) / (samples[-1][0] - samples[0][0])


# ---- CPU RAPL ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RaplZone:
    label: str
    energy_path: Path
    max_range_uj: int | None


class RaplMeter(EnergyMeter):
    """CPU package and DRAM energy from Linux powercap (``intel-rapl*/energy_uj``).

    Sums every zone named ``package-*`` or ``dram`` (core/uncore are inside package; psys would
    double count). Each counter wraps at its ``max_energy_range_uj``; one wrap per window is
    corrected, so windows must be shorter than that range divided by the peak power (minutes).
    """

    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self._zones: list[_RaplZone] = []
        self._start: tuple[float, dict[str, int]] | None = None
        self._start_error: str | None = None

    def _discover(self) -> list[_RaplZone]:
        # /sys/class/powercap lists zones and sub-zones flat; trees may also nest them.
        candidates = sorted(set(self.root.glob("intel-rapl:*")) | set(self.root.glob("intel-rapl:*/intel-rapl:*")))
        seen: set[Path] = set()
        zones = []
        for zone_dir in candidates:
            real = zone_dir.resolve()
            if real in seen or not (zone_dir / "energy_uj").exists():
                continue
            seen.add(real)
            try:
                zone_name = (zone_dir / "name").read_text().strip()
            except OSError:
                continue
            if not (zone_name.startswith("package") or zone_name == "dram"):
                continue
            try:
                max_range_uj: int | None = int((zone_dir / "max_energy_range_uj").read_text().strip())
            except (OSError, ValueError):
                max_range_uj = None
            zones.append(_RaplZone(f"{zone_name}[{zone_dir.name}]", zone_dir / "energy_uj", max_range_uj))
        return zones

    def _read_all(self) -> dict[str, int]:
        return {zone.label: int(zone.energy_path.read_text().strip()) for zone in self._zones}

    def _unreadable_reason(self, exc: OSError | ValueError) -> str:
        if isinstance(exc, PermissionError):
            return (
                f"cannot read RAPL energy ({exc.filename}): permission denied; energy_uj is root-only "
                "on most Linux systems, so ask for read access"
            )
        return f"cannot read RAPL energy under {self.root}: {exc}"

    def start(self) -> None:
        self._start_error = None
        self._zones = self._discover()
        t0_s = time.perf_counter()
        if not self._zones:
            self._start_error = f"no RAPL package/dram zones under {self.root}"
            self._start = (t0_s, {})
            return
        try:
            self._start = (time.perf_counter(), self._read_all())
        except (OSError, ValueError) as exc:
            self._start_error = self._unreadable_reason(exc)
            self._start = (t0_s, {})

    def stop(self) -> EnergyReading:
        if self._start is None:
            raise SdbenchError("RaplMeter.stop() called before start()")
        t0_s, start_uj = self._start
        self._start = None
        if self._start_error is not None:
            return EnergyReading(None, time.perf_counter() - t0_s, self.name, None, False, self._start_error, False)
        try:
            end_uj = self._read_all()
        except (OSError, ValueError) as exc:
            return EnergyReading(
                None, time.perf_counter() - t0_s, self.name, None, False, self._unreadable_reason(exc), False
            )
        duration_s = time.perf_counter() - t0_s
        components_j: dict[str, float] = {}
        for zone in self._zones:
            begin, end = start_uj[zone.label], end_uj[zone.label]
            if end >= begin:
                components_j[zone.label] = (end - begin) / 1e6
            elif zone.max_range_uj is not None:
                components_j[zone.label] = (zone.max_range_uj - begin + end) / 1e6
            else:
                return EnergyReading(
                    None, duration_s, self.name, None, False,
                    f"RAPL counter {zone.label} wrapped and its max_energy_range_uj is unreadable", False,
                )
        return EnergyReading(
            math.fsum(components_j.values()), duration_s, self.name, None, True, None, False, components_j
        )


# ---- selection and idle power ------------------------------------------------------------------
#: Why host CPU energy is not measured beside a simulated GPU: its windows are virtual seconds.
VIRTUAL_RAPL_REASON = ("host CPU energy (RAPL) is not measured beside a virtual-clock simulated GPU: "
                       "its windows are virtual seconds, not host time")
def _probe(read: Any) -> str | None:
    """``None`` if the query works, else why not."""
    try:
        read()
    except (GpuNotSupported, GpuNoPermission) as exc:
        return str(exc)
    return None


def select_energy_meter(device: GpuDevice | None, preference: str = "auto") -> EnergyMeter:
    """The energy meter to use for ``device``; ``meter.name`` is the source recorded in results.

    ``preference``: ``"auto"`` (the counter if the device has one, else the power timeline,
    else none; a fallback is recorded in ``meter.fallback_reason``), ``"counter"``,
    ``"timeline"`` (exactly that meter, or a :class:`NullMeter` saying why not), ``"rapl"``
    (CPU package + DRAM), ``"none"``. ``device=None`` means no GPU.
    """
    if preference not in ENERGY_PREFERENCES:
        raise ConfigError("energy meter", preference, allowed=ENERGY_PREFERENCES)
    clock = device.clock if device is not None else WALL_CLOCK
    if preference == "none":
        return NullMeter("energy measurement switched off (energy meter 'none')", clock)
    if preference == "rapl":
        if clock.virtual:
            return NullMeter(VIRTUAL_RAPL_REASON, clock)
        return RaplMeter()
    if device is None:
        meter: EnergyMeter = NullMeter(NO_DEVICE_REASON)
        if preference == "auto":
            meter.fallback_reason = NO_DEVICE_REASON
        return meter
    counter_problem = _probe(device.total_energy_mj) if preference in ("auto", "counter") else None
    if preference == "counter" or (preference == "auto" and counter_problem is None):
        if counter_problem is not None:
            return NullMeter(f"counter not supported: {counter_problem}", clock)
        return NvmlCounterMeter(device)
    timeline_problem = _probe(device.power_instant_w)
    if timeline_problem is None:
        meter = PowerTimelineMeter(device)
        if preference == "auto":
            meter.fallback_reason = f"energy counter not supported ({counter_problem}); using the power timeline"
        return meter
    if preference == "timeline":
        return NullMeter(f"power readings not supported: {timeline_problem}", clock)
    meter = NullMeter(f"counter not supported: {counter_problem}; power readings not supported: {timeline_problem}",
                      clock)
    meter.fallback_reason = meter.reason
    return meter


def measure_idle_power_w(device: GpuDevice | None, duration_s: float) -> IdlePower:
    """Average power of the device over a quiet window of about ``duration_s`` seconds.

    With the energy counter, the window runs from one counter update to another (so its
    quantisation does not bias the result); without one, the power timeline is integrated.
    The caller keeps the GPU idle meanwhile.
    """
    if not duration_s > 0:
        raise ConfigError("duration_s", duration_s, reason="must be positive")
    if device is None:
        return IdlePower(None, 0.0, "none", False, NO_DEVICE_REASON)
    try:
        return _idle_from_counter(device, duration_s)
    except (GpuNotSupported, GpuNoPermission) as exc:
        counter_problem = str(exc)
    meter = PowerTimelineMeter(device)
    meter.start()
    device.clock.sleep(duration_s)
    reading = meter.stop()
    if not reading.available or reading.energy_j is None or reading.duration_s <= 0:
        return IdlePower(
            None, reading.duration_s, meter.name, False,
            f"counter not supported: {counter_problem}; {reading.reason}",
        )
    return IdlePower(reading.energy_j / reading.duration_s, reading.duration_s, meter.name, True, None)


def _idle_from_counter(device: GpuDevice, duration_s: float) -> IdlePower:
    # Two seconds covers any plausible update period (100 ms on H100, 1 s on the slowest).
    first = _wait_for_counter_change(device, timeout_s=2.0)
    if first is None:
        raise GpuNotSupported("the energy counter did not change within 2 s")
    t_a_s, start_mj = first
    remaining_s = duration_s - (device.clock.now_s() - t_a_s)
    if remaining_s > 0:
        device.clock.sleep(remaining_s)
    last = _wait_for_counter_change(device, timeout_s=2.0)
    if last is None:
        raise GpuNotSupported("the energy counter stopped changing")
    t_b_s, end_mj = last
    window_s = t_b_s - t_a_s
    return IdlePower(counter_delta_j(start_mj, end_mj) / window_s, window_s, NvmlCounterMeter.name, True, None)

