"""Clock control: locks go through the device layer and are validated, verified from telemetry, and
always restored (normal exit, exception, SIGINT, SIGTERM); refusals change nothing and explain.

Everything runs against the simulated GPU; the privileged-helper path runs against a fake
``subprocess.run``. No model is built here.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sdbench.errors import ConfigError
from sdbench.gpu import SimulatedGpu
from sdbench.measure.clocks import (
    HELPER_EXIT_NOPERM,
    ClockCommandError,
    ClockController,
    ClockPermissionError,
    ReadOnlyClockError,
    bin_width_mhz,
    nearest_clocks_mhz,
    validate_clock_mhz,
    verify_clock,
)
from sdbench.measure.telemetry import TelemetrySampler, TelemetrySummary

DEFAULT_LIMIT_W = 700.0


def busy_summary(gpu: SimulatedGpu, busy_s: float = 0.15, rate_hz: float = 100.0) -> TelemetrySummary:
    """Telemetry of a busy stretch on the simulated GPU (what a measured window sees)."""
    sampler = TelemetrySampler(gpu, rate_hz=rate_hz)
    with gpu.workload():
        sampler.start()
        gpu.clock.sleep(busy_s)
        summary = sampler.stop()
    return summary


def is_default(gpu: SimulatedGpu) -> bool:
    return gpu.state() == gpu.default_state


# ---- grid validation ------------------------------------------------------------------------------
def test_validation_names_field_value_and_nearby_supported_clocks() -> None:
    grid = SimulatedGpu().supported_sm_clocks_mhz(2619)
    assert validate_clock_mhz("sm_clock_mhz", 1410, grid) == 1410
    with pytest.raises(ConfigError) as exc:
        validate_clock_mhz("sm_clock_mhz", 1412, grid)
    err = exc.value
    assert err.field == "sm_clock_mhz" and err.value == 1412
    assert "1395, 1410, 1425" in str(err)
    for bad in ("1410", "1410; rm -rf /", 1410.0, True, None):
        with pytest.raises(ConfigError, match="sm_clock_mhz"):
            validate_clock_mhz("sm_clock_mhz", bad, grid)
    assert nearest_clocks_mhz(grid, 2000) == [1950, 1965, 1980]


def test_bin_width_is_the_larger_neighbouring_gap() -> None:
    grid = [1980, 1965, 1950, 360, 345]
    assert bin_width_mhz(grid, 1965) == 15
    assert bin_width_mhz(grid, 1980) == 15
    assert bin_width_mhz(grid, 360) == 1590  # irregular step: never tighter than the grid itself
    assert bin_width_mhz([1000], 1000) == 0.0


def test_controller_validates_every_setting_against_the_device() -> None:
    gpu = SimulatedGpu()
    c = ClockController(gpu, handle_signals=False)
    assert c.supported_sm_clocks_mhz()[0] == 1980
    assert c.supported_mem_clocks_mhz() == [2619, 1593]
    with pytest.raises(ConfigError, match="mem_clock_mhz"):
        c.apply(mem_clock_mhz=2000)
    with pytest.raises(ConfigError, match="power_limit_w"):
        c.apply(power_limit_w=900)
    with pytest.raises(ConfigError, match="sm_clock_mhz"):
        c.apply(sm_clock_mhz=1411, power_limit_w=300)
    assert is_default(gpu)  # a bad value anywhere changes nothing, even the good ones


# ---- lock and restore ----------------------------------------------------------------------------
def test_apply_locks_then_none_restores_each_setting() -> None:
    gpu = SimulatedGpu()
    with ClockController(gpu) as c:
        c.apply(sm_clock_mhz=1410, mem_clock_mhz=1593, power_limit_w=400)
        assert gpu.state().locked_sm_clocks_mhz == (1410, 1410)
        assert gpu.state().locked_mem_clocks_mhz == (1593, 1593)
        assert gpu.state().power_limit_w == 400
        c.apply(sm_clock_mhz=1200)  # memory and power back to the original, SM moved
        assert gpu.state().locked_sm_clocks_mhz == (1200, 1200)
        assert gpu.state().locked_mem_clocks_mhz is None
        assert gpu.state().power_limit_w == DEFAULT_LIMIT_W
        c.apply()  # the default point
        assert is_default(gpu)
        c.apply(sm_clock_mhz=900)
    assert is_default(gpu)
    assert c.last_restore is not None and c.last_restore["before"]["locked_sm_clocks_mhz"] == [900, 900]


def test_restore_on_exception_and_a_pre_existing_lock_is_put_back() -> None:
    gpu = SimulatedGpu()
    gpu.set_locked_sm_clocks(1005, 1005)  # someone else's lock, found on arrival
    with pytest.raises(RuntimeError, match="boom"), ClockController(gpu) as c:
        c.apply(sm_clock_mhz=1410)
        raise RuntimeError("boom")
    assert gpu.state().locked_sm_clocks_mhz == (1005, 1005)
    assert c.original is not None and c.original.locked_sm_clocks_mhz == (1005, 1005)


def test_sigterm_restores_then_exits_143_and_handlers_come_back() -> None:
    gpu = SimulatedGpu()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc, ClockController(gpu) as c:
        c.apply(sm_clock_mhz=1410, power_limit_w=500)
        assert signal.getsignal(signal.SIGTERM) == c._on_signal
        # raise_signal delivers to this (the main) thread, where Python runs handlers: os.kill lets the kernel
        # pick any thread of the process, and on a loaded host with torch's threads about, the handler then
        # waited for the main thread's next bytecode, after the sleep (the test failed under load).
        signal.raise_signal(signal.SIGTERM)
        time.sleep(5)  # not reached: the handler runs at once and ends the block
    assert exc.value.code == 128 + signal.SIGTERM == 143
    assert is_default(gpu)
    assert c.last_restore is not None and c.last_restore["reason"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """SIGINT as a Python program starts with it: Python's KeyboardInterrupt handler installed and the signal
    not blocked in this thread. In the whole suite on a loaded host the test below failed ("DID NOT RAISE")
    while it passed alone and in every subset tried: some earlier test or library leaves SIGINT ignored,
    handled or blocked here (not found yet), so the test states the starting point it is about."""
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)


def test_sigint_restores_then_raises_keyboard_interrupt(python_sigint: None) -> None:
    gpu = SimulatedGpu()
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), ClockController(gpu) as c:
        c.apply(sm_clock_mhz=600)
        signal.raise_signal(signal.SIGINT)  # to this thread (see the SIGTERM test)
        time.sleep(5)  # not reached
    assert is_default(gpu)
    assert c.last_restore is not None and c.last_restore["reason"] == "SIGINT"
    assert signal.getsignal(signal.SIGINT) == before


# ---- permission and read-only --------------------------------------------------------------------
def test_permission_error_changes_nothing_and_explains_the_rights_needed() -> None:
    gpu = SimulatedGpu(lock_fails=True)  # memory and power work, the SM lock is refused
    with ClockController(gpu) as c:
        with pytest.raises(ClockPermissionError) as exc:
            c.apply(sm_clock_mhz=1410, mem_clock_mhz=1593, power_limit_w=400)
        assert is_default(gpu)  # the memory lock made before the refusal was undone
        assert c.changed == frozenset()
    msg = str(exc.value)
    assert "root" in msg and "--clock-command" in msg and "Nothing was changed" in msg

    locked_out = SimulatedGpu(no_permission=True)
    with ClockController(locked_out) as c2:
        with pytest.raises(ClockPermissionError, match="root"):
            c2.apply(power_limit_w=300)
    assert is_default(locked_out)


def test_the_permission_probe_changes_nothing_and_refuses_only_what_is_refused() -> None:
    gpu = SimulatedGpu(lock_fails=True)  # the SM lock is refused; memory locks and the power limit work
    c = ClockController(gpu, handle_signals=False)
    c.probe_permission(sm=False, mem=True, power=True)
    assert is_default(gpu) and c.changed == frozenset()
    with pytest.raises(ClockPermissionError) as exc:
        c.probe_permission(sm=True)
    assert exc.value.exit_code == 3 and "permission probe" in str(exc.value)
    assert all(word in str(exc.value) for word in ("--read-only", "root", "--clock-command"))
    assert is_default(gpu) and c.changed == frozenset()
    ClockController(SimulatedGpu(no_permission=True), read_only=True).probe_permission(power=True)  # never probed
    fine = SimulatedGpu()
    ClockController(fine, handle_signals=False).probe_permission(sm=True, mem=True, power=True)
    assert is_default(fine)


def test_read_only_refuses_changes_before_touching_the_gpu_but_verifies() -> None:
    gpu = SimulatedGpu(no_permission=True)  # any control call would raise GpuNoPermission instead
    with ClockController(gpu, read_only=True) as c:
        assert c.mode == "read-only"
        with pytest.raises(ReadOnlyClockError, match="read-only mode: refusing to apply sm_clock_mhz=1410"):
            c.apply(sm_clock_mhz=1410)
        with pytest.raises(ReadOnlyClockError):
            c.set_power_limit_w(400)
        c.apply()  # the default point needs no change: fine
        result = c.verify(busy_summary(gpu), None)
    assert result.status == "read-only" and result.measured_mean_mhz == pytest.approx(1980)
    assert is_default(gpu)


# ---- the privileged helper -------------------------------------------------------------------------
class FakeRun:
    """Stands in for subprocess.run; records argv and keyword arguments."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.returncode = returncode
        self.stderr = stderr

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, self.returncode, "", self.stderr)


