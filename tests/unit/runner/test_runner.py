"""The Runner (`sdbench.runner`): records with units, the stop rule, calibration to the energy counter,
energy on the simulated GPU (counter, and the power-timeline fallback), none on the CPU, per-step and
per-phase marks, warm-up kept apart, `breakdown` on synthetic marks and `pipeline_call_kwargs`.

Three measurements are taken once per module (tiny-sd, euler, 3 steps, 64 px): on the CPU, on the
simulated GPU with its 100 ms energy counter, and on a simulated GPU without a counter. Windows are kept
short (6 counter periods) so the module runs in a few seconds.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.case import Case
from sdbench.gpu import SimulatedGpu
from sdbench.record.build import build_record
from sdbench.runner import Marks, Measurement, RunnerConfig, breakdown, pipeline_call_kwargs
from sdbench.session import Bench

STEPS = 3
WINDOW_PERIODS = 6
WARMUP_SLEEP_S = 1.0  # added to the first warm-up call only: it must never show in a measured round


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Run:
    measurement: Measurement
    record: dict[str, Any]
    config: RunnerConfig
    pipeline_calls: int = 0
    device_calls: int = 0  # calls the simulated GPU saw (real and replayed)


def measure(bench: Bench, before: Callable[[Any], Callable[[], int]] | None = None, prewarm: bool = False,
            **case: Any) -> Run:
    """Measure tiny-sd (euler, STEPS steps) on `bench`; `before(pipe)` may instrument the pipeline and
    returns a function giving the number of pipeline calls it saw. `prewarm` runs one call first, so the
    Runner's single warm-up call (the one it calibrates on) is as fast as the measured ones."""
    c = bench.case("tiny-sd", scheduler="euler", steps=STEPS, **case)
    built, applied = bench.pipeline(c)
    if prewarm:
        bench.runner.make_call(c, built, applied)()
    count = before(built.pipe) if before else (lambda: 0)
    try:
        m = bench.runner.run(c, built, applied)
    finally:
        built.pipe.__dict__.pop("encode_prompt", None)
    rec = build_record(m)
    rec.update(applied.as_dict())
    return Run(m, rec, bench.runner.config, count(), getattr(bench.gpu, "calls_started", 0))


def slow_first_call(pipe: Any, sleep: Callable[[float], None] = time.sleep) -> Callable[[], int]:
    """Count pipeline calls (one prompt encoding each) and make the very first one WARMUP_SLEEP_S slower
    (`sleep` on the measured device's clock: the wall clock, or a simulated GPU's virtual one, where the
    sleep is device time busy with the call, as lazy initialisation is on a real card)."""
    original = pipe.encode_prompt
    calls = [0]

    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            sleep(WARMUP_SLEEP_S)
        return original(*args, **kwargs)

    pipe.encode_prompt = encode_prompt
    return lambda: calls[0]


@pytest.fixture(scope="module")
def cpu_run() -> Iterator[Run]:
    bench = Bench("cpu", runner_config=RunnerConfig.for_cpu(min_rounds=2, max_rounds=4, idle_s=0, warmup_calls=2))
    try:
        yield measure(bench, before=slow_first_call)
    finally:
        bench.close()


@pytest.fixture(scope="module")
def sim_run() -> Iterator[Run]:
    cfg = RunnerConfig.for_cpu(min_rounds=2, max_rounds=2, idle_s=0.3, min_window_periods=WINDOW_PERIODS)
    bench = Bench("simulated", runner_config=cfg)
    try:
        yield measure(bench, prewarm=True)
    finally:
        bench.close()


@pytest.fixture(scope="module")
def timeline_run() -> Iterator[Run]:
    """A simulated GPU without an energy counter: the power timeline is the energy source."""
    cfg = RunnerConfig.for_cpu(min_rounds=3, max_rounds=3, idle_s=0.2, min_window_periods=WINDOW_PERIODS)
    bench = Bench("simulated", runner_config=cfg, gpu=SimulatedGpu(unsupported={"total_energy_mj"}))
    try:
        yield measure(bench)
    finally:
        bench.close()


