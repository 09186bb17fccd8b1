"""A known answer: a DVFS sweep of tiny-sd on the simulated GPU, whose model knows the true time and energy
per image at every clock, analysed as `sdbench report` analyses it.

With little noise the analysis must find the energy- and EDP-optimal clocks within one step of the swept
grid of the truth, with intervals that contain the true values; with heavy noise, or with a default clock
that drifts during the sweep, it must say that the data cannot support the claim instead of claiming.
Everything runs on the simulated GPU's virtual clock, so the numbers are the same on an idle or a loaded
host (the tiny model's real computation runs once per point).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdbench.analysis.dvfs.analyze import analyze_records
from sdbench.gpu import SimulatedGpu
from sdbench.record.io import read_records
from sdbench.runner import RunnerConfig
from sdbench.session import Bench
from sdbench.studies.dvfs.grid import resolve_clock_spec
from sdbench.studies.dvfs.options import SweepOptions
from sdbench.studies.dvfs.run import run_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLOCKS = "every:8"  # 1980, 1860, ... 420 MHz: 14 clock points 120 MHz apart
QUICK = dict(idle_gap_s=0.0, cooldown_c=None)


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    b = Bench(device="simulated", runner_config=RunnerConfig(idle_s=0.5, warmup_min_s=0.5), gpu=SimulatedGpu())
    yield b
    b.close()


def sweep(bench: Bench, gpu: SimulatedGpu, out: Path, **options: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the sweep on `gpu` with the module's warm pipeline; the records and sweep.json."""
    saved = bench.gpu, bench.runner
    bench.gpu = gpu
    bench.runner = type(saved[1])(saved[1].config, gpu)
    try:
        case = bench.case("tiny-sd", steps=4, height=64, width=64, seed=0)
        run_sweep(bench, case, out, SweepOptions(clocks=CLOCKS, order="random", order_seed=7,
                                                 **{**QUICK, **options}), progress=False)
    finally:
        bench.gpu, bench.runner = saved
    return read_records(out / "results.jsonl"), json.loads((out / "sweep.json").read_text())


def truth(gpu: SimulatedGpu, grid: list[int], objective: str) -> tuple[int, dict[int, float]]:
    """The true optimum over the swept clocks and the true objective per image at each of them."""
    profile = gpu.work_profile
    assert profile is not None
    values = {}
    for f in grid:
        t = gpu.expected_call(profile, f)
        values[f] = t.energy_j if objective == "energy" else t.energy_j * t.time_s
    return min(values, key=values.__getitem__), values


@pytest.fixture(scope="module")
def quiet(bench: Bench, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, SimulatedGpu, list[dict[str, Any]]]:
    gpu = SimulatedGpu(noise_cv=0.02, power_noise_cv=0.005, noise_seed=11)
    records, meta = sweep(bench, gpu, tmp_path_factory.mktemp("quiet"), default_every=5)
    return analyze_records(records, meta=meta)[0], gpu, records


def test_every_point_measures_the_true_energy_within_its_interval(quiet: Any) -> None:
    _, _, records = quiet
    for r in records:
        true_j = r["simulated_true_energy_per_image_j"]
        assert r["energy_per_image_j_ci95_low"] <= true_j * 1.001 and true_j * 0.999 <= r["energy_per_image_j_ci95_high"]
        assert r["energy_per_image_j_median"] == pytest.approx(true_j, rel=0.01)
        assert r["time_per_image_s_median"] == pytest.approx(r["simulated_true_time_per_image_s"], rel=0.01)


@pytest.mark.parametrize("objective", ["energy", "edp"])
def test_the_optimum_is_found_within_one_grid_step_with_intervals_containing_the_truth(
        quiet: Any, objective: str) -> None:
    analysis, gpu, _ = quiet
    grid = resolve_clock_spec(CLOCKS, gpu.supported_sm_clocks_mhz(2619))
    step_mhz = grid[0] - grid[1]
    best_mhz, true_per_call = truth(gpu, grid, objective)
    opt = analysis.optima[objective]
    assert not analysis.headline_warnings, analysis.headline_warnings
    assert opt.supported, opt.support_reasons
    assert abs(opt.x_value - best_mhz) <= step_mhz, (opt.x_value, best_mhz)
    assert opt.clock_ci is not None and opt.clock_ci[0] <= best_mhz <= opt.clock_ci[1]
    # The value at the chosen clock (per image; batch 1) lies in its interval.
    true_value = true_per_call[int(opt.x_value)]
    assert opt.value is not None and opt.value.ci_low <= true_value <= opt.value.ci_high, (opt.value, true_value)


def test_heavy_noise_says_the_data_cannot_support_the_claim(bench: Bench, tmp_path: Path) -> None:
    gpu = SimulatedGpu(noise_cv=0.5, outlier_probability=0.2, outlier_factor=2.5, noise_seed=3)
    saved = bench.runner.config
    bench.runner.config = RunnerConfig(idle_s=0.5, warmup_min_s=0.5, min_rounds=3, max_rounds=3,
                                       max_calls_per_window=4, min_window_periods=1)
    try:
        records, meta = sweep(bench, gpu, tmp_path, default_every=5)
    finally:
        bench.runner.config = saved
    analysis = analyze_records(records, meta=meta)[0]
    for objective in ("energy", "edp"):
        opt = analysis.optima[objective]
        assert not opt.supported and opt.support_reasons, objective
        assert "cannot support" in opt.statement()


def test_a_drifting_card_is_flagged_and_nothing_is_claimed(bench: Bench, tmp_path: Path) -> None:
    gpu = SimulatedGpu(noise_cv=0.02, noise_seed=5, slowdown_rel_per_s=0.01)  # 1 % slower per virtual second
    records, meta = sweep(bench, gpu, tmp_path, default_every=4)
    assert meta["points_drift_flagged"] > 0
    analysis = analyze_records(records, meta=meta)[0]
    assert analysis.drifted and any("drift" in w for w in analysis.headline_warnings)
    assert not any(opt.supported for opt in analysis.optima.values())
