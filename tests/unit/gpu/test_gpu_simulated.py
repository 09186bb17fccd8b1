"""The simulated GPU follows its documented model on its virtual clock, and its faults behave like real ones.

Time on the simulated device moves only through modelled work (``execute``, ``execute_ref_s``, the
Runner's call events) and ``gpu.clock.sleep``, so every number here is exact: nothing reads the host's
wall clock, and the same calls give the same numbers on an idle or a loaded host.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
from collections.abc import Callable
from typing import Any

import pytest
from testsupport import fast_gpu

from sdbench.errors import ConfigError, DeviceUnavailableError
from sdbench.gpu import (
    CARDS,
    CLOCK_EVENT_REASON_BITS,
    SIMULATED_DEFAULT_NOISE,
    THROTTLE_REASONS,
    GpuNoPermission,
    GpuNotSupported,
    GpuUnavailable,
    SimulatedGpu,
    decode_clock_event_reasons,
    is_throttled,
    open_device,
    parse_simulated_device,
)
from sdbench.gpu.clock import VirtualClock
from sdbench.gpu.simulated import (
    COMPUTE_MEMORY_ACTIVITY,
    LATENCY_SM_ACTIVITY,
    SIMULATED_METHOD_NAMES,
    Work,
    WorkAmount,
    WorkProfile,
)

IDLE_W = 70.0  # the H100's idle power
BARE_BUSY_W = 602.8  # 70 + 60 static + 120 x 0.44 memory + 600 x 0.7 SM: a bare workload at the top clocks
IDLE = CLOCK_EVENT_REASON_BITS["gpu_idle"]
APP_CLOCKS = CLOCK_EVENT_REASON_BITS["applications_clocks_setting"]
POWER_CAP = CLOCK_EVENT_REASON_BITS["sw_power_cap"]
THERMAL = CLOCK_EVENT_REASON_BITS["sw_thermal_slowdown"] | CLOCK_EVENT_REASON_BITS["hw_thermal_slowdown"]

#: A small call dominated by tensor-core FLOPs (a UNet-like step), four UNet evaluations.
COMPUTE_BOUND = WorkProfile(
    text=WorkAmount(flop=2e10, bytes=1e7, kernels=20),
    unet_eval=WorkAmount(flop=2e12, bytes=2e8, kernels=200),
    vae_decode=WorkAmount(flop=1e12, bytes=2e8, kernels=100),
    unet_evals=4,
)
#: A call dominated by bytes moved (little arithmetic per byte).
MEMORY_BOUND = WorkProfile(
    text=WorkAmount(flop=0.0, bytes=1e9, kernels=10),
    unet_eval=WorkAmount(flop=1e9, bytes=5e10, kernels=100),
    vae_decode=WorkAmount(flop=0.0, bytes=1e10, kernels=10),
    unet_evals=3,
)


def busy_clock_mhz(gpu: SimulatedGpu) -> int:
    with gpu.workload():
        return gpu.sm_clock_mhz()


def run_call(gpu: SimulatedGpu, steps: int | None = None) -> float:
    """One pipeline call through the Runner's events; returns its virtual duration."""
    t0 = gpu.clock.now_s()
    gpu.on_event("start")
    gpu.on_event("text_end")
    if steps is None:
        steps = gpu.work_profile.unet_evals if gpu.work_profile is not None else 0
    for _ in range(steps):
        gpu.on_event("step")
    gpu.on_event("decode_end")
    gpu.on_event("end")
    return gpu.clock.now_s() - t0


def counter_j_at_next_update(gpu: SimulatedGpu) -> tuple[float, float]:
    """Idle until the energy counter's next update (the device was built at t=0); return (counter in J,
    idle seconds slept to get there)."""
    period = gpu.energy_update_period_s
    now = gpu.clock.now_s()
    tick = math.ceil(now / period - 1e-9) * period
    idle_s = max(0.0, tick - now)
    gpu.clock.sleep(idle_s)
    return gpu.total_energy_mj() / 1000.0, idle_s


def sample_every(gpu: SimulatedGpu, period_s: float, read: Callable[[], Any]) -> list[Any]:
    """Register a sampler on the device's clock (fires at exact tick times while work runs)."""
    samples: list[Any] = []

    def tick() -> None:
        samples.append(read())

    gpu.clock.every(period_s, tick)
    return samples


# ---- clock grid and identity -----------------------------------------------------------------
def test_clock_grid_comes_from_parameters_descending() -> None:
    gpu = SimulatedGpu()
    assert gpu.supported_memory_clocks_mhz() == [2619, 1593]
    grid = gpu.supported_sm_clocks_mhz(2619)
    assert grid[0] == 1980 and grid[-1] == 345
    assert grid == sorted(grid, reverse=True)
    assert {a - b for a, b in zip(grid, grid[1:])} == {15}
    assert gpu.supported_sm_clocks_mhz(1593) == grid

    coarse = SimulatedGpu(max_sm_clock_mhz=1000, min_sm_clock_mhz=300, sm_clock_step_mhz=300, memory_clocks_mhz=[1000])
    assert coarse.supported_sm_clocks_mhz(1000) == [1000, 700, 400, 300]


def test_sm_clocks_for_unknown_memory_clock_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mem_clock_mhz") as info:
        SimulatedGpu().supported_sm_clocks_mhz(1234)
    assert info.value.allowed == "2619, 1593"


def test_info_marks_the_device_simulated_and_serialises() -> None:
    info = SimulatedGpu(index=3).info()
    assert info.simulated is True
    assert "simulated" in info.name
    assert info.index == 3 and info.physical_index == 3
    assert info.max_sm_clock_mhz == info.default_sm_clock_mhz == 1980
    assert (info.min_power_limit_w, info.default_power_limit_w, info.max_power_limit_w) == (200, 700, 700)
    assert info.uuid != SimulatedGpu(index=4).info().uuid
    json.dumps(info.as_dict())


