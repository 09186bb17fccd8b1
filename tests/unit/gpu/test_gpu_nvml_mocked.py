"""NvmlDevice against a fake ``pynvml`` module: error mapping, CUDA_VISIBLE_DEVICES, units, fallbacks.

The fake carries the real binding's error classes and constants, so the mapping is tested against
what nvidia-ml-py actually raises; only the calls into the driver are replaced.
"""

from __future__ import annotations

import sys
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml as real_pynvml
import pytest

from sdbench.errors import ConfigError, DeviceUnavailableError
from sdbench.gpu import (
    GpuError,
    GpuNoPermission,
    GpuNotSupported,
    GpuUnavailable,
    NvmlDevice,
    nvml_available,
    nvml_unavailable_reason,
    open_device,
    parse_cuda_visible_devices,
)


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int = 123_456_789
    power_usage_mw: int = 312_500
    instant_field_mw: int | None = 345_678  # None: the field reports NOT_SUPPORTED
    average_field_mw: int | None = 300_000
    temperature_c: int = 41
    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = 2619
    reasons: int = 0x1
    enforced_limit_mw: int = 700_000
    limit_constraints_mw: tuple[int, int] | None = (200_000, 700_000)
    default_limit_mw: int = 700_000
    memory_total_bytes: int = 81559 * 2**20
    memory_used_bytes: int = 3 * 2**30
    max_sm_clock_mhz: int = 1980
    errors: dict[str, BaseException] = field(default_factory=dict)


class FakeNvml:
    """Builds a module object that quacks like ``pynvml`` over a list of FakeGpu."""

    def __init__(self, gpus: list[FakeGpu], init_error: BaseException | None = None, with_temperature_v: bool = True):
        self.gpus = gpus
        self.init_error = init_error
        self.calls: Counter[str] = Counter()
        self.last_args: dict[str, tuple[Any, ...]] = {}
        self.module = types.ModuleType("pynvml")
        for name in dir(real_pynvml):
            if name.startswith(("NVMLError", "NVML_")) or name == "NVMLLibraryMismatchError":
                setattr(self.module, name, getattr(real_pynvml, name))
        for name in dir(self):
            if name.startswith("nvml"):
                if name == "nvmlDeviceGetTemperatureV" and not with_temperature_v:
                    continue
                setattr(self.module, name, self._recording(name, getattr(self, name)))

    def _recording(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.calls[name] += 1
            self.last_args[name] = args
            if args and isinstance(args[0], FakeGpu) and name in args[0].errors:
                raise args[0].errors[name]
            return fn(*args)

        return call

    # -- system --
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.95.05"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        if not 0 <= i < len(self.gpus):
            raise real_pynvml.NVMLError_InvalidArgument()
        return self.gpus[i]

    # -- identity --
    def nvmlDeviceGetName(self, g: FakeGpu) -> str:
        return g.name

    def nvmlDeviceGetUUID(self, g: FakeGpu) -> str:
        return g.uuid

    def nvmlDeviceGetCudaComputeCapability(self, g: FakeGpu) -> tuple[int, int]:
        return (9, 0)

    def nvmlDeviceGetMemoryInfo(self, g: FakeGpu) -> Any:
        return types.SimpleNamespace(total=g.memory_total_bytes, used=g.memory_used_bytes, free=0)

    # -- power and energy --
    def nvmlDeviceGetTotalEnergyConsumption(self, g: FakeGpu) -> int:
        return g.energy_mj

    def nvmlDeviceGetPowerUsage(self, g: FakeGpu) -> int:
        return g.power_usage_mw

    def nvmlDeviceGetFieldValues(self, g: FakeGpu, field_ids: list[int]) -> list[Any]:
        out = []
        for fid in field_ids:
            mw = {186: g.instant_field_mw, 185: g.average_field_mw}.get(fid)
            ret = real_pynvml.NVML_SUCCESS if mw is not None else real_pynvml.NVML_ERROR_NOT_SUPPORTED
            out.append(
                types.SimpleNamespace(
                    fieldId=fid,
                    nvmlReturn=ret,
                    valueType=real_pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                    value=types.SimpleNamespace(uiVal=mw or 0),
                )
            )
        return out

    def nvmlDeviceGetEnforcedPowerLimit(self, g: FakeGpu) -> int:
        return g.enforced_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, g: FakeGpu) -> tuple[int, int]:
        if g.limit_constraints_mw is None:
            raise real_pynvml.NVMLError_NotSupported()
        return g.limit_constraints_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, g: FakeGpu) -> int:
        return g.default_limit_mw

    # -- clocks and state --
    def nvmlDeviceGetClockInfo(self, g: FakeGpu, clock_type: int) -> int:
        return g.sm_clock_mhz if clock_type == real_pynvml.NVML_CLOCK_SM else g.mem_clock_mhz

    def nvmlDeviceGetMaxClockInfo(self, g: FakeGpu, clock_type: int) -> int:
        return g.max_sm_clock_mhz

    def nvmlDeviceGetSupportedMemoryClocks(self, g: FakeGpu) -> list[int]:
        return [2619, 1593]

    def nvmlDeviceGetSupportedGraphicsClocks(self, g: FakeGpu, mem_mhz: int) -> list[int]:
        return list(range(1980, 344, -15)) if mem_mhz == 2619 else list(range(1755, 344, -15))

    def nvmlDeviceGetCurrentClocksEventReasons(self, g: FakeGpu) -> int:
        return g.reasons

    def nvmlDeviceGetTemperatureV(self, g: FakeGpu, sensor: int) -> int:
        return g.temperature_c

    def nvmlDeviceGetTemperature(self, g: FakeGpu, sensor: int) -> int:
        return g.temperature_c

    def nvmlDeviceGetUtilizationRates(self, g: FakeGpu) -> Any:
        return types.SimpleNamespace(gpu=87, memory=33)

    # -- controls --
    def nvmlDeviceSetGpuLockedClocks(self, g: FakeGpu, lo: int, hi: int) -> None:
        pass

    def nvmlDeviceResetGpuLockedClocks(self, g: FakeGpu) -> None:
        pass

    def nvmlDeviceSetMemoryLockedClocks(self, g: FakeGpu, lo: int, hi: int) -> None:
        pass

    def nvmlDeviceResetMemoryLockedClocks(self, g: FakeGpu) -> None:
        pass

    def nvmlDeviceSetPowerManagementLimit(self, g: FakeGpu, limit_mw: int) -> None:
        pass


