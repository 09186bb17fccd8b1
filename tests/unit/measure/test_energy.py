"""Energy meters on the simulated GPU and a fake RAPL tree; the arithmetic with hypothesis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testsupport import fast_gpu

from sdbench.errors import ConfigError
from sdbench.gpu import SimulatedGpu
from sdbench.measure.energy import (
    EnergyReading,
    NullMeter,
    NvmlCounterMeter,
    PowerTimelineMeter,
    RaplMeter,
    counter_delta_j,
    detect_counter_period_s,
    energy_between_j,
    measure_idle_power_w,
    net_energy_j,
    select_energy_meter,
    trapezoid_energy_j,
)

IDLE_W = 70.0
FULL_W = SimulatedGpu().expected_busy_power_w(1980)  # a bare workload at the top clock


# ---- arithmetic (hypothesis) ---------------------------------------------------------------------
WRAP_MJ = st.integers(min_value=2, max_value=2**64)


@given(start=st.integers(min_value=0, max_value=2**63), delta=st.integers(min_value=0, max_value=2**40))
def test_counter_delta_without_wrap(start: int, delta: int) -> None:
    assert counter_delta_j(start, start + delta) == delta / 1000.0


@given(data=st.data(), wrap=WRAP_MJ)
def test_counter_delta_across_one_wrap(data: st.DataObject, wrap: int) -> None:
    start = data.draw(st.integers(min_value=0, max_value=wrap - 1))
    delta = data.draw(st.integers(min_value=0, max_value=wrap - 1))
    end = (start + delta) % wrap
    assert counter_delta_j(start, end, wrap_mj=wrap) == pytest.approx(delta / 1000.0)


@given(
    gross=st.floats(-1e6, 1e6, allow_nan=False),
    idle=st.floats(0, 2000, allow_nan=False),
    duration=st.floats(0, 1e4, allow_nan=False),
)
def test_net_energy_is_gross_minus_idle_even_when_negative(gross: float, idle: float, duration: float) -> None:
    assert net_energy_j(gross, idle, duration) == gross - idle * duration


sample_lists = st.lists(
    st.tuples(st.floats(0, 1.0, allow_nan=False), st.floats(0, 1000, allow_nan=False)), min_size=2, max_size=40
).map(lambda pairs: _to_samples(pairs))


def _to_samples(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Gaps (some zero) and powers -> a timeline with non-decreasing times."""
    t, out = 0.0, []
    for gap, power in pairs:
        t += gap
        out.append((t, power))
    return out


@given(power=st.floats(0, 1000, allow_nan=False), gaps=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=30))
def test_trapezoid_of_constant_power_is_power_times_duration(power: float, gaps: list[float]) -> None:
    samples = _to_samples([(g, power) for g in [0.0, *gaps]])
    duration = samples[-1][0] - samples[0][0]
    assert trapezoid_energy_j(samples) == pytest.approx(power * duration, rel=1e-9, abs=1e-9)


@given(samples=sample_lists, fractions=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)))
def test_energy_between_adds_up_over_adjacent_windows(
    samples: list[tuple[float, float]], fractions: tuple[float, float, float]
) -> None:
    t_first, t_last = samples[0][0], samples[-1][0]
    # Windows may stick out past the samples by up to half the span on either side.
    span = t_last - t_first
    t0, tm, t1 = sorted(t_first - span / 2 + f * 2 * span for f in fractions)
    whole = energy_between_j(samples, t0, t1)
    parts = energy_between_j(samples, t0, tm) + energy_between_j(samples, tm, t1)
    assert parts == pytest.approx(whole, rel=1e-9, abs=1e-6)
    assert energy_between_j(samples, t_first, t_last) == pytest.approx(trapezoid_energy_j(samples), rel=1e-9, abs=1e-6)
    assert 0.0 <= whole <= trapezoid_energy_j(samples) + 1e-6


