"""The energy of the measured windows: the primary meter and its kind, windows started on an energy-counter
update, a window meter over a running power timeline, and per-step and per-phase energy from the timeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sdbench.measure.energy import (
    EnergyReading,
    NullMeter,
    NvmlCounterMeter,
    PowerTimelineMeter,
    RaplMeter,
    TimelineIntegral,
)
from sdbench.runner.timing import CallBreakdown


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


def select_meter(gpu: Any, preference: str, select: Callable[..., Any]) -> tuple[Any, str]:
    """The primary energy meter and its kind: counter, timeline, rapl or none."""
    meter = select(gpu, preference)
    kinds = ((NvmlCounterMeter, "counter"), (PowerTimelineMeter, "timeline"), (TimelineSlice, "timeline"),
             (RaplMeter, "rapl"), (NullMeter, "none"))
    kind = next((k for cls, k in kinds if isinstance(meter, cls)), "none")
    return meter, kind


def wait_for_counter_tick(gpu: Any, period_s: float | None) -> None:
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


def attribute_energy(integral: TimelineIntegral, bds: list[CallBreakdown]) -> tuple[list[float], dict[str, float]]:
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
