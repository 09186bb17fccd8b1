"""The analysis entry points: :func:`analyze_records` splits records by workload and :func:`analyze_sweep` analyses
one workload: it checks the options, groups the records by clock setting (keeping unverified points out of the
optima), bootstraps each point, places the default-clock drift, picks the optima and judges whether the data
support them, and assembles the :class:`~sdbench.analysis.dvfs.result.SweepAnalysis`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sdbench.analysis.dvfs.optima import _optimum
from sdbench.analysis.dvfs.points import (
    _E,
    _EN,
    _baseline,
    _bootstrap_point,
    _point_stats,
    _PointData,
    _round_table,
)
from sdbench.analysis.dvfs.records import (
    NOT_RECORDED,
    SETTING_FIELDS,
    VERIFIED_OK,
    _label,
    _num,
    is_default_record,
    order_field,
    order_key,
    provenance,
    record_is_simulated,
    record_settings,
    sweep_coverage,
    workload_key,
)
from sdbench.analysis.dvfs.result import SweepAnalysis
from sdbench.analysis.optimum import OBJECTIVES, Optimum, judge_support
from sdbench.analysis.text import rel_text
from sdbench.errors import ConfigError

__all__ = ["ENERGY_BASES", "STATISTICS", "analyze_records", "analyze_sweep"]

ENERGY_BASES: tuple[str, ...] = ("gross", "net")
STATISTICS: tuple[str, ...] = ("mean", "median")


def analyze_records(records: Iterable[Mapping[str, Any]], *, meta: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> list[SweepAnalysis]:
    """Split records by workload (model, resolution, steps, ...) and analyse each group.

    ``kwargs`` go to :func:`analyze_sweep`. Raises :class:`ConfigError` when there is nothing to analyse.
    """
    recs = [dict(r) for r in records]
    if not recs:
        raise ConfigError("records", [], reason="no records to analyse")
    groups: dict[tuple[tuple[str, Any], ...], list[dict[str, Any]]] = {}
    for rec in recs:
        if rec.get("record_type") not in (None, "case"):
            continue  # summaries or metadata lines written beside the case records
        groups.setdefault(workload_key(rec), []).append(rec)
    if not groups:
        raise ConfigError("records", f"{len(recs)} record(s)", reason="no case records among them")
    # A sweep's plan counts every workload's points: completeness is judged on all of them.
    measured = sum(1 for g in groups.values() for r in g if r.get("point_status") in (None, "ok"))
    return [analyze_sweep(group, meta=meta, sweep_points_measured=measured, **kwargs) for group in groups.values()]


def analyze_sweep(
    records: Sequence[Mapping[str, Any]],
    *,
    slowdown_cap_pct: float = 5.0,
    energy_basis: str = "gross",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    statistic: str = "mean",
    meta: Mapping[str, Any] | None = None,
    sweep_points_measured: int | None = None,
) -> SweepAnalysis:
    """Analyse one workload's records: per-point statistics, default baseline, optima.

    Args:
        records: Runner or sweep records of one workload (see :func:`analyze_records` for several).
        slowdown_cap_pct: the ``energy_capped`` optimum may be at most this much slower than the
            default clock (by the point estimates; each resample re-applies the cap to its own times).
        energy_basis: ``"gross"`` (what the board drew) or ``"net"`` (idle power subtracted) energy for
            the EDP, ED2P and capped optima; ``energy`` and ``net_energy`` optima are always both given.
        confidence: interval level.
        n_resamples: bootstrap resamples per point.
        seed: bootstrap seed (results are deterministic for a seed).
        statistic: ``"mean"`` (energy is additive, so the mean per image is total energy over images)
            or ``"median"`` over rounds.
        meta: the sweep's ``sweep.json`` (its ``simulated`` flag is honoured; ``points_to_measure`` or
            ``points_planned`` against the measured records says whether the sweep is complete).
        sweep_points_measured: measured points of the whole sweep, when these records are one of
            several workloads in it (:func:`analyze_records` passes it); default: these records.

    Read the result through :attr:`SweepAnalysis.optima` (each :class:`~sdbench.analysis.optimum.Optimum`'s
    ``supported``, ``x_value``, ``clock_ci``, ``value``, ``saving_pct``) and
    :attr:`SweepAnalysis.headline_warnings`.
    """
    if energy_basis not in ENERGY_BASES:
        raise ConfigError("energy_basis", energy_basis, allowed=ENERGY_BASES)
    if statistic not in STATISTICS:
        raise ConfigError("statistic", statistic, allowed=STATISTICS)
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ConfigError("confidence", confidence, reason="a probability strictly between 0 and 1")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError("n_resamples", n_resamples, reason="a whole number >= 1")
    cap = _num(slowdown_cap_pct)
    if cap is None or cap < 0:
        raise ConfigError("slowdown_cap_pct", slowdown_cap_pct, reason="a non-negative percentage")
    recs = [dict(r) for r in records]
    if not recs:
        raise ConfigError("records", [], reason="no records to analyse")
    workloads = {workload_key(r) for r in recs}
    if len(workloads) > 1:
        raise ConfigError("records", f"{len(workloads)} workloads",
                          reason="analyze_sweep takes one workload; use analyze_records to split them")

    notes: list[str] = []
    failed: list[dict[str, Any]] = []
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    group_default: dict[tuple[Any, ...], bool] = {}
    for rec in recs:
        if rec.get("point_status") not in (None, "ok"):
            failed.append({"point_id": rec.get("point_id"), "label": _label(record_settings(rec), is_default_record(rec)),
                           "error": rec.get("point_error") or rec.get("point_status")})
            continue
        settings = record_settings(rec)
        default = is_default_record(rec)
        key = ("default",) if default else tuple(settings[f] for f in SETTING_FIELDS)
        groups.setdefault(key, []).append(rec)
        group_default[key] = default
    if not groups:
        raise ConfigError("records", f"{len(recs)} record(s)", reason="no successfully measured point among them")

    simulated_flags = [record_is_simulated(r, meta) for r in recs]
    simulated = any(simulated_flags)
    if simulated and not all(simulated_flags):
        notes.append("some records are simulated and some are not: treat every number as simulated")

    points: list[_PointData] = []
    for key, members in groups.items():
        default = group_default[key]
        settings = {f: None for f in SETTING_FIELDS} if default else dict(zip(SETTING_FIELDS, key))
        statuses = [str(r.get("clock_verified") or NOT_RECORDED) for r in members]
        if default:
            kept = members
            excluded, reason = False, None
        else:
            kept = [r for r, s in zip(members, statuses) if s in (VERIFIED_OK, NOT_RECORDED)]
            dropped = [s for s in statuses if s not in (VERIFIED_OK, NOT_RECORDED)]
            excluded = not kept
            reason = None
            if dropped:
                counts = ", ".join(f"{s} x{dropped.count(s)}" for s in sorted(set(dropped)))
                reason = f"clock_verified: {counts}" + ("" if excluded else f" ({len(kept)} verified record(s) kept)")
            if excluded:
                kept = members  # still described and plotted, greyed, but never an optimum
        tables = []
        with_time = []
        for r in kept:
            tab = _round_table(r, notes)
            if tab is not None:
                tables.append(tab)
                with_time.append(r)
        kept = with_time
        if default:
            statuses = [str(r.get("clock_verified") or NOT_RECORDED) for r in kept]
        if not tables:
            notes.append(f"{_label(settings, default)}: no time per image in its records; skipped")
            continue
        points.append(_PointData(label=_label(settings, default), settings=settings, is_default=default,
                                 records=kept, rows=np.vstack(tables), per_record_rows=tables, statuses=statuses,
                                 excluded=excluded, exclusion_reason=reason))
    if not points:
        raise ConfigError("records", f"{len(recs)} record(s)", reason="no record has a time per image")

    rng = np.random.default_rng(seed)
    for p in sorted(points, key=lambda q: q.label):  # a fixed order keeps the draws reproducible
        _bootstrap_point(p, statistic, n_resamples, rng)

    default_pd = next((p for p in points if p.is_default), None)
    clock_pds = [p for p in points if not p.is_default]
    x_field, series_fields = _axes(clock_pds)
    clock_pds.sort(key=lambda p: tuple((p.settings[f] if p.settings[f] is not None else -1.0)
                                       for f in (*series_fields, x_field)))

    energy_available = all(p.available(_E) for p in points)
    net_available = all(p.available(_EN) for p in points)
    if not energy_available:
        notes.append("energy is unavailable for some points: energy optima and savings are not computed")
    basis_col = _E if energy_basis == "gross" else _EN
    if energy_basis == "net" and not net_available:
        raise ConfigError("energy_basis", energy_basis, reason="net energy (idle-subtracted) is unavailable in these records")

    stats_by_label = {p.label: _point_stats(p, default_pd, confidence, energy_basis, simulated, n_resamples)
                      for p in points}
    by = order_field(r for p in points for r in p.records)
    baseline = _baseline(default_pd, stats_by_label[default_pd.label], by) if default_pd else None
    drift_flagged: list[str] = []
    if baseline is not None and baseline.drift_significant:
        notes.append(f"the default clock moved between its re-measurements (time {rel_text(baseline.drift_time_rel)}, "
                     f"energy {rel_text(baseline.drift_energy_rel)}): savings carry that drift")
        after = baseline.drift_after_order
        for pd in clock_pds:
            # Without a common order the drift cannot be placed in time: every point is affected.
            hit = after is None or by is None or any(order_key(r, by) > after for r in pd.records)
            if hit:
                stats_by_label[pd.label].drift_affected = True
                drift_flagged.append(pd.label)
        if by is None:
            notes.append("records carry no sweep_order_index or started_utc: every point is flagged for the drift")
    if default_pd is None:
        notes.append("no default-clock measurement: savings against the default clock are unavailable "
                     "(savings are never taken against the worst clock)")

    candidates = [p for p in clock_pds if not p.excluded]
    optima: dict[str, Optimum] = {}
    for objective in OBJECTIVES:
        optima[objective] = _optimum(objective, candidates, default_pd, x_field=x_field, basis_col=basis_col,
                                     energy_basis=energy_basis, energy_available=energy_available,
                                     net_available=net_available, cap_pct=cap, confidence=confidence,
                                     n_resamples=n_resamples, simulated=simulated, n_clock_points=len(clock_pds))
    coverage = sweep_coverage(recs, meta, points_measured=sweep_points_measured)
    rounds = {p.label: int(p.rows.shape[0]) for p in [*candidates, *([default_pd] if default_pd is not None else [])]}
    drift = baseline.drift_check if baseline is not None else None
    for opt in optima.values():
        judge_support(opt, rounds=rounds, clock_values=[p.settings[x_field] for p in candidates], drift=drift,
                      coverage=coverage, confidence=confidence)
    excluded = [{"label": p.label, "settings": p.settings, "clock_verified": p.statuses,
                 "reason": p.exclusion_reason or "not verified"} for p in clock_pds if p.excluded]
    # A partly excluded point: its unverified repeats are listed too.
    excluded += [{"label": p.label, "settings": p.settings, "clock_verified": p.statuses,
                  "reason": p.exclusion_reason} for p in clock_pds if not p.excluded and p.exclusion_reason]
    if not clock_pds:
        notes.append("only the default clock was measured: there is no clock to choose")

    return SweepAnalysis(
        workload={k: v for k, v in workload_key(recs[0])},
        x_field=x_field,
        series_fields=series_fields,
        points=[stats_by_label[p.label] for p in clock_pds],
        default=baseline,
        optima=optima,
        excluded=excluded,
        failed=failed,
        simulated=simulated,
        provenance=provenance(recs, meta),
        energy_available=energy_available,
        net_energy_available=net_available,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        statistic=statistic,
        energy_basis=energy_basis,
        slowdown_cap_pct=cap,
        notes=notes,
        records=recs,
        coverage=coverage,
        drift_flagged=drift_flagged,
    )


def _axes(points: Sequence[_PointData]) -> tuple[str, list[str]]:
    """The setting that varies most is the x axis; other varying settings make series."""
    distinct = {f: {p.settings[f] for p in points if p.settings[f] is not None} for f in SETTING_FIELDS}
    x_field = max(SETTING_FIELDS, key=lambda f: (len(distinct[f]), -SETTING_FIELDS.index(f)))
    if not distinct[x_field]:
        x_field = "sm_clock_mhz"
    series = [f for f in SETTING_FIELDS if f != x_field and len({p.settings[f] for p in points}) > 1]
    return x_field, series