def test_energy_between_interpolates_linearly_at_the_edges() -> None:
    samples = [(0.0, 100.0), (1.0, 300.0)]
    # Power at 0.5 s is 200 W: the first half is the trapezoid 100..200 W.
    assert energy_between_j(samples, 0.0, 0.5) == pytest.approx(75.0)
    assert energy_between_j(samples, 0.5, 1.0) == pytest.approx(125.0)
    assert energy_between_j(samples, -5.0, 0.0) == 0.0
    with pytest.raises(ConfigError, match="t1_s"):
        energy_between_j(samples, 0.6, 0.5)


def test_trapezoid_rejects_time_going_backwards() -> None:
    with pytest.raises(ConfigError, match="non-decreasing"):
        trapezoid_energy_j([(0.0, 1.0), (2.0, 1.0), (1.0, 1.0)])
    assert trapezoid_energy_j([(0.0, 5.0)]) == 0.0


# ---- NVML-style counter ------------------------------------------------------------------------
def test_detects_the_100_ms_counter_period() -> None:
    period_s = detect_counter_period_s(SimulatedGpu(), timeout_s=2.0, changes=4)
    assert period_s == pytest.approx(0.1, rel=0.15)


def test_detect_returns_none_when_the_counter_never_moves() -> None:
    gpu = fast_gpu()
    gpu.total_energy_mj = lambda: 42  # type: ignore[method-assign]
    assert detect_counter_period_s(gpu, timeout_s=0.05) is None


def test_counter_meter_measures_idle_energy() -> None:
    gpu = fast_gpu()
    meter = NvmlCounterMeter(gpu)
    meter.start()
    assert meter.resolution_s == pytest.approx(0.01, rel=0.3)
    gpu.clock.sleep(0.2)
    reading = meter.stop()
    assert reading.available and reading.simulated and reading.source == "nvml_counter"
    # Quantisation: at most one update period of power at each end.
    assert reading.energy_j == pytest.approx(IDLE_W * reading.duration_s, abs=2 * IDLE_W * 0.01 + 0.01)
    json.dumps(reading.as_dict())


def test_counter_and_timeline_agree_over_a_busy_second() -> None:
    gpu = fast_gpu()
    counter = NvmlCounterMeter(gpu)
    timeline = PowerTimelineMeter(gpu, rate_hz=100)
    counter.start()
    timeline.start()
    with gpu.workload():
        gpu.clock.sleep(1.0)
    by_timeline = timeline.stop()
    by_counter = counter.stop()
    assert by_counter.energy_j is not None and by_timeline.energy_j is not None
    assert by_counter.energy_j == pytest.approx(by_timeline.energy_j, rel=0.03)
    assert by_counter.power_w == pytest.approx(FULL_W, rel=0.05)
    assert by_timeline.resolution_s == pytest.approx(0.01)


def test_counter_going_backwards_is_reported_not_measured() -> None:
    gpu = fast_gpu()
    values = iter([5_000_000, 1_000])
    gpu.total_energy_mj = lambda: next(values)  # type: ignore[method-assign]
    meter = NvmlCounterMeter(gpu, resolution_s=0.1)
    meter.start()
    reading = meter.stop()
    assert not reading.available and reading.energy_j is None
    assert "went backwards" in (reading.reason or "")


def test_counter_meter_on_a_device_without_counter() -> None:
    meter = NvmlCounterMeter(fast_gpu(unsupported={"total_energy_mj"}))
    meter.start()
    reading = meter.stop()
    assert not reading.available and reading.energy_j is None
    assert (reading.reason or "").startswith("counter not supported")