UUIDS = [
    "GPU-aaaaaaaa-1111-2222-3333-444444444444",
    "GPU-bbbbbbbb-1111-2222-3333-444444444444",
    "GPU-bbbbcccc-1111-2222-3333-444444444444",
]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """Three fake H100s behind a fake pynvml; CUDA_VISIBLE_DEVICES unset."""
    nvml = FakeNvml([FakeGpu(uuid=u) for u in UUIDS])
    monkeypatch.setitem(sys.modules, "pynvml", nvml.module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return nvml


# ---- availability ----------------------------------------------------------------------------
@pytest.mark.parametrize("error", [real_pynvml.NVMLError_LibraryNotFound, real_pynvml.NVMLError_DriverNotLoaded])
def test_no_driver_means_unavailable_never_a_crash(monkeypatch: pytest.MonkeyPatch, error: type) -> None:
    nvml = FakeNvml([], init_error=error())
    monkeypatch.setitem(sys.modules, "pynvml", nvml.module)
    assert nvml_available() is False
    assert "no NVIDIA GPU/NVML" in (nvml_unavailable_reason() or "")
    assert open_device("auto") is None
    with pytest.raises(GpuUnavailable, match="no NVIDIA GPU/NVML") as info:
        open_device("nvml")
    assert isinstance(info.value, DeviceUnavailableError)
    with pytest.raises(GpuUnavailable):
        NvmlDevice(0).total_energy_mj()


def test_missing_binding_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    assert nvml_available() is False
    assert "nvidia-ml-py" in (nvml_unavailable_reason() or "")


def test_zero_gpus_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([]).module)
    assert nvml_available() is False
    assert open_device("auto") is None


def test_open_device_auto_gives_nvml_device(fake: FakeNvml) -> None:
    device = open_device("auto", index=1)
    assert isinstance(device, NvmlDevice)
    assert device.info().uuid == UUIDS[1]
    device.close()
    assert fake.calls["nvmlInit"] == fake.calls["nvmlShutdown"]


def test_nothing_touches_nvml_before_first_use(fake: FakeNvml) -> None:
    device = NvmlDevice(0)
    assert fake.calls["nvmlInit"] == 0
    device.sm_clock_mhz()
    device.mem_clock_mhz()
    assert fake.calls["nvmlInit"] == 1


# ---- CUDA_VISIBLE_DEVICES --------------------------------------------------------------------
def test_parse_cuda_visible_devices_stops_at_the_first_invalid_entry() -> None:
    assert parse_cuda_visible_devices("0,2") == ["0", "2"]
    assert parse_cuda_visible_devices(" 1 , GPU-ab ,MIG-x") == ["1", "GPU-ab", "MIG-x"]
    assert parse_cuda_visible_devices("1,-1,0") == ["1"]
    assert parse_cuda_visible_devices("") == []


