"""Sweeps on the simulated GPU with tiny-sd on the CPU: grids from the device, seeded orders, verified
points (drift -> retry -> flag), read-only runs, aborts that change nothing, activity counters, the
end-to-end optimum, and a SIGTERM mid-sweep followed by --resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.case import Case
from sdbench.errors import ConfigError
from sdbench.gpu import SimulatedGpu
from sdbench.gpu.dcgm import ActivityMonitor, dmon_command, parse_dmon_line
from sdbench.measure.clocks import ClockController, ClockPermissionError
from sdbench.record.io import read_records
from sdbench.runner import Runner, RunnerConfig
from sdbench.session import Bench
from sdbench.studies.dvfs.grid import parse_clock_spec, resolve_clock_spec, resolve_power_limit_spec
from sdbench.studies.dvfs.measuring import ClockLockHook, cooldown
from sdbench.studies.dvfs.options import SweepOptions
from sdbench.studies.dvfs.points import SweepSetting, order_settings, sweep_points_from_grid
from sdbench.studies.dvfs.run import run_sweep
from sdbench.studies.dvfs.summary import _summary_table, default_clock_checks, point_counts, summary_lines

GRID = SimulatedGpu().supported_sm_clocks_mhz(2619)  # 1980 ... 345 in 15 MHz steps
# Short measurements: 2 rounds of windows spanning >= 2 counter updates (0.2 s) each.
RUNNER = dict(min_rounds=2, max_rounds=2, idle_s=0.05, min_window_periods=2, warmup_calls=1)
QUICK = dict(idle_gap_s=0.0, cooldown_c=None, default_every=0)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    """One simulated-GPU bench for the module (tiny-sd is built once); one torch thread, so the
    tiny model's CPU time varies less when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    b = Bench(device="simulated", runner_config=RunnerConfig.for_cpu(**RUNNER), gpu=SimulatedGpu())
    yield b
    b.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def case(bench: Bench) -> Case:
    return bench.case("tiny-sd", steps=1, resolution=64)


@contextlib.contextmanager
def on_gpu(bench: Bench, gpu: SimulatedGpu, runner: Runner | None = None) -> Iterator[Bench]:
    """The module's bench (warm pipeline) measuring on another simulated GPU for one test."""
    saved = bench.gpu, bench.runner
    bench.gpu = gpu
    bench.runner = runner or Runner(bench.runner.config, gpu)
    try:
        yield bench
    finally:
        bench.gpu, bench.runner = saved


# ---- grid specs (pure) -----------------------------------------------------------------------------
grids = st.lists(st.integers(min_value=100, max_value=3000), min_size=1, max_size=60, unique=True).map(
    lambda g: sorted(g, reverse=True))


@settings(max_examples=60, deadline=None)
@given(grid=grids, n=st.integers(min_value=1, max_value=70))
def test_every_and_count_pick_from_the_grid(grid: list[int], n: int) -> None:
    assert resolve_clock_spec(f"every:{n}", grid) == grid[::n]
    picked = resolve_clock_spec(f"count:{n}", grid)
    assert set(picked) <= set(grid) and len(picked) == min(n, len(grid))
    assert picked[0] == grid[0] and (n == 1 or picked[-1] == grid[-1])
    assert resolve_clock_spec("all", grid) == grid


@settings(max_examples=60, deadline=None)
@given(grid=grids, lo=st.integers(0, 3200), width=st.integers(0, 3200), n=st.integers(1, 5))
def test_range_keeps_the_grid_clocks_inside_it(grid: list[int], lo: int, width: int, n: int) -> None:
    hi = lo + width
    inside = [c for c in grid if lo <= c <= hi]
    if not inside:
        with pytest.raises(ConfigError, match="no supported clock in this range"):
            resolve_clock_spec(f"range:{lo}-{hi}:{n}", grid)
    else:
        assert resolve_clock_spec(f"range:{lo}-{hi}:{n}", grid) == inside[::n]


