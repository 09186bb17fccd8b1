"""Real NVIDIA GPUs through NVML (``nvidia-ml-py``, module ``pynvml``).

NVML is imported and initialised lazily, so importing sdbench on a machine without a driver is
free. Every ``NVMLError`` is mapped to a typed :mod:`sdbench.gpu.base` exception.

``CUDA_VISIBLE_DEVICES`` is honoured: ``NvmlDevice(i)`` is the i-th *visible* device, the one
``torch.device(f"cuda:{i}")`` uses. Integer entries are read in NVML's order (PCI bus order),
which matches CUDA's when ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or when the GPUs are identical (the
usual case on a compute node). ``GPU-<uuid>`` entries (CUDA also accepts unique prefixes) are
matched against the NVML UUIDs. As in CUDA, the list ends at the first entry that is not valid.
``MIG-`` entries are refused with a clear error: NVML's energy counter and clock controls are per
physical GPU, so a measurement on a MIG slice would be attributed wrongly.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from sdbench.errors import ConfigError
from sdbench.gpu.base import GpuDevice, GpuError, GpuInfo, GpuNoPermission, GpuNotSupported, GpuUnavailable

__all__ = ["NvmlDevice", "nvml_available", "nvml_unavailable_reason", "parse_cuda_visible_devices"]

_T = TypeVar("_T")

# Field ids from nvml.h; kept here so the fallback logic does not depend on the binding's version.
_FI_DEV_POWER_AVERAGE = 185
_FI_DEV_POWER_INSTANT = 186

_NO_CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"


def _import_pynvml() -> ModuleType:
    """Import ``pynvml`` at call time (so tests can substitute it through ``sys.modules``)."""
    try:
        import pynvml
    except ImportError as exc:
        raise GpuUnavailable(
            "the NVML Python binding is not installed (pip install nvidia-ml-py)"
        ) from exc
    return pynvml


def nvml_unavailable_reason() -> str | None:
    """Why NVML cannot be used here, or ``None`` if it can (library, driver and >= 1 GPU)."""
    try:
        nvml = _import_pynvml()
    except GpuUnavailable as exc:
        return str(exc)
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return f"no NVIDIA GPU/NVML on this machine (nvmlInit: {exc})"
    except nvml.NVMLLibraryMismatchError as exc:
        return f"NVML library mismatch: {exc}"
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError as exc:
        return f"NVML cannot count GPUs: {exc}"
    finally:
        # Shutdown failing after a successful init changes nothing for the answer.
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    if count < 1:
        return "NVML found no NVIDIA GPU"
    return None


def nvml_device_count() -> int:
    """How many GPUs NVML sees on this machine (all of them: ``CUDA_VISIBLE_DEVICES`` does not filter NVML)."""
    nvml = _import_pynvml()
    nvml.nvmlInit()
    try:
        return int(nvml.nvmlDeviceGetCount())
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def nvml_available() -> bool:
    """True when NVML is importable, initialises, and sees at least one GPU. Never raises."""
    return nvml_unavailable_reason() is None


def parse_cuda_visible_devices(value: str) -> list[str]:
    """Split a ``CUDA_VISIBLE_DEVICES`` value into entries, ending at the first invalid one.

    Valid entries are non-negative integers, ``GPU-...`` UUIDs and ``MIG-...`` identifiers
    (CUDA's own rule: anything after an invalid entry is ignored).
    """
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry.isdigit() or entry.startswith(("GPU-", "MIG-")):
            entries.append(entry)
        else:
            break
    return entries


class NvmlDevice(GpuDevice):
    """One GPU through NVML. ``index`` is the CUDA (visible) index; see the module docstring.

    Nothing touches NVML until the first query, or :meth:`ensure_open`.
    """

    simulated = False

    def __init__(self, index: int = 0) -> None:
        if index < 0:
            raise ConfigError("index", index, reason="a GPU index is >= 0")
        self.index = index
        self.physical_index: int | None = None
        self._nvml: ModuleType | None = None
        self._handle: Any = None
        self._lock = threading.Lock()
        self._instant_field_ok = True
        self._average_field_ok = True
        self.power_instant_source = "nvml_field_power_instant"
        self.power_instant_fallback_reason = None
        self.power_average_source = "nvml_field_power_average"
        self.power_average_fallback_reason: str | None = None
        # NVML has no getter for locked clocks: remember what this object set (None = not set).
        self.requested_sm_clocks_mhz: tuple[int, int] | None = None
        self.requested_mem_clocks_mhz: tuple[int, int] | None = None

    # ---- plumbing -----------------------------------------------------------------------------
    def ensure_open(self) -> None:
        """Initialise NVML and resolve the handle now; raises :class:`GpuUnavailable` if impossible."""
        with self._lock:
            if self._handle is not None:
                return
            nvml = _import_pynvml()
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                raise GpuUnavailable(f"no NVIDIA GPU/NVML on this machine (nvmlInit: {exc})") from exc
            try:
                self.physical_index, self._handle = self._resolve(nvml)
            except BaseException:
                # The resolution error is the one worth reporting; a failing shutdown adds nothing.
                with contextlib.suppress(nvml.NVMLError):
                    nvml.nvmlShutdown()
                raise
            self._nvml = nvml

    def _resolve(self, nvml: ModuleType) -> tuple[int, Any]:
        """Map the CUDA index to (NVML index, handle), honouring CUDA_VISIBLE_DEVICES."""
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            raise GpuUnavailable(f"NVML cannot count GPUs: {exc}") from exc
        visible = os.environ.get(_NO_CUDA_VISIBLE)
        if visible is None:
            if self.index >= count:
                raise GpuUnavailable(f"no GPU at index {self.index}: NVML sees {count} GPU(s)")
            return self.index, self._handle_by_index(nvml, self.index)
        entries = parse_cuda_visible_devices(visible)
        if self.index >= len(entries):
            raise GpuUnavailable(
                f"no GPU at index {self.index}: CUDA_VISIBLE_DEVICES={visible!r} makes "
                f"{len(entries)} GPU(s) visible"
            )
        entry = entries[self.index]
        if entry.startswith("MIG-"):
            raise GpuUnavailable(
                f"CUDA_VISIBLE_DEVICES entry {entry!r} is a MIG instance: NVML energy and clock "
                "readings are per physical GPU, so sdbench measures only whole GPUs"
            )
        if entry.isdigit():
            physical = int(entry)
            if physical >= count:
                raise GpuUnavailable(
                    f"CUDA_VISIBLE_DEVICES entry {entry!r} names GPU {physical}, but NVML sees {count} GPU(s)"
                )
            return physical, self._handle_by_index(nvml, physical)
        matches = []
        for physical in range(count):
            handle = self._handle_by_index(nvml, physical)
            uuid = _text(self._call_on(nvml, "nvmlDeviceGetUUID", handle))
            if uuid.startswith(entry):
                matches.append((physical, handle))
        if not matches:
            raise GpuUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry!r} matches no GPU UUID known to NVML")
        if len(matches) > 1:
            raise GpuUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(matches)} GPUs; give more of the UUID")
        return matches[0]

    def _handle_by_index(self, nvml: ModuleType, physical: int) -> Any:
        try:
            return nvml.nvmlDeviceGetHandleByIndex(physical)
        except (nvml.NVMLError_InvalidArgument, nvml.NVMLError_NotFound, nvml.NVMLError_GpuIsLost) as exc:
            raise GpuUnavailable(f"no usable GPU at NVML index {physical}: {exc}") from exc
        except nvml.NVMLError as exc:
            raise self._map_error(nvml, exc, "nvmlDeviceGetHandleByIndex") from exc

    def _map_error(self, nvml: ModuleType, exc: Exception, what: str) -> GpuError:
        """Translate an NVMLError raised by ``what`` to the typed exception users see."""
        where = f"{what} on GPU {self.index}"
        if isinstance(exc, (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound)):
            return GpuNotSupported(f"{where} is not supported: {exc}")
        if isinstance(exc, nvml.NVMLError_NoPermission):
            return GpuNoPermission(where, str(exc))
        if isinstance(
            exc,
            (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded, nvml.NVMLError_Uninitialized),
        ):
            return GpuUnavailable(f"no NVIDIA GPU/NVML on this machine ({where}: {exc})")
        if isinstance(exc, nvml.NVMLError_GpuIsLost):
            return GpuUnavailable(f"{where}: the GPU has fallen off the bus ({exc})")
        return GpuError(f"{where} failed: {exc}")

    def _call_on(self, nvml: ModuleType, fn_name: str, *args: Any) -> Any:
        fn = getattr(nvml, fn_name, None)
        if fn is None:
            raise GpuNotSupported(f"{fn_name} is not in this NVML binding (upgrade nvidia-ml-py)")
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            raise self._map_error(nvml, exc, fn_name) from exc

    def _call(self, fn_name: str, *args: Any, with_handle: bool = True) -> Any:
        """Call ``pynvml.<fn_name>(handle, *args)`` with errors mapped."""
        self.ensure_open()
        assert self._nvml is not None
        if with_handle:
            return self._call_on(self._nvml, fn_name, self._handle, *args)
        return self._call_on(self._nvml, fn_name, *args)

    def _const(self, name: str) -> int:
        self.ensure_open()
        assert self._nvml is not None
        return int(getattr(self._nvml, name))

    def _field_w(self, field_id: int) -> float:
        """Read one power field (milliwatts) and return watts; GpuNotSupported if unavailable."""
        values = self._call("nvmlDeviceGetFieldValues", [field_id])
        value = values[0]
        assert self._nvml is not None
        if int(value.nvmlReturn) != int(self._nvml.NVML_SUCCESS):
            raise GpuNotSupported(f"NVML field {field_id} returned error code {int(value.nvmlReturn)}")
        return _field_number(self._nvml, value) / 1000.0

    def _shutdown(self, nvml: ModuleType) -> None:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            raise self._map_error(nvml, exc, "nvmlShutdown") from exc

    def close(self) -> None:
        """Shut NVML down for this object (NVML reference-counts init/shutdown pairs)."""
        with self._lock:
            nvml, self._nvml, self._handle = self._nvml, None, None
        if nvml is not None:
            self._shutdown(nvml)

    # ---- queries ------------------------------------------------------------------------------
    def info(self) -> GpuInfo:
        """Identity and limits. Values the driver does not report are ``None``."""
        power_limits = _optional(lambda: self._call("nvmlDeviceGetPowerManagementLimitConstraints"))
        cuda_version = _optional(lambda: int(self._call("nvmlSystemGetCudaDriverVersion", with_handle=False)))
        capability = _optional(lambda: self._call("nvmlDeviceGetCudaComputeCapability"))
        memory = _optional(lambda: self._call("nvmlDeviceGetMemoryInfo"))
        default_limit_mw = _optional(lambda: self._call("nvmlDeviceGetPowerManagementDefaultLimit"))
        max_sm = _optional(lambda: int(self._call("nvmlDeviceGetMaxClockInfo", self._const("NVML_CLOCK_SM"))))
        return GpuInfo(
            index=self.index,
            name=_text(self._call("nvmlDeviceGetName")),
            uuid=_text(self._call("nvmlDeviceGetUUID")),
            driver_version=_text(self._call("nvmlSystemGetDriverVersion", with_handle=False)),
            cuda_driver_version=None if cuda_version is None else f"{cuda_version // 1000}.{cuda_version % 1000 // 10}",
            memory_total_bytes=None if memory is None else int(memory.total),
            power_limit_w=_optional(self.power_limit_w),
            default_power_limit_w=None if default_limit_mw is None else default_limit_mw / 1000.0,
            min_power_limit_w=None if power_limits is None else power_limits[0] / 1000.0,
            max_power_limit_w=None if power_limits is None else power_limits[1] / 1000.0,
            default_sm_clock_mhz=_optional(self._top_sm_clock_at_top_mem_clock_mhz),
            max_sm_clock_mhz=max_sm,
            compute_capability=None if capability is None else (int(capability[0]), int(capability[1])),
            simulated=False,
            physical_index=self.physical_index,
        )

    def _top_sm_clock_at_top_mem_clock_mhz(self) -> int:
        """Highest supported SM clock at the highest memory clock: the unlocked boost ceiling."""
        mem_clocks = self.supported_memory_clocks_mhz()
        if not mem_clocks:
            raise GpuNotSupported("NVML lists no supported memory clocks")
        sm_clocks = self.supported_sm_clocks_mhz(max(mem_clocks))
        if not sm_clocks:
            raise GpuNotSupported("NVML lists no supported SM clocks")
        return max(sm_clocks)

    def total_energy_mj(self) -> int:
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption"))

    def power_instant_w(self) -> float:
        """NVML_FI_DEV_POWER_INSTANT where the device has it, else nvmlDeviceGetPowerUsage.

        The fallback is recorded in :attr:`power_instant_fallback_reason`: on Ampere (but GA100)
        and newer that call is a 1 s average, not an instantaneous reading.
        """
        if self._instant_field_ok:
            try:
                return self._field_w(_FI_DEV_POWER_INSTANT)
            except GpuNotSupported as exc:
                self._instant_field_ok = False
                self.power_instant_source = "nvml_power_usage"
                self.power_instant_fallback_reason = (
                    f"NVML_FI_DEV_POWER_INSTANT unavailable ({exc}); using nvmlDeviceGetPowerUsage, "
                    "which is a 1 s average on Ampere (except GA100) and newer GPUs"
                )
        return self._call("nvmlDeviceGetPowerUsage") / 1000.0

    def power_average_w(self) -> float:
        """NVML_FI_DEV_POWER_AVERAGE (1 s average) where available, else nvmlDeviceGetPowerUsage
        (a 1 s average on Ampere-but-GA100 and newer, instantaneous on older GPUs; recorded in
        :attr:`power_average_fallback_reason`)."""
        if self._average_field_ok:
            try:
                return self._field_w(_FI_DEV_POWER_AVERAGE)
            except GpuNotSupported as exc:
                self._average_field_ok = False
                self.power_average_source = "nvml_power_usage"
                self.power_average_fallback_reason = (
                    f"NVML_FI_DEV_POWER_AVERAGE unavailable ({exc}); using nvmlDeviceGetPowerUsage "
                    "(instantaneous on GA100 and older GPUs)"
                )
        return self._call("nvmlDeviceGetPowerUsage") / 1000.0

    def sm_clock_mhz(self) -> int:
        return int(self._call("nvmlDeviceGetClockInfo", self._const("NVML_CLOCK_SM")))

    def mem_clock_mhz(self) -> int:
        return int(self._call("nvmlDeviceGetClockInfo", self._const("NVML_CLOCK_MEM")))

    def clock_event_reasons(self) -> int:
        """nvmlDeviceGetCurrentClocksEventReasons; the deprecated throttle-reasons call only
        when the driver predates the new one."""
        try:
            return int(self._call("nvmlDeviceGetCurrentClocksEventReasons"))
        except GpuNotSupported:
            return int(self._call("nvmlDeviceGetCurrentClocksThrottleReasons"))

    def temperature_c(self) -> float:
        """nvmlDeviceGetTemperatureV where the binding and driver have it, else the old call."""
        self.ensure_open()
        assert self._nvml is not None
        sensor = self._const("NVML_TEMPERATURE_GPU")
        if hasattr(self._nvml, "nvmlDeviceGetTemperatureV"):
            try:
                return float(self._call("nvmlDeviceGetTemperatureV", sensor))
            except GpuNotSupported:
                # Older drivers lack the V entry point but still answer the classic query.
                pass
        return float(self._call("nvmlDeviceGetTemperature", sensor))

    def utilization_pct(self) -> tuple[float, float]:
        rates = self._call("nvmlDeviceGetUtilizationRates")
        return float(rates.gpu), float(rates.memory)

    def memory_used_bytes(self) -> int:
        return int(self._call("nvmlDeviceGetMemoryInfo").used)

    def power_limit_w(self) -> float:
        """The enforced limit (the smallest of all limits in force), in watts."""
        return self._call("nvmlDeviceGetEnforcedPowerLimit") / 1000.0

    def supported_memory_clocks_mhz(self) -> list[int]:
        return [int(c) for c in self._call("nvmlDeviceGetSupportedMemoryClocks")]

    def supported_sm_clocks_mhz(self, mem_clock_mhz: int) -> list[int]:
        return [int(c) for c in self._call("nvmlDeviceGetSupportedGraphicsClocks", int(mem_clock_mhz))]

    # ---- controls -----------------------------------------------------------------------------
    def set_locked_sm_clocks(self, min_mhz: int, max_mhz: int) -> None:
        _check_range("min_mhz", min_mhz, max_mhz)
        self._call("nvmlDeviceSetGpuLockedClocks", int(min_mhz), int(max_mhz))
        self.requested_sm_clocks_mhz = (int(min_mhz), int(max_mhz))

    def reset_locked_sm_clocks(self) -> None:
        self._call("nvmlDeviceResetGpuLockedClocks")
        self.requested_sm_clocks_mhz = None

    def set_locked_mem_clocks(self, min_mhz: int, max_mhz: int) -> None:
        _check_range("min_mhz", min_mhz, max_mhz)
        self._call("nvmlDeviceSetMemoryLockedClocks", int(min_mhz), int(max_mhz))
        self.requested_mem_clocks_mhz = (int(min_mhz), int(max_mhz))

    def reset_locked_mem_clocks(self) -> None:
        self._call("nvmlDeviceResetMemoryLockedClocks")
        self.requested_mem_clocks_mhz = None

    def set_power_limit_w(self, watts: float) -> None:
        if watts <= 0:
            raise ConfigError("power_limit_w", watts, reason="must be positive")
        self._call("nvmlDeviceSetPowerManagementLimit", int(round(watts * 1000)))


def _check_range(field: str, min_mhz: int, max_mhz: int) -> None:
    if min_mhz > max_mhz:
        raise ConfigError(field, min_mhz, reason=f"must not exceed max_mhz={max_mhz}")


def _optional(read: Callable[[], _T]) -> _T | None:
    """Run a query; ``None`` if the device does not support it (info fields may be missing)."""
    try:
        return read()
    except GpuNotSupported:
        return None


def _text(value: str | bytes) -> str:
    # Older bindings return bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


def _field_number(nvml: ModuleType, value: Any) -> float:
    """The numeric payload of an nvmlFieldValue_t according to its valueType."""
    members: Sequence[tuple[str, str]] = (
        ("NVML_VALUE_TYPE_DOUBLE", "dVal"),
        ("NVML_VALUE_TYPE_UNSIGNED_INT", "uiVal"),
        ("NVML_VALUE_TYPE_UNSIGNED_LONG", "ulVal"),
        ("NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", "ullVal"),
        ("NVML_VALUE_TYPE_SIGNED_LONG_LONG", "sllVal"),
        ("NVML_VALUE_TYPE_SIGNED_INT", "siVal"),
        ("NVML_VALUE_TYPE_UNSIGNED_SHORT", "usVal"),
    )
    value_type = int(value.valueType)
    for const_name, member in members:
        if getattr(nvml, const_name, None) == value_type:
            return float(getattr(value.value, member))
    raise GpuNotSupported(f"NVML field value of unknown type {value_type}")
