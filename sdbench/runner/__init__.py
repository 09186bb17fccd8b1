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
simulated case costs one real call, and the same case at another batch size none (the events of a call do
not depend on its batch, and the device's model of the work does: a simulated batch sweep costs one call).

The modules, one responsibility each (each imports only modules above it in this list):

- :mod:`~sdbench.runner.config`: :class:`RunnerConfig`, how a case is measured (rows of the settings table);
- :mod:`~sdbench.runner.timing`: per-step and per-phase marks (:class:`Marks`, :class:`CallEvents`) and
  their :func:`breakdown`;
- :mod:`~sdbench.runner.calls`: one pipeline call, its arguments (:func:`pipeline_call_kwargs`) and phase marks;
- :mod:`~sdbench.runner.measurement`: what is measured (:class:`Window`, :class:`Measurement`);
- :mod:`~sdbench.runner.calibration`: window sizing from the warm-up (:func:`calibration_call_s`,
  :func:`preroll_calls`);
- :mod:`~sdbench.runner.meters`: the energy of a window (meter choice, counter alignment, timeline slices,
  per-step and per-phase energy);
- :mod:`~sdbench.runner.work`: the work of a call (UNet evaluations, :func:`work_profile`, the simulated
  device's true answer);
- :mod:`~sdbench.runner.loop`: :class:`Runner`, the measuring loop (warm-up, rounds, the stop rule, windows).
"""

from __future__ import annotations

from sdbench.runner.calibration import calibration_call_s, preroll_calls
from sdbench.runner.calls import pipeline_call_kwargs, synthetic_init_image
from sdbench.runner.config import RunnerConfig
from sdbench.runner.loop import Runner
from sdbench.runner.measurement import Measurement, Window
from sdbench.runner.meters import TimelineSlice
from sdbench.runner.timing import CallBreakdown, CallEvents, Marks, breakdown
from sdbench.runner.work import work_profile

__all__ = [
    "CallBreakdown",
    "CallEvents",
    "Marks",
    "Measurement",
    "Runner",
    "RunnerConfig",
    "TimelineSlice",
    "Window",
    "breakdown",
    "calibration_call_s",
    "pipeline_call_kwargs",
    "preroll_calls",
    "synthetic_init_image",
    "work_profile",
]