def test_clock_command_gets_a_plain_argv_of_validated_integers(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun()
    monkeypatch.setattr(subprocess, "run", fake)
    gpu = SimulatedGpu(index=0)
    helper = ["sudo", "-n", "/usr/local/sbin/gpu-clocks"]
    with ClockController(gpu, clock_command=helper) as c:
        assert c.mode == "command"
        c.apply(sm_clock_mhz=1410, power_limit_w=450)
        with pytest.raises(ConfigError, match="sm_clock_mhz"):
            c.apply(sm_clock_mhz="1410; rm -rf /")
        with pytest.raises(ConfigError, match="sm_clock_mhz"):
            c.lock_sm_clocks("1410", "$(reboot)")
    argvs = [argv for argv, _ in fake.calls]
    assert argvs == [
        [*helper, "lock-sm", "0", "1410", "1410"],
        [*helper, "power-limit", "0", "450"],
        [*helper, "reset-sm", "0"],  # the restore, through the helper too
        [*helper, "power-limit", "0", "700"],
    ]
    for argv, kwargs in fake.calls:
        assert kwargs["shell"] is False
        assert all(isinstance(a, str) for a in argv)
    assert is_default(gpu)  # the helper, not NVML, was asked to change things


def test_clock_command_exit_codes_map_to_typed_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = SimulatedGpu()
    monkeypatch.setattr(subprocess, "run", FakeRun(HELPER_EXIT_NOPERM, "user not in gpu-clocks group"))
    with ClockController(gpu, clock_command=["helper"]) as c, pytest.raises(ClockPermissionError, match="gpu-clocks group"):
        c.apply(sm_clock_mhz=1410)
    assert c.changed == frozenset()
    monkeypatch.setattr(subprocess, "run", FakeRun(3, "nvidia-smi: unknown GPU"))
    with ClockController(gpu, clock_command=["helper"]) as c, pytest.raises(ClockCommandError, match="exit status 3"):
        c.apply(sm_clock_mhz=1410)


def test_clock_command_must_be_an_argv_list() -> None:
    with pytest.raises(ConfigError, match="clock_command"):
        ClockController(SimulatedGpu(), clock_command="sudo helper; rm -rf /")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clock_command"):
        ClockController(SimulatedGpu(), clock_command=[])


# ---- verification ----------------------------------------------------------------------------------
def test_verify_ok_within_one_bin() -> None:
    gpu = SimulatedGpu()
    with ClockController(gpu) as c:
        c.apply(sm_clock_mhz=1410)
        result = c.verify(busy_summary(gpu), 1410)
    assert result.status == "ok" and result.ok
    assert result.error_mhz == pytest.approx(0) and result.tolerance_mhz == 15
    assert result.as_record_fields()["clock_verified"] == "ok"


def test_verify_drift_beyond_one_bin() -> None:
    gpu = SimulatedGpu(clock_drift_mhz=45)
    with ClockController(gpu) as c:
        c.apply(sm_clock_mhz=1410)
        result = c.verify(busy_summary(gpu), 1410)
    assert result.status == "drift"
    assert result.error_mhz == pytest.approx(45)
    assert "+45 MHz" in result.message
    fields = result.as_record_fields()
    assert fields["clock_verified"] == "drift" and fields["clock_error_mhz"] == pytest.approx(45)


def test_verify_thermal_throttle_is_flagged_with_reasons() -> None:
    gpu = SimulatedGpu(thermal_throttle_above_c=36.0, thermal_time_constant_s=0.05)
    with ClockController(gpu) as c:
        c.apply(sm_clock_mhz=1410)
        result = c.verify(busy_summary(gpu, busy_s=0.3), 1410)
    assert result.status == "throttled"
    assert {"sw_thermal_slowdown", "hw_thermal_slowdown"} <= set(result.throttle_reasons)
    assert result.measured_mean_mhz is not None and result.measured_mean_mhz < 1410


def test_power_cap_is_expected_in_a_power_limit_point_but_not_otherwise() -> None:
    gpu = SimulatedGpu()
    with ClockController(gpu) as c:
        c.apply(power_limit_w=300)
        summary = busy_summary(gpu)
        assert "sw_power_cap" in summary.throttle_reasons
        assert c.verify(summary, None).status == "throttled"
        assert c.verify(summary, None, expected_reasons={"sw_power_cap"}).status == "ok"


def test_verify_accepts_records_and_samples_and_never_passes_without_telemetry() -> None:
    gpu = SimulatedGpu()
    grid = gpu.supported_sm_clocks_mhz(2619)
    record = {"telemetry_available": True, "telemetry_sm_clock_mhz_mean": 1398.0, "telemetry_throttle_reasons": []}
    assert verify_clock(record, 1410, grid).status == "ok"
    record["telemetry_sm_clock_mhz_mean"] = 1380.0
    assert verify_clock(record, 1410, grid).status == "drift"
    record["telemetry_throttle_reasons"] = ["sw_power_cap"]
    assert verify_clock(record, 1410, grid).status == "throttled"
    sampler = TelemetrySampler(gpu, rate_hz=50)
    sampler.start()
    gpu.clock.sleep(0.05)
    sampler.stop()
    assert verify_clock(sampler.samples(), None, grid).status == "ok"
    none = {"telemetry_available": False, "telemetry_reason": "no NVIDIA GPU/NVML on this machine"}
    result = verify_clock(none, 1410, grid)
    assert result.status == "unverified" and "no NVIDIA GPU" in result.message
    with pytest.raises(ConfigError):
        verify_clock(42, 1410, grid)


# ---- the real NVML backend, against a fake pynvml ------------------------------------------------
def fake_pynvml(refuse: bool = False) -> tuple[Any, list[tuple[str, tuple[Any, ...]]]]:
    """A minimal ``pynvml`` over one H100-like GPU that records every call (name, arguments)."""
    import types

    import pynvml as real

    calls: list[tuple[str, tuple[Any, ...]]] = []
    module = types.ModuleType("pynvml")
    for name in dir(real):
        if name.startswith(("NVMLError", "NVML_")) or name == "NVMLLibraryMismatchError":
            setattr(module, name, getattr(real, name))

    def set_locked(handle: Any, lo: int, hi: int) -> None:
        if refuse:
            raise real.NVMLError_NoPermission()

    functions = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: "handle0",
        "nvmlDeviceGetSupportedMemoryClocks": lambda h: [2619, 1593],
        "nvmlDeviceGetSupportedGraphicsClocks": lambda h, mem: list(range(1980, 344, -15)),
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
        "nvmlDeviceSetGpuLockedClocks": set_locked,
        "nvmlDeviceResetGpuLockedClocks": lambda h: None,
        "nvmlDeviceSetMemoryLockedClocks": lambda h, lo, hi: None,
        "nvmlDeviceResetMemoryLockedClocks": lambda h: None,
        "nvmlDeviceSetPowerManagementLimit": lambda h, mw: None,
    }

    def recording(name: str, fn: Any) -> Any:
        def call(*args: Any) -> Any:
            calls.append((name, args))
            return fn(*args)
        return call

    for name, fn in functions.items():
        setattr(module, name, recording(name, fn))
    return module, calls


def test_nvml_backend_locks_with_locked_clocks_never_application_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from sdbench.gpu import NvmlDevice

    module, calls = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    device = NvmlDevice(0)
    with ClockController(device) as c:
        c.apply(sm_clock_mhz=1410)
        assert device.requested_sm_clocks_mhz == (1410, 1410)
    controls = [(name, args[1:]) for name, args in calls if "Set" in name or "Reset" in name]
    assert controls == [("nvmlDeviceSetGpuLockedClocks", (1410, 1410)), ("nvmlDeviceResetGpuLockedClocks", ())]
    assert not [name for name, _ in calls if "Applications" in name]

    refusing, calls = fake_pynvml(refuse=True)
    monkeypatch.setitem(sys.modules, "pynvml", refusing)
    device = NvmlDevice(0)
    with ClockController(device) as c, pytest.raises(ClockPermissionError, match="needs root"):
        c.apply(sm_clock_mhz=1410)
    assert [name for name, _ in calls if "Reset" in name] == []  # nothing was changed, so nothing is reset
