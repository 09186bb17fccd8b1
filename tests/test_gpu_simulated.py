"""The simulated GPU follows its documented model, and its faults behave like real ones."""

from __future__ import annotations

import json
import threading
import time

import pytest
from testsupport import fast_gpu

from sdbench.errors import ConfigError, DeviceUnavailableError
from sdbench.gpu import (
    CLOCK_EVENT_REASON_BITS,
    THROTTLE_REASONS,
    GpuNoPermission,
    GpuNotSupported,
    GpuUnavailable,
    SimulatedGpu,
    decode_clock_event_reasons,
    is_throttled,
    open_device,
)

IDLE_W = 70.0


def busy_clock_mhz(gpu: SimulatedGpu) -> int:
    with gpu.workload():
        return gpu.sm_clock_mhz()


# ---- clock grid and identity -----------------------------------------------------------------
def test_clock_grid_comes_from_parameters_descending() -> None:
    gpu = SimulatedGpu()
    assert gpu.supported_memory_clocks_mhz() == [2619, 1593]
    grid = gpu.supported_sm_clocks_mhz(2619)
    assert grid[0] == 1980 and grid[-1] == 345
    assert grid == sorted(grid, reverse=True)
    assert {a - b for a, b in zip(grid, grid[1:])} == {15}

    coarse = SimulatedGpu(max_sm_clock_mhz=1000, min_sm_clock_mhz=300, sm_clock_step_mhz=300, memory_clocks_mhz=[1000])
    assert coarse.supported_sm_clocks_mhz(1000) == [1000, 700, 400, 300]


def test_sm_clocks_for_unknown_memory_clock_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mem_clock_mhz"):
        SimulatedGpu().supported_sm_clocks_mhz(1234)


def test_info_marks_the_device_simulated_and_serialises() -> None:
    info = SimulatedGpu(index=3).info()
    assert info.simulated is True
    assert "simulated" in info.name
    assert info.index == 3
    assert info.max_sm_clock_mhz == 1980
    assert (info.min_power_limit_w, info.default_power_limit_w, info.max_power_limit_w) == (200, 700, 700)
    json.dumps(info.as_dict())


# ---- the model ---------------------------------------------------------------------------------
def test_model_full_load_power_and_interior_energy_optimum() -> None:
    gpu = SimulatedGpu()
    assert gpu.expected_busy_power_w(1980) == pytest.approx(650.0)
    assert gpu.expected_time_scale(1980) == pytest.approx(1.0)
    assert gpu.expected_time_scale(990) == pytest.approx(0.3 + 0.7 * 2)
    f_opt = gpu.expected_energy_optimal_sm_clock_mhz()
    assert 1200 <= f_opt <= 1400
    e_opt = gpu.expected_energy_per_ref_s_j(f_opt)
    # A clear minimum: several percent below both ends of the grid.
    assert e_opt < 0.95 * gpu.expected_energy_per_ref_s_j(1980)
    assert e_opt < 0.7 * gpu.expected_energy_per_ref_s_j(345)


def test_bad_model_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="full_load_power_w"):
        SimulatedGpu(full_load_power_w=100.0)
    with pytest.raises(ConfigError, match="unsupported"):
        SimulatedGpu(unsupported={"no_such_method"})


def test_idle_and_busy_power_clock_and_reasons() -> None:
    gpu = fast_gpu()
    assert gpu.power_instant_w() == pytest.approx(70.0)
    assert gpu.sm_clock_mhz() == 345
    assert gpu.clock_event_reasons() == CLOCK_EVENT_REASON_BITS["gpu_idle"]
    assert gpu.utilization_pct() == (0.0, 0.0)
    with gpu.workload():
        assert gpu.power_instant_w() == pytest.approx(650.0)
        assert gpu.sm_clock_mhz() == 1980
        assert gpu.clock_event_reasons() == 0
        gpu_pct, mem_pct = gpu.utilization_pct()
        assert gpu_pct == 100.0 and 0 < mem_pct < 100
    assert gpu.power_instant_w() == pytest.approx(70.0)


def test_power_average_is_a_trailing_window_average() -> None:
    gpu = fast_gpu(power_average_window_s=0.1)
    time.sleep(0.12)
    assert gpu.power_average_w() == pytest.approx(70.0)
    with gpu.workload():
        time.sleep(0.15)
        assert gpu.power_average_w() == pytest.approx(650.0)
        # Moments after the switch, the average still remembers the idle part.
    with gpu.workload():
        pass
    mixed_w = gpu.power_average_w()
    assert 70.0 < mixed_w < 650.0