def phase_energy_fraction(rec: dict[str, Any]) -> float:
    """Energy of the marked phases of one call over the measured energy of one call."""
    phases = sum(rec[f"phase_{p}_energy_j"] for p in ("text_encode", "denoise", "vae_decode"))
    return phases / (rec["energy_per_image_j_median"] * rec["batch_size"])


# --- the record --------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["cpu_run", "sim_run"])
def test_record_has_the_metrics_with_units(which: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(which)
    rec, cfg = run.record, run.config
    for key in ("time_per_image_s_median", "time_per_image_s_mean", "time_per_image_s_ci95_high", "time_per_call_s",
                "images_per_s", "warmup_s", "first_call_s",
                "step_time_median_s", "phase_denoise_s", "flop_per_image", "achieved_tflops"):
        assert isinstance(rec[key], float) and rec[key] > 0, key
    assert rec["time_per_image_s_ci95_low"] <= rec["time_per_image_s_mean"] <= rec["time_per_image_s_ci95_high"]
    assert rec["time_per_call_s"] == pytest.approx(rec["time_per_image_s_median"] * rec["batch_size"])
    assert rec["images_per_s"] == pytest.approx(1.0 / rec["time_per_image_s_median"])
    assert cfg.min_rounds <= rec["rounds"] <= cfg.max_rounds
    assert rec["stop_reason"] in ("converged", "max_rounds", "max_time")
    assert len(rec["time_per_image_s_samples"]) == rec["rounds"] == len(run.measurement.windows)
    assert rec["images_measured"] == rec["rounds"] * rec["calls_per_window"] * rec["batch_size"]
    assert rec["scheduler_class"] == "EulerDiscreteScheduler" and rec["unet_evaluations"] == STEPS
    assert rec["case_hash"] == run.measurement.case.case_hash
    assert rec["knob_channels_last"] is False and rec["profile"] == "eager"


def test_config_cap_below_the_floor_lowers_the_floor() -> None:
    cfg = RunnerConfig(max_rounds=2)
    assert (cfg.min_rounds, cfg.max_rounds) == (2, 2)
    assert (RunnerConfig.for_cpu(max_rounds=2).min_rounds, RunnerConfig.for_cpu().min_rounds) == (2, 3)


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"min_rounds": 3, "max_rounds": 2}, "min_rounds", "<= max_rounds (2)"),  # asked for both: they disagree
    ({"max_time_s": -1.0}, "max_time_s", "seconds >= 0"),
    ({"target_rel_ci": 0.0}, "target_rel_ci", "a fraction > 0"),
    ({"energy": "nvml"}, "energy", "auto, counter, timeline, rapl, none"),
    ({"warmup_calls": 0}, "warmup_calls", ">= 1"),
    ({"idle_s": float("nan")}, "idle_s", "seconds >= 0"),
    ({"min_rounds": True}, "min_rounds", "whole number"),
])
def test_a_bad_config_value_names_the_field_the_value_and_the_range(kwargs: dict[str, Any], field: str,
                                                                     words: str) -> None:
    from sdbench.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        RunnerConfig(**kwargs)
    assert exc.value.field == field and words in str(exc.value)
    assert str(exc.value).startswith(f"invalid {field}: {kwargs[field]!r}")


# --- warm-up ---------------------------------------------------------------------------------------------
def test_warmup_is_reported_apart_and_never_measured(cpu_run: Run) -> None:
    rec = cpu_run.record
    assert rec["warmup_calls"] == 2
    # Every pipeline call is either a warm-up call or inside a measured window, never both.
    assert cpu_run.pipeline_calls == rec["warmup_calls"] + sum(w.calls for w in cpu_run.measurement.windows)
    assert rec["first_call_s"] >= WARMUP_SLEEP_S
    assert rec["warmup_s"] >= rec["first_call_s"]
    assert max(rec["time_per_image_s_samples"]) < rec["first_call_s"]


# --- calibration -----------------------------------------------------------------------------------------
def test_cpu_without_energy_times_one_call_per_window(cpu_run: Run) -> None:
    assert cpu_run.record["calls_per_window"] == 1
    assert cpu_run.record["energy_resolution_s"] is None


