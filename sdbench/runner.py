"""The one measurement path: a Case and a warm pipeline go in, a Record of metrics with units comes out.

Every front door (the CLI, the pytest suite, sweeps, SLURM tasks) measures through `Runner.run`, so
timing, energy and telemetry are taken in exactly one place:

1. idle baseline (power of the quiet device, for net energy);
2. warm-up calls (compilation, autotuning, clock ramp), timed on their own and never in per-image numbers;
3. calibration: a measured window holds enough calls to span `min_window_periods` updates of the
   energy counter (100 ms on an H100), as pytest-benchmark calibrates iterations to its timer;
4. rounds of windows, synchronised with the device at both edges, until the stop rule says the 95 %
   confidence interval of per-image time and energy is narrow enough, or a cap is hit;
5. per-step and per-phase marks (CUDA events on a GPU) give per-step and per-phase time, and the power
   timeline gives their energy.

Every host-side time is read from the measured device's clock (``gpu.clock``). For a real GPU that is the
wall clock. The simulated GPU has a virtual clock: each call's marks are events the device turns into
modelled work (``SimulatedGpu.on_event``), so time and energy follow its physical model and seeded noise,
never the host's load. There the first warm-up call runs the real pipeline (its images are real) and every
other call replays that call's recorded events on the device, which is what a measurement reads: a
simulated case costs one real call.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sdbench import settings
from sdbench.case import Case
from sdbench.gpu.clock import WALL_CLOCK, Clock
from sdbench.measure.energy import (
    VIRTUAL_RAPL_REASON,
    EnergyReading,
    NullMeter,
    NvmlCounterMeter,
    PowerTimelineMeter,
    RaplMeter,
    TimelineIntegral,
    detect_counter_period_s,
    measure_idle_power_w,
    select_energy_meter,
)
from sdbench.measure.telemetry import TelemetrySampler, summarise_samples
from sdbench.pipelines.build import BuiltPipeline, set_scheduler
from sdbench.pipelines.flops import WorkCount, count_work
from sdbench.pipelines.optimize import Applied
from sdbench.spec.schedulers import describe_scheduler
from sdbench.stats import StopRule, iterations_per_window

if TYPE_CHECKING:
    from sdbench.gpu.simulated import WorkProfile

log = logging.getLogger(__name__)


def _default(name: str) -> Any:
    """A RunnerConfig field's default, from the settings table (sdbench.settings), its only source."""
    return settings.default_of(f"runner.{name}")