def test_counter_is_quantised_to_its_update_period() -> None:
    period_s = 0.05
    tick_mj = IDLE_W * period_s * 1000.0
    gpu = SimulatedGpu(energy_update_period_s=period_s, initial_energy_mj=10**9)
    values = []
    deadline = time.perf_counter() + 0.33
    while time.perf_counter() < deadline:
        values.append(gpu.total_energy_mj())
        time.sleep(0.001)
    changes_mj = [b - a for a, b in zip(values, values[1:]) if b != a]
    # Every change is a whole number of updates, each worth one period of idle power (the
    # floor to whole mJ moves each by at most 1 mJ); a slow poll may see two updates as one.
    ticks = [round(delta / tick_mj) for delta in changes_mj]
    for delta_mj, n in zip(changes_mj, ticks):
        assert n >= 1 and delta_mj == pytest.approx(n * tick_mj, abs=1.5)
    assert 5 <= sum(ticks) <= 7  # 0.33 s / 0.05 s
    assert values[0] >= 10**9


def test_activity_counters_follow_the_model() -> None:
    gpu = fast_gpu()
    assert gpu.activity() == {"sm_active": 0.0, "tensor_active": 0.0, "dram_active": 0.0, "fp16_active": 0.0}
    with gpu.workload():
        at_max = gpu.activity()
    gpu.set_locked_sm_clocks(690, 690)
    with gpu.workload():
        at_low = gpu.activity()
    assert at_max["sm_active"] == 1.0
    assert at_max["dram_active"] == pytest.approx(0.3)
    # At a low SM clock the compute part takes longer, so memory is the smaller share.
    assert at_low["dram_active"] < at_max["dram_active"]
    assert at_low["tensor_active"] > at_max["tensor_active"]
    for value in (*at_max.values(), *at_low.values()):
        assert 0.0 <= value <= 1.0


# ---- workload stretch ----------------------------------------------------------------------------
def stretch_ratio(gpu: SimulatedGpu, inside_s: float = 0.12) -> float:
    """Wall time of a workload divided by the time spent in its body."""
    t_outer = time.perf_counter()
    with gpu.workload():
        t_in = time.perf_counter()
        time.sleep(inside_s)
        t_body = time.perf_counter() - t_in
    return (time.perf_counter() - t_outer) / t_body


def test_workload_at_max_clock_is_not_stretched() -> None:
    assert stretch_ratio(fast_gpu()) == pytest.approx(1.0, abs=0.15)


def test_workload_at_low_clock_takes_the_models_factor_longer() -> None:
    gpu = fast_gpu()
    gpu.set_locked_sm_clocks(990, 990)
    expected = gpu.expected_time_scale(990)
    assert expected == pytest.approx(1.7)
    assert stretch_ratio(gpu) == pytest.approx(expected, rel=0.12)


def test_locked_memory_clock_slows_the_memory_bound_part() -> None:
    gpu = fast_gpu()
    gpu.set_locked_mem_clocks(1593, 1593)
    assert gpu.mem_clock_mhz() == 1593
    expected = gpu.expected_time_scale(1980, 1593)
    assert expected == pytest.approx(0.3 * 2619 / 1593 + 0.7)
    assert stretch_ratio(gpu) == pytest.approx(expected, rel=0.12)


def test_exception_inside_workload_ends_it_without_stretch() -> None:
    gpu = fast_gpu()
    gpu.set_locked_sm_clocks(345, 345)
    t_raise = 0.0
    with pytest.raises(KeyError), gpu.workload():
        time.sleep(0.05)
        t_raise = time.perf_counter()
        raise KeyError("boom")
    # A stretch at 345 MHz would have added about 0.12 s; nothing like it happened.
    stretch_s = 0.05 * (gpu.expected_time_scale(345) - 1.0)
    assert time.perf_counter() - t_raise < 0.5 * stretch_s
    assert gpu.clock_event_reasons() & CLOCK_EVENT_REASON_BITS["gpu_idle"]


def test_nested_workloads_stretch_once() -> None:
    gpu = fast_gpu()
    gpu.set_locked_sm_clocks(990, 990)
    t_outer = time.perf_counter()
    with gpu.workload():
        t_in = time.perf_counter()
        with gpu.workload():
            time.sleep(0.06)
        time.sleep(0.06)
        t_body = time.perf_counter() - t_in
    assert (time.perf_counter() - t_outer) / t_body == pytest.approx(1.7, rel=0.15)


