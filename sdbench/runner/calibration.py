"""Sizing the measured windows from the warm-up: the call time a window is sized on and the unmeasured
pre-roll calls before each window (the calls per window follow from the energy meter's resolution,
:func:`sdbench.stats.iterations_per_window`)."""

from __future__ import annotations

import math

import numpy as np

from sdbench.runner.config import RunnerConfig


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