def test_describe_names_the_card_noise_and_virtual_clock() -> None:
    gpu = SimulatedGpu(card="a100", noise_cv=0.03, noise_seed=7, clock_drift_mhz=-15)
    described = gpu.describe()
    assert described["card"] == "a100"
    assert (described["noise_cv"], described["noise_seed"], described["clock_drift_mhz"]) == (0.03, 7, -15)
    assert described["clock"] == "virtual"
    assert isinstance(gpu.clock, VirtualClock) and gpu.clock.virtual


# ---- the model ---------------------------------------------------------------------------------
def test_model_full_load_power_and_interior_energy_optimum() -> None:
    gpu = SimulatedGpu()
    assert gpu.expected_busy_power_w(1980) == pytest.approx(BARE_BUSY_W)
    assert gpu.expected_time_scale(1980) == pytest.approx(1.0)
    assert gpu.expected_time_scale(990) == pytest.approx(0.3 + 0.7 * 2)
    f_opt = gpu.expected_energy_optimal_sm_clock_mhz()
    assert 345 < f_opt < 1980
    e_opt = gpu.expected_energy_per_ref_s_j(f_opt)
    # A clear minimum: several percent below both ends of the grid.
    assert e_opt < 0.95 * gpu.expected_energy_per_ref_s_j(1980)
    assert e_opt < 0.7 * gpu.expected_energy_per_ref_s_j(345)


def test_time_and_power_follow_the_documented_formulas() -> None:
    """t(f, f_m) = (compute + latency) f_max/f + memory f_m,max/f_m, and P from the convex voltage curve."""
    gpu = SimulatedGpu()
    work = Work(compute_s=0.02, memory_s=0.01, latency_s=0.005)
    f, fm = 1200.0, 1593.0
    t = (0.02 + 0.005) * 1980 / f + 0.01 * 2619 / fm
    x = (f - 345) / (1980 - 345)
    v = 0.60 + (1.05 - 0.60) * x * x
    a_sm = (0.02 * 1980 / f + LATENCY_SM_ACTIVITY * 0.005 * 1980 / f) / t
    a_mem = (0.01 * 2619 / fm + COMPUTE_MEMORY_ACTIVITY * 0.02 * 1980 / f) / t
    power_w = 70 + 60 + 120 * (fm / 2619) * a_mem + 600 * (f * v * v) / (1980 * 1.05**2) * a_sm
    assert gpu.expected_time_scale(f, fm, work=work) * work.total_s == pytest.approx(t, rel=1e-12)
    assert gpu.expected_busy_power_w(f, fm, work=work) == pytest.approx(power_w, rel=1e-12)

    gpu.set_locked_sm_clocks(1200, 1200)
    gpu.set_locked_mem_clocks(1593, 1593)
    e0_j, _ = counter_j_at_next_update(gpu)
    taken_s = gpu.execute(work)
    e1_j, idle_s = counter_j_at_next_update(gpu)
    assert taken_s == pytest.approx(t, rel=1e-12)
    assert e1_j - e0_j == pytest.approx(power_w * t + IDLE_W * idle_s, abs=1e-3)


def test_work_for_converts_flop_bytes_and_kernels_with_the_cards_rates() -> None:
    gpu = SimulatedGpu(card="a100")
    work = gpu.work_for(WorkAmount(flop=3.12e12, bytes=1.555e9, kernels=1000), "fp16")
    assert work.compute_s == pytest.approx(3.12e12 / (312e12 * 0.6))
    assert work.memory_s == pytest.approx(1.555e9 * 0.3 / (1555e9 * 0.7))
    assert work.latency_s == pytest.approx(1000 * 5e-6)
    assert gpu.work_for(WorkAmount(flop=1e12), "fp32").compute_s == pytest.approx(1e12 / (19.5e12 * 0.6))
    with pytest.raises(ConfigError, match="dtype"):
        gpu.work_for(WorkAmount(flop=1.0), "fp8")  # the A100 has no fp8 tensor rate


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"v_min": 1.2}, "v_min"),
        ({"noise_cv": 1.0}, "noise_cv"),
        ({"power_noise_cv": -0.1}, "power_noise_cv"),
        ({"outlier_probability": 1.0}, "outlier_probability"),
        ({"outlier_factor": 0.5}, "outlier_factor"),
        ({"energy_update_period_s": 0.0}, "energy_update_period_s"),
        ({"thermal_time_constant_s": 0.0}, "thermal_time_constant_s"),
        ({"thermal_throttle_factor": 1.5}, "thermal_throttle_factor"),
        ({"min_sm_clock_mhz": 2000}, "min_sm_clock_mhz"),
        ({"sm_clock_step_mhz": 0}, "sm_clock_step_mhz"),
        ({"memory_clocks_mhz": []}, "memory_clocks_mhz"),
        ({"default_power_limit_w": 800.0}, "default_power_limit_w"),
        ({"power_report_lag_s": -0.1}, "power_report_lag_s"),
        ({"unsupported": {"no_such_method"}}, "unsupported"),
        ({"card": "b200"}, "simulated card"),
    ],
)
def test_bad_model_parameters_are_config_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        SimulatedGpu(**kwargs)
    assert info.value.field == field