def test_workload_utilisation_must_be_a_fraction() -> None:
    with pytest.raises(ConfigError, match="utilization"), SimulatedGpu().workload(utilization=1.5):
        pass


# ---- clock locks, faults, resets -------------------------------------------------------------------
def test_lock_validation_against_the_grid() -> None:
    gpu = fast_gpu()
    with pytest.raises(ConfigError, match="max_mhz: 1000") as info:
        gpu.set_locked_sm_clocks(990, 1000)
    assert info.value.field == "max_mhz"
    assert "15 MHz steps" in str(info.value)
    with pytest.raises(ConfigError, match="min_mhz"):
        gpu.set_locked_sm_clocks(1500, 990)
    with pytest.raises(ConfigError, match="min_mhz"):
        gpu.set_locked_mem_clocks(2000, 2619)
    assert gpu.state() == gpu.default_state


def test_lock_then_reset_restores_the_default_state() -> None:
    gpu = fast_gpu()
    default = gpu.state()
    assert default == gpu.default_state
    assert default.locked_sm_clocks_mhz is None and default.power_limit_w == 700.0

    gpu.set_locked_sm_clocks(990, 1200)
    gpu.set_locked_mem_clocks(1593, 1593)
    gpu.set_power_limit_w(450)
    assert gpu.state().locked_sm_clocks_mhz == (990, 1200)
    assert gpu.state().locked_mem_clocks_mhz == (1593, 1593)
    assert gpu.power_limit_w() == 450.0
    assert gpu.sm_clock_mhz() == 990  # idle rests at the locked minimum
    assert busy_clock_mhz(gpu) == 1200
    with gpu.workload():
        assert gpu.clock_event_reasons() & CLOCK_EVENT_REASON_BITS["applications_clocks_setting"]

    gpu.reset_locked_sm_clocks()
    gpu.reset_locked_mem_clocks()
    gpu.set_power_limit_w(gpu.info().default_power_limit_w or 0.0)
    assert gpu.state() == default
    assert busy_clock_mhz(gpu) == 1980


def test_clock_drift_fault_offsets_the_achieved_clock() -> None:
    gpu = fast_gpu(clock_drift_mhz=-30)
    gpu.set_locked_sm_clocks(1410, 1410)
    assert busy_clock_mhz(gpu) == 1380
    with gpu.workload():
        assert gpu.power_instant_w() == pytest.approx(gpu.expected_busy_power_w(1380))


def test_lock_fails_fault_raises_no_permission_naming_root() -> None:
    gpu = fast_gpu(lock_fails=True)
    with pytest.raises(GpuNoPermission, match="root") as info:
        gpu.set_locked_sm_clocks(990, 990)
    assert "set_locked_sm_clocks" in str(info.value)
    assert gpu.state() == gpu.default_state
    gpu.set_power_limit_w(500)  # only clock locking is broken


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("set_locked_sm_clocks", (990, 990)),
        ("reset_locked_sm_clocks", ()),
        ("set_locked_mem_clocks", (1593, 1593)),
        ("reset_locked_mem_clocks", ()),
        ("set_power_limit_w", (400,)),
    ],
)
def test_no_permission_fault_blocks_every_control(method: str, args: tuple[int, ...]) -> None:
    gpu = fast_gpu(no_permission=True)
    with pytest.raises(GpuNoPermission, match="root"):
        getattr(gpu, method)(*args)
    assert gpu.state() == gpu.default_state
    assert gpu.sm_clock_mhz() == 345  # queries still work


def test_unsupported_fault_raises_gpu_not_supported() -> None:
    gpu = fast_gpu(unsupported={"total_energy_mj", "temperature_c"})
    with pytest.raises(GpuNotSupported, match="total_energy_mj"):
        gpu.total_energy_mj()
    with pytest.raises(GpuNotSupported):
        gpu.temperature_c()
    assert gpu.power_instant_w() > 0


def test_power_cap_lowers_the_clock_to_the_highest_fitting_bin() -> None:
    gpu = fast_gpu()
    with pytest.raises(ConfigError, match="power_limit_w"):
        gpu.set_power_limit_w(150)
    gpu.set_power_limit_w(400)
    with gpu.workload():
        clock_mhz = gpu.sm_clock_mhz()
        power_w = gpu.power_instant_w()
        reasons = gpu.clock_event_reasons()
    assert clock_mhz < 1980
    assert power_w <= 400.0
    assert gpu.expected_busy_power_w(clock_mhz) <= 400.0 < gpu.expected_busy_power_w(clock_mhz + 15)
    assert "sw_power_cap" in decode_clock_event_reasons(reasons)
    assert is_throttled(reasons)
    # The capped clock also sets the pace of the work.
    assert stretch_ratio(gpu) == pytest.approx(gpu.expected_time_scale(clock_mhz), rel=0.12)


