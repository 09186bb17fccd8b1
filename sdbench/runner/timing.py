"""Per-step and per-phase timing inside a pipeline call.

Marks are CUDA events on a GPU and the measured device's clock otherwise (:class:`Marks`); :class:`CallEvents`
says where the marks of a call go (and, on a virtual-clock simulated GPU, turns them into modelled work first);
:func:`breakdown` turns one call's marks into per-step and per-phase durations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sdbench.gpu.clock import WALL_CLOCK, Clock


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


def sync_device(device: str) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
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