def test_window_spans_enough_counter_periods(sim_run: Run) -> None:
    rec = sim_run.record
    period_s = rec["energy_resolution_s"]
    assert period_s == pytest.approx(0.1, abs=0.02)  # the simulated counter's update period, detected
    window_s = WINDOW_PERIODS * period_s
    # Calibrated on the last warm-up call, never the first (lazy initialisation): the fewest calls that
    # span the window.
    assert rec["warmup_calls"] >= 2
    assert 1 < rec["calls_per_window"] < RunnerConfig().max_calls_per_window
    assert rec["calls_per_window"] * rec["calibration_call_s"] >= window_s
    assert (rec["calls_per_window"] - 1) * rec["calibration_call_s"] < window_s
    # ... and the measured windows do span about that long.
    assert min(w.duration_s for w in sim_run.measurement.windows) >= 0.5 * window_s


# --- energy ------------------------------------------------------------------------------------------------
def test_cpu_energy_is_unavailable_with_a_reason(cpu_run: Run) -> None:
    rec = cpu_run.record
    assert rec["energy_status"] == "unavailable"
    assert rec["energy_source"] == "none"
    assert rec["energy_per_image_j_median"] is None and "energy_per_image_j_samples" not in rec
    assert "NVML" in rec["energy_unavailable_reason"]
    assert rec["net_energy_per_image_j_median"] is None and rec["net_energy_unavailable_reason"]


def test_simulated_gpu_energy_from_the_counter(sim_run: Run) -> None:
    rec = sim_run.record
    assert rec["energy_status"] == "simulated" and rec["energy_simulated"] is True
    assert rec["energy_source"] == "counter" and rec["energy_meter"] == "nvml_counter"
    assert rec["energy_per_image_j_median"] > 0
    assert all(e > 0 for e in rec["energy_per_image_j_samples"])
    assert rec["power_w"] > rec["idle_power_w"] > 0
    assert rec["idle_power_w"] == pytest.approx(70.0, rel=0.1)  # the simulated card's idle power
    assert 0 < rec["net_energy_per_image_j_median"] < rec["energy_per_image_j_median"]
    assert abs(rec["counter_timeline_agreement_rel"]) < 0.1
    assert len(rec["step_energy_j"]) == STEPS and all(e > 0 for e in rec["step_energy_j"])
    assert rec["tflop_per_j"] > 0
    # The phases hold most of a call, so most of its energy (the rest is 'other').
    assert 0.6 < phase_energy_fraction(rec) < 1.1


def test_energy_falls_back_to_the_power_timeline(timeline_run: Run) -> None:
    rec = timeline_run.record
    assert rec["energy_source"] == "timeline" and rec["energy_meter"] == "power_timeline"
    assert rec["energy_status"] == "simulated"
    assert rec["energy_resolution_s"] == pytest.approx(1.0 / RunnerConfig().timeline_hz)
    assert rec["energy_per_image_j_median"] > 0 and rec["rounds"] == 3
    assert rec["idle_power_w"] == pytest.approx(70.0, rel=0.1)  # idle from the timeline too


def test_energy_fallback_reason_is_recorded(timeline_run: Run) -> None:
    rec = timeline_run.record
    reasons = [v for k, v in rec.items() if "energy" in k and "reason" in k and isinstance(v, str)]
    assert any("counter" in r for r in reasons), reasons


def test_timeline_fallback_keeps_every_window_for_step_and_phase_energy(timeline_run: Run) -> None:
    rec = timeline_run.record
    assert all(w.timeline_energy_j for w in timeline_run.measurement.windows)
    assert rec.get("timeline_energy_per_image_j_median", rec["energy_per_image_j_median"]) == pytest.approx(
        rec["energy_per_image_j_median"], rel=0.1)
    assert 0.6 < phase_energy_fraction(rec) < 1.1