@dataclass
class RunnerConfig:
    """How a case is measured. Defaults suit a GPU; `for_cpu()` shortens them for tiny CPU runs.

    Every field is a row of the settings table (`sdbench.settings`, scope ``runner``): its default, unit and
    allowed range come from there, and a bad value raises ConfigError naming the field, the value and the
    range when the config is made. `min_rounds` left unset is the table's floor, lowered to `max_rounds`
    when that cap is below it (asking for at most 2 rounds means 2); set explicitly above `max_rounds`, it
    is an error.
    """

    warmup_calls: int = _default("warmup_calls")
    warmup_min_s: float = _default("warmup_min_s")  # keep warming up this long after the first call (clocks, caches, CUDA graphs settle)
    min_rounds: int = None  # type: ignore[assignment]  # None: the table's floor, capped by max_rounds
    max_rounds: int = _default("max_rounds")
    max_time_s: float = _default("max_time_s")  # measured rounds of one case; the stop rule also ends noise-limited cases early
    target_rel_ci: float = _default("target_rel_ci")
    energy: str = _default("energy")  # auto | counter | timeline | rapl | none
    idle_s: float = _default("idle_s")  # idle-power baseline before the case; 0 disables (net energy then unavailable)
    per_step: bool = _default("per_step")
    per_phase: bool = _default("per_phase")
    timeline_hz: float = _default("timeline_hz")  # power timeline for per-step/phase energy; 0 disables
    telemetry_hz: float = _default("telemetry_hz")
    min_window_periods: int = _default("min_window_periods")
    max_calls_per_window: int = _default("max_calls_per_window")
    align_to_counter: bool = _default("align_to_counter")  # start windows on a counter update, read the end on the next one
    # Unmeasured calls just before each window of several (short) calls, so the window starts on a
    # loaded GPU: NVML's power reading trails the load by ~0.25 s, and a window that starts from idle
    # reads low on the power timeline. At least `preroll_s` of calls; 0 disables.
    preroll_s: float = _default("preroll_s")
    count_flops: bool = _default("count_flops")
    matmul_ceiling_tflops: float | None = _default("matmul_ceiling_tflops")

    def __post_init__(self) -> None:
        if self.min_rounds is None:
            floor = _default("min_rounds")
            # A cap below the default floor lowers the floor (asking for at most 2 rounds means 2).
            self.min_rounds = min(floor, self.max_rounds) if _is_count(self.max_rounds) else floor
        settings.check_runner(self)

    @classmethod
    def for_device(cls, device: str, **overrides: Any) -> RunnerConfig:
        """The defaults for ``device``: a GPU's for CUDA and for the simulated GPU (its seconds are virtual, so
        the GPU's idle baseline, warm-up and rounds cost a few real calls), the short CPU ones otherwise."""
        from sdbench.case import is_simulated_device

        if device.startswith("cuda") or is_simulated_device(device):
            return cls(**overrides)
        return cls.for_cpu(**overrides)

    @classmethod
    def for_cpu(cls, **overrides: Any) -> RunnerConfig:
        """The short CPU defaults (the table's ``cpu_default`` column), with ``overrides`` on top."""
        gpu = settings.runner_defaults()
        base = {k: v for k, v in settings.runner_defaults(cpu=True).items() if v != gpu[k]}
        base.update(overrides)
        return cls(**base)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class Marks:
    """Timestamps inside one pipeline call: CUDA events on a GPU, the measured device's clock otherwise.

    Offsets are taken from the window's origin (an event recorded right after the synchronised
    window start), so on a GPU they are positions on the device's own timeline.
    """

    def __init__(self, cuda: bool, origin: Any, clock: Clock = WALL_CLOCK) -> None:
        self.cuda = cuda
        self.origin = origin
        self.clock = clock
        self.items: list[tuple[str, Any]] = []

    def mark(self, label: str) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.items.append((label, ev))
        else:
            self.items.append((label, self.clock.now_s()))

    def offsets_s(self) -> list[tuple[str, float]]:
        """(label, seconds since the window origin); call only after the device was synchronised."""
        if self.cuda:
            return [(lab, self.origin.elapsed_time(ev) / 1e3) for lab, ev in self.items]
        return [(lab, t - self.origin) for lab, t in self.items]


@dataclass
class CallBreakdown:
    """Per-step and per-phase durations of one call, and the wall time its first mark maps to."""

    start_wall_s: float  # the window origin the offsets count from, on the measured device's clock
    step_s: list[float]
    phase_s: dict[str, float]
    phase_bounds_s: dict[str, tuple[float, float]]  # phase -> (start, end) offsets from the origin
    step_bounds_s: list[tuple[float, float]]


def breakdown(marks: Marks, window_start_wall_s: float) -> CallBreakdown:
    """Per-step and per-phase durations of one call from its marks (offsets from the window origin)."""
    offs = marks.offsets_s()
    by_label: dict[str, list[float]] = {}
    for lab, t in offs:
        by_label.setdefault(lab, []).append(t)
    start = by_label.get("start", [offs[0][1]])[0]
    end = by_label.get("end", [offs[-1][1]])[-1]
    text_start = by_label.get("text_start", [start])[0]
    text_end = by_label.get("text_end", [text_start])[-1]
    steps = by_label.get("step", [])
    dec_start = by_label.get("decode_start", [steps[-1] if steps else text_end])[0]
    dec_end = by_label.get("decode_end", [dec_start])[-1]
    step_bounds = []
    prev = text_end
    for t in steps:
        step_bounds.append((prev, t))
        prev = t
    phases = {
        "text_encode": (text_start, text_end),
        "denoise": (text_end, steps[-1] if steps else text_end),
        "vae_decode": (dec_start, dec_end),
    }
    phase_s = {k: max(0.0, b - a) for k, (a, b) in phases.items()}
    phase_s["other"] = max(0.0, (end - start) - sum(phase_s.values()))
    return CallBreakdown(window_start_wall_s, [b - a for a, b in step_bounds], phase_s, phases, step_bounds)


