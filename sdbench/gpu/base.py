"""The typed device interface every GPU backend implements (real NVML, simulated).

Units are in every name: watts (``_w``), millijoules (``_mj``), megahertz (``_mhz``), degrees
Celsius (``_c``), bytes (``_bytes``), percent (``_pct``). A query the device cannot answer raises
:class:`GpuNotSupported`; a backend never makes a number up.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from sdbench.errors import DeviceUnavailableError, SdbenchError
from sdbench.gpu.clock import WALL_CLOCK, Clock

__all__ = [
    "CLOCK_EVENT_REASON_BITS",
    "THROTTLE_REASONS",
    "GpuDevice",
    "GpuError",
    "GpuInfo",
    "GpuNoPermission",
    "GpuNotSupported",
    "GpuUnavailable",
    "decode_clock_event_reasons",
    "is_throttled",
]


class GpuError(SdbenchError):
    """A GPU query or control call failed."""


class GpuNotSupported(GpuError):
    """The device, driver or backend does not support this query or control."""


class GpuNoPermission(GpuError):
    """A control call (clocks, power limit) was refused for lack of rights."""

    def __init__(self, operation: str, detail: str = "") -> None:
        self.operation = operation
        msg = (
            f"{operation} was refused: changing GPU clocks or power limits needs root "
            "(or a site helper that applies GPU settings on users' behalf)"
        )
        if detail:
            msg += f" [{detail}]"
        super().__init__(msg)


class GpuUnavailable(GpuError, DeviceUnavailableError):
    """No usable GPU: no driver, no NVML library, or no device at the requested index."""


# Bit values match NVML's nvmlClocksEventReason* constants (nvml.h), so a mask read from NVML
# decodes without translation.
CLOCK_EVENT_REASON_BITS: dict[str, int] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}

#: Reasons that mean the GPU ran slower than asked because of power or heat (not idling, not a
#: user setting): a measurement taken while any of these was active is a throttled measurement.
THROTTLE_REASONS: frozenset[str] = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)

_THROTTLE_MASK = sum(CLOCK_EVENT_REASON_BITS[name] for name in THROTTLE_REASONS)


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Readable names of the bits set in an NVML clocks-event-reasons mask, in bit order.

    Bits this version does not know are reported as ``unknown_0x...`` rather than dropped.
    """
    names = [name for name, bit in CLOCK_EVENT_REASON_BITS.items() if mask & bit]
    known = sum(CLOCK_EVENT_REASON_BITS.values())
    unknown = mask & ~known
    if unknown:
        names.append(f"unknown_{unknown:#x}")
    return names


def is_throttled(mask: int) -> bool:
    """True if the mask contains any of :data:`THROTTLE_REASONS`."""
    return bool(mask & _THROTTLE_MASK)


@dataclass(frozen=True)
class GpuInfo:
    """Static-ish facts about one GPU. ``None`` means the device did not report the value."""

    index: int
    name: str
    uuid: str
    driver_version: str
    cuda_driver_version: str | None
    memory_total_bytes: int | None
    power_limit_w: float | None
    default_power_limit_w: float | None
    min_power_limit_w: float | None
    max_power_limit_w: float | None
    default_sm_clock_mhz: int | None
    max_sm_clock_mhz: int | None
    compute_capability: tuple[int, int] | None
    simulated: bool
    #: NVML's own index of the device (differs from ``index`` under CUDA_VISIBLE_DEVICES).
    physical_index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        out = dataclasses.asdict(self)
        if self.compute_capability is not None:
            out["compute_capability"] = list(self.compute_capability)
        return out


class GpuDevice(ABC):
    """One GPU. Query methods read the device; control methods change it and may need root.

    Implementations are safe to call from several threads (samplers run in the background).
    """

    #: True for the simulated GPU; meters copy it into their readings.
    simulated: ClassVar[bool] = False

    #: Where :meth:`power_instant_w` reads from, and why, if it had to fall back to a non-
    #: instantaneous source (``None`` while the instantaneous source works).
    power_instant_source: str = "unknown"
    power_instant_fallback_reason: str | None = None

    #: The clock every measurement of this device reads (window edges, marks, samples, waits): the
    #: host's wall clock for real hardware, a virtual clock for the simulated GPU (sdbench.gpu.clock).
    clock: Clock = WALL_CLOCK

    # ---- queries ------------------------------------------------------------------------------
    @abstractmethod
    def info(self) -> GpuInfo:
        """Identity, limits and clock ceilings of the device."""

    @abstractmethod
    def total_energy_mj(self) -> int:
        """Energy counter in millijoules since the driver was loaded (updates periodically)."""

    @abstractmethod
    def power_instant_w(self) -> float:
        """Instantaneous board power in watts (see :attr:`power_instant_fallback_reason`)."""

    @abstractmethod
    def power_average_w(self) -> float:
        """Board power in watts averaged over the driver's window (1 s on recent GPUs)."""

    @abstractmethod
    def sm_clock_mhz(self) -> int:
        """Current SM (graphics) clock in MHz."""

    @abstractmethod
    def mem_clock_mhz(self) -> int:
        """Current memory clock in MHz."""

    @abstractmethod
    def clock_event_reasons(self) -> int:
        """Bitmask of why clocks are below their ceiling; decode with :func:`decode_clock_event_reasons`."""

    @abstractmethod
    def temperature_c(self) -> float:
        """GPU core temperature in degrees Celsius."""

    @abstractmethod
    def utilization_pct(self) -> tuple[float, float]:
        """``(gpu_pct, mem_pct)``: share of time a kernel ran / device memory was read or written."""

    @abstractmethod
    def memory_used_bytes(self) -> int:
        """Device memory in use, in bytes (all processes)."""

    @abstractmethod
    def power_limit_w(self) -> float:
        """Power limit in force, in watts."""

    @abstractmethod
    def supported_memory_clocks_mhz(self) -> list[int]:
        """Memory clocks the device supports, as NVML lists them (descending)."""

    @abstractmethod
    def supported_sm_clocks_mhz(self, mem_clock_mhz: int) -> list[int]:
        """SM clocks supported at ``mem_clock_mhz``, descending as NVML returns them."""

    def activity(self) -> dict[str, float]:
        """Fractions ``sm_active``, ``tensor_active``, ``dram_active``, ``fp16_active`` in [0, 1].

        Real NVML has no such counters (they need DCGM profiling), so the default raises.
        """
        raise GpuNotSupported("activity counters (sm/tensor/dram/fp16 active) need DCGM profiling; NVML has none")

    # ---- controls (need root on real hardware) ------------------------------------------------
    @abstractmethod
    def set_locked_sm_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock into ``[min_mhz, max_mhz]``."""

    @abstractmethod
    def reset_locked_sm_clocks(self) -> None:
        """Remove an SM clock lock (back to the driver's default boost behaviour)."""

    @abstractmethod
    def set_locked_mem_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the memory clock into ``[min_mhz, max_mhz]``."""

    @abstractmethod
    def reset_locked_mem_clocks(self) -> None:
        """Remove a memory clock lock."""

    @abstractmethod
    def set_power_limit_w(self, watts: float) -> None:
        """Set the board power limit in watts."""

    # ---- lifetime -----------------------------------------------------------------------------
    @contextmanager
    def workload(self) -> Iterator[None]:
        """Wrap GPU work in this. A no-op on real hardware; the simulated GPU uses it to know
        when it is busy (and to stretch wall time to the locked clock)."""
        yield

    def close(self) -> None:  # noqa: B027 - an optional hook: most backends hold nothing to release
        """Release backend resources. Safe to call twice."""

    def __enter__(self) -> GpuDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
