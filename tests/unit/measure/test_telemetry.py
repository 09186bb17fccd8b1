"""Telemetry sampler on the simulated GPU: clocks, reasons, throttling, missing readings.

The simulated GPU runs on a virtual clock, so its samplers fire at exact tick times (no wall-clock waits)."""

from __future__ import annotations

import json
import time

import pytest

from sdbench.errors import ConfigError, SdbenchError
from sdbench.gpu import SimulatedGpu
from sdbench.gpu.clock import PeriodicThread
from sdbench.measure.telemetry import TelemetrySample, TelemetrySampler, summarise_samples


def sample_during_workload(gpu: SimulatedGpu, busy_s: float = 0.2, rate_hz: float = 50.0) -> TelemetrySampler:
    sampler = TelemetrySampler(gpu, rate_hz=rate_hz)
    sampler.start()
    with gpu.workload():
        gpu.clock.sleep(busy_s)
    return sampler


def test_summary_of_a_normal_run() -> None:
    gpu = SimulatedGpu()
    sampler = sample_during_workload(gpu)
    summary = sampler.stop()
    assert summary.available and summary.reason is None
    assert summary.sample_count >= 3
    # The first sample is taken before the work starts (idle clock), the rest while busy.
    assert summary.sm_clock_mhz_max == 1980 and summary.sm_clock_mhz_min == 345
    assert summary.mem_clock_mhz_min == summary.mem_clock_mhz_max == 2619
    assert summary.throttled is False and summary.throttle_reasons == ()
    assert "gpu_idle" in summary.clock_event_reasons
    assert summary.power_limit_w == 700.0 and not summary.power_limit_changed
    assert summary.gpu_util_pct_mean is not None and 0 < summary.gpu_util_pct_mean <= 100
    assert summary.temperature_c_min is not None and summary.temperature_c_max is not None
    assert summary.unavailable == {}
    json.dumps(summary.as_dict())


def test_thermal_fault_sets_throttled() -> None:
    gpu = SimulatedGpu(thermal_throttle_above_c=45.0, thermal_time_constant_s=0.05)
    summary = sample_during_workload(gpu, busy_s=0.3).stop()
    assert summary.throttled is True
    assert {"sw_thermal_slowdown", "hw_thermal_slowdown"} <= set(summary.throttle_reasons)
    assert summary.temperature_c_max is not None and summary.temperature_c_max > 45.0
    assert summary.sm_clock_mhz_min is not None and summary.sm_clock_mhz_min < 1980


def test_power_cap_sets_throttled() -> None:
    gpu = SimulatedGpu()
    gpu.set_power_limit_w(300)
    summary = sample_during_workload(gpu).stop()
    assert summary.throttled and summary.throttle_reasons == ("sw_power_cap",)
    assert summary.power_limit_w == 300.0


def test_locked_clock_is_not_throttling() -> None:
    gpu = SimulatedGpu()
    gpu.set_locked_sm_clocks(1410, 1410)
    summary = sample_during_workload(gpu, busy_s=0.1).stop()
    assert not summary.throttled
    assert "applications_clocks_setting" in summary.clock_event_reasons
    assert summary.sm_clock_mhz_min == summary.sm_clock_mhz_max == 1410


def test_unsupported_readings_are_listed_not_invented() -> None:
    gpu = SimulatedGpu(unsupported={"temperature_c", "clock_event_reasons"})
    summary = sample_during_workload(gpu, busy_s=0.1).stop()
    assert summary.available
    assert set(summary.unavailable) == {"temperature_c", "clock_event_reasons"}
    assert "not supported" in summary.unavailable["temperature_c"]
    assert summary.temperature_c_min is None and summary.temperature_c_max is None
    assert summary.clock_event_reasons_mask is None and summary.throttled is False
    assert summary.sm_clock_mhz_max == 1980


def test_no_device_summary_says_why() -> None:
    sampler = TelemetrySampler(None)
    sampler.start()
    summary = sampler.stop()
    assert not summary.available and summary.sample_count == 0
    assert "no NVIDIA GPU/NVML" in (summary.reason or "")
    assert not sampler.summary_for_window(0.0, 1.0).available


def test_summary_for_a_window_uses_only_its_samples() -> None:
    gpu = SimulatedGpu()
    sampler = TelemetrySampler(gpu, rate_hz=50)
    sampler.start()
    gpu.clock.sleep(0.1)
    with gpu.workload():
        t0 = gpu.clock.now_s()
        gpu.clock.sleep(0.2)
        t1 = gpu.clock.now_s()
    gpu.clock.sleep(0.05)
    sampler.stop()
    # 50 Hz on the virtual clock: a sample exactly every 20 ms. The one at t0 itself was taken as the work
    # began (still idle), so the busy window starts just after it.
    busy = sampler.summary_for_window(t0 + 1e-6, t1)
    assert busy.available and busy.sample_count == 10
    assert busy.sm_clock_mhz_min == busy.sm_clock_mhz_max == 1980
    assert busy.gpu_util_pct_mean == 100.0
    assert "gpu_idle" not in busy.clock_event_reasons
    empty = sampler.summary_for_window(t1 + 10, t1 + 11)
    assert not empty.available and empty.sample_count == 0
    with pytest.raises(ConfigError, match="t1_s"):
        sampler.summary_for_window(t1, t0)


def test_summarise_samples_ors_the_reason_masks() -> None:
    samples = [
        TelemetrySample(0.0, 1980, 2619, 0x1, 40.0, 700.0, 0.0, 0.0, 10),
        TelemetrySample(0.1, 1500, 2619, 0x4, 60.0, 650.0, 100.0, 30.0, 30),
    ]
    summary = summarise_samples(samples)
    assert summary.clock_event_reasons_mask == 0x5
    assert summary.clock_event_reasons == ("gpu_idle", "sw_power_cap")
    assert summary.throttled
    assert summary.sm_clock_mhz_mean == pytest.approx(1740.0)
    assert summary.power_limit_w == 650.0 and summary.power_limit_changed
    assert summary.memory_used_bytes_max == 30
    assert summary.duration_s == pytest.approx(0.1)


def test_stop_before_start_is_an_error() -> None:
    with pytest.raises(SdbenchError, match="before start"):
        TelemetrySampler(SimulatedGpu()).stop()


def test_periodic_thread_hands_errors_to_the_caller() -> None:
    def broken() -> None:
        raise OSError("sensor on fire")

    thread = PeriodicThread(broken, rate_hz=200, name="test-broken")
    thread.start()
    time.sleep(0.05)
    with pytest.raises(OSError, match="sensor on fire"):
        thread.stop()
    with pytest.raises(ConfigError, match="rate_hz"):
        PeriodicThread(broken, rate_hz=0, name="x")
