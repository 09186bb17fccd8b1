"""What the records of a sweep say, before any statistics: each record's clock settings, whether it measures the
default clock or came from the simulated GPU, its workload and its place in the sweep's order; a point's label;
planned against measured points (:func:`sweep_coverage`) and what was real and what simulated
(:func:`provenance`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sdbench.analysis.text import SETTING_UNITS
from sdbench.record.schema import record_is_simulated  # re-exported: where the analysis readers look for it

__all__ = [
    "NOT_RECORDED",
    "SETTING_FIELDS",
    "VERIFIED_OK",
    "WORKLOAD_FIELDS",
    "is_default_record",
    "order_field",
    "order_key",
    "provenance",
    "record_is_simulated",
    "record_settings",
    "sweep_coverage",
    "workload_key",
]

SETTING_FIELDS: tuple[str, ...] = ("sm_clock_mhz", "mem_clock_mhz", "power_limit_w")

#: Case features that identify a workload (everything that is not a clock setting): records that
#: differ here are analysed separately.
WORKLOAD_FIELDS: tuple[str, ...] = ("model", "scheduler", "steps", "width", "height", "batch_size", "dtype",
                                    "profile", "knobs", "attention", "offload", "guidance_scale")

#: clock_verified values a sweep writes; only "ok" points may be optima. Records without the field
#: (plain benchmark results) count as "not-recorded" and are kept.
VERIFIED_OK = "ok"
NOT_RECORDED = "not-recorded"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def _norm_setting(value: Any) -> float | None:
    v = _num(value)
    if v is None:
        return None
    return float(int(v)) if v == int(v) else v


def record_settings(rec: Mapping[str, Any]) -> dict[str, float | None]:
    """The clock settings a record was measured under; ``*_setting`` fields (sweeps) win over the
    case's own fields (plain results). ``None`` means not set (the card as found)."""
    out: dict[str, float | None] = {}
    for name in SETTING_FIELDS:
        key = f"{name}_setting"
        out[name] = _norm_setting(rec[key] if key in rec else rec.get(name))
    return out


def is_default_record(rec: Mapping[str, Any]) -> bool:
    """Whether a record measures the default clock.

    A sweep's ``point_role == "default-clock"`` says so directly. Otherwise ``is_default_clock`` is
    trusted only while no memory clock or power limit is set (a power-limit point runs at the
    default *SM* clock but is not the default state). Plain results: no setting at all.
    """
    if rec.get("point_role") == "default-clock":
        return True
    settings = record_settings(rec)
    flag = rec.get("is_default_clock")
    if flag is not None:
        return bool(flag) and settings["mem_clock_mhz"] is None and settings["power_limit_w"] is None
    return all(v is None for v in settings.values())


def workload_key(rec: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The workload identity of a record (case features except clock settings)."""
    return tuple((k, rec.get(k)) for k in WORKLOAD_FIELDS if k in rec)


def order_key(rec: Mapping[str, Any], by: str) -> Any:
    """A record's place in the sweep: its ``sweep_order_index`` (``by="index"``) or ``started_utc``."""
    if by == "index":
        return _num(rec.get("sweep_order_index"))
    value = rec.get("started_utc")
    return str(value) if value else None


def order_field(records: Iterable[Mapping[str, Any]]) -> str | None:
    """Which order key every record has: ``"index"`` (``sweep_order_index``), ``"time"``
    (``started_utc``), or ``None`` (no common order: drift cannot be placed in time)."""
    recs = list(records)
    for by in ("index", "time"):
        if recs and all(order_key(r, by) is not None for r in recs):
            return by
    return None


def _label(settings: Mapping[str, float | None], is_default: bool) -> str:
    if is_default:
        return "default clocks"
    parts = []
    for name, prefix in (("sm_clock_mhz", "SM"), ("mem_clock_mhz", "mem"), ("power_limit_w", "PL")):
        v = settings.get(name)
        if v is not None:
            parts.append(f"{prefix} {v:g} {SETTING_UNITS[name]}")
    return ", ".join(parts) if parts else "unset"


def sweep_coverage(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None, *,
                   points_measured: int | None = None) -> dict[str, Any]:
    """Planned against measured points: what an incomplete sweep's headline says.

    ``points_planned`` is the sweep's ``points_to_measure`` (a read-only sweep plans more than it
    measures), else ``points_planned``, from ``sweep.json`` (``None`` without one).
    ``points_measured`` counts records with ``point_status`` ok (or none: plain results), unless given.
    """
    meta = meta or {}
    planned = _num(meta.get("points_to_measure"))
    if planned is None:
        planned = _num(meta.get("points_planned"))
    ok = sum(1 for r in records if r.get("point_status") in (None, "ok"))
    measured = ok if points_measured is None else int(points_measured)
    failed = sum(1 for r in records if r.get("point_status") not in (None, "ok"))
    return {"points_planned": None if planned is None else int(planned), "points_measured": measured,
            "points_failed": failed, "complete": None if planned is None else measured >= planned,
            "sweep_status": meta.get("status"), "repeats_planned": meta.get("repeats")}


def provenance(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What was measured on real hardware and what came from the simulation."""
    def distinct(key: str) -> list[Any]:
        return sorted({str(r[key]) for r in records if r.get(key) is not None})

    sim_energy = any(r.get("energy_simulated") for r in records)
    sim_gpu = any(r.get("env_gpu_simulated") for r in records) or bool(meta and meta.get("simulated"))
    locked = any(not is_default_record(r) for r in records)
    verified = distinct("clock_verified")
    if not locked:
        clocks = "default clocks only (nothing locked)"
    elif sim_gpu or sim_energy:
        clocks = "locked on the simulated GPU (a model; no real clock was changed)"
    else:
        clocks = "locked through the device layer on real hardware"
    return {
        "gpu_names": distinct("env_gpu_name") or distinct("env_torch_gpu_name"),
        "compute_devices": distinct("env_compute_device") or distinct("device"),
        "gpu_simulated": sim_gpu,
        "energy_simulated": sim_energy,
        "energy_sources": distinct("energy_source"),
        "time_source": distinct("time_source"),
        "clock_control": clocks,
        "clock_verified_values": verified,
        "sweep_meta_simulated": bool(meta.get("simulated")) if meta else None,
    }