def test_thermal_fault_throttles_and_recovers() -> None:
    gpu = fast_gpu(thermal_throttle_above_c=50.0, thermal_time_constant_s=0.05)
    assert gpu.temperature_c() < 50.0
    with gpu.workload():
        time.sleep(0.15)
        hot_c = gpu.temperature_c()
        clock_mhz = gpu.sm_clock_mhz()
        reasons = decode_clock_event_reasons(gpu.clock_event_reasons())
    assert hot_c > 50.0
    assert clock_mhz < 1980
    assert {"sw_thermal_slowdown", "hw_thermal_slowdown"} <= set(reasons)
    time.sleep(0.3)
    assert gpu.temperature_c() < 48.0
    assert gpu.clock_event_reasons() == CLOCK_EVENT_REASON_BITS["gpu_idle"]


def test_energy_integrates_busy_and_idle_segments() -> None:
    gpu = fast_gpu(energy_update_period_s=0.001)
    gpu.set_locked_sm_clocks(1200, 1200)
    e0_mj, t0 = gpu.total_energy_mj(), time.perf_counter()
    with gpu.workload():
        t_busy = time.perf_counter()
        time.sleep(0.1)
    t_idle = time.perf_counter()
    time.sleep(0.05)
    e1_mj, t1 = gpu.total_energy_mj(), time.perf_counter()
    busy_s, idle_s = t_idle - t_busy, (t1 - t0) - (t_idle - t_busy)
    expected_j = gpu.expected_busy_power_w(1200) * busy_s + 70.0 * idle_s
    # Edges: one counter period and the few microseconds between the reads and the marks.
    assert (e1_mj - e0_mj) / 1000.0 == pytest.approx(expected_j, rel=0.03)


def test_concurrent_readers_see_a_monotonic_counter() -> None:
    gpu = fast_gpu(energy_update_period_s=0.002, thermal_throttle_above_c=60.0, thermal_time_constant_s=0.1)
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        last = -1
        while not stop.is_set():
            value = gpu.total_energy_mj()
            if value < last:
                problems.append(f"counter went back {last} -> {value}")
            last = value
            gpu.power_instant_w()
            gpu.sm_clock_mhz()

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(4):
        with gpu.workload():
            time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    assert problems == []


# ---- reasons and open_device -----------------------------------------------------------------------
def test_decode_clock_event_reasons() -> None:
    assert decode_clock_event_reasons(0) == []
    assert decode_clock_event_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert decode_clock_event_reasons(0x1 | 0x1000) == ["gpu_idle", "unknown_0x1000"]
    assert THROTTLE_REASONS == {
        "sw_power_cap",
        "hw_slowdown",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
    }
    assert not is_throttled(CLOCK_EVENT_REASON_BITS["gpu_idle"] | CLOCK_EVENT_REASON_BITS["applications_clocks_setting"])
    assert is_throttled(CLOCK_EVENT_REASON_BITS["hw_power_brake_slowdown"])


def test_open_device_kinds() -> None:
    gpu = open_device("simulated", index=2)
    assert isinstance(gpu, SimulatedGpu) and gpu.info().index == 2
    assert open_device("none") is None
    with pytest.raises(ConfigError, match="auto, nvml, simulated, none"):
        open_device("cuda")


def test_gpu_unavailable_is_a_device_unavailable_error() -> None:
    assert issubclass(GpuUnavailable, DeviceUnavailableError)


def test_power_report_lag_trails_the_load() -> None:
    """A real H100's instantaneous power trails the load by ~0.25 s; the simulation can do the same."""
    gpu = SimulatedGpu(power_report_lag_s=0.4)
    idle_w = gpu.power_instant_w()
    with gpu.workload():
        time.sleep(0.05)
        assert gpu.power_instant_w() == pytest.approx(idle_w)  # the load started < lag ago: still reads idle
        time.sleep(0.6)
        busy_w = gpu.power_instant_w()
        assert busy_w > idle_w  # the load started > lag ago
    time.sleep(0.05)
    assert gpu.power_instant_w() == pytest.approx(busy_w)  # ended < lag ago: still reads busy
    time.sleep(0.6)
    assert gpu.power_instant_w() == pytest.approx(idle_w)


def test_negative_power_report_lag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="power_report_lag_s"):
        SimulatedGpu(power_report_lag_s=-0.1)