@settings(max_examples=60, deadline=None)
@given(grid=grids, data=st.data())
def test_list_values_must_be_supported(grid: list[int], data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(grid), min_size=1, max_size=8))
    assert resolve_clock_spec("list:" + ",".join(map(str, chosen)), grid) == sorted(set(chosen), reverse=True)
    off = data.draw(st.integers(1, 5000).filter(lambda v: v not in grid))
    with pytest.raises(ConfigError, match="nearest supported"):
        resolve_clock_spec(f"list:{chosen[0]},{off}", grid)


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=30))
def test_anything_but_the_spec_grammar_is_refused(text: str) -> None:
    try:
        spec = parse_clock_spec(text)
    except ConfigError as exc:
        assert exc.field == "clocks" and "every:N" in str(exc)
        return
    assert spec.kind in ("all", "every", "count", "range", "list")
    assert set(text.strip()) <= set("allevrycountangeis:0123456789,-")


def test_spec_errors_name_the_field_and_the_forms() -> None:
    for bad in ("1410; rm -rf /", "list:1410;rm", "every:0", "range:1500-900", "$(reboot)", "list:", "every:-1"):
        with pytest.raises(ConfigError) as exc:
            resolve_clock_spec(bad, GRID)
        assert exc.value.field == "clocks"
    with pytest.raises(ConfigError, match="1395, 1410, 1425"):
        resolve_clock_spec("list:1412", GRID)


def test_power_limit_specs_are_checked_against_the_device_range() -> None:
    assert resolve_power_limit_spec(None, 200, 700) == [None]
    assert resolve_power_limit_spec("list:300,500", 200, 700) == [500, 300]
    assert resolve_power_limit_spec("range:300-500:100", 200, 700) == [500, 400, 300]
    assert resolve_power_limit_spec("count:3", 200, 700) == [700, 450, 200]
    with pytest.raises(ConfigError, match="power_limits"):
        resolve_power_limit_spec("list:900", 200, 700)
    with pytest.raises(ConfigError, match="power_limits"):
        resolve_power_limit_spec("range:300-500", 200, 700)  # a power range needs its step


# ---- order and points (pure) -----------------------------------------------------------------------
def test_random_order_is_reproducible_by_seed_and_recorded_in_point_ids(case: Case) -> None:
    clocks = resolve_clock_spec("count:8", GRID)
    a = sweep_points_from_grid(case, clocks, order="random", seed=7, default_every=3)
    b = sweep_points_from_grid(case, clocks, order="random", seed=7, default_every=3)
    c = sweep_points_from_grid(case, clocks, order="random", seed=8, default_every=3)

    def sm(points: list[Any]) -> list[int | None]:
        return [p.case["sm_clock_mhz"] for p in points]

    assert [p.point_id for p in a] == [p.point_id for p in b] and sm(a) == sm(b)
    assert sm(a) != sm(c)
    assert sorted(x for x in sm(a) if x) == sorted(clocks)
    roles = [p.role for p in a]
    # default clock first, after every 3 points, and last
    assert roles == ["default-clock"] + (["point"] * 3 + ["default-clock"]) * 2 + ["point"] * 2 + ["default-clock"]
    assert len({p.point_id for p in a}) == len(a)


def test_interleaved_and_descending_orders() -> None:
    s = [SweepSetting(f) for f in (1000, 900, 800, 700, 600)]
    assert [x.sm_clock_mhz for x in order_settings(s, "descending")] == [1000, 900, 800, 700, 600]
    assert [x.sm_clock_mhz for x in order_settings(s, "interleaved")] == [1000, 600, 900, 700, 800]
    with pytest.raises(ConfigError, match="order"):
        order_settings(s, "ascending")


def test_repeats_are_blocks_and_baseline_is_default_only(case: Case) -> None:
    points = sweep_points_from_grid(case, [1410, 1005], repeats=2, order="descending", default_every=0)
    assert [(p.case["sm_clock_mhz"], p.repeat) for p in points] == [
        (None, 0), (1410, 0), (1005, 0), (1410, 1), (1005, 1), (None, 1)]
    baseline = sweep_points_from_grid(case, [None], repeats=3)
    assert [(p.role, p.repeat) for p in baseline] == [("default-clock", r) for r in range(3)]