# ---- power timeline ---------------------------------------------------------------------------------
def test_timeline_gives_phases_their_energy() -> None:
    gpu = fast_gpu()
    meter = PowerTimelineMeter(gpu, rate_hz=200)
    meter.start()
    gpu.clock.sleep(0.1)
    with gpu.workload():
        t_busy0 = gpu.clock.now_s()
        gpu.clock.sleep(0.2)
        t_busy1 = gpu.clock.now_s()
    gpu.clock.sleep(0.1)
    reading = meter.stop()
    samples = meter.timeline()
    assert len(samples) >= 5
    assert reading.energy_j == pytest.approx(trapezoid_energy_j(samples))
    t_first, t_last = samples[0][0], samples[-1][0]
    # Inset by two sample periods so the edges' interpolation ramps stay outside.
    inset_s = 2 / 200
    busy_j = meter.energy_between_j(t_busy0 + inset_s, t_busy1 - inset_s)
    assert busy_j == pytest.approx(FULL_W * (t_busy1 - t_busy0 - 2 * inset_s), rel=0.05)
    idle_j = meter.energy_between_j(t_first, t_busy0 - inset_s)
    assert idle_j == pytest.approx(IDLE_W * (t_busy0 - inset_s - t_first), rel=0.05)
    phases = [t_first, t_busy0, t_busy1, t_last]
    total = sum(meter.energy_between_j(a, b) for a, b in zip(phases, phases[1:]))
    assert total == pytest.approx(reading.energy_j)


def test_timeline_rate_must_be_at_least_50_hz() -> None:
    with pytest.raises(ConfigError, match="rate_hz"):
        PowerTimelineMeter(fast_gpu(), rate_hz=20)


def test_timeline_without_power_readings_is_unavailable() -> None:
    meter = PowerTimelineMeter(fast_gpu(unsupported={"power_instant_w"}))
    meter.start()
    reading = meter.stop()
    assert not reading.available
    assert "power readings not supported" in (reading.reason or "")


# ---- idle power -----------------------------------------------------------------------------------
def test_idle_power_from_the_counter_and_its_subtraction() -> None:
    gpu = fast_gpu()
    idle = measure_idle_power_w(gpu, 0.15)
    assert idle.available and idle.source == "nvml_counter"
    assert idle.power_w == pytest.approx(IDLE_W, rel=0.05)

    meter = PowerTimelineMeter(gpu)
    meter.start()
    with gpu.workload():
        gpu.clock.sleep(0.2)
    reading = meter.stop()
    assert reading.energy_j is not None and idle.power_w is not None
    net_j = net_energy_j(reading.energy_j, idle.power_w, reading.duration_s)
    assert net_j == pytest.approx((FULL_W - IDLE_W) * reading.duration_s, rel=0.08)


def test_idle_power_falls_back_to_the_timeline() -> None:
    idle = measure_idle_power_w(fast_gpu(unsupported={"total_energy_mj"}), 0.1)
    assert idle.available and idle.source == "power_timeline"
    assert idle.power_w == pytest.approx(IDLE_W, rel=0.01)


def test_idle_power_without_any_source() -> None:
    idle = measure_idle_power_w(fast_gpu(unsupported={"total_energy_mj", "power_instant_w"}), 0.05)
    assert not idle.available and idle.power_w is None
    assert "counter not supported" in (idle.reason or "")
    none = measure_idle_power_w(None, 0.05)
    assert not none.available and "no NVIDIA GPU" in (none.reason or "")
    with pytest.raises(ConfigError, match="duration_s"):
        measure_idle_power_w(fast_gpu(), 0)


# ---- selection ------------------------------------------------------------------------------------
def test_auto_prefers_the_counter() -> None:
    meter = select_energy_meter(fast_gpu())
    assert isinstance(meter, NvmlCounterMeter) and meter.name == "nvml_counter"
    assert meter.fallback_reason is None


def test_auto_falls_back_to_timeline_then_none_and_records_why() -> None:
    meter = select_energy_meter(fast_gpu(unsupported={"total_energy_mj"}))
    assert isinstance(meter, PowerTimelineMeter)
    assert "energy counter not supported" in (meter.fallback_reason or "")

    nothing = select_energy_meter(fast_gpu(unsupported={"total_energy_mj", "power_instant_w"}))
    assert isinstance(nothing, NullMeter) and nothing.name == "none"
    assert "counter not supported" in (nothing.fallback_reason or "")
    nothing.start()
    reading = nothing.stop()
    assert not reading.available and reading.energy_j is None
    assert "power readings not supported" in (reading.reason or "")

    no_gpu = select_energy_meter(None)
    assert isinstance(no_gpu, NullMeter)
    no_gpu.start()
    assert "no NVIDIA GPU/NVML on this machine" in (no_gpu.stop().reason or "")