# --- per-step and per-phase --------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["cpu_run", "sim_run"])
def test_steps_and_phases_add_up(which: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(which)
    rec, m = run.record, run.measurement
    assert len(rec["step_time_s"]) == STEPS  # euler: one UNet evaluation per step
    assert all(t > 0 for t in rec["step_time_s"])
    assert rec["step_marks"] == ("perf_counter" if which == "cpu_run" else "virtual clock of the simulated GPU")
    assert len(m.breakdowns) == sum(w.calls for w in m.windows)
    for b in m.breakdowns:
        assert len(b.step_s) == STEPS
        assert sum(b.step_s) == pytest.approx(b.phase_s["denoise"])
        assert all(v >= 0 for v in b.phase_s.values())
        assert b.phase_s["text_encode"] > 0 and b.phase_s["vae_decode"] > 0
    # Per call, the phases tile the call; the calls of a window fill most of it.
    calls = iter(m.breakdowns)
    for w in m.windows:
        spans = [sum(next(calls).phase_s.values()) for _ in range(w.calls)]
        assert 0.5 * w.duration_s <= sum(spans) <= w.duration_s
    phases = sum(rec[f"phase_{p}_s"] for p in ("text_encode", "denoise", "vae_decode", "other"))
    assert phases == pytest.approx(rec["time_per_call_s"], rel=0.5)


# --- breakdown on synthetic marks ---------------------------------------------------------------------------
def synthetic_marks(items: list[tuple[str, float]]) -> Marks:
    marks = Marks(cuda=False, origin=0.0)
    marks.items = list(items)
    return marks


def test_breakdown_of_known_marks() -> None:
    marks = synthetic_marks([("start", 1.0), ("text_start", 1.1), ("text_end", 1.3), ("step", 1.5), ("step", 1.8),
                             ("step", 2.2), ("decode_start", 2.3), ("decode_end", 2.7), ("end", 2.8)])
    b = breakdown(marks, window_start_wall_s=100.0)
    assert b.start_wall_s == 100.0
    assert b.step_s == pytest.approx([0.2, 0.3, 0.4])
    assert [t for bound in b.step_bounds_s for t in bound] == pytest.approx([1.3, 1.5, 1.5, 1.8, 1.8, 2.2])
    assert b.phase_s == pytest.approx({"text_encode": 0.2, "denoise": 0.9, "vae_decode": 0.4, "other": 0.3})
    assert b.phase_bounds_s["vae_decode"] == pytest.approx((2.3, 2.7))


def test_breakdown_without_phase_marks() -> None:
    """per_phase off: steps count from the call's start, and what follows the last step is 'other'."""
    b = breakdown(synthetic_marks([("start", 0.0), ("step", 0.5), ("step", 0.75), ("end", 1.0)]), 0.0)
    assert b.step_s == pytest.approx([0.5, 0.25])
    assert b.phase_s == pytest.approx({"text_encode": 0.0, "denoise": 0.75, "vae_decode": 0.0, "other": 0.25})


def test_cpu_marks_are_offsets_from_the_origin() -> None:
    origin = time.perf_counter()
    marks = Marks(cuda=False, origin=origin)
    for label in ("start", "step", "end"):
        marks.mark(label)
    offsets = marks.offsets_s()
    assert [lab for lab, _ in offsets] == ["start", "step", "end"]
    times = [t for _, t in offsets]
    assert times == sorted(times) and times[0] >= 0


@st.composite
def monotone_marks(draw: st.DrawFn) -> tuple[list[tuple[str, float]], bool, bool]:
    with_text, with_decode = draw(st.booleans()), draw(st.booleans())
    n_steps = draw(st.integers(0, 8))
    labels = ["start"] + (["text_start", "text_end"] if with_text else []) + ["step"] * n_steps
    labels += (["decode_start", "decode_end"] if with_decode else []) + ["end"]
    gaps = draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=len(labels), max_size=len(labels)))
    t0 = draw(st.floats(0, 1e4, allow_nan=False))
    times, t = [], t0
    for g in gaps:
        t += g
        times.append(t)
    return list(zip(labels, times)), with_text, with_decode


@settings(max_examples=150, deadline=None)
@given(monotone_marks())
def test_breakdown_steps_sum_to_denoise_and_phases_tile_the_call(drawn: tuple[list[tuple[str, float]], bool, bool]) -> None:
    items, _with_text, _with_decode = drawn
    b = breakdown(synthetic_marks(items), 0.0)
    n_steps = sum(1 for lab, _ in items if lab == "step")
    assert len(b.step_s) == n_steps
    assert all(d >= 0 for d in b.step_s)
    assert sum(b.step_s) == pytest.approx(b.phase_s["denoise"], abs=1e-9)
    assert all(v >= 0 for v in b.phase_s.values())
    assert sum(b.phase_s.values()) == pytest.approx(items[-1][1] - items[0][1], abs=1e-9)