def test_index_without_cuda_visible_devices_is_the_nvml_index(fake: FakeNvml) -> None:
    device = NvmlDevice(2)
    assert device.info().uuid == UUIDS[2]
    assert device.info().physical_index == 2
    with pytest.raises(GpuUnavailable, match="NVML sees 3"):
        NvmlDevice(3).ensure_open()


def test_cuda_visible_devices_by_integer(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    first = NvmlDevice(0).info()
    assert (first.index, first.physical_index, first.uuid) == (0, 2, UUIDS[2])
    assert NvmlDevice(1).info().uuid == UUIDS[0]
    with pytest.raises(GpuUnavailable, match="makes 2 GPU"):
        NvmlDevice(2).ensure_open()


def test_cuda_visible_devices_by_uuid_and_prefix(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[1]},GPU-aaaa")
    assert NvmlDevice(0).info().physical_index == 1
    assert NvmlDevice(1).info().physical_index == 0


@pytest.mark.parametrize(
    ("visible", "message"),
    [
        ("GPU-bbbb", "matches 2 GPUs"),
        ("GPU-ffff", "matches no GPU"),
        ("MIG-12345678-aaaa-bbbb-cccc-dddddddddddd", "MIG instance"),
        ("7", "names GPU 7"),
        ("", "makes 0 GPU"),
    ],
)
def test_cuda_visible_devices_errors_are_clear(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch, visible: str, message: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(GpuUnavailable, match=message):
        NvmlDevice(0).ensure_open()
    assert fake.calls["nvmlInit"] == fake.calls["nvmlShutdown"]


def test_empty_cuda_visible_devices_means_no_gpu_for_auto(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert open_device("auto") is None
    with pytest.raises(GpuUnavailable):
        open_device("nvml")


def test_negative_index_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="index"):
        NvmlDevice(-1)


# ---- units -------------------------------------------------------------------------------------
def test_units_are_converted(fake: FakeNvml) -> None:
    device = NvmlDevice(0)
    assert device.total_energy_mj() == 123_456_789
    assert device.power_limit_w() == 700.0
    assert device.power_average_w() == 300.0
    assert device.sm_clock_mhz() == 1980 and device.mem_clock_mhz() == 2619
    assert device.temperature_c() == 41.0
    assert device.utilization_pct() == (87.0, 33.0)
    assert device.memory_used_bytes() == 3 * 2**30
    assert device.clock_event_reasons() == 0x1
    assert device.supported_memory_clocks_mhz() == [2619, 1593]
    assert device.supported_sm_clocks_mhz(2619)[:2] == [1980, 1965]

    info = device.info()
    assert info.name == "NVIDIA H100 80GB HBM3"
    assert info.driver_version == "580.95.05"
    assert info.cuda_driver_version == "13.0"
    assert info.memory_total_bytes == 81559 * 2**20
    assert (info.min_power_limit_w, info.max_power_limit_w, info.default_power_limit_w) == (200.0, 700.0, 700.0)
    assert info.default_sm_clock_mhz == 1980
    assert info.compute_capability == (9, 0)
    assert info.simulated is False
    assert info.as_dict()["compute_capability"] == [9, 0]


def test_info_leaves_unreported_values_empty(fake: FakeNvml) -> None:
    fake.gpus[0].limit_constraints_mw = None
    fake.gpus[0].errors["nvmlDeviceGetCudaComputeCapability"] = real_pynvml.NVMLError_NotSupported()
    info = NvmlDevice(0).info()
    assert info.min_power_limit_w is None and info.max_power_limit_w is None
    assert info.compute_capability is None
    assert info.power_limit_w == 700.0


def test_power_instant_uses_the_instant_field(fake: FakeNvml) -> None:
    device = NvmlDevice(0)
    assert device.power_instant_w() == pytest.approx(345.678)
    assert device.power_instant_source == "nvml_field_power_instant"
    assert device.power_instant_fallback_reason is None
    assert fake.last_args["nvmlDeviceGetFieldValues"][1] == [real_pynvml.NVML_FI_DEV_POWER_INSTANT]


def test_power_instant_falls_back_to_power_usage_and_says_so(fake: FakeNvml) -> None:
    fake.gpus[0].instant_field_mw = None
    fake.gpus[0].average_field_mw = None
    device = NvmlDevice(0)
    assert device.power_instant_w() == 312.5
    assert device.power_instant_source == "nvml_power_usage"
    assert "1 s average" in (device.power_instant_fallback_reason or "")
    field_calls = fake.calls["nvmlDeviceGetFieldValues"]
    assert device.power_instant_w() == 312.5
    assert fake.calls["nvmlDeviceGetFieldValues"] == field_calls  # the unsupported field is not retried
    assert device.power_average_w() == 312.5
    assert device.power_average_fallback_reason is not None


def test_field_values_call_missing_falls_back(fake: FakeNvml) -> None:
    fake.gpus[0].errors["nvmlDeviceGetFieldValues"] = real_pynvml.NVMLError_FunctionNotFound()
    device = NvmlDevice(0)
    assert device.power_instant_w() == 312.5
    assert device.power_instant_fallback_reason is not None


def test_temperature_falls_back_when_the_v_call_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([FakeGpu(uuid=UUIDS[0], temperature_c=55)], with_temperature_v=False)
    monkeypatch.setitem(sys.modules, "pynvml", nvml.module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert NvmlDevice(0).temperature_c() == 55.0
    assert nvml.calls["nvmlDeviceGetTemperature"] == 1


def test_temperature_prefers_the_v_call(fake: FakeNvml) -> None:
    NvmlDevice(0).temperature_c()
    assert fake.calls["nvmlDeviceGetTemperatureV"] == 1
    assert fake.calls["nvmlDeviceGetTemperature"] == 0


# ---- error mapping -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("nvml_error", "expected"),
    [
        (real_pynvml.NVMLError_NotSupported, GpuNotSupported),
        (real_pynvml.NVMLError_FunctionNotFound, GpuNotSupported),
        (real_pynvml.NVMLError_NoPermission, GpuNoPermission),
        (real_pynvml.NVMLError_DriverNotLoaded, GpuUnavailable),
        (real_pynvml.NVMLError_GpuIsLost, GpuUnavailable),
        (real_pynvml.NVMLError_Unknown, GpuError),
    ],
)
def test_nvml_errors_map_to_typed_errors(fake: FakeNvml, nvml_error: type, expected: type) -> None:
    fake.gpus[0].errors["nvmlDeviceGetTotalEnergyConsumption"] = nvml_error()
    with pytest.raises(expected) as info:
        NvmlDevice(0).total_energy_mj()
    assert type(info.value) is expected
    assert "nvmlDeviceGetTotalEnergyConsumption" in str(info.value)


def test_no_permission_on_controls_names_the_rights_needed(fake: FakeNvml) -> None:
    fake.gpus[0].errors["nvmlDeviceSetGpuLockedClocks"] = real_pynvml.NVMLError_NoPermission()
    device = NvmlDevice(0)
    with pytest.raises(GpuNoPermission, match="root") as info:
        device.set_locked_sm_clocks(1410, 1410)
    assert "site helper" in str(info.value)
    assert device.requested_sm_clocks_mhz is None


def test_controls_pass_nvml_units_and_remember_the_request(fake: FakeNvml) -> None:
    device = NvmlDevice(0)
    device.set_locked_sm_clocks(1200, 1410)
    assert fake.last_args["nvmlDeviceSetGpuLockedClocks"][1:] == (1200, 1410)
    assert device.requested_sm_clocks_mhz == (1200, 1410)
    device.reset_locked_sm_clocks()
    assert device.requested_sm_clocks_mhz is None
    device.set_locked_mem_clocks(1593, 1593)
    assert fake.last_args["nvmlDeviceSetMemoryLockedClocks"][1:] == (1593, 1593)
    device.reset_locked_mem_clocks()
    device.set_power_limit_w(350.5)
    assert fake.last_args["nvmlDeviceSetPowerManagementLimit"][1:] == (350_500,)
    with pytest.raises(ConfigError, match="min_mhz"):
        device.set_locked_sm_clocks(1410, 1200)
    assert fake.calls["nvmlDeviceSetGpuLockedClocks"] == 1
    assert fake.calls["nvmlDeviceSetPowerManagementLimit"] == 1


def test_activity_counters_are_not_made_up(fake: FakeNvml) -> None:
    with pytest.raises(GpuNotSupported, match="DCGM"):
        NvmlDevice(0).activity()


def test_workload_is_a_no_op_and_close_is_idempotent(fake: FakeNvml) -> None:
    device = NvmlDevice(0)
    with device.workload():
        device.sm_clock_mhz()
    device.close()
    device.close()
    assert fake.calls["nvmlInit"] == fake.calls["nvmlShutdown"] == 1