def test_idle_and_busy_power_clock_and_reasons() -> None:
    gpu = fast_gpu()
    assert gpu.power_instant_w() == IDLE_W
    assert gpu.sm_clock_mhz() == 345
    assert gpu.mem_clock_mhz() == 2619
    assert gpu.clock_event_reasons() == IDLE
    assert gpu.utilization_pct() == (0.0, 0.0)
    with gpu.workload():
        assert gpu.power_instant_w() == pytest.approx(BARE_BUSY_W)
        assert gpu.sm_clock_mhz() == 1980
        assert gpu.clock_event_reasons() == 0
        gpu_pct, mem_pct = gpu.utilization_pct()
        assert gpu_pct == 100.0 and mem_pct == pytest.approx(30.0)
    assert gpu.power_instant_w() == IDLE_W
    assert gpu.clock.now_s() == 0.0  # reading and marking busy take no virtual time


def test_partial_utilisation_scales_the_busy_power() -> None:
    gpu = fast_gpu()
    with gpu.workload(utilization=0.5):
        assert gpu.power_instant_w() == pytest.approx(IDLE_W + 0.5 * (BARE_BUSY_W - IDLE_W))
        assert gpu.utilization_pct()[0] == 50.0
        assert gpu.activity()["sm_active"] == 0.5


def test_power_average_is_a_trailing_window_average() -> None:
    gpu = fast_gpu(power_average_window_s=0.1)
    assert gpu.power_average_w() == IDLE_W  # no time yet: the current power
    gpu.clock.sleep(0.12)
    assert gpu.power_average_w() == pytest.approx(IDLE_W)
    with gpu.workload():
        gpu.clock.sleep(0.15)
        assert gpu.power_average_w() == pytest.approx(BARE_BUSY_W)
        gpu.clock.sleep(0.04)
    gpu.clock.sleep(0.06)
    # The last 0.1 s: 0.04 s busy, 0.06 s idle.
    assert gpu.power_average_w() == pytest.approx(0.4 * BARE_BUSY_W + 0.6 * IDLE_W)


def test_power_average_is_shorter_right_after_construction() -> None:
    gpu = fast_gpu(power_average_window_s=1.0)
    with gpu.workload():
        gpu.clock.sleep(0.2)
    gpu.clock.sleep(0.2)
    assert gpu.power_average_w() == pytest.approx((BARE_BUSY_W + IDLE_W) / 2)


