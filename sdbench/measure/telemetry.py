"""GPU telemetry during a measurement: clocks, clocks-event reasons, temperature, limits, utilisation.

A :class:`TelemetrySampler` polls the device from a background thread and summarises what it saw,
so every result can say at which clocks it ran and whether it was throttled. A reading the device
cannot give is listed in ``unavailable`` with the reason; no value is made up.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sdbench.errors import ConfigError, SdbenchError
from sdbench.gpu.base import (
    THROTTLE_REASONS,
    GpuDevice,
    GpuNotSupported,
    decode_clock_event_reasons,
    is_throttled,
)
from sdbench.gpu.clock import WALL_CLOCK, PeriodicThread

__all__ = [
    "NO_DEVICE_REASON",
    "TELEMETRY_FIELDS",
    "TelemetrySample",
    "TelemetrySampler",
    "TelemetrySummary",
    "summarise_samples",
]

NO_DEVICE_REASON = "no NVIDIA GPU/NVML on this machine"

#: Device queries the sampler makes, by method name (also the keys of ``unavailable``).
TELEMETRY_FIELDS: tuple[str, ...] = (
    "sm_clock_mhz",
    "mem_clock_mhz",
    "clock_event_reasons",
    "temperature_c",
    "power_limit_w",
    "utilization_pct",
    "memory_used_bytes",
)


@dataclass(frozen=True)
class TelemetrySample:
    """One poll of the device; ``None`` where the reading is unavailable."""

    t_s: float
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    clock_event_reasons: int | None
    temperature_c: float | None
    power_limit_w: float | None
    gpu_util_pct: float | None
    mem_util_pct: float | None
    memory_used_bytes: int | None


@dataclass(frozen=True)
class TelemetrySummary:
    """What the GPU did during a window. ``None`` means not measured (see ``unavailable``)."""

    available: bool
    reason: str | None
    sample_count: int
    duration_s: float
    sm_clock_mhz_min: float | None = None
    sm_clock_mhz_mean: float | None = None
    sm_clock_mhz_max: float | None = None
    mem_clock_mhz_min: float | None = None
    mem_clock_mhz_mean: float | None = None
    mem_clock_mhz_max: float | None = None
    temperature_c_min: float | None = None
    temperature_c_max: float | None = None
    #: OR of every clocks-event-reasons mask seen.
    clock_event_reasons_mask: int | None = None
    clock_event_reasons: tuple[str, ...] = ()
    #: The subset of ``clock_event_reasons`` that are throttling (power or thermal).
    throttle_reasons: tuple[str, ...] = ()
    throttled: bool = False
    #: The limit at the last sample; ``power_limit_changed`` if it moved within the window.
    power_limit_w: float | None = None
    power_limit_changed: bool = False
    gpu_util_pct_mean: float | None = None
    mem_util_pct_mean: float | None = None
    memory_used_bytes_max: int | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        out = asdict(self)
        out["clock_event_reasons"] = list(self.clock_event_reasons)
        out["throttle_reasons"] = list(self.throttle_reasons)
        return out


def _stats(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    return float(min(values)), float(statistics.fmean(values)), float(max(values))


def summarise_samples(
    samples: Sequence[TelemetrySample], unavailable: dict[str, str] | None = None
) -> TelemetrySummary:
    """Reduce samples to a :class:`TelemetrySummary` (pure; used by the sampler)."""
    unavailable = dict(unavailable or {})
    if not samples:
        return TelemetrySummary(
            available=False, reason="no telemetry samples in this window", sample_count=0, duration_s=0.0,
            unavailable=unavailable,
        )

    def values(name: str) -> list[Any]:
        return [getattr(s, name) for s in samples if getattr(s, name) is not None]

    sm_min, sm_mean, sm_max = _stats(values("sm_clock_mhz"))
    mem_min, mem_mean, mem_max = _stats(values("mem_clock_mhz"))
    temp_min, _, temp_max = _stats(values("temperature_c"))
    masks = values("clock_event_reasons")
    mask: int | None = None
    if masks:
        mask = 0
        for m in masks:
            mask |= m
    names = tuple(decode_clock_event_reasons(mask)) if mask is not None else ()
    limits = values("power_limit_w")
    gpu_utils = values("gpu_util_pct")
    mem_utils = values("mem_util_pct")
    used = values("memory_used_bytes")
    return TelemetrySummary(
        available=True,
        reason=None,
        sample_count=len(samples),
        duration_s=samples[-1].t_s - samples[0].t_s,
        sm_clock_mhz_min=sm_min,
        sm_clock_mhz_mean=sm_mean,
        sm_clock_mhz_max=sm_max,
        mem_clock_mhz_min=mem_min,
        mem_clock_mhz_mean=mem_mean,
        mem_clock_mhz_max=mem_max,
        temperature_c_min=temp_min,
        temperature_c_max=temp_max,
        clock_event_reasons_mask=mask,
        clock_event_reasons=names,
        throttle_reasons=tuple(n for n in names if n in THROTTLE_REASONS),
        throttled=mask is not None and is_throttled(mask),
        power_limit_w=float(limits[-1]) if limits else None,
        power_limit_changed=len(set(limits)) > 1,
        gpu_util_pct_mean=float(statistics.fmean(gpu_utils)) if gpu_utils else None,
        mem_util_pct_mean=float(statistics.fmean(mem_utils)) if mem_utils else None,
        memory_used_bytes_max=int(max(used)) if used else None,
        unavailable=unavailable,
    )


class TelemetrySampler:
    """Polls a device's clocks, reasons, temperature, power limit, utilisation and memory.

    ``start()`` takes a sample at once and then about ``rate_hz`` a second in the background;
    ``stop()`` takes a last sample and returns the summary. Samples are kept (``samples()``) so
    parts of the run can be summarised afterwards with :meth:`summary_for_window`. With
    ``device=None`` the summary is unavailable with the reason.
    """

    def __init__(self, device: GpuDevice | None, rate_hz: float = 20.0) -> None:
        if not rate_hz > 0:
            raise ConfigError("rate_hz", rate_hz, reason="must be positive")
        self.device = device
        self.rate_hz = float(rate_hz)
        self._clock = device.clock if device is not None else WALL_CLOCK
        self.unavailable: dict[str, str] = {}
        self._samples: list[TelemetrySample] = []
        self._lock = threading.Lock()
        self._thread: PeriodicThread | None = None

    def _read(self, name: str) -> Any:
        """One device query; ``None`` (and a reason in ``unavailable``) if not supported."""
        if name in self.unavailable:
            return None
        assert self.device is not None
        try:
            return getattr(self.device, name)()
        except GpuNotSupported as exc:
            self.unavailable[name] = f"not supported: {exc}"
            return None

    def sample_now(self) -> TelemetrySample:
        """Take and store one sample (also used by the background thread)."""
        t_s = self._clock.now_s()
        util = self._read("utilization_pct")
        sample = TelemetrySample(
            t_s=t_s,
            sm_clock_mhz=self._read("sm_clock_mhz"),
            mem_clock_mhz=self._read("mem_clock_mhz"),
            clock_event_reasons=self._read("clock_event_reasons"),
            temperature_c=self._read("temperature_c"),
            power_limit_w=self._read("power_limit_w"),
            gpu_util_pct=None if util is None else float(util[0]),
            mem_util_pct=None if util is None else float(util[1]),
            memory_used_bytes=self._read("memory_used_bytes"),
        )
        with self._lock:
            self._samples.append(sample)
        return sample

    def start(self) -> None:
        """Forget earlier samples and start sampling."""
        with self._lock:
            self._samples = []
        if self.device is None:
            return
        self.sample_now()
        self._thread = PeriodicThread(self.sample_now, self.rate_hz, name="sdbench-telemetry", clock=self._clock)
        self._thread.start()

    def stop(self) -> TelemetrySummary:
        """Stop sampling and summarise everything since :meth:`start`."""
        if self.device is None:
            return TelemetrySummary(available=False, reason=NO_DEVICE_REASON, sample_count=0, duration_s=0.0)
        thread, self._thread = self._thread, None
        if thread is None:
            raise SdbenchError("TelemetrySampler.stop() called before start()")
        thread.stop()
        self.sample_now()
        return summarise_samples(self.samples(), self.unavailable)

    def samples(self) -> list[TelemetrySample]:
        """A copy of the samples taken since :meth:`start`."""
        with self._lock:
            return list(self._samples)

    def summary_for_window(self, t0_s: float, t1_s: float) -> TelemetrySummary:
        """Summary of the stored samples with ``t0_s <= t_s <= t1_s`` (seconds on the device's clock)."""
        if t1_s < t0_s:
            raise ConfigError("t1_s", t1_s, reason=f"window ends before it starts (t0_s={t0_s})")
        if self.device is None:
            return TelemetrySummary(available=False, reason=NO_DEVICE_REASON, sample_count=0, duration_s=0.0)
        window = [s for s in self.samples() if t0_s <= s.t_s <= t1_s]
        return summarise_samples(window, self.unavailable)
