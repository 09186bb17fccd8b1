"""The measuring loop: :class:`Runner`.

``Runner.run`` takes the idle baseline, warms up, sizes the windows, then measures rounds of windows until the
stop rule is satisfied, and attributes time and energy to steps and phases; ``Runner._window`` measures one
window (synchronised at both edges, aligned to the energy counter when it can be).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch

from sdbench.case import Case
from sdbench.gpu.clock import WALL_CLOCK, Clock
from sdbench.measure.energy import (
    VIRTUAL_RAPL_REASON,
    NullMeter,
    PowerTimelineMeter,
    RaplMeter,
    detect_counter_period_s,
    measure_idle_power_w,
    select_energy_meter,
)
from sdbench.measure.telemetry import TelemetrySampler, summarise_samples
from sdbench.pipelines.build import BuiltPipeline, set_scheduler
from sdbench.pipelines.flops import count_work
from sdbench.pipelines.optimize import Applied
from sdbench.runner.calibration import calibration_call_s, preroll_calls
from sdbench.runner.calls import make_call, phase_hooks
from sdbench.runner.config import RunnerConfig
from sdbench.runner.measurement import (
    Measurement,
    Window,
    memory_fields,
    stop_details_of,
    telemetry_dict,
    time_source_of,
)
from sdbench.runner.meters import TimelineSlice, attribute_energy, select_meter, wait_for_counter_tick
from sdbench.runner.timing import CallBreakdown, CallEvents, Marks, breakdown, sync_device
from sdbench.runner.work import simulate_call, unet_evaluations
from sdbench.spec.schedulers import describe_scheduler
from sdbench.stats import StopRule, iterations_per_window

# The package's logger, as when the Runner was one module (sdbench.runner).
log = logging.getLogger("sdbench.runner")


class Runner:
    """Measures cases on one device. `gpu` is the NVML (or simulated) device, or None."""

    def __init__(self, config: RunnerConfig | None = None, gpu: Any = None) -> None:
        self.config = config or RunnerConfig()
        self.gpu = gpu
        self._counter_period_s: float | None | str = "unknown"
        # Virtual clock: the marks of each (pipeline, case but its batch size) real call, replayed for the
        # case at another batch size (the sequence of marks does not depend on the batch).
        self._recorded_marks: dict[tuple[int, Case], list[str]] = {}

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

        Its marks go to ``events`` (none are taken without one); a step mark each step with ``per_step``."""
        return make_call(case, built, applied, events, per_step=self.config.per_step)

    def _phase_hooks(self, pipe: Any, events: CallEvents) -> contextlib.AbstractContextManager[None]:
        """Marks around prompt encoding and VAE decoding while the context lasts (with ``per_phase``):
        :func:`sdbench.runner.calls.phase_hooks`."""
        return phase_hooks(pipe, events, per_phase=self.config.per_phase)

    def _simulation(self, case: Case, gpu: Any, unet_evals: int) -> dict[str, Any]:
        """The simulated device's true answer for one call: :func:`sdbench.runner.work.simulate_call`."""
        return simulate_call(case, gpu, unet_evals)

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
        marks_key = (id(pipe), dataclasses.replace(case, batch_size=1))
        if virtual and marks_key in self._recorded_marks:
            events.recorded = list(self._recorded_marks[marks_key])
        call = self.make_call(case, built, applied, events)
        with self._phase_hooks(pipe, events), torch.inference_mode():
            # Warm-up: compilation and autotuning happen here; their time and energy are reported on
            # their own, never per image.
            say("warm-up")
            warm_meter = select_meter(gpu, cfg.energy, select_energy_meter)[0] if gpu is not None else None
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
                    sync_device(device)
                warm_calls_s.append(clock.now_s() - t_c)
                if n_warm == 0:
                    first_call_s = warm_calls_s[0]
                    t_first_end = clock.now_s()
                    if virtual and events.recorded is not None:
                        self._recorded_marks[marks_key] = list(events.recorded)
                    if virtual and events.recorded is not None and events.recorded.count("step"):
                        # The real call's step marks count its UNet evaluations exactly (PNDM's extra
                        # warm-up step, img2img's strength-shortened schedule); the truth is for that call.
                        simulation = self._simulation(case, gpu, events.recorded.count("step"))
                n_warm += 1
            warmup_s = clock.now_s() - t_w0
            warm_reading = warm_meter.stop() if warm_meter is not None else None
            warmup_energy_j = warm_reading.energy_j if warm_reading is not None and warm_reading.available else None

            meter, source_name = select_meter(gpu, cfg.energy, select_energy_meter)
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
                w.telemetry = telemetry_dict(s)
        step_e, phase_e = (None, None)
        if timeline is not None:
            integral = timeline.integral()
            for w in windows:
                w.timeline_energy_j = integral.between_j(w.t0_s, w.t1_s)
                w.counter_span_timeline_j = integral.between_j(w.t0_s, w.t_read_s)
            if breakdowns:
                step_e, phase_e = attribute_energy(integral, breakdowns)

        memory = memory_fields(device, gpu)
        work: dict[str, float] = {}
        if self.config.count_flops:
            wc = count_work(case.model, case.height, case.width, case.batch_size, case.uses_cfg)
            unet_evals = unet_evaluations(pipe.scheduler, case)
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
            telemetry=telemetry_dict(tel_summary) if tel_summary is not None else {"telemetry": "disabled"},
            pipeline_info=pipeline_info,
            work=work,
            cpu_energy_source="rapl" if any(w.cpu_energy_j is not None for w in windows) else None,
            preroll_calls=preroll,
            calibration_call_s=calibration_s,
            stop_details=stop_details_of(decision),
            time_source=time_source_of(case, clock),
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
                sync_device(device)  # inside: a simulated GPU counts the pre-roll as load
        else:
            sync_device(device)
        aligned = source_name == "counter" and self.config.align_to_counter and bool(self.counter_period_s())
        if aligned:
            wait_for_counter_tick(gpu, self.counter_period_s())
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
            sync_device(device)
        t1 = clock.now_s()
        t_read = t1
        if aligned:
            # The counter holds the energy up to its last update: read it on the next update and
            # take off the tail after the window, so the window's end is not cut short by up to a period.
            wait_for_counter_tick(gpu, self.counter_period_s())
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