def test_counter_is_quantised_to_its_update_period() -> None:
    period_s = 0.05
    gpu = SimulatedGpu(energy_update_period_s=period_s, initial_energy_mj=10**9)
    assert gpu.total_energy_mj() == 10**9
    for ms in range(1, 331):
        gpu.clock.sleep(0.001)
        # Every 50 ms the counter moves by one period of idle power: 70 W x 0.05 s = 3500 mJ.
        assert gpu.total_energy_mj() == 10**9 + 3500 * (ms // 50), ms
    with gpu.workload():
        for ms in range(1, 201):
            gpu.clock.sleep(0.001)
            # 0.33 s idle, then busy: the counter holds the energy at the last whole 50 ms, in whole mJ.
            tick_ms = (330 + ms) // 50 * 50
            expected_mj = IDLE_W * min(tick_ms, 330) + BARE_BUSY_W * max(0, tick_ms - 330)
            assert gpu.total_energy_mj() == 10**9 + math.floor(expected_mj + 1e-6), ms


def test_activity_counters_follow_the_model() -> None:
    gpu = fast_gpu()
    assert gpu.activity() == {"sm_active": 0.0, "tensor_active": 0.0, "dram_active": 0.0, "fp16_active": 0.0}
    with gpu.workload():
        at_max = gpu.activity()
    gpu.set_locked_sm_clocks(690, 690)
    with gpu.workload():
        at_low = gpu.activity()
    assert at_max == pytest.approx({"sm_active": 1.0, "tensor_active": 0.7 * 0.8, "dram_active": 0.3,
                                    "fp16_active": 0.7 * 0.15})
    # At a low SM clock the compute part takes longer, so memory is the smaller share.
    t = 0.7 * 1980 / 690 + 0.3
    compute_share = 0.7 * 1980 / 690 / t
    assert at_low == pytest.approx({"sm_active": 1.0, "tensor_active": compute_share * 0.8, "dram_active": 0.3 / t,
                                    "fp16_active": compute_share * 0.15})


def test_activity_of_modelled_work_is_its_mix_at_the_current_clock() -> None:
    gpu = fast_gpu()
    memory_work = Work(compute_s=0.0, memory_s=0.1, latency_s=0.0)
    seen = sample_every(gpu, 0.01, gpu.activity)
    gpu.execute(memory_work)
    assert seen and all(a["dram_active"] == pytest.approx(1.0) and a["tensor_active"] == 0.0 for a in seen)


# ---- time on the virtual clock -----------------------------------------------------------------------
def test_work_at_max_clock_takes_its_reference_time() -> None:
    gpu = fast_gpu()
    assert gpu.execute_ref_s(0.12) == pytest.approx(0.12, rel=1e-12)
    assert gpu.clock.now_s() == pytest.approx(0.12, rel=1e-12)
    assert gpu.execute_ref_s(0.0) == 0.0 and gpu.execute(Work(0.0, 0.0, 0.0)) == 0.0


def test_work_at_low_clock_takes_the_models_factor_longer() -> None:
    gpu = fast_gpu()
    gpu.set_locked_sm_clocks(990, 990)
    expected = gpu.expected_time_scale(990)
    assert expected == pytest.approx(1.7)
    assert gpu.execute_ref_s(0.12) == pytest.approx(0.12 * 1.7, rel=1e-12)
    assert gpu.clock.now_s() == pytest.approx(0.12 * 1.7, rel=1e-12)
    assert gpu.power_instant_w() == IDLE_W  # idle again once the work is done


def test_locked_memory_clock_slows_the_memory_bound_part() -> None:
    gpu = fast_gpu()
    gpu.set_locked_mem_clocks(1593, 1593)
    assert gpu.mem_clock_mhz() == 1593
    expected = gpu.expected_time_scale(1980, 1593)
    assert expected == pytest.approx(0.3 * 2619 / 1593 + 0.7)
    assert gpu.execute_ref_s(0.12) == pytest.approx(0.12 * expected, rel=1e-12)
    gpu.set_locked_sm_clocks(1260, 1260)  # (pure compute at 1980 MHz would be power capped)
    compute_only = Work(compute_s=0.1, memory_s=0.0, latency_s=0.0)
    assert gpu.execute(compute_only) == pytest.approx(0.1 * 1980 / 1260, rel=1e-12)  # the SM part ignores it


def test_sleep_inside_a_workload_is_busy_time_at_the_current_clock() -> None:
    gpu = fast_gpu(energy_update_period_s=0.001)
    gpu.set_locked_sm_clocks(990, 990)
    with gpu.workload():
        gpu.clock.sleep(0.2)
    assert gpu.clock.now_s() == pytest.approx(0.2)  # a sleep is the caller's time: the clock does not stretch it
    assert gpu.total_energy_mj() == math.floor(1000 * 0.2 * gpu.expected_busy_power_w(990) + 1e-6)


def test_exception_inside_workload_ends_it_without_moving_the_clock() -> None:
    gpu = fast_gpu()
    gpu.set_locked_sm_clocks(345, 345)
    with pytest.raises(KeyError), gpu.workload():
        gpu.clock.sleep(0.05)
        raise KeyError("boom")
    assert gpu.clock.now_s() == pytest.approx(0.05)
    assert gpu.clock_event_reasons() & IDLE
    assert gpu.power_instant_w() == IDLE_W


def test_exception_inside_a_timer_during_work_does_not_break_the_work() -> None:
    gpu = fast_gpu()

    def boom() -> None:
        raise RuntimeError("sampler broke")

    timer = gpu.clock.every(0.01, boom)
    assert gpu.execute_ref_s(0.1) == pytest.approx(0.1, rel=1e-12)
    assert isinstance(timer.cancel(), RuntimeError)


def test_nested_workloads_stay_busy_until_the_outermost_ends() -> None:
    gpu = fast_gpu(energy_update_period_s=0.001)
    gpu.set_locked_sm_clocks(990, 990)
    busy_w = gpu.expected_busy_power_w(990)
    with gpu.workload():
        with gpu.workload():
            gpu.clock.sleep(0.06)
        assert gpu.power_instant_w() == pytest.approx(busy_w)
        gpu.clock.sleep(0.06)
        gpu.execute_ref_s(0.01)  # modelled work inside: still busy after it
        assert gpu.power_instant_w() == pytest.approx(busy_w)
    assert gpu.power_instant_w() == IDLE_W
    assert gpu.clock.now_s() == pytest.approx(0.12 + 0.017)
    assert gpu.total_energy_mj() == math.floor(1000 * busy_w * 0.137 + 1e-6)


def test_workload_utilisation_must_be_a_fraction() -> None:
    with pytest.raises(ConfigError, match="utilization"), SimulatedGpu().workload(utilization=1.5):
        pass


def test_work_after_a_partial_utilisation_workload_runs_at_full_utilisation() -> None:
    gpu = fast_gpu()
    with gpu.workload(utilization=0.5):
        gpu.clock.sleep(0.1)
    seen = sample_every(gpu, 0.01, gpu.power_instant_w)
    gpu.execute_ref_s(0.1)
    assert seen == pytest.approx([BARE_BUSY_W] * len(seen))  # seen: 336.4 W, half the busy part


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
    with pytest.raises(ConfigError, match="min_mhz"):
        gpu.set_locked_mem_clocks(2619, 1593)
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
    assert gpu.power_limit_w() == 450.0 and gpu.info().power_limit_w == 450.0
    assert gpu.sm_clock_mhz() == 990  # idle rests at the locked minimum
    assert busy_clock_mhz(gpu) == 1200
    with gpu.workload():
        assert gpu.clock_event_reasons() == APP_CLOCKS

    gpu.reset_locked_sm_clocks()
    gpu.reset_locked_mem_clocks()
    gpu.set_power_limit_w(gpu.info().default_power_limit_w or 0.0)
    assert gpu.state() == default
    assert busy_clock_mhz(gpu) == 1980
    assert gpu.mem_clock_mhz() == 2619


def test_clock_drift_fault_offsets_the_achieved_clock() -> None:
    gpu = fast_gpu(clock_drift_mhz=-30)
    assert busy_clock_mhz(gpu) == 1980  # drift only applies to a lock
    gpu.set_locked_sm_clocks(1410, 1410)
    assert busy_clock_mhz(gpu) == 1380
    with gpu.workload():
        assert gpu.power_instant_w() == pytest.approx(gpu.expected_busy_power_w(1380))
    assert gpu.execute_ref_s(0.1) == pytest.approx(0.1 * gpu.expected_time_scale(1380), rel=1e-12)


def test_lock_fails_fault_raises_no_permission_naming_root() -> None:
    gpu = fast_gpu(lock_fails=True)
    with pytest.raises(GpuNoPermission, match="root") as info:
        gpu.set_locked_sm_clocks(990, 990)
    assert "set_locked_sm_clocks" in str(info.value)
    assert gpu.state() == gpu.default_state
    gpu.set_power_limit_w(500)  # only clock locking is broken
    gpu.set_locked_mem_clocks(1593, 1593)
    assert gpu.state().power_limit_w == 500.0


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


_METHOD_ARGS: dict[str, tuple[Any, ...]] = {
    "supported_sm_clocks_mhz": (2619,),
    "set_locked_sm_clocks": (990, 990),
    "set_locked_mem_clocks": (1593, 1593),
    "set_power_limit_w": (400,),
}


@pytest.mark.parametrize("method", sorted(SIMULATED_METHOD_NAMES))
def test_unsupported_fault_raises_gpu_not_supported(method: str) -> None:
    gpu = fast_gpu(unsupported={method})
    with pytest.raises(GpuNotSupported, match=method):
        getattr(gpu, method)(*_METHOD_ARGS.get(method, ()))
    assert gpu.state() == gpu.default_state
    others = {"power_instant_w": "sm_clock_mhz"}.get(method, "power_instant_w")
    getattr(gpu, others)()  # only the named method is switched off


def test_power_cap_lowers_the_clock_to_the_highest_fitting_bin() -> None:
    gpu = fast_gpu(energy_update_period_s=0.001)
    with pytest.raises(ConfigError, match="power_limit_w") as info:
        gpu.set_power_limit_w(150)
    assert info.value.allowed == "200..700 W"
    gpu.set_power_limit_w(400)
    with gpu.workload():
        clock_mhz = gpu.sm_clock_mhz()
        power_w = gpu.power_instant_w()
        reasons = gpu.clock_event_reasons()
    assert clock_mhz < 1980
    assert power_w <= 400.0
    assert gpu.expected_busy_power_w(clock_mhz) <= 400.0 < gpu.expected_busy_power_w(clock_mhz + 15)
    assert reasons == POWER_CAP
    assert "sw_power_cap" in decode_clock_event_reasons(reasons)
    assert is_throttled(reasons)
    # The capped clock also sets the pace of the work, and its power the energy.
    taken_s = gpu.execute_ref_s(0.1)
    assert taken_s == pytest.approx(0.1 * gpu.expected_time_scale(clock_mhz), rel=1e-12)
    e_j, idle_s = counter_j_at_next_update(gpu)
    assert e_j == pytest.approx(gpu.expected_busy_power_w(clock_mhz) * taken_s + IDLE_W * idle_s, abs=1e-3)


def test_power_cap_depends_on_the_works_mix() -> None:
    """A memory-bound piece draws less SM power, so the same limit lets it run at a higher clock."""
    gpu = fast_gpu()
    gpu.set_power_limit_w(300)
    compute = Work(compute_s=0.05, memory_s=0.0, latency_s=0.0)
    memory = Work(compute_s=0.01, memory_s=0.04, latency_s=0.0)
    clocks = sample_every(gpu, 0.001, gpu.sm_clock_mhz)
    gpu.execute(compute)
    low = set(clocks)
    clocks.clear()
    gpu.execute(memory)
    high = set(clocks)
    assert len(low) == len(high) == 1
    (f_compute,), (f_memory,) = low, high
    assert f_compute < f_memory
    for work, f in ((compute, f_compute), (memory, f_memory)):
        assert gpu.expected_busy_power_w(f, work=work) <= 300 < gpu.expected_busy_power_w(f + 15, work=work)


def test_a_lock_below_the_cap_is_not_power_capped() -> None:
    gpu = fast_gpu()
    gpu.set_power_limit_w(400)
    gpu.set_locked_sm_clocks(990, 990)
    with gpu.workload():
        assert gpu.sm_clock_mhz() == 990
        assert gpu.clock_event_reasons() == APP_CLOCKS


def test_power_cap_uses_the_power_actually_drawn_at_partial_utilisation() -> None:
    gpu = fast_gpu()
    gpu.set_power_limit_w(400)
    assert gpu.expected_busy_power_w(1980, utilization=0.5) < 400
    with gpu.workload(utilization=0.5):
        assert (gpu.sm_clock_mhz(), gpu.clock_event_reasons()) == (1980, 0)


def test_thermal_model_follows_the_first_order_lag() -> None:
    gpu = fast_gpu(thermal_time_constant_s=4.0)
    t0_c = gpu.temperature_c()
    assert t0_c == pytest.approx(30.0 + 0.07 * IDLE_W)
    with gpu.workload():
        gpu.clock.sleep(2.0)
        steady_c = 30.0 + 0.07 * BARE_BUSY_W
        assert gpu.temperature_c() == pytest.approx(steady_c + (t0_c - steady_c) * math.exp(-2.0 / 4.0))


def test_thermal_fault_throttles_and_recovers() -> None:
    gpu = fast_gpu(thermal_throttle_above_c=50.0, thermal_time_constant_s=1.0)
    assert gpu.temperature_c() < 50.0
    with gpu.workload():
        gpu.clock.sleep(0.3)
        assert gpu.sm_clock_mhz() == 1980  # not hot yet
        gpu.clock.sleep(2.0)
        hot_c = gpu.temperature_c()
        clock_mhz = gpu.sm_clock_mhz()
        reasons = gpu.clock_event_reasons()
        taken_s = gpu.execute_ref_s(0.1)
    assert hot_c > 50.0
    assert clock_mhz == 1380  # the highest grid clock at most 0.7 x 1980
    assert reasons & THERMAL == THERMAL
    assert {"sw_thermal_slowdown", "hw_thermal_slowdown"} <= set(decode_clock_event_reasons(reasons))
    assert taken_s == pytest.approx(0.1 * gpu.expected_time_scale(1380), rel=1e-9)  # the throttled clock sets the pace
    gpu.clock.sleep(5.0)
    assert gpu.temperature_c() < 48.0
    assert gpu.clock_event_reasons() == IDLE
    assert busy_clock_mhz(gpu) == 1980


def test_energy_integrates_busy_and_idle_segments() -> None:
    gpu = fast_gpu(energy_update_period_s=0.001)
    gpu.set_locked_sm_clocks(1200, 1200)
    gpu.clock.sleep(0.02)
    e0_mj = gpu.total_energy_mj()
    with gpu.workload():
        gpu.clock.sleep(0.1)
    gpu.clock.sleep(0.05)
    e1_mj = gpu.total_energy_mj()
    assert e0_mj == math.floor(1000 * IDLE_W * 0.02 + 1e-6)
    expected_mj = 1000 * (gpu.expected_busy_power_w(1200) * 0.1 + IDLE_W * 0.05)
    assert abs((e1_mj - e0_mj) - expected_mj) <= 1  # each reading floors to whole mJ


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
    try:
        for _ in range(40):
            gpu.execute_ref_s(0.01)
            gpu.clock.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert problems == []


def test_devices_sharing_one_clock_each_integrate_their_own_load() -> None:
    clock = VirtualClock()
    busy = SimulatedGpu(clock=clock, energy_update_period_s=0.01)
    idle = SimulatedGpu(clock=clock, index=1, energy_update_period_s=0.01)
    busy.execute_ref_s(0.5)
    assert clock.now_s() == pytest.approx(0.5)
    clock.sleep(0.5)
    assert idle.total_energy_mj() == round(1000 * IDLE_W * 1.0)
    assert busy.total_energy_mj() == pytest.approx(1000 * (BARE_BUSY_W * 0.5 + IDLE_W * 0.5), abs=1)


def test_power_report_lag_trails_the_load() -> None:
    """A real H100's instantaneous power trails the load by ~0.25 s; the simulation can do the same."""
    gpu = SimulatedGpu(power_report_lag_s=0.4)
    with gpu.workload():
        gpu.clock.sleep(0.05)
        assert gpu.power_instant_w() == IDLE_W  # the load started < lag ago: still reads idle
        gpu.clock.sleep(0.6)
        assert gpu.power_instant_w() == pytest.approx(BARE_BUSY_W)  # the load started > lag ago
    gpu.clock.sleep(0.05)
    assert gpu.power_instant_w() == pytest.approx(BARE_BUSY_W)  # ended < lag ago: still reads busy
    gpu.clock.sleep(0.6)
    assert gpu.power_instant_w() == pytest.approx(IDLE_W)


# ---- determinism and noise -----------------------------------------------------------------------
def run_sequence(seed: int) -> tuple[list[tuple[float, float, int, int]], int, float, float]:
    """A fixed sequence of calls, idle gaps and settings on a noisy, heating device, sampled by a timer."""
    gpu = SimulatedGpu(noise_cv=0.05, power_noise_cv=0.02, outlier_probability=0.1, slowdown_rel_per_s=0.01,
                       noise_seed=seed, energy_update_period_s=0.01, thermal_throttle_above_c=45.0,
                       thermal_time_constant_s=0.5, power_report_lag_s=0.02)
    samples = sample_every(gpu, 0.005, lambda: (gpu.clock.now_s(), gpu.power_instant_w(), gpu.sm_clock_mhz(),
                                                 gpu.total_energy_mj()))
    gpu.set_work_profile(COMPUTE_BOUND)
    for i in range(12):
        if i == 6:
            gpu.set_locked_sm_clocks(1260, 1260)
        if i == 9:
            gpu.set_power_limit_w(400)
        run_call(gpu)
        gpu.clock.sleep(0.003 * (i % 3))
    return samples, gpu.total_energy_mj(), gpu.clock.now_s(), gpu.temperature_c()


def test_same_seed_and_calls_give_identical_numbers() -> None:
    first = run_sequence(seed=11)
    assert len(first[0]) > 50
    assert run_sequence(seed=11) == first
    other = run_sequence(seed=12)
    assert other[1] != first[1] and other[2] != first[2]


def test_a_busy_host_changes_nothing() -> None:
    quiet = run_sequence(seed=5)
    stop = threading.Event()
    spins = [0]

    def spin() -> None:
        while not stop.is_set():
            sum(range(2000))
            spins[0] += 1

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        loaded = run_sequence(seed=5)
    finally:
        stop.set()
        spinner.join()
    assert spins[0] > 0
    assert loaded == quiet


def call_factors(gpu: SimulatedGpu, n: int) -> list[float]:
    gpu.set_work_profile(COMPUTE_BOUND)
    truth_s = gpu.expected_call(COMPUTE_BOUND).time_s
    return [run_call(gpu) / truth_s for _ in range(n)]


def test_noise_has_the_configured_cv_and_mean_one() -> None:
    factors = call_factors(SimulatedGpu(noise_cv=0.1, noise_seed=3), 1500)
    assert statistics.fmean(factors) == pytest.approx(1.0, abs=0.012)  # 4 standard errors
    cv = statistics.stdev(factors) / statistics.fmean(factors)
    assert cv == pytest.approx(0.1, rel=0.12)
    assert min(factors) > 0.6 and max(factors) < 1.6  # lognormal: positive, no heavy tail at 10 %


def test_without_noise_every_call_takes_its_true_time() -> None:
    factors = call_factors(SimulatedGpu(), 20)
    assert factors == pytest.approx([1.0] * 20, rel=1e-9)


def test_outliers_appear_at_the_configured_rate_and_factor() -> None:
    factors = call_factors(SimulatedGpu(outlier_probability=0.05, outlier_factor=3.0, noise_seed=9), 1500)
    slow = [f for f in factors if f > 2.0]
    assert slow == pytest.approx([3.0] * len(slow), rel=1e-9)
    normal = [f for f in factors if f <= 2.0]
    assert normal == pytest.approx([1.0] * len(normal), rel=1e-9)
    assert len(slow) / len(factors) == pytest.approx(0.05, abs=0.02)  # ~3.5 standard errors


def test_power_noise_varies_energy_not_time() -> None:
    gpu = SimulatedGpu(power_noise_cv=0.05, noise_seed=4, energy_update_period_s=0.001)
    gpu.set_locked_sm_clocks(1260, 1260)  # far below the cap, so the power factor never moves the clock
    gpu.set_work_profile(COMPUTE_BOUND)
    truth = gpu.expected_call(COMPUTE_BOUND, 1260)
    ratios = []
    e_prev, _ = counter_j_at_next_update(gpu)
    for _ in range(300):
        assert run_call(gpu) == pytest.approx(truth.time_s, rel=1e-9)
        e_now, idle_s = counter_j_at_next_update(gpu)
        ratios.append((e_now - e_prev - IDLE_W * idle_s) / truth.energy_j)
        e_prev = e_now
    assert statistics.fmean(ratios) == pytest.approx(1.0, abs=0.015)
    assert statistics.stdev(ratios) == pytest.approx(0.05, rel=0.25)


def test_slowdown_drift_makes_later_calls_slower() -> None:
    factors = call_factors(SimulatedGpu(slowdown_rel_per_s=0.5), 30)
    assert factors == sorted(factors) and factors[0] == pytest.approx(1.0)
    # The 30th call starts after 29 calls' time (grown by the drift itself) of virtual time.
    assert factors[-1] > 1.0 + 0.5 * 29 * 0.019


# ---- the truth -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sm_clock_mhz", "mem_clock_mhz", "power_limit_w", "capped"),
    [(None, None, None, False), (1260, None, None, False), (None, 1593, None, False), (None, None, 400.0, True)],
    ids=["default", "locked-1260", "mem-1593", "power-limit-400"],
)
def test_calls_through_events_add_up_to_the_expected_call(
    sm_clock_mhz: int | None, mem_clock_mhz: int | None, power_limit_w: float | None, capped: bool
) -> None:
    gpu = SimulatedGpu(energy_update_period_s=0.001)
    truth = gpu.expected_call(COMPUTE_BOUND, sm_clock_mhz, mem_clock_mhz, power_limit_w)
    assert truth.power_capped is capped
    if sm_clock_mhz is not None:
        gpu.set_locked_sm_clocks(sm_clock_mhz, sm_clock_mhz)
    if mem_clock_mhz is not None:
        gpu.set_locked_mem_clocks(mem_clock_mhz, mem_clock_mhz)
    if power_limit_w is not None:
        gpu.set_power_limit_w(power_limit_w)
    reasons = sample_every(gpu, 0.0005, gpu.clock_event_reasons)
    gpu.set_work_profile(COMPUTE_BOUND)
    n = 8
    for _ in range(n):
        run_call(gpu)
    assert gpu.calls_started == n
    assert gpu.clock.now_s() == pytest.approx(n * truth.time_s, rel=1e-9)
    energy_j, idle_s = counter_j_at_next_update(gpu)
    assert energy_j == pytest.approx(n * truth.energy_j + IDLE_W * idle_s, abs=1.5e-3)
    assert any(r & POWER_CAP for r in reasons) is capped
    if capped:
        assert truth.sm_clock_mhz < 1980
    else:
        assert truth.sm_clock_mhz == pytest.approx(sm_clock_mhz or 1980)