# ---- one point: lock, measure, verify, retry, flag -------------------------------------------------
class DriftsOnce(SimulatedGpu):
    """A simulated GPU whose first SM lock lands 45 MHz off (e.g. a clock that settled late)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(clock_drift_mhz=45, **kwargs)
        self.locks = 0

    def set_locked_sm_clocks(self, min_mhz: int, max_mhz: int) -> None:
        self.locks += 1
        if self.locks == 2:
            self._drift_mhz = 0  # the fault clears on the retry
        super().set_locked_sm_clocks(min_mhz, max_mhz)


def test_drift_is_retried_once_then_flagged(bench: Bench, case: Case) -> None:
    gpu = SimulatedGpu(clock_drift_mhz=45)
    with on_gpu(bench, gpu), ClockController(gpu) as controller, bench.hooked(ClockLockHook(controller)):
        rec = bench.measure(case.with_(sm_clock_mhz=1410))
    assert rec["clock_verified"] == "drift" and rec["clock_attempts"] == 2
    assert rec["clock_error_mhz"] == pytest.approx(45, abs=2)
    assert rec["clock_first_attempt_verified"] == "drift"
    assert rec["sm_clock_mhz_setting"] == 1410 and rec["is_default_clock"] is False
    assert gpu.state() == gpu.default_state


def test_drift_that_clears_on_the_retry_is_kept_with_its_history(bench: Bench, case: Case) -> None:
    gpu = DriftsOnce()
    with on_gpu(bench, gpu), ClockController(gpu) as controller, bench.hooked(ClockLockHook(controller)):
        rec = bench.measure(case.with_(sm_clock_mhz=1410))
    assert rec["clock_verified"] == "ok" and rec["clock_attempts"] == 2
    assert rec["clock_first_attempt_verified"] == "drift"
    assert rec["clock_first_attempt_error_mhz"] == pytest.approx(45, abs=2)


def test_thermal_throttling_is_flagged(bench: Bench, case: Case) -> None:
    gpu = SimulatedGpu(thermal_throttle_above_c=36.0, thermal_time_constant_s=0.05)
    with on_gpu(bench, gpu), ClockController(gpu) as controller, bench.hooked(ClockLockHook(controller, retries=0)):
        rec = bench.measure(case.with_(sm_clock_mhz=1410))
    assert rec["clock_verified"] == "throttled"
    assert "sw_thermal_slowdown" in rec["clock_throttle_reasons"]
    assert rec["clock_attempts"] == 1


def test_cooldown_waits_for_the_temperature_band_or_times_out() -> None:
    gpu = SimulatedGpu(thermal_time_constant_s=0.1)
    with gpu.workload():
        gpu.clock.sleep(0.3)  # heats towards the full-load steady state (about 75 degC), on the device's clock
    hot_c = gpu.temperature_c()
    assert hot_c > 45
    t0 = gpu.clock.now_s()
    done = cooldown(gpu, 40.0, timeout_s=30.0, poll_s=0.02)
    assert done["cooldown_status"] == "ok" and done["cooldown_end_temperature_c"] <= 40.0
    assert done["cooldown_start_temperature_c"] > 40.0
    assert done["cooldown_s"] == pytest.approx(gpu.clock.now_s() - t0)  # device seconds, whatever the host did
    stuck = cooldown(gpu, 0.0, timeout_s=0.05, poll_s=0.01)  # below ambient: never reached
    assert stuck["cooldown_timed_out"] is True and stuck["cooldown_status"] == "timed-out"


class _StepClock:
    """A device clock that moves only when slept on (as the simulated GPU's virtual clock does)."""

    def __init__(self) -> None:
        self.t_s = 0.0
        self.slept: list[float] = []

    def now_s(self) -> float:
        return self.t_s

    def sleep(self, duration_s: float) -> None:
        self.slept.append(duration_s)
        self.t_s += duration_s


class _CoolingDevice:
    """Cools by 1 degC per device second from 80 degC: only the device's clock can cool it."""

    def __init__(self) -> None:
        self.clock = _StepClock()

    def temperature_c(self) -> float:
        return 80.0 - self.clock.now_s()


def test_cooldown_waits_on_the_devices_own_clock() -> None:
    dev = _CoolingDevice()
    done = cooldown(dev, 50.0, timeout_s=600.0, poll_s=0.5)  # type: ignore[arg-type]
    assert done["cooldown_status"] == "ok" and done["cooldown_s"] == pytest.approx(30.0)
    assert done["cooldown_end_temperature_c"] == pytest.approx(50.0) and set(dev.clock.slept) == {0.5}
    dev = _CoolingDevice()
    stuck = cooldown(dev, 0.0, timeout_s=20.0, poll_s=1.0)  # type: ignore[arg-type]
    assert stuck["cooldown_timed_out"] is True and stuck["cooldown_s"] == pytest.approx(20.0)


# ---- the default-clock drift check and the summary -----------------------------------------------------
def _synthetic_sweep(**kwargs: Any) -> list[dict[str, Any]]:
    from sdbench.analysis.synthetic import synthetic_sweep_records

    return synthetic_sweep_records(sm_clocks_mhz=(1980, 1620, 1260, 900, 720), default_repeats=3, rounds=6,
                                   noise_rel=0.005, seed=7, **kwargs)


def test_a_default_clock_that_drifts_beyond_its_noise_flags_the_points_after_it() -> None:
    recs = _synthetic_sweep(drift_rel=0.15)
    checks = default_clock_checks(recs)
    assert checks["drift_significant"] is True and "drift beyond the noise" in checks["drift_verdict"]
    after = checks["drift_after_order_index"]
    expected = sorted(r["point_id"] for r in recs if r["point_role"] == "point" and r["sweep_order_index"] > after)
    assert expected and sorted(checks["drift_flagged_point_ids"]) == expected
    counts = point_counts(recs, checks)
    assert counts == {"points_done": len(recs), "points_failed": 0, "points_clock_flagged": 0,
                      "points_drift_flagged": len(expected), "points_flagged": len(expected)}
    meta = {"status": "complete", "points_to_measure": len(recs), "order": "random", "order_seed": 7,
            "settings_restored": True, "default_clock_checks": checks, **counts}
    lines = summary_lines(meta)
    assert any(line.startswith("WARNING: the default clock drifted beyond its noise") for line in lines)
    assert f"{len(expected)} flagged (0 clock not verified, {len(expected)} after default-clock drift)" in lines[-1]
    table = _summary_table(recs, checks)
    assert table.count("FLAGGED: after the default clock drifted") == len(expected)


def test_a_stable_default_clock_flags_nothing_and_an_unfinished_sweep_says_so() -> None:
    recs = _synthetic_sweep()
    recs[-1]["clock_verified"] = "drift"  # one clock point failed its verification
    checks = default_clock_checks(recs)
    assert checks["drift_significant"] is False and checks["drift_flagged_point_ids"] == []
    counts = point_counts(recs, checks)
    assert counts["points_flagged"] == counts["points_clock_flagged"] == 1
    meta = {"status": "interrupted", "points_to_measure": len(recs) + 4, "order": "random", "order_seed": 7,
            "settings_restored": True, "default_clock_checks": checks, **counts}
    lines = summary_lines(meta)
    assert not any("WARNING" in line for line in lines)
    assert lines[-1].startswith(f"sweep interrupted: {len(recs)} of {len(recs) + 4} point(s) done (INCOMPLETE), 1 flagged")


# ---- whole sweeps ------------------------------------------------------------------------------------
def test_an_interrupted_sweeps_bar_keeps_its_count_and_says_it_stopped(bench: Bench, case: Case, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C after the second point (of four clocks and the default-clock measurements): the bar keeps 2 of its
    total and says "stopped", never 100 % (it once jumped to the total in its closer, whatever the status)."""

    def stop_after_two(n: int, total: int, point: Any) -> None:
        if n == 2:
            raise KeyboardInterrupt

    with on_gpu(bench, SimulatedGpu()), pytest.raises(KeyboardInterrupt):
        run_sweep(bench, case, tmp_path / "sweep", SweepOptions(clocks="count:4", order_seed=1, **QUICK),
                  progress=True, on_point=stop_after_two)
    err = capsys.readouterr().err.replace("\r", "\n")
    last = [line for line in err.splitlines() if line.startswith("sweep:")][-1]
    import re

    count, total = map(int, re.search(r"\| (\d+)/(\d+) \[", last).groups())
    assert count == 2 < total and f"stopped: 2 of {total} points" in last and "100%" not in err
    meta = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert meta["status"] == "interrupted"


def test_end_to_end_sweep_recovers_the_simulated_optimum(bench: Bench, case: Case, tmp_path: Path) -> None:
    gpu = SimulatedGpu()
    options = SweepOptions(clocks="every:12", order="random", order_seed=3, **QUICK)
    with on_gpu(bench, gpu):
        result = run_sweep(bench, case, tmp_path / "sweep", options, progress=False)
    records = result.all_records()
    clocks = resolve_clock_spec("every:12", GRID)
    points = [r for r in records if r["point_role"] == "point"]
    assert sorted(r["sm_clock_mhz_setting"] for r in points) == sorted(clocks)
    assert all(r["clock_verified"] == "ok" and r["point_status"] == "ok" for r in records)
    assert [r["sweep_order_index"] for r in records] == list(range(len(records)))
    for r in records:  # clean records: settings, verification, activity, the Runner's per-step fields
        assert r["clock_window_verified"] and set(r["clock_window_verified"]) == {"ok"}
        assert r["activity_status"] == "simulated" and r["activity_sm_active_mean"] > 0.9  # busy windows only
        assert r["step_energy_j"] and "phase_denoise_s" in r
        assert r["is_default_clock"] == (r["point_role"] == "default-clock")
    meta = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert meta["status"] == "complete" and meta["simulated"] is True and meta["order_seed"] == 3
    # Planned against measured: what the report's "N of M points" reads.
    assert meta["points_done"] == meta["points_to_measure"] == meta["points_planned"] == len(records)
    assert meta["points_complete"] is True and meta["points_failed"] == 0
    assert meta["points_flagged"] == meta["points_clock_flagged"] + meta["points_drift_flagged"]
    assert meta["grid"]["sm_clocks_mhz"] == clocks and meta["settings_restored"] is True
    assert gpu.state() == gpu.default_state

    # Each point measures the model's true energy per image at its clock (the known-answer study of the
    # optimum itself is tests/integration/test_known_answer.py).
    for r in records:
        assert r["energy_per_image_j_median"] == pytest.approx(r["simulated_true_energy_per_image_j"], rel=0.02)
    true_best = min(points, key=lambda r: r["simulated_true_energy_per_image_j"])["sm_clock_mhz_setting"]
    measured_best = min(points, key=lambda r: r["energy_per_image_j_median"])["sm_clock_mhz_setting"]
    assert abs(measured_best - true_best) <= clocks[0] - clocks[1]


def test_read_only_sweep_plans_everything_and_measures_the_default_clock(bench: Bench, case: Case,
                                                                         tmp_path: Path) -> None:
    gpu = SimulatedGpu(no_permission=True)  # any attempted change would fail loudly
    with on_gpu(bench, gpu):
        result = run_sweep(bench, case, tmp_path, SweepOptions(clocks="count:3", read_only=True, order_seed=1, **QUICK),
                           progress=False)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [p["case"]["sm_clock_mhz"] for p in plan["points"]].count(None) == 2 and len(plan["points"]) == 5
    records = result.all_records()
    assert len(records) == 2 and all(r["clock_verified"] == "read-only" for r in records)
    assert all(r["is_default_clock"] and r["telemetry_sm_clock_mhz_mean"] for r in records)
    meta = json.loads((tmp_path / "sweep.json").read_text())
    assert meta["clock_control"] == "read-only" and meta["points_to_measure"] == 2
    # Planned (5) is not what a read-only sweep measures (2): it is complete when both are done.
    assert meta["points_planned"] == 5 and meta["points_done"] == 2 and meta["points_complete"] is True
    assert meta["points_flagged"] == 0 and meta["default_clock_checks"]["drift_significant"] is not None


def test_a_permission_refusal_aborts_the_sweep_before_its_first_point_and_changes_nothing(
        bench: Bench, case: Case, tmp_path: Path) -> None:
    gpu = SimulatedGpu(lock_fails=True)
    out = tmp_path / "sweep"
    with on_gpu(bench, gpu), pytest.raises(ClockPermissionError, match="root") as exc:
        run_sweep(bench, case, out, SweepOptions(clocks="count:3", order_seed=1, **QUICK), progress=False)
    assert gpu.state() == gpu.default_state
    assert exc.value.exit_code == 3 and "permission probe" in str(exc.value)
    assert not out.exists()  # probed before any point was measured or anything written


def test_a_finished_output_dir_needs_resume(bench: Bench, case: Case, tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text('{"point_id": "x", "point_status": "ok"}\n')
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(bench, case, tmp_path, SweepOptions(clocks="count:2", **QUICK), plan_only=True, progress=False)


# ---- activity counters ---------------------------------------------------------------------------------
FAKE_DCGMI = """#!{python}
import sys, time
open({argv_file!r}, "w").write(" ".join(sys.argv[1:]))
print("#Entity   SMACT  TENSO  DRAMA  FP32A  FP16A", flush=True)
print("ID", flush=True)
while True:
    print("GPU 0     0.500  0.250  0.125  N/A    0.050", flush=True)
    time.sleep(0.02)
"""


def test_dcgmi_dmon_output_is_parsed_per_window(tmp_path: Path) -> None:
    script = tmp_path / "dcgmi"
    script.write_text(FAKE_DCGMI.format(python=sys.executable, argv_file=str(tmp_path / "argv")))
    script.chmod(0o755)
    monitor = ActivityMonitor(SimulatedGpu(index=0), backend="dcgmi", dcgmi_path=str(script))
    monitor.start()
    time.sleep(0.3)
    monitor.mark_measured_start()
    time.sleep(0.2)
    fields = monitor.stop().as_record_fields()
    assert fields["activity_status"] == "measured" and fields["activity_source"] == "dcgmi"
    assert fields["activity_sm_active_mean"] == pytest.approx(0.5)
    assert fields["activity_tensor_active_mean"] == pytest.approx(0.25)
    assert fields["activity_fp32_active_mean"] is None  # N/A stays unknown
    assert (tmp_path / "argv").read_text() == "dmon -e 1002,1004,1005,1007,1008 -d 100 -i 0"


def test_activity_is_absent_with_a_reason_where_dcgm_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class RealLookingGpu(SimulatedGpu):
        simulated = False

    monkeypatch.setenv("PATH", str(tmp_path))
    monitor = ActivityMonitor(RealLookingGpu())
    monitor.start()
    summary = monitor.stop()
    assert summary.status.startswith("absent: DCGM not found") and summary.as_record_fields()["activity_sm_active_mean"] is None
    assert ActivityMonitor(None).stop().status.startswith("absent: no GPU")
    failing = tmp_path / "dcgmi"
    failing.write_text("#!/bin/sh\necho 'Error: profiling is not supported for this group of GPUs'\nexit 1\n")
    failing.chmod(0o755)
    broken = ActivityMonitor(RealLookingGpu(), backend="dcgmi")
    broken.start()
    time.sleep(0.2)
    assert broken.stop().status == "absent: dcgmi dmon failed: Error: profiling is not supported for this group of GPUs"


def test_dmon_parsing_and_argv() -> None:
    assert parse_dmon_line("GPU 3  0.1 0.2 0.3 0.4 0.5") == {
        "sm_active": 0.1, "tensor_active": 0.2, "dram_active": 0.3, "fp32_active": 0.4, "fp16_active": 0.5}
    for line in ("#Entity SMACT", "ID", "", "GPU 0 0.1 0.2", "GPU x 1 2 3 4 5", "GPU 0 a b c d e"):
        assert parse_dmon_line(line) is None
    assert dmon_command("dcgmi", 2, 50) == ["dcgmi", "dmon", "-e", "1002,1004,1005,1007,1008", "-d", "50", "-i", "2"]
    with pytest.raises(ConfigError):
        dmon_command("dcgmi", "0; reboot", 50)  # type: ignore[arg-type]


# ---- SIGTERM mid-sweep, then --resume ----------------------------------------------------------------------
SWEEP_ARGS = ["--device", "simulated", "--model", "tiny-sd", "--steps", "1", "--height", "64", "--width", "64",
              "--clocks", "count:6", "--order-seed", "5", "--default-every", "0", "--idle-gap-s", "0.1",
              "--cooldown-c", "-1", "--window-periods", "2", "--min-rounds", "1", "--max-rounds", "1",
              "--warmup", "1", "--idle-seconds", "0", "--quiet"]


@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`sdbench sweep` in a subprocess, sent SIGTERM once two points are finished."""
    root = tmp_path_factory.mktemp("killed")
    out, state = root / "sweep", root / "state.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.Popen([sys.executable, "-m", "sdbench", "sweep", *SWEEP_ARGS, "--output-dir", str(out),
                             "--state-file", str(state)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 240
    try:
        while not (results.is_file() and len(results.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the sweep ended or stalled before two points: {proc.communicate()}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return {"out": out, "state": state, "returncode": proc.returncode, "stderr": stderr}


def test_sigterm_mid_sweep_restores_the_gpu_and_keeps_only_complete_records(killed_sweep: dict[str, Any]) -> None:
    assert killed_sweep["returncode"] == 143, killed_sweep["stderr"]
    state = json.loads(killed_sweep["state"].read_text())
    assert state["restored_by"] == "SIGTERM" and state["all_restored"] is True
    assert state["settings_before_restore"]["locked_sm_clocks_mhz"] is not None  # it was locked when killed
    assert state["settings"] == {"locked_sm_clocks_mhz": None, "locked_mem_clocks_mhz": None, "power_limit_w": 700.0}
    lines = (killed_sweep["out"] / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is a whole JSON record
    plan = json.loads((killed_sweep["out"] / "plan.json").read_text())
    assert 2 <= len(records) < len(plan["points"])
    assert all(r["point_status"] == "ok" and r["clock_verified"] == "ok" for r in records)
    meta = json.loads((killed_sweep["out"] / "sweep.json").read_text())
    assert meta["status"] == "interrupted" and "143" in meta["interrupted_by"]


def test_resume_skips_finished_points_and_completes_the_plan(killed_sweep: dict[str, Any]) -> None:
    from sdbench.cli import main

    out = killed_sweep["out"]
    before = {r["point_id"]: r for r in read_records(out / "results.jsonl")}
    seedless = [a for a in SWEEP_ARGS if a not in ("--order-seed", "5")]  # the saved plan's order is kept
    assert main(["sweep", *seedless, "--output-dir", str(out), "--resume"]) == 0
    after = read_records(out / "results.jsonl")
    plan = json.loads((out / "plan.json").read_text())
    ids = [r["point_id"] for r in after]
    assert sorted(ids) == sorted(p["point_id"] for p in plan["points"])  # every point once, none twice
    for r in after[: len(before)]:
        assert r == before[r["point_id"]]  # the finished points were not measured again
    assert json.loads((out / "sweep.json").read_text())["status"] == "complete"