def test_explicit_preferences_are_honoured_not_substituted() -> None:
    gpu = fast_gpu(unsupported={"total_energy_mj"})
    counter = select_energy_meter(gpu, "counter")
    assert isinstance(counter, NullMeter) and counter.reason.startswith("counter not supported")
    assert isinstance(select_energy_meter(gpu, "timeline"), PowerTimelineMeter)
    assert isinstance(select_energy_meter(fast_gpu(), "timeline"), PowerTimelineMeter)
    assert isinstance(select_energy_meter(None, "rapl"), RaplMeter)
    assert isinstance(select_energy_meter(fast_gpu(), "none"), NullMeter)
    with pytest.raises(ConfigError, match="auto, counter, timeline, rapl, none"):
        select_energy_meter(gpu, "joulemeter")


# ---- RAPL on a fake sysfs tree ---------------------------------------------------------------------
def make_zone(root: Path, name: str, label: str, energy_uj: int, max_range_uj: int = 262_143_328_850) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return zone


def test_rapl_sums_packages_and_dram_and_handles_wraparound(tmp_path: Path) -> None:
    pkg0 = make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 500)  # inside the package: not added again
    dram0 = make_zone(tmp_path, "intel-rapl:0:1", "dram", 2_000_000)
    pkg1 = make_zone(tmp_path, "intel-rapl:1", "package-1", 9_000_000, max_range_uj=10_000_000)
    make_zone(tmp_path, "intel-rapl:2", "psys", 7)  # platform total: would double count

    meter = RaplMeter(root=tmp_path)
    meter.start()
    (pkg0 / "energy_uj").write_text("31000000\n")  # +30 J
    (dram0 / "energy_uj").write_text("7000000\n")  # +5 J
    (pkg1 / "energy_uj").write_text("4000000\n")  # wrapped: +1 J to the top, +4 J after
    reading = meter.stop()
    assert reading.available and reading.source == "rapl" and not reading.simulated
    assert reading.energy_j == pytest.approx(40.0)
    assert reading.components_j == {
        "package-0[intel-rapl:0]": pytest.approx(30.0),
        "dram[intel-rapl:0:1]": pytest.approx(5.0),
        "package-1[intel-rapl:1]": pytest.approx(5.0),
    }


def test_rapl_nested_layout_is_found_once(tmp_path: Path) -> None:
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    dram = make_zone(pkg, "intel-rapl:0:0", "dram", 0)
    (tmp_path / "intel-rapl:0:0").symlink_to(dram)  # sysfs lists sub-zones flat as links
    meter = RaplMeter(root=tmp_path)
    meter.start()
    (dram / "energy_uj").write_text("3000000\n")
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(3.0)
    assert reading.components_j is not None and len(reading.components_j) == 2


def test_rapl_unreadable_is_unavailable_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    real_read_text = Path.read_text

    def deny_energy(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", deny_energy)
    meter = RaplMeter(root=tmp_path)
    meter.start()
    reading = meter.stop()
    assert not reading.available and reading.energy_j is None
    assert "permission denied" in (reading.reason or "")

    empty = RaplMeter(root=tmp_path / "missing")
    empty.start()
    assert "no RAPL package/dram zones" in (empty.stop().reason or "")


def test_reading_power_and_null_meter() -> None:
    reading = EnergyReading(100.0, 4.0, "x", None, True, None, False)
    assert reading.power_w == 25.0
    assert EnergyReading(None, 4.0, "x", None, False, "why", False).power_w is None
    meter = NullMeter("switched off")
    meter.start()
    off = meter.stop()
    assert (off.available, off.energy_j, off.reason, off.source) == (False, None, "switched off", "none")
    assert math.isfinite(off.duration_s)