@dataclass
class Window:
    calls: int
    images: int
    duration_s: float
    t0_s: float
    t1_s: float
    energy_j: float | None
    timeline_energy_j: float | None = None
    cpu_energy_j: float | None = None
    energy_tail_j: float = 0.0  # counter energy after the window's end, taken off (see _window)
    t_read_s: float = 0.0  # when the energy was read at the end (the next counter update when aligned, else t1_s)
    counter_span_timeline_j: float | None = None  # the timeline over the meter's own span, t0 -> t_read
    throttled: bool | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """Everything measured for one case; `to_record()` flattens it."""

    case: Case
    windows: list[Window]
    warmup_s: float
    warmup_energy_j: float | None
    warmup_calls: int
    first_call_s: float
    calls_per_window: int
    stop_reason: str
    energy_source: str
    energy_meter_name: str
    energy_fallback_reason: str | None
    energy_resolution_s: float | None
    energy_unavailable_reason: str | None
    energy_simulated: bool
    idle_power_w: float | None
    idle_unavailable_reason: str | None
    breakdowns: list[CallBreakdown]
    step_energy_j: list[float] | None
    phase_energy_j: dict[str, float] | None
    memory: dict[str, Any]
    telemetry: dict[str, Any]
    pipeline_info: dict[str, Any]
    work: dict[str, float]
    cpu_energy_source: str | None = None
    preroll_calls: int = 0  # unmeasured calls before each window (see RunnerConfig.preroll_s)
    calibration_call_s: float | None = None  # what the window was sized on: median of the last 3 warm-up calls
    time_source: str = "perf_counter"
    stop_details: dict[str, Any] = field(default_factory=dict)  # what the stop rule saw when it stopped
    simulation: dict[str, Any] | None = None  # virtual-clock simulated GPU: its settings and the true answer


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


class CallEvents:
    """Where the marks inside a pipeline call go.

    To the window's :class:`Marks` (when per-step or per-phase marks are taken) and, on a virtual-clock
    simulated GPU, to the device first: it turns each mark into the modelled work that ended there, so the
    mark then reads the device's time after that work. A real call's labels are recorded once; later
    calls on a virtual device replay them (:meth:`run_call`).
    """

    def __init__(self, device: Any = None) -> None:
        self.marks: Marks | None = None
        self.device = device  # a SimulatedGpu on a virtual clock, else None
        self.recorded: list[str] | None = None
        self._recording: list[str] | None = None

    def emit(self, label: str) -> None:
        if self.device is not None:
            self.device.on_event(label)
        if self.marks is not None:
            self.marks.mark(label)
        if self._recording is not None:
            self._recording.append(label)

    def run_call(self, call: Callable[[], Any], real: bool = True) -> Any:
        """Run the pipeline call, or (virtual device, ``real=False``, once a real call was recorded) replay
        its events without running the pipeline."""
        if self.device is None or real or self.recorded is None:
            if self.device is not None and self.recorded is None:
                self._recording = []
            try:
                return call()
            finally:
                if self._recording is not None:
                    self.recorded, self._recording = self._recording, None
        for label in self.recorded:
            self.emit(label)
        return None