def test_end_does_the_work_the_marks_did_not_cover() -> None:
    gpu = SimulatedGpu()
    gpu.set_work_profile(COMPUTE_BOUND)
    truth_s = gpu.expected_call(COMPUTE_BOUND).time_s
    gpu.on_event("start")
    gpu.on_event("step")  # one of four UNet evaluations marked, no text or decode marks
    gpu.on_event("end")
    assert gpu.clock.now_s() == pytest.approx(truth_s, rel=1e-9)
    gpu.set_work_profile(None)
    gpu.on_event("start")
    gpu.on_event("end")
    assert gpu.clock.now_s() == pytest.approx(truth_s, rel=1e-9)  # no profile: calls do no work


# ---- cards -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("card", "cc", "memory_mib", "limits_w", "sm_top_bottom", "memory_clocks"),
    [
        ("v100", (7, 0), 32510, (150, 300, 300), (1530, 135), [877]),
        ("a100", (8, 0), 40960, (100, 400, 400), (1410, 210), [1215]),
        ("h100", (9, 0), 81559, (200, 700, 700), (1980, 345), [2619, 1593]),
        ("h200", (9, 0), 143771, (200, 700, 700), (1980, 345), [3201]),
    ],
)
def test_published_card_figures_reach_info(card: str, cc: tuple[int, int], memory_mib: int,
                                           limits_w: tuple[float, float, float], sm_top_bottom: tuple[int, int],
                                           memory_clocks: list[int]) -> None:
    gpu = SimulatedGpu(card=card)
    info = gpu.info()
    assert info.compute_capability == cc
    assert info.memory_total_bytes == memory_mib * 2**20
    assert (info.min_power_limit_w, info.default_power_limit_w, info.max_power_limit_w) == limits_w
    assert info.power_limit_w == limits_w[1]
    assert info.max_sm_clock_mhz == sm_top_bottom[0]
    assert gpu.supported_memory_clocks_mhz() == memory_clocks
    top, bottom = sm_top_bottom
    assert gpu.supported_sm_clocks_mhz(memory_clocks[0]) == list(range(top, bottom - 1, -15))
    assert CARDS[card].name == info.name and "simulated" in info.name
    json.dumps(CARDS[card].as_dict())