# --- pipeline_call_kwargs -------------------------------------------------------------------------------------
def test_text_to_image_call_kwargs() -> None:
    case = Case.create("tiny-sd", device="cpu", dtype="fp32", batch_size=2, resolution=72, steps=3,
                       negative_prompt="blurry")
    kw = pipeline_call_kwargs(case, "cpu")
    assert kw["prompt"] == [case.prompt] * 2 and kw["negative_prompt"] == ["blurry"] * 2
    assert (kw["height"], kw["width"]) == (72, 72)
    assert kw["num_inference_steps"] == 3 and kw["guidance_scale"] == case.guidance_scale
    assert kw["output_type"] == "pt"
    assert "image" not in kw and "strength" not in kw
    assert pipeline_call_kwargs(case.with_(negative_prompt=None), "cpu")["negative_prompt"] is None


def test_image_to_image_call_kwargs() -> None:
    case = Case.create("sdxl-refiner", device="cpu", dtype="fp32", batch_size=2, resolution=64)
    kw = pipeline_call_kwargs(case, "cpu")
    assert "height" not in kw and "width" not in kw
    assert kw["strength"] == case.strength == 0.3
    image = kw["image"]
    assert image.shape == (2, 3, 64, 64) and image.device.type == "cpu"
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    # Seeded: the same case gives the same input image, another seed another one.
    assert torch.equal(image, pipeline_call_kwargs(case, "cpu")["image"])
    assert not torch.equal(image, pipeline_call_kwargs(case.with_(seed=1), "cpu")["image"])


# --- pre-roll: windows start on a loaded GPU -----------------------------------------------------------------
def count_calls(pipe: Any) -> Callable[[], int]:
    original = pipe.encode_prompt
    calls = [0]

    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    pipe.encode_prompt = encode_prompt
    return lambda: calls[0]


@functools.cache
def lagged_run(preroll_s: float) -> Run:
    cfg = RunnerConfig.for_cpu(min_rounds=3, max_rounds=3, idle_s=0.3, min_window_periods=20, preroll_s=preroll_s)
    bench = Bench("simulated", runner_config=cfg, gpu=SimulatedGpu(power_report_lag_s=0.4))
    try:
        return measure(bench, before=count_calls, prewarm=True)
    finally:
        bench.close()


def test_preroll_runs_unmeasured_calls_before_each_window_of_short_calls(cpu_run: Run) -> None:
    assert cpu_run.record["preroll_calls_per_window"] == 0  # one call per window: no pre-roll
    run = lagged_run(RunnerConfig().preroll_s)
    windows = run.measurement.windows
    pre = run.record["preroll_calls_per_window"]
    assert pre >= 1 and (pre - 1) * run.record["calibration_call_s"] < RunnerConfig().preroll_s  # ~preroll_s of calls
    # Every call reaches the (virtual-clock) device; the pipeline itself runs once (the first warm-up
    # call), the rest replay that call's events.
    gpu_calls = run.record["warmup_calls"] + sum(w.calls + pre for w in windows)
    assert run.device_calls == gpu_calls
    assert run.pipeline_calls == 1
    assert len(run.measurement.breakdowns) == sum(w.calls for w in windows)  # pre-roll calls are not measured


def missing_load_s(run: Run, window: int) -> float:
    """Seconds of (busy - idle) power that the lagging timeline misses in one window (the relative deficit
    scaled by the window's length, so a window stretched by a busy host reads the same)."""
    busy, idle = run.record["power_w"], run.record["idle_power_w"]
    w = run.measurement.windows[window]
    return -(w.counter_span_timeline_j / (w.energy_j + w.energy_tail_j) - 1.0) * w.duration_s * busy / (busy - idle)


