"""Sweep analysis: EDP/ED2P arithmetic and saving signs, optima with bootstrap confidence on synthetic
sweeps drawn from the simulated GPU's physical model, the slowdown cap, exclusion of unverified clocks,
the default-clock baseline and its drift, and the simulated flag."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.analysis import (
    SweepAnalysis,
    analyze_records,
    analyze_sweep,
    ed2p_js2,
    edp_js,
    energy_saving_pct,
    is_default_record,
    record_settings,
    synthetic_sweep_records,
    time_change_pct,
)
from sdbench.errors import ConfigError
from sdbench.gpu.simulated import SimulatedGpu

# A 90 MHz grid of the simulated H100 (1980 - 15 k): the model's energy optimum, 1260 MHz, lies on it.
GRID_MHZ = tuple(range(1980, 600, -90))
BIN_MHZ = 90
FAST = {"n_resamples": 400}

positive = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)


# --- arithmetic ----------------------------------------------------------------------------------
@given(e=positive, t=positive, k=st.floats(min_value=0.1, max_value=10.0))
def test_edp_and_ed2p_arithmetic(e: float, t: float, k: float) -> None:
    assert edp_js(e, t) == pytest.approx(e * t)
    assert ed2p_js2(e, t) == pytest.approx(edp_js(e, t) * t)
    # Slowing down by k at equal power multiplies energy by k: EDP by k^2, ED2P by k^3.
    p = e / t
    assert edp_js(p * k * t, k * t) == pytest.approx(k**2 * edp_js(e, t), rel=1e-9)
    assert ed2p_js2(p * k * t, k * t) == pytest.approx(k**3 * ed2p_js2(e, t), rel=1e-9)


@given(e=positive, e0=positive, t=positive, t0=positive)
def test_saving_sign_conventions(e: float, e0: float, t: float, t0: float) -> None:
    saving = energy_saving_pct(e, e0)
    change = time_change_pct(t, t0)
    # Positive saving <=> less energy than the default; positive time change <=> slower than the default.
    assert (saving > 0) == (e < e0) or math.isclose(e, e0, rel_tol=1e-12)
    assert (change > 0) == (t > t0) or math.isclose(t, t0, rel_tol=1e-12)
    assert energy_saving_pct(e0, e0) == 0.0
    assert time_change_pct(t0, t0) == 0.0
    # Round trip, up to float cancellation at the scale of the default (e << e0 loses digits of e).
    assert e0 * (1 - saving / 100) == pytest.approx(e, rel=1e-9, abs=1e-12 * e0)
    assert t0 * (1 + change / 100) == pytest.approx(t, rel=1e-9, abs=1e-12 * t0)
    assert saving < 100.0


def test_savings_need_a_positive_baseline() -> None:
    with pytest.raises(ConfigError, match="default_energy_j"):
        energy_saving_pct(1.0, 0.0)
    with pytest.raises(ConfigError, match="default_time_s"):
        time_change_pct(1.0, -1.0)


def _record(sm: int | None, times: list[float], energies: list[float], **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"record_type": "case", "model": "sd15", "steps": 30, "width": 512, "height": 512,
                           "batch_size": 1, "sm_clock_mhz_setting": sm, "mem_clock_mhz_setting": None,
                           "power_limit_w_setting": None, "is_default_clock": sm is None,
                           "clock_verified": "ok", "time_per_image_s_samples": times,
                           "energy_per_image_j_samples": energies}
    rec.update(extra)
    return rec


@settings(max_examples=30, deadline=None)
@given(points=st.lists(st.tuples(st.floats(0.5, 5.0), st.floats(100.0, 800.0)), min_size=1, max_size=5),
       default=st.tuples(st.floats(0.5, 5.0), st.floats(100.0, 800.0)))
def test_point_metrics_follow_the_conventions(points: list[tuple[float, float]], default: tuple[float, float]) -> None:
    """Noise-free points: EDP = E t, ED2P = E t^2, savings and time changes against the default."""
    t0, p0 = default
    recs = [_record(None, [t0] * 3, [p0 * t0] * 3)]
    for i, (t, p) in enumerate(points):
        recs.append(_record(1000 + 15 * i, [t] * 3, [p * t] * 3))
    a = analyze_sweep(recs, n_resamples=50)
    assert a.default is not None
    for (t, p), ps in zip(points, a.points):
        e = p * t
        assert ps.edp_js is not None and ps.edp_js.value == pytest.approx(e * t)
        assert ps.ed2p_js2 is not None and ps.ed2p_js2.value == pytest.approx(e * t * t)
        assert ps.energy_saving_pct is not None and ps.energy_saving_pct.value == pytest.approx(
            100 * (1 - e / (p0 * t0)))
        assert ps.time_change_pct is not None and ps.time_change_pct.value == pytest.approx(100 * (t / t0 - 1))
        assert ps.power_w is not None and ps.power_w.value == pytest.approx(p)
    energies = [p * t for t, p in points]
    best = int(np.argmin(energies))
    if energies.count(energies[best]) == 1:
        assert a.optima["energy"].label == a.points[best].label
        assert a.optima["energy"].choice_fraction == 1.0


# --- optima on the simulated GPU's model ------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu() -> SimulatedGpu:
    return SimulatedGpu()


@pytest.fixture(scope="module")
def sweep() -> SweepAnalysis:
    recs = synthetic_sweep_records(sm_clocks_mhz=GRID_MHZ, rounds=10, noise_rel=0.005, seed=3)
    return analyze_sweep(recs, seed=1, **FAST)


def test_energy_optimum_recovered_within_a_bin_with_ci_containing_it(sweep: SweepAnalysis, gpu: SimulatedGpu) -> None:
    true_mhz = gpu.expected_energy_optimal_sm_clock_mhz()
    assert true_mhz in GRID_MHZ
    opt = sweep.optima["energy"]
    assert opt.x_field == "sm_clock_mhz"
    assert opt.x_value is not None and abs(opt.x_value - true_mhz) <= BIN_MHZ
    assert opt.clock_ci is not None and opt.clock_ci[0] <= true_mhz <= opt.clock_ci[1]
    assert 0 < (opt.choice_fraction or 0) <= 1
    assert sum(opt.choice_fractions.values()) == pytest.approx(1.0)
    assert opt.value is not None and opt.value.has_ci and opt.value.ci_low <= opt.value.value <= opt.value.ci_high
    assert opt.simulated


def test_edp_and_ed2p_optima_match_the_model(sweep: SweepAnalysis, gpu: SimulatedGpu) -> None:
    for objective, power in (("edp", 1), ("ed2p", 2)):
        model = {f: gpu.expected_busy_power_w(f) * gpu.expected_time_scale(f) ** (1 + power) for f in GRID_MHZ}
        true_mhz = min(model, key=model.__getitem__)
        opt = sweep.optima[objective]
        assert opt.x_value is not None and abs(opt.x_value - true_mhz) <= BIN_MHZ, objective
        assert opt.clock_ci is not None and opt.clock_ci[0] <= true_mhz <= opt.clock_ci[1], objective
    # Delay-weighted objectives favour faster clocks than pure energy.
    assert sweep.optima["ed2p"].x_value >= sweep.optima["edp"].x_value >= sweep.optima["energy"].x_value


def test_savings_are_against_the_default_clock_not_the_worst(sweep: SweepAnalysis) -> None:
    opt = sweep.optima["energy"]
    assert sweep.default is not None
    e_default = sweep.default.stats.energy_per_image_j.value
    chosen = next(p for p in sweep.points if p.label == opt.label)
    assert opt.saving_pct is not None
    assert opt.saving_pct.value == pytest.approx(100 * (1 - chosen.energy_per_image_j.value / e_default))
    assert opt.saving_pct.ci_low <= opt.saving_pct.value <= opt.saving_pct.ci_high
    worst = max(p.energy_per_image_j.value for p in sweep.points)
    against_worst = 100 * (1 - chosen.energy_per_image_j.value / worst)
    assert against_worst > opt.saving_pct.value  # the seed's inflated number is not what we report
    assert opt.time_change_pct is not None and opt.time_change_pct.value > 0  # slower than the default


@pytest.mark.parametrize("cap_pct", [2.0, 5.0, 20.0])
def test_slowdown_capped_optimum_respects_the_cap(cap_pct: float) -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=GRID_MHZ, rounds=8, noise_rel=0.005, seed=4)
    a = analyze_sweep(recs, slowdown_cap_pct=cap_pct, **FAST)
    opt = a.optima["energy_capped"]
    assert opt.label is not None and opt.time_change_pct is not None
    assert opt.time_change_pct.value <= cap_pct
    assert opt.slowdown_cap_pct == cap_pct
    # It is the least energy among the points within the cap.
    within = [p for p in a.points if p.time_change_pct.value <= cap_pct]
    assert opt.label == min(within, key=lambda p: p.energy_per_image_j.value).label
    # Relaxing the cap can only move the optimum to equal or lower energy.
    assert opt.value.value >= a.optima["energy"].value.value


def test_capped_optimum_absent_when_no_point_is_fast_enough() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1260, 1080, 900), rounds=5, seed=5)
    a = analyze_sweep(recs, slowdown_cap_pct=5.0, **FAST)
    opt = a.optima["energy_capped"]
    assert opt.label is None and "within 5 %" in (opt.reason or "")
    assert "no optimum" in opt.statement()


def test_unverified_points_are_excluded_from_optima_and_listed() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=GRID_MHZ, rounds=8, noise_rel=0.005, seed=6,
                                   clock_verified={1260: "drift", 1170: "throttled", 1350: "read-only"})
    a = analyze_sweep(recs, **FAST)
    bad = {"SM 1260 MHz", "SM 1170 MHz", "SM 1350 MHz"}
    assert {x["label"] for x in a.excluded} == bad
    for opt in a.optima.values():
        assert opt.label not in bad
        assert not bad & set(opt.choice_fractions)
    excluded = {p.label: p for p in a.points if p.excluded}
    assert set(excluded) == bad
    assert "drift" in (excluded["SM 1260 MHz"].exclusion_reason or "")
    md = a.markdown()
    assert "Excluded from the optima" in md and "SM 1260 MHz" in md


def test_a_partly_unverified_point_keeps_its_verified_repeats() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1440, 1260), repeats=2, rounds=4, seed=7)
    first_1260 = next(r for r in recs if r["sm_clock_mhz_setting"] == 1260)
    first_1260["clock_verified"] = "throttled"
    a = analyze_sweep(recs, **FAST)
    p = next(p for p in a.points if p.label == "SM 1260 MHz")
    assert not p.excluded and p.n_records == 1 and p.n_rounds == 4
    assert "throttled x1" in (p.exclusion_reason or "")
    assert any(x["label"] == "SM 1260 MHz" for x in a.excluded)


# --- the default-clock baseline ----------------------------------------------------------------------
def test_default_clock_pooled_and_drift_reported() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1500, 1260), default_repeats=3, rounds=8,
                                   noise_rel=0.003, default_drift_rel=0.05, seed=8)
    a = analyze_sweep(recs, **FAST)
    assert a.default is not None
    d = a.default
    assert len(d.remeasurements) == 3 and d.stats.n_rounds == 24 and d.stats.is_default
    assert d.drift_energy_rel == pytest.approx(0.05, abs=0.01)
    assert d.drift_significant is True
    assert any("moved between its re-measurements" in n for n in a.notes)
    # Re-measurements are in the order they were taken.
    stamps = [m["started_utc"] for m in d.remeasurements]
    assert stamps == sorted(stamps)


def test_stable_default_clock_is_not_flagged() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1500), default_repeats=2, rounds=8, noise_rel=0.003, seed=9)
    a = analyze_sweep(recs, **FAST)
    assert a.default is not None and a.default.drift_significant is False
    assert not any("moved between" in n for n in a.notes)


def test_without_a_default_clock_there_are_no_savings() -> None:
    recs = [r for r in synthetic_sweep_records(sm_clocks_mhz=(1980, 1500, 1260), rounds=4, seed=10)
            if not r["is_default_clock"]]
    a = analyze_sweep(recs, **FAST)
    assert a.default is None
    assert all(p.energy_saving_pct is None and p.time_change_pct is None for p in a.points)
    assert a.optima["energy"].label is not None and a.optima["energy"].saving_pct is None
    assert a.optima["energy_capped"].label is None and "default-clock" in (a.optima["energy_capped"].reason or "")
    assert any("never taken against the worst clock" in n for n in a.notes)


def test_default_detection() -> None:
    assert is_default_record({"point_role": "default-clock", "sm_clock_mhz_setting": 1980})
    assert is_default_record({"is_default_clock": True, "sm_clock_mhz_setting": None})
    # A power-limit point runs at the default SM clock but is not the default state.
    assert not is_default_record({"is_default_clock": True, "power_limit_w_setting": 300})
    assert is_default_record({"sm_clock_mhz": None, "mem_clock_mhz": None, "power_limit_w": None})
    assert not is_default_record({"sm_clock_mhz": 1500})
    assert record_settings({"sm_clock_mhz": 1500, "sm_clock_mhz_setting": 1410}) == {
        "sm_clock_mhz": 1410.0, "mem_clock_mhz": None, "power_limit_w": None}


# --- shapes of input ---------------------------------------------------------------------------------
def test_simulated_flag_everywhere(sweep: SweepAnalysis) -> None:
    assert sweep.simulated
    d = sweep.to_dict()
    assert d["simulated"] is True
    assert all(o["simulated"] for o in d["optima"].values() if o["label"])
    assert all(p["simulated"] for p in d["points"])
    assert "SIMULATED" in sweep.markdown()
    json.dumps(d)  # JSON-ready


def test_real_records_are_not_flagged_simulated() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1500), rounds=4, seed=11,
                                   workload={"energy_simulated": False, "env_gpu_simulated": False, "device": "cuda",
                                             "env_gpu_name": "NVIDIA H100 80GB HBM3"})
    a = analyze_sweep(recs, **FAST)
    assert not a.simulated
    assert "SIMULATED" not in a.markdown()
    assert a.provenance["clock_control"] == "locked through the device layer on real hardware"


def test_summaries_without_samples_give_estimates_without_intervals() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1500, 1260), rounds=4, seed=12)
    for r in recs:
        for k in [k for k in r if k.endswith("_samples")]:
            del r[k]
    a = analyze_sweep(recs, **FAST)
    p = a.points[0]
    rec = next(r for r in recs if r["sm_clock_mhz_setting"] == p.settings["sm_clock_mhz"])
    assert p.n_rounds == 1 and not p.time_per_image_s.has_ci
    assert p.energy_per_image_j is not None and p.energy_per_image_j.value == rec["energy_per_image_j_mean"]
    assert p.time_per_image_s.value == rec["time_per_image_s_mean"]
    assert a.optima["energy"].choice_fraction == 1.0


def test_failed_points_listed_not_analysed() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1500), rounds=4, seed=13)
    recs.append({"record_type": "case", "model": "sd15", "steps": 30, "width": 512, "height": 512, "batch_size": 1,
                 **{k: recs[0][k] for k in ("scheduler", "dtype", "profile", "knobs", "attention", "offload",
                                            "guidance_scale")},
                 "sm_clock_mhz_setting": 1200, "point_status": "error", "point_id": "p-1200",
                 "point_error": "GpuNoPermission: denied"})
    a = analyze_sweep(recs, **FAST)
    assert [f["point_id"] for f in a.failed] == ["p-1200"]
    assert "GpuNoPermission" in a.failed[0]["error"]
    assert all(p.settings["sm_clock_mhz"] != 1200 for p in a.points)


def test_memory_clock_series() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1620, 1260, 900), mem_clocks_mhz=(2619, 1593), rounds=4,
                                   seed=14)
    a = analyze_sweep(recs, **FAST)
    assert a.x_field == "sm_clock_mhz" and a.series_fields == ["mem_clock_mhz"]
    assert len(a.points) == 8
    assert a.points[0].label == "SM 900 MHz, mem 1593 MHz"


def test_workloads_are_split() -> None:
    a_recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1260), rounds=4, seed=15)
    b_recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1260), rounds=4, seed=16, workload={"model": "sdxl"})
    analyses = analyze_records(a_recs + b_recs, **FAST)
    assert sorted(a.workload["model"] for a in analyses) == ["sd15", "sdxl"]
    with pytest.raises(ConfigError, match="one workload"):
        analyze_sweep(a_recs + b_recs, **FAST)


def test_net_energy_basis_and_optimum() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=GRID_MHZ, rounds=6, noise_rel=0.005, seed=17)
    a = analyze_sweep(recs, energy_basis="net", **FAST)
    assert a.optima["edp"].energy_basis == "net"
    # Without the idle share, low clocks pay less for their longer runtime: the net optimum is no faster.
    assert a.optima["net_energy"].x_value <= a.optima["energy"].x_value


def test_deterministic_for_a_seed() -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=GRID_MHZ[:6], rounds=5, seed=18)
    one = analyze_sweep(copy.deepcopy(recs), seed=2, **FAST).to_dict()
    two = analyze_sweep(copy.deepcopy(recs), seed=2, **FAST).to_dict()
    assert one == two


@pytest.mark.parametrize("kwargs, field", [({"energy_basis": "wall"}, "energy_basis"),
                                           ({"statistic": "mode"}, "statistic"),
                                           ({"slowdown_cap_pct": -1.0}, "slowdown_cap_pct"),
                                           ({"confidence": 1.5}, "confidence"),
                                           ({"n_resamples": 0}, "n_resamples")])
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980,), rounds=3, seed=19)
    with pytest.raises(ConfigError, match=field):
        analyze_sweep(recs, **kwargs)


def test_no_records_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no records"):
        analyze_records([])
    with pytest.raises(ConfigError, match="time per image"):
        analyze_sweep([{"record_type": "case", "model": "sd15"}])