def test_h200_has_141_gb_and_a100_steps_15_mhz_down_from_1410() -> None:
    assert 140 <= SimulatedGpu(card="h200").info().memory_total_bytes / 2**30 <= 141
    grid = SimulatedGpu(card="a100").supported_sm_clocks_mhz(1215)
    assert grid[:3] == [1410, 1395, 1380] and grid[-1] == 210 and len(grid) == 81


def test_speed_ordering_follows_the_specs() -> None:
    compute = {card: SimulatedGpu(card=card).expected_call(COMPUTE_BOUND).time_s for card in CARDS}
    assert compute["h100"] < compute["a100"] < compute["v100"]
    assert compute["h200"] == pytest.approx(compute["h100"], rel=0.05)
    memory = {card: SimulatedGpu(card=card).expected_call(MEMORY_BOUND).time_s for card in CARDS}
    assert memory["h200"] < 0.8 * memory["h100"]  # 4.8 against 3.35 TB/s
    assert memory["h100"] < memory["a100"] < memory["v100"]


@pytest.mark.parametrize("card", sorted(CARDS))
def test_energy_optimal_clock_is_interior_for_compute_bound_work(card: str) -> None:
    gpu = SimulatedGpu(card=card)
    grid = gpu.supported_sm_clocks_mhz(gpu.supported_memory_clocks_mhz()[0])
    f_opt, truth = gpu.expected_optimum(COMPUTE_BOUND, "energy")
    assert grid[-1] < f_opt < grid[0]
    assert truth == gpu.expected_call(COMPUTE_BOUND, f_opt)
    assert truth.energy_j < 0.95 * gpu.expected_call(COMPUTE_BOUND, grid[0]).energy_j
    assert truth.energy_j < 0.95 * gpu.expected_call(COMPUTE_BOUND, grid[-1]).energy_j
    f_edp, _ = gpu.expected_optimum(COMPUTE_BOUND, "edp")
    assert f_edp >= f_opt  # weighting time more never asks for a lower clock
    with pytest.raises(ConfigError, match="objective"):
        gpu.expected_optimum(COMPUTE_BOUND, "time")