def test_preroll_brings_a_lagging_power_timeline_into_line_with_the_counter() -> None:
    """NVML's power reading trails the load (0.4 s here); a window that starts from idle reads low on the
    timeline. The first window follows the 0.3 s idle baseline: without a pre-roll the timeline misses
    about that much load; later windows follow other calls, and the counter's 100 ms steps move any
    window's figure by up to a period of load, so only the first shows the effect clearly."""
    without, with_preroll = lagged_run(0.0), lagged_run(RunnerConfig().preroll_s)
    assert with_preroll.record["calls_per_window"] > 1  # windows of several short calls: the pre-roll's case
    lost_without, lost_with = missing_load_s(without, 0), missing_load_s(with_preroll, 0)
    print(f"first window: the timeline misses {lost_without:.3f} s of load without pre-roll, {lost_with:.3f} s with")
    assert lost_without > 0.2
    assert lost_with < 0.1
    # Over all windows, what is left is the wait for the counter's next update before a window (< 0.1 s idle).
    assert abs(with_preroll.record["counter_timeline_agreement_rel"]) < 0.05


def test_a_slow_first_call_does_not_size_the_window() -> None:
    """The first call carries lazy initialisation; sized on it, a window would hold one call and the
    counter's 100 ms steps would scatter the energy (seen on a fresh CUDA context: 1 call per window)."""
    cfg = RunnerConfig.for_cpu(min_rounds=2, max_rounds=2, idle_s=0, min_window_periods=WINDOW_PERIODS,
                               warmup_min_s=0.3)
    bench = Bench("simulated", runner_config=cfg)
    try:
        run = measure(bench, before=functools.partial(slow_first_call, sleep=bench.gpu.clock.sleep))
    finally:
        bench.close()
    rec = run.record
    assert rec["first_call_s"] >= WARMUP_SLEEP_S and rec["warmup_calls"] >= 2
    # warmup_min_s counts after the first call (a compiling call says nothing of steady state)
    assert rec["warmup_s"] >= rec["first_call_s"] + 0.3
    assert rec["calibration_call_s"] < WARMUP_SLEEP_S
    assert rec["calls_per_window"] > 1


@given(st.lists(st.floats(min_value=1e-4, max_value=100.0), min_size=1, max_size=12))
def test_calibration_never_uses_the_first_call_when_others_ran(calls: list[float]) -> None:
    from sdbench.runner import calibration_call_s

    got = calibration_call_s(calls)
    if len(calls) == 1:
        assert got == calls[0]
    elif len(calls) < 4:
        assert got == calls[-1]  # right after a compile: the latest call is the steadiest
    else:
        last3 = sorted(calls[-3:])
        assert got == last3[1]  # median of the last three: one outlier cannot size the window


def test_calibration_examples() -> None:
    from sdbench.runner import calibration_call_s

    assert calibration_call_s([131.0, 5.2, 1.04]) == 1.04  # compile, CUDA-graph recording, steady
    assert calibration_call_s([80.0, 0.017, 0.017, 0.095, 0.017]) == 0.017  # a gc pause among steady calls


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_a_simulated_case_at_another_batch_replays_the_marks_of_the_first(model: str) -> None:
    """On a virtual clock the pipeline runs once per case but its batch size: a batch sweep costs one real
    call. The replayed marks are the ones a real call at that batch makes (a fresh Runner runs it), and the
    known answer is the one for that batch."""
    cfg = RunnerConfig.for_cpu(min_rounds=2, max_rounds=2, idle_s=0, min_window_periods=2)
    swept, fresh = Bench("simulated", runner_config=cfg), Bench("simulated", runner_config=cfg)
    try:
        cases = [swept.case(model, scheduler="euler", steps=STEPS, resolution=64, batch_size=b) for b in (1, 2)]
        built, applied = swept.pipeline(cases[0])
        calls = count_calls(built.pipe)
        measured = [swept.runner.run(c, built, applied) for c in cases]
        assert calls() == 1
        built_2, applied_2 = fresh.pipeline(cases[1])
        direct = fresh.runner.run(cases[1], built_2, applied_2)
        assert list(fresh.runner._recorded_marks.values()) == list(swept.runner._recorded_marks.values())
        assert len(swept.runner._recorded_marks) == 1
        assert (measured[1].simulation or {})["simulated_true_time_per_image_s"] == pytest.approx(
            (direct.simulation or {})["simulated_true_time_per_image_s"])
        assert (measured[1].simulation or {})["simulated_true_time_per_image_s"] != pytest.approx(
            (measured[0].simulation or {})["simulated_true_time_per_image_s"])
    finally:
        swept.close()
        fresh.close()