class Runner:
    """Measures cases on one device. `gpu` is the NVML (or simulated) device, or None."""

    def __init__(self, config: RunnerConfig | None = None, gpu: Any = None) -> None:
        self.config = config or RunnerConfig()
        self.gpu = gpu
        self._counter_period_s: float | None | str = "unknown"

    @property
    def clock(self) -> Clock:
        """The clock measurements read: the device's (virtual for the simulated GPU), else the wall clock."""
        return self.gpu.clock if self.gpu is not None else WALL_CLOCK

    # --- set-up -------------------------------------------------------------------------------
    def counter_period_s(self) -> float | None:
        """The energy counter's update period, detected once per Runner (100 ms on an H100)."""
        if self._counter_period_s == "unknown":
            period = None
            if self.gpu is not None:
                try:
                    period = detect_counter_period_s(self.gpu)
                except Exception as exc:  # noqa: BLE001 - any NVML fault means: no usable counter
                    log.info("energy counter period not detected: %s", exc)
            self._counter_period_s = period
        return self._counter_period_s  # type: ignore[return-value]

    def make_call(self, case: Case, built: BuiltPipeline, applied: Applied | None,
                  events: CallEvents | None = None) -> Callable[[], Any]:
        """The zero-argument function one measured pipeline call runs (public: memory probes run exactly it).

        Its marks go to ``events`` (none are taken without one)."""
        events = events if events is not None else CallEvents()
        pipe = built.pipe
        device = case.compute_device
        gen_device = "cpu" if device == "cpu" else device
        generator = torch.Generator(device=gen_device)
        kwargs = pipeline_call_kwargs(case, gen_device)
        if self.config.per_step:
            def on_step_end(_pipe: Any, _i: int, _t: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
                events.emit("step")
                return {}
            kwargs["callback_on_step_end"] = on_step_end
        ctx = applied.call_context if applied else contextlib.nullcontext

        def call() -> Any:
            generator.manual_seed(case.seed)
            events.emit("start")
            with ctx():
                out = pipe(generator=generator, **kwargs)
            events.emit("end")
            return out.images

        return call

    @contextlib.contextmanager
    def _phase_hooks(self, pipe: Any, events: CallEvents) -> Iterator[None]:
        """Marks around prompt encoding and VAE decoding, by wrapping the pipeline's own entry points
        (`encode_prompt`, `vae.decode`) on the instance: diffusers is untouched, and compiled modules
        see no hooks (a hook inside a compiled region would force a graph break or a recompile)."""
        if not self.config.per_phase:
            yield
            return
        wrapped = [(pipe, "encode_prompt", "text_start", "text_end"), (pipe.vae, "decode", "decode_start", "decode_end")]
        saved = []
        for obj, attr, begin, finish in wrapped:
            had_instance_attr = attr in obj.__dict__
            original = getattr(obj, attr)
            saved.append((obj, attr, had_instance_attr, original))
            setattr(obj, attr, _marking(original, events, begin, finish))
        try:
            yield
        finally:
            for obj, attr, had_instance_attr, original in saved:
                if had_instance_attr:
                    setattr(obj, attr, original)
                else:
                    delattr(obj, attr)

    def _simulation(self, case: Case, gpu: Any, unet_evals: int) -> dict[str, Any]:
        """Describe one call (``unet_evals`` UNet evaluations) to a virtual-clock device, and return its true
        (noiseless) time and energy per image at the device's current clock setting: the known answer a
        simulated study is checked against."""
        wc = count_work(case.model, case.height, case.width, case.batch_size, case.uses_cfg)
        profile = work_profile(case, wc, unet_evals)
        gpu.set_work_profile(profile)
        state = gpu.state()
        locked_sm = state.locked_sm_clocks_mhz[1] if state.locked_sm_clocks_mhz else None
        locked_mem = state.locked_mem_clocks_mhz[1] if state.locked_mem_clocks_mhz else None
        truth = gpu.expected_call(profile, locked_sm, locked_mem, state.power_limit_w)
        info: dict[str, Any] = {f"simulated_{k}": v for k, v in gpu.describe().items()}
        info.update({
            "simulated_true_time_per_image_s": truth.time_s / case.batch_size,
            "simulated_true_energy_per_image_j": truth.energy_j / case.batch_size,
            "simulated_true_sm_clock_mhz": truth.sm_clock_mhz,
            "simulated_true_power_capped": truth.power_capped,
            "simulated_unet_evaluations": unet_evals,
        })
        return info

    # --- the measurement ------------------------------------------------------------------------
    def run(self, case: Case, built: BuiltPipeline, applied: Applied | None = None,
            progress: Callable[[str], None] | None = None) -> Measurement:
        """Measure `case` on the warm pipeline `built` (its scheduler is swapped to the case's)."""
        cfg = self.config
        device = case.compute_device
        cuda = device.startswith("cuda")
        pipe = built.pipe
        overrides = {"timestep_spacing": case.timestep_spacing} if case.timestep_spacing else None
        set_scheduler(pipe, case.scheduler, overrides)
        pipeline_info = {**describe_scheduler(pipe.scheduler), "weights_source": built.weights,
                         "pipeline_class": type(pipe).__name__, "pipeline_build_s": built.build_s}
        say = progress or (lambda _msg: None)
        gpu = self.gpu
        clock = self.clock
        virtual = clock.virtual
        simulation: dict[str, Any] | None = None
        if virtual:
            # Until a real call has shown how many UNet evaluations it makes, the case's nominal count (the
            # scheduler's timesteps are not set before its first call).
            simulation = self._simulation(case, gpu, case.steps * case.unet_evaluations_per_step)

        # Idle baseline first, while the device is quiet.
        idle_w: float | None = None
        idle_reason: str | None = "idle baseline disabled (idle_s=0)"
        if cfg.idle_s > 0:
            if gpu is None:
                idle_reason = "no GPU energy source on this machine"
            else:
                say("idle baseline")
                idle = measure_idle_power_w(gpu, cfg.idle_s)
                idle_w = idle.power_w if idle.available else None
                idle_reason = None if idle.available else idle.reason

        events = CallEvents(gpu if virtual else None)
        call = self.make_call(case, built, applied, events)
        with self._phase_hooks(pipe, events), torch.inference_mode():
            # Warm-up: compilation and autotuning happen here; their time and energy are reported on
            # their own, never per image.
            say("warm-up")
            warm_meter = _select(gpu, cfg.energy, select_energy_meter)[0] if gpu is not None else None
            if warm_meter is not None:
                warm_meter.start()
            t_w0 = clock.now_s()
            n_warm = 0
            first_call_s = 0.0
            warm_calls_s: list[float] = []
            # With a GPU energy source the warm-up calls size the window (calibration_call_s), never the
            # first alone, which carries lazy initialisation (CUDA context, cuBLAS handles, compilation).
            min_warm = max(1, cfg.warmup_calls, 2 if gpu is not None else 1)
            # warmup_min_s counts after the first call: a compiling first call says nothing of steady clocks,
            # and the calls right after it still record CUDA graphs.
            t_first_end = None
            while (n_warm < min_warm or t_first_end is None
                   or clock.now_s() - t_first_end < cfg.warmup_min_s):
                t_c = clock.now_s()
                ctx = gpu.workload() if gpu is not None else contextlib.nullcontext()
                with ctx:
                    events.run_call(call, real=n_warm < min_warm and not virtual)
                    _sync(device)
                warm_calls_s.append(clock.now_s() - t_c)
                if n_warm == 0:
                    first_call_s = warm_calls_s[0]
                    t_first_end = clock.now_s()
                    if virtual and events.recorded is not None and events.recorded.count("step"):
                        # The real call's step marks count its UNet evaluations exactly (PNDM's extra
                        # warm-up step, img2img's strength-shortened schedule); the truth is for that call.
                        simulation = self._simulation(case, gpu, events.recorded.count("step"))
                n_warm += 1
            warmup_s = clock.now_s() - t_w0
            warm_reading = warm_meter.stop() if warm_meter is not None else None
            warmup_energy_j = warm_reading.energy_j if warm_reading is not None and warm_reading.available else None

            meter, source_name = _select(gpu, cfg.energy, select_energy_meter)
            resolution_s = None
            if source_name == "counter":
                resolution_s = self.counter_period_s()
            elif source_name == "timeline":
                resolution_s = 1.0 / max(cfg.timeline_hz, 1.0)
            calibration_s = calibration_call_s(warm_calls_s)
            n_calls = iterations_per_window(calibration_s, resolution_s, min_periods=cfg.min_window_periods,
                                            max_iterations=cfg.max_calls_per_window)
            preroll = preroll_calls(cfg, n_calls, calibration_s)

            fallback_reason = getattr(meter, "fallback_reason", None)
            timeline = None
            if gpu is not None and (cfg.timeline_hz > 0 or source_name == "timeline"):
                timeline = PowerTimelineMeter(gpu, rate_hz=max(cfg.timeline_hz, PowerTimelineMeter.min_rate_hz))
            if source_name == "timeline":
                # One continuous timeline for the whole case: each window's energy is its slice, so
                # per-step and per-phase attribution keeps every window's samples.
                meter = TimelineSlice(timeline)
            rapl = NullMeter(VIRTUAL_RAPL_REASON, clock) if virtual else RaplMeter()
            telemetry = TelemetrySampler(gpu, rate_hz=cfg.telemetry_hz) if cfg.telemetry_hz > 0 else None
            if cuda:
                torch.cuda.reset_peak_memory_stats(torch.device(device))
            stop_rule = StopRule(target_rel_halfwidth=cfg.target_rel_ci, min_rounds=cfg.min_rounds,
                                 max_rounds=cfg.max_rounds, max_time_s=cfg.max_time_s)
            windows: list[Window] = []
            breakdowns: list[CallBreakdown] = []
            if timeline is not None:
                timeline.start()
            if telemetry is not None:
                telemetry.start()
            t_start = clock.now_s()
            stop_reason = "max_rounds"
            decision = None
            try:
                while True:
                    say(f"round {len(windows) + 1} ({n_calls} call(s) per window)")
                    win, bds = self._window(case, call, events, n_calls, meter, source_name, rapl, cuda,
                                            timeline, idle_w, preroll)
                    windows.append(win)
                    breakdowns.extend(bds)
                    per_image_t = [w.duration_s / w.images for w in windows]
                    per_image_e = [w.energy_j / w.images for w in windows if w.energy_j is not None]
                    decision = stop_rule.decide({"time": per_image_t, "energy": per_image_e or None},
                                                clock.now_s() - t_start)
                    widths = [v for v in decision.rel_halfwidths.values() if v is not None]
                    if widths:
                        say(f"round {len(windows)}: ±{100 * max(widths):.1f} % (target ±{100 * cfg.target_rel_ci:g} %)")
                    if decision.stop:
                        stop_reason = decision.reason
                        break
            finally:
                if timeline is not None:
                    timeline.stop()
                tel_summary = telemetry.stop() if telemetry is not None else None

        # Per-window telemetry and timeline energy (after the fact, from the stored samples). The case's own
        # summary covers the measured windows only: the idle gaps between them say nothing of the clock the
        # work ran at.
        if telemetry is not None:
            in_windows = [smp for smp in telemetry.samples() if any(w.t0_s <= smp.t_s <= w.t1_s for w in windows)]
            if in_windows:
                tel_summary = summarise_samples(in_windows, telemetry.unavailable)
            for w in windows:
                s = telemetry.summary_for_window(w.t0_s, w.t1_s)
                w.throttled = getattr(s, "throttled", None)
                w.telemetry = _telemetry_dict(s)
        step_e, phase_e = (None, None)
        if timeline is not None:
            integral = timeline.integral()
            for w in windows:
                w.timeline_energy_j = integral.between_j(w.t0_s, w.t1_s)
                w.counter_span_timeline_j = integral.between_j(w.t0_s, w.t_read_s)
            if breakdowns:
                step_e, phase_e = _attribute_energy(integral, breakdowns)

        memory = _memory(device, gpu)
        work: dict[str, float] = {}
        if self.config.count_flops:
            wc = count_work(case.model, case.height, case.width, case.batch_size, case.uses_cfg)
            unet_evals = _unet_evaluations(pipe.scheduler, case)
            work = {**wc.per_image(batch_size=case.batch_size, unet_evals=unet_evals), "unet_evaluations": float(unet_evals)}
        meter_sim = bool(gpu is not None and gpu.simulated)
        return Measurement(
            case=case,
            windows=windows,
            warmup_s=warmup_s,
            warmup_energy_j=warmup_energy_j,
            warmup_calls=n_warm,
            first_call_s=first_call_s,
            calls_per_window=n_calls,
            stop_reason=stop_reason,
            energy_source=source_name,
            energy_meter_name=getattr(meter, "name", source_name),
            energy_resolution_s=resolution_s,
            energy_unavailable_reason=getattr(meter, "reason", None) if source_name == "none" else None,
            energy_fallback_reason=fallback_reason,
            energy_simulated=meter_sim,
            idle_power_w=idle_w,
            idle_unavailable_reason=idle_reason,
            breakdowns=breakdowns,
            step_energy_j=step_e,
            phase_energy_j=phase_e,
            memory=memory,
            telemetry=_telemetry_dict(tel_summary) if tel_summary is not None else {"telemetry": "disabled"},
            pipeline_info=pipeline_info,
            work=work,
            cpu_energy_source="rapl" if any(w.cpu_energy_j is not None for w in windows) else None,
            preroll_calls=preroll,
            calibration_call_s=calibration_s,
            stop_details=_stop_details(decision),
            time_source=_time_source(case, clock),
            simulation=simulation,
        )

    def _window(self, case: Case, call: Callable[[], Any], events: CallEvents, n_calls: int,
                meter: Any, source_name: str, rapl: Any, cuda: bool, timeline: Any,
                idle_w: float | None, preroll: int = 0) -> tuple[Window, list[CallBreakdown]]:
        device = case.compute_device
        gpu = self.gpu
        clock = self.clock
        virtual = clock.virtual
        marks: list[Marks] = []
        if preroll:
            with gpu.workload() if gpu is not None else contextlib.nullcontext():
                for _ in range(preroll):
                    events.run_call(call, real=False)
                _sync(device)  # inside: a simulated GPU counts the pre-roll as load
        else:
            _sync(device)
        aligned = source_name == "counter" and self.config.align_to_counter and bool(self.counter_period_s())
        if aligned:
            _wait_for_counter_tick(gpu, self.counter_period_s())
        ctx = gpu.workload() if gpu is not None else contextlib.nullcontext()
        meter.start()
        rapl.start()
        t0 = clock.now_s()
        origin: Any = t0
        if cuda:
            origin = torch.cuda.Event(enable_timing=True)
            origin.record()
        with ctx:
            for i in range(n_calls):
                m = Marks(cuda, origin, clock) if (self.config.per_step or self.config.per_phase) else None
                events.marks = m
                events.run_call(call, real=i == 0 and not virtual)
                if m is not None:
                    marks.append(m)
            events.marks = None
            _sync(device)
        t1 = clock.now_s()
        t_read = t1
        if aligned:
            # The counter holds the energy up to its last update: read it on the next update and
            # take off the tail after the window, so the window's end is not cut short by up to a period.
            _wait_for_counter_tick(gpu, self.counter_period_s())
            t_read = clock.now_s()
        reading = meter.stop()
        cpu = rapl.stop()
        energy = reading.energy_j if reading.available else None
        tail_j = 0.0
        if energy is not None and t_read > t1:
            # After the synchronised end the GPU idles: its true tail power is the idle power. The
            # timeline would over-state it, since NVML's reading lags the load (serves only without idle).
            if idle_w is not None:
                tail_j = idle_w * (t_read - t1)
            elif timeline is not None:
                tail_j = timeline.energy_between_j(t1, t_read)
            energy -= tail_j
        bds = [breakdown(m, t0) for m in marks]
        return Window(n_calls, n_calls * case.batch_size, t1 - t0, t0, t1, energy,
                      cpu_energy_j=cpu.energy_j if cpu.available else None, energy_tail_j=tail_j,
                      t_read_s=t_read), bds


def calibration_call_s(warm_calls_s: list[float]) -> float:
    """The call time a window is sized on: the median of the last three warm-up calls after the first
    (one slow call, a gc pause or a CUDA-graph recording, would otherwise shrink every window); with
    fewer, the last call (the calls right after a compile are the slow ones)."""
    after_first = warm_calls_s[1:]
    if len(after_first) >= 3:
        return float(np.median(after_first[-3:]))
    return warm_calls_s[-1]


def preroll_calls(cfg: RunnerConfig, n_calls: int, call_s: float) -> int:
    """Unmeasured calls before each window: none before a window of one (long) call, else enough to span
    `preroll_s`."""
    if n_calls <= 1 or cfg.preroll_s <= 0:
        return 0
    return max(1, math.ceil(cfg.preroll_s / max(call_s, 1e-6)))


class TimelineSlice:
    """A window meter over a running PowerTimelineMeter: the energy of the samples between start and stop."""

    name = "power_timeline"

    def __init__(self, timeline: PowerTimelineMeter) -> None:
        self.timeline = timeline
        self._t0_s = 0.0

    def start(self) -> None:
        self._t0_s = self.timeline.device.clock.now_s()

    def stop(self) -> EnergyReading:
        clock = self.timeline.device.clock
        t1_s = clock.now_s()
        # Wait for the first sample after the window's end, or its last slice would be cut off.
        deadline = t1_s + 3.0 / self.timeline.rate_hz
        while clock.now_s() < deadline:
            samples = self.timeline.timeline()
            if samples and samples[-1][0] >= t1_s:
                break
            clock.sleep(0.2 / self.timeline.rate_hz)
        energy_j = self.timeline.energy_between_j(self._t0_s, t1_s)
        return EnergyReading(energy_j, t1_s - self._t0_s, self.name, 1.0 / self.timeline.rate_hz, True, None,
                             self.timeline.device.simulated)


def _marking(fn: Callable[..., Any], events: CallEvents, begin: str, finish: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        events.emit(begin)
        out = fn(*args, **kwargs)
        events.emit(finish)
        return out
    return wrapper


def _select(gpu: Any, preference: str, select: Callable[..., Any]) -> tuple[Any, str]:
    """The primary energy meter and its kind: counter, timeline, rapl or none."""
    meter = select(gpu, preference)
    kinds = ((NvmlCounterMeter, "counter"), (PowerTimelineMeter, "timeline"), (TimelineSlice, "timeline"),
             (RaplMeter, "rapl"), (NullMeter, "none"))
    kind = next((k for cls, k in kinds if isinstance(meter, cls)), "none")
    return meter, kind


def _wait_for_counter_tick(gpu: Any, period_s: float | None) -> None:
    """Spin until the energy counter updates, so a window starts on a counter boundary."""
    if gpu is None or not period_s:
        return
    clock = gpu.clock
    start = gpu.total_energy_mj()
    deadline = clock.now_s() + 2 * period_s
    while clock.now_s() < deadline:
        if gpu.total_energy_mj() != start:
            return
        clock.sleep(0.0005)


def _unet_evaluations(scheduler: Any, case: Case) -> int:
    """UNet calls per pipeline call, read from the scheduler that ran (Heun/KDPM2 use two per step)."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is not None and len(timesteps) > 0:
        return int(len(timesteps))
    return case.steps * case.unet_evaluations_per_step


def _attribute_energy(integral: TimelineIntegral, bds: list[CallBreakdown]) -> tuple[list[float], dict[str, float]]:
    """Mean energy per step and per phase, from the power timeline over each call's marks."""
    n_steps = min(len(b.step_s) for b in bds)
    step_e = np.zeros(n_steps)
    phase_e: dict[str, float] = {}
    for b in bds:
        base = b.start_wall_s
        for i, (a, z) in enumerate(b.step_bounds_s[:n_steps]):
            step_e[i] += integral.between_j(base + a, base + z)
        for name, (a, z) in b.phase_bounds_s.items():
            phase_e[name] = phase_e.get(name, 0.0) + integral.between_j(base + a, base + z)
    n = len(bds)
    return [float(x / n) for x in step_e], {k: v / n for k, v in phase_e.items()}


def _memory(device: str, gpu: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if device.startswith("cuda"):
        d = torch.device(device)
        out["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(d))
        out["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(d))
    else:
        out["peak_allocated_bytes"] = None
        out["memory_unavailable_reason"] = "torch peak memory is tracked on CUDA devices only"
    if gpu is not None:
        try:
            out["nvml_used_bytes"] = int(gpu.memory_used_bytes())
        except Exception as exc:  # noqa: BLE001 - record why, invent nothing
            out["nvml_used_bytes"] = None
            out["nvml_memory_unavailable_reason"] = str(exc)
    return out


def _telemetry_dict(summary: Any) -> dict[str, Any]:
    if summary is None:
        return {}
    if hasattr(summary, "as_dict"):
        return summary.as_dict()
    return dict(vars(summary))


def _stop_details(decision: Any) -> dict[str, Any]:
    """The stop rule's view at the last round: which metric limited the precision, its spread per round, the
    relative half-width reached and the rounds the target would have needed (`noise_limited` says why)."""
    if decision is None:
        return {}
    return {"stop_limiting_metric": decision.limiting_metric, "stop_spread_cv": decision.spread_cv,
            "stop_rel_halfwidth": decision.rel_halfwidth, "stop_rounds_needed": decision.rounds_needed}


def _time_source(case: Case, clock: Clock) -> str:
    if clock.virtual:
        return "virtual clock of the simulated GPU"
    return "cuda-synchronised perf_counter" if case.compute_device.startswith("cuda") else "perf_counter"


_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def work_profile(case: Case, wc: WorkCount, unet_evals: int) -> WorkProfile:
    """One call of ``case`` as a simulated device sees it: FLOPs, bytes and kernels of each part (counted on
    the meta device in fp32, so bytes are scaled to the case's dtype)."""
    from sdbench.gpu.simulated import WorkAmount, WorkProfile

    scale = _DTYPE_BYTES.get(case.dtype, 2) / 4.0
    return WorkProfile(
        text=WorkAmount(wc.text_encode_flop, wc.text_encode_bytes * scale, wc.text_encode_kernels),
        unet_eval=WorkAmount(wc.unet_flop_per_eval, wc.unet_bytes_per_eval * scale, wc.unet_kernels_per_eval),
        vae_decode=WorkAmount(wc.vae_decode_flop, wc.vae_decode_bytes * scale, wc.vae_decode_kernels),
        unet_evals=int(unet_evals),
        dtype=case.dtype if case.dtype in _DTYPE_BYTES else "fp16",
    )


def pipeline_call_kwargs(case: Case, device: str) -> dict[str, Any]:
    """The diffusers call arguments of `case` (images come back as tensors in [0, 1], output_type "pt").

    The one place they are written: the Runner, image saving and fidelity checks all call this.
    """
    kwargs: dict[str, Any] = dict(
        prompt=[case.prompt] * case.batch_size,
        negative_prompt=[case.negative_prompt] * case.batch_size if case.negative_prompt else None,
        num_inference_steps=case.steps,
        guidance_scale=case.guidance_scale,
        output_type="pt",
    )
    if case.spec.img2img:
        kwargs.update(image=synthetic_init_image(case, device=device), strength=case.strength)
    else:
        kwargs.update(height=case.height, width=case.width)
    return kwargs


def synthetic_init_image(case: Case, device: str) -> torch.Tensor:
    """A seeded random input image for img2img models (the refiner), in [0, 1]."""
    g = torch.Generator(device="cpu").manual_seed(case.seed + 7)
    img = torch.rand(case.batch_size, 3, case.height, case.width, generator=g)
    return img.to(device)