def test_a_dtype_the_card_lacks_is_a_config_error() -> None:
    gpu = SimulatedGpu(card="v100")
    with pytest.raises(ConfigError, match="bf16") as info:
        gpu.set_work_profile(WorkProfile(text=WorkAmount(flop=1.0), unet_eval=WorkAmount(flop=1.0),
                                         vae_decode=WorkAmount(flop=1.0), unet_evals=1, dtype="bf16"))
    assert info.value.field == "dtype"


# ---- device strings, reasons and open_device ----------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "card", "options"),
    [
        ("simulated", "h100", {}),
        ("simulated:a100", "a100", {}),
        ("simulated:v100:noise_cv=0.05", "v100", {"noise_cv": 0.05}),
        ("simulated:noise_seed=3", "h100", {"noise_seed": 3}),
        ("simulated:h200:noise_cv=0.05:noise_seed=3:clock_drift_mhz=-15:power_report_lag_s=0.25",
         "h200", {"noise_cv": 0.05, "noise_seed": 3, "clock_drift_mhz": -15, "power_report_lag_s": 0.25}),
    ],
)
def test_parse_simulated_device_good_strings(text: str, card: str, options: dict[str, Any]) -> None:
    parsed_card, parsed = parse_simulated_device(text)
    assert (parsed_card, parsed) == (card, options)
    assert all(type(parsed[k]) is type(v) for k, v in options.items())


