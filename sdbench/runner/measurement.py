"""What a measurement holds: each measured :class:`Window` and the whole :class:`Measurement` of a case
(flattened into a record by :mod:`sdbench.record.build`), and the helpers that fill its memory, telemetry,
stop-rule and time-source fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sdbench.case import Case
from sdbench.gpu.clock import Clock
from sdbench.runner.timing import CallBreakdown


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


def memory_fields(device: str, gpu: Any) -> dict[str, Any]:
    """Peak memory of the case: torch's peak allocated and reserved bytes (CUDA), NVML's used bytes."""
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


def telemetry_dict(summary: Any) -> dict[str, Any]:
    """A telemetry summary as a dict ({} for none)."""
    if summary is None:
        return {}
    if hasattr(summary, "as_dict"):
        return summary.as_dict()
    return dict(vars(summary))


def stop_details_of(decision: Any) -> dict[str, Any]:
    """The stop rule's view at the last round: which metric limited the precision, its spread per round, the
    relative half-width reached and the rounds the target would have needed (`noise_limited` says why)."""
    if decision is None:
        return {}
    return {"stop_limiting_metric": decision.limiting_metric, "stop_spread_cv": decision.spread_cv,
            "stop_rel_halfwidth": decision.rel_halfwidth, "stop_rounds_needed": decision.rounds_needed}


def time_source_of(case: Case, clock: Clock) -> str:
    """What the case's times were read from."""
    if clock.virtual:
        return "virtual clock of the simulated GPU"
    return "cuda-synchronised perf_counter" if case.compute_device.startswith("cuda") else "perf_counter"
