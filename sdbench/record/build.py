"""The flat record row of one Runner Measurement: the case's features plus metrics with units.

:func:`build_record` is the one place a measured case becomes a row (``Measurement.to_record`` delegates here);
the Bench, sweeps and plans add their own fields to it (environment, knobs applied, clock verification, point).
Every row starts with ``schema_version`` and ``record_type`` (:mod:`sdbench.record.schema`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sdbench.record.schema import CASE_RECORD, SCHEMA_VERSION
from sdbench.stats import summarize

if TYPE_CHECKING:
    from sdbench.runner import Measurement, Window

#: Keys of ``Measurement.memory`` that already say what they are: written as these record keys, not prefixed
#: again (schema 1 wrote ``memory_memory_unavailable_reason`` and ``memory_nvml_memory_unavailable_reason``).
MEMORY_KEYS: dict[str, str] = {
    "memory_unavailable_reason": "memory_unavailable_reason",
    "nvml_memory_unavailable_reason": "memory_nvml_unavailable_reason",
}
#: What a record says when the Runner took no telemetry (schema 1 wrote ``telemetry_telemetry: "disabled"``).
TELEMETRY_DISABLED_REASON = "telemetry disabled"


def memory_fields(memory: Mapping[str, Any]) -> dict[str, Any]:
    """``Measurement.memory`` as record fields (``memory_*``)."""
    return {MEMORY_KEYS.get(k, f"memory_{k}"): v for k, v in memory.items()}


def telemetry_fields(telemetry: Mapping[str, Any]) -> dict[str, Any]:
    """``Measurement.telemetry`` as record fields (``telemetry_*``); a Runner without telemetry says so in
    ``telemetry_available``/``telemetry_reason``, as an unavailable sampler does."""
    out: dict[str, Any] = {}
    for k, v in telemetry.items():
        if k == "telemetry":  # the Runner's {"telemetry": "disabled"}
            out["telemetry_available"] = False
            out["telemetry_reason"] = f"telemetry {v}"
        else:
            out[f"telemetry_{k}"] = v
    return out


def counter_timeline_agreement(windows: Sequence[Window]) -> float | None:
    """Timeline vs counter over the same span: the counter's own, from its first read to its last.

    Both instruments then see the same seconds, with no tail estimate in between. NVML's power reading
    trails the load, so the timeline misses the idle gap before a window start and shows the one after
    its end: over the counter's span the two (each under a counter period) cancel on average.
    """
    ratios = [w.counter_span_timeline_j / (w.energy_j + w.energy_tail_j) - 1.0 for w in windows
              if w.counter_span_timeline_j is not None and w.energy_j is not None and w.energy_j + w.energy_tail_j > 0]
    return float(np.median(ratios)) if ratios else None


def build_record(m: Measurement, matmul_ceiling_tflops: float | None = None) -> dict[str, Any]:
    """Flatten a Measurement into one row: the case's features plus metrics with units."""
    case = m.case
    rec: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "record_type": CASE_RECORD, **case.features(),
                           **m.pipeline_info}
    per_image_t = [w.duration_s / w.images for w in m.windows]
    t_stats = summarize(per_image_t)
    rec.update(t_stats.as_dict("time_per_image_s"))
    rec["time_per_image_s_samples"] = per_image_t
    rec["images_per_s"] = 1.0 / t_stats.median if t_stats.median else None
    rec["time_per_call_s"] = t_stats.median * case.batch_size
    rec["rounds"] = len(m.windows)
    rec["calls_per_window"] = m.calls_per_window
    rec["preroll_calls_per_window"] = m.preroll_calls
    rec["calibration_call_s"] = m.calibration_call_s
    rec["images_measured"] = sum(w.images for w in m.windows)
    rec["stop_reason"] = m.stop_reason
    rec.update(m.stop_details)
    rec["warmup_s"] = m.warmup_s
    rec["warmup_energy_j"] = m.warmup_energy_j
    rec["warmup_calls"] = m.warmup_calls
    rec["first_call_s"] = m.first_call_s
    rec["time_source"] = m.time_source
    if m.simulation:
        rec.update(m.simulation)
    # Energy
    rec["energy_source"] = m.energy_source
    rec["energy_meter"] = m.energy_meter_name
    rec["energy_fallback_reason"] = m.energy_fallback_reason
    rec["energy_resolution_s"] = m.energy_resolution_s
    rec["energy_simulated"] = m.energy_simulated
    energies = [w.energy_j / w.images for w in m.windows if w.energy_j is not None]
    if energies and len(energies) == len(m.windows):
        rec.update(summarize(energies).as_dict("energy_per_image_j"))
        rec["energy_per_image_j_samples"] = energies
        rec["power_w_samples"] = [w.energy_j / w.duration_s for w in m.windows]
        rec["power_w"] = float(np.median(rec["power_w_samples"]))
        rec["images_per_kj"] = 1000.0 / rec["energy_per_image_j_median"] if rec["energy_per_image_j_median"] else None
        rec["energy_status"] = "simulated" if m.energy_simulated else "measured"
    else:
        rec["energy_per_image_j_median"] = None
        rec["energy_status"] = "unavailable"
        rec["energy_unavailable_reason"] = m.energy_unavailable_reason or "energy source returned no reading"
    rec["idle_power_w"] = m.idle_power_w
    if m.idle_power_w is not None and energies and len(energies) == len(m.windows):
        net = [(w.energy_j - m.idle_power_w * w.duration_s) / w.images for w in m.windows]
        rec.update(summarize(net).as_dict("net_energy_per_image_j"))
        rec["net_energy_per_image_j_samples"] = net
    else:
        rec["net_energy_per_image_j_median"] = None
        rec["net_energy_unavailable_reason"] = m.idle_unavailable_reason or rec.get("energy_unavailable_reason")
    tl = [w.timeline_energy_j for w in m.windows]
    if all(x is not None for x in tl) and tl:
        rec["timeline_energy_per_image_j_median"] = float(np.median([e / w.images for e, w in zip(tl, m.windows)]))
        if rec.get("energy_per_image_j_median"):
            rec["counter_timeline_agreement_rel"] = counter_timeline_agreement(m.windows)
    cpu = [w.cpu_energy_j for w in m.windows]
    if m.cpu_energy_source and all(x is not None for x in cpu):
        rec["cpu_energy_per_image_j_median"] = float(np.median([e / w.images for e, w in zip(cpu, m.windows)]))
        rec["cpu_energy_source"] = m.cpu_energy_source
    # Per-step and per-phase
    if m.breakdowns:
        n_steps = min(len(b.step_s) for b in m.breakdowns)
        steps = np.array([b.step_s[:n_steps] for b in m.breakdowns])
        # Means, like the per-step energies, so that steps add up to the denoise phase.
        rec["step_time_s"] = [float(x) for x in np.mean(steps, axis=0)] if n_steps else []
        rec["step_time_median_s"] = float(np.median(steps)) if n_steps else None
        for phase in ("text_encode", "denoise", "vae_decode", "other"):
            rec[f"phase_{phase}_s"] = float(np.median([b.phase_s[phase] for b in m.breakdowns]))
        rec["step_marks"] = "cuda-events" if case.compute_device.startswith("cuda") else m.time_source
    if m.step_energy_j is not None:
        rec["step_energy_j"] = m.step_energy_j
        rec["step_energy_median_j"] = float(np.median(m.step_energy_j)) if m.step_energy_j else None
    if m.phase_energy_j is not None:
        for k, v in m.phase_energy_j.items():
            rec[f"phase_{k}_energy_j"] = v
    # Memory, telemetry
    rec.update(memory_fields(m.memory))
    rec.update(telemetry_fields(m.telemetry))
    rec["throttled_rounds"] = sum(1 for w in m.windows if w.throttled)
    # Work
    rec.update(m.work)
    if m.work.get("flop_per_image") and t_stats.median:
        rec["achieved_tflops"] = m.work["flop_per_image"] / t_stats.median / 1e12
        if matmul_ceiling_tflops:
            rec["matmul_ceiling_tflops"] = matmul_ceiling_tflops
            rec["mfu"] = rec["achieved_tflops"] / matmul_ceiling_tflops
            rec["flop_floor_s_per_image"] = m.work["flop_per_image"] / (matmul_ceiling_tflops * 1e12)
            rec["fraction_of_flop_floor"] = rec["flop_floor_s_per_image"] / t_stats.median
        if rec.get("energy_per_image_j_median"):
            rec["tflop_per_j"] = m.work["flop_per_image"] / 1e12 / rec["energy_per_image_j_median"]
    return rec