@pytest.mark.parametrize(
    ("text", "field", "allowed_has"),
    [
        ("simulated:b200", "simulated card", "a100, h100, h200, v100"),
        ("simulated:a100:noise=0.1", "simulated device option", "noise_cv"),
        ("simulated:a100:noise_seed=abc", "simulated device option noise_seed", None),
        ("simulated:a100:noise_cv=lots", "simulated device option noise_cv", None),
        ("simulated:noise_cv=0.1:a100", "device", None),
        ("gpu:a100", "device", "simulated[:CARD][:key=value...]"),
    ],
)
def test_parse_simulated_device_bad_strings(text: str, field: str, allowed_has: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        parse_simulated_device(text)
    assert info.value.field == field
    if allowed_has is not None:
        assert allowed_has in str(info.value.allowed)
    else:
        assert info.value.reason  # says what is wrong with the value
    assert field in str(info.value)


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
    assert gpu.card.key == "h100"
    assert (gpu.noise_cv, gpu.power_noise_cv) == (SIMULATED_DEFAULT_NOISE["noise_cv"],
                                                 SIMULATED_DEFAULT_NOISE["power_noise_cv"])
    a100 = open_device("simulated:a100", index=1)
    assert isinstance(a100, SimulatedGpu) and a100.card.key == "a100" and a100.info().index == 1
    assert a100.noise_cv == SIMULATED_DEFAULT_NOISE["noise_cv"]
    quiet = open_device("simulated:a100:noise_cv=0:noise_seed=5")
    assert isinstance(quiet, SimulatedGpu) and (quiet.noise_cv, quiet.noise_seed) == (0.0, 5)
    assert open_device("none") is None
    with pytest.raises(ConfigError, match="auto, nvml, simulated, none"):
        open_device("cuda")
    with pytest.raises(ConfigError, match="simulated card"):
        open_device("simulated:b200")
    with pytest.raises(ConfigError) as info:
        open_device("simulated:a100:noise_cv=2")  # parses, but the device rejects it
    assert info.value.field == "noise_cv" and info.value.allowed == "[0, 1)"


def test_gpu_unavailable_is_a_device_unavailable_error() -> None:
    assert issubclass(GpuUnavailable, DeviceUnavailableError)
