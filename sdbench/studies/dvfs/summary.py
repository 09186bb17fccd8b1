"""What a sweep says about itself: the default-clock drift check and the point counts that go into sweep.json,
and the table and closing lines `sdbench sweep` prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdbench.studies.dvfs.points import ROLE_DEFAULT, ROLE_POINT

__all__ = ["default_clock_checks", "point_counts", "summary_lines"]


def default_clock_checks(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How much the default clock's time and energy per image moved over the sweep, whether that is
    beyond their noise, and which points it flags.

    ``time_drift_rel`` / ``energy_drift_rel``: ``max / min - 1`` of the re-measurements' medians.
    ``drift_significant``, ``drift_verdict``, ``drift_test`` and ``comparisons`` come from
    :func:`sdbench.analysis.drift.default_drift_check` on the per-round samples (the same test the report
    uses). When it drifted, ``drift_after_order_index`` is the ``sweep_order_index`` of the last
    re-measurement that agreed with the first, and ``drift_flagged_point_ids`` the sweep points
    (role ``point``) measured after it.
    """
    from sdbench.analysis.drift import default_drift_check, remeasurement_rounds

    ok = [r for r in records if r.get("point_status") == "ok"]
    defaults = sorted((r for r in ok if r.get("point_role") == ROLE_DEFAULT), key=lambda r: r.get("sweep_order_index", 0))
    rows = [{"sweep_order_index": r.get("sweep_order_index"), "point_id": r.get("point_id"),
             "time_per_image_s_median": r.get("time_per_image_s_median"),
             "energy_per_image_j_median": r.get("energy_per_image_j_median"),
             "telemetry_temperature_c_max": r.get("telemetry_temperature_c_max")} for r in defaults]
    out: dict[str, Any] = {"points": rows}
    for key, name in (("time_per_image_s_median", "time"), ("energy_per_image_j_median", "energy")):
        values = [row[key] for row in rows if row[key]]
        out[f"{name}_drift_rel"] = (max(values) / min(values) - 1.0) if len(values) >= 2 else None
    series = [{**entry, "sweep_order_index": r.get("sweep_order_index", 0)}
              for r in defaults if (entry := remeasurement_rounds(r)) is not None]
    check = default_drift_check(series)
    out.update(drift_significant=check.significant, drift_verdict=check.verdict, drift_test=check.test,
               comparisons=check.comparisons, drift_after_order_index=None, drift_flagged_point_ids=[])
    if check.significant and check.onset is not None:
        after = series[check.onset - 1]["sweep_order_index"]
        out["drift_after_order_index"] = after
        out["drift_flagged_point_ids"] = [r.get("point_id") for r in ok if r.get("point_role") == ROLE_POINT
                                          and r.get("sweep_order_index", 0) > after]
    return out


def point_counts(records: Sequence[dict[str, Any]], checks: dict[str, Any]) -> dict[str, int]:
    """What sweep.json says about the measured points: ``points_done`` (ok), ``points_failed``,
    ``points_clock_flagged`` (clock not verified), ``points_drift_flagged`` (measured after the default
    clock drifted) and ``points_flagged`` (either; each point once)."""
    ok = [r for r in records if r.get("point_status") == "ok"]
    clock = {r.get("point_id") for r in ok if r.get("clock_verified") not in ("ok", "read-only")}
    drift = set(checks.get("drift_flagged_point_ids") or [])
    return {"points_done": len(ok), "points_failed": len(records) - len(ok), "points_clock_flagged": len(clock),
            "points_drift_flagged": len(drift), "points_flagged": len(clock | drift)}


def _summary_table(records: Sequence[dict[str, Any]], checks: dict[str, Any] | None = None) -> str:
    """One row per point in sweep order; a point measured after the default clock drifted says so."""
    from tabulate import tabulate

    drifted = set((checks or {}).get("drift_flagged_point_ids") or [])
    rows = []
    for r in sorted(records, key=lambda r: r.get("sweep_order_index", 0)):
        if r.get("point_status") != "ok":
            rows.append([r.get("sweep_order_index"), r.get("point_role"), r.get("sm_clock_mhz") or "default", "error",
                         "-", "-", r.get("point_error")])
            continue
        e = r.get("energy_per_image_j_median")
        note = r.get("clock_verify_message") or ""
        if r.get("point_id") in drifted:
            note = "FLAGGED: after the default clock drifted" + (f"; {note}" if note else "")
        rows.append([r.get("sweep_order_index"), r.get("point_role"), r.get("sm_clock_mhz_setting") or "default",
                     r.get("clock_verified"), f"{r['time_per_image_s_median']:.4g}",
                     f"{e:.4g}" if e is not None else "-", note])
    return tabulate(rows, headers=["#", "role", "sm MHz", "verified", "s/image", "J/image", "note"])


def summary_lines(meta: dict[str, Any]) -> list[str]:
    """The sweep's closing lines: the default-clock check (a WARNING when it drifted beyond its
    noise), then done/planned and flagged counts."""
    lines = []
    checks = meta.get("default_clock_checks") or {}
    drift_t, drift_e = checks.get("time_drift_rel"), checks.get("energy_drift_rel")
    if drift_t is not None:
        line = (f"default clock re-measured {len(checks.get('points', []))} times: time moved {100 * drift_t:.1f} %"
                + (f", energy {100 * drift_e:.1f} %" if drift_e is not None else ""))
        if checks.get("drift_verdict"):
            line += f"; {checks['drift_verdict']}"
        lines.append(line)
    if checks.get("drift_significant"):
        lines.append(f"WARNING: the default clock drifted beyond its noise; {meta.get('points_drift_flagged', 0)} "
                     f"point(s) measured after index {checks.get('drift_after_order_index')} are flagged: savings "
                     "and optima from this sweep cannot be claimed with confidence")
    done, planned = meta.get("points_done"), meta.get("points_to_measure")
    incomplete = "" if done is None or planned is None or done >= planned else " (INCOMPLETE)"
    lines.append(f"sweep {meta['status']}: {done} of {planned} point(s) done{incomplete}, "
                 f"{meta.get('points_flagged', 0)} flagged ({meta.get('points_clock_flagged', 0)} clock not verified, "
                 f"{meta.get('points_drift_flagged', 0)} after default-clock drift); order {meta['order']} "
                 f"(seed {meta['order_seed']}); settings restored: {meta['settings_restored']}")
    return lines
