"""Per-point estimates: a record's round table, a point's pooled rounds and their bootstrap replicates (rounds
resampled with replacement, paired across metrics), its :class:`~sdbench.analysis.dvfs.result.PointStats` with
savings against the default clock, and the default-clock baseline with its drift check. Package-internal: the
entry points are in :mod:`sdbench.analysis.dvfs.analyze`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdbench.analysis.drift import default_drift_check, log_t_interval
from sdbench.analysis.dvfs.records import _num, order_key
from sdbench.analysis.dvfs.result import DefaultBaseline, PointStats
from sdbench.analysis.estimates import (
    bootstrap_estimate,
    bootstrap_replicates,
    change_from_ratio,
    ratio_estimate,
    saving_from_ratio,
)
from sdbench.record.schema import metric_stats

# Columns of a point's round table.
_T, _E, _EN, _P = 0, 1, 2, 3
_METRIC_COLUMNS = {"time_per_image_s": _T, "energy_per_image_j": _E, "net_energy_per_image_j": _EN, "power_w": _P}


def _round_table(rec: Mapping[str, Any], notes: list[str]) -> np.ndarray | None:
    """Rows = measured rounds; columns time, energy, net energy, power (NaN where absent). Each column is the
    metric's per-round samples, else its summary's mean as one round (:func:`sdbench.record.schema.metric_stats`;
    the per-point statistic is a mean over rounds by default)."""
    time_stats = metric_stats(rec, "time_per_image_s")
    if time_stats is None:
        return None
    t = np.asarray(time_stats.rounds("mean"), dtype=float)
    table = np.full((t.size, 4), np.nan)
    table[:, _T] = t
    for metric, col in (("energy_per_image_j", _E), ("net_energy_per_image_j", _EN), ("power_w", _P)):
        stats = metric_stats(rec, metric)
        if stats is None:
            continue
        s = np.asarray(stats.rounds("mean"), dtype=float)
        if s.size != t.size:
            # Rounds must pair up (time and energy of one window); a mismatch cannot be paired.
            notes.append(f"record {rec.get('point_id') or rec.get('case_id')}: {metric} has {s.size} rounds, "
                         f"time has {t.size}; {metric} ignored for it")
            continue
        table[:, col] = s
    if np.all(np.isnan(table[:, _P])) and not np.any(np.isnan(table[:, _E])):
        # Window power is window energy over window duration, i.e. per-image energy over per-image time.
        table[:, _P] = table[:, _E] / table[:, _T]
    return table


@dataclass
class _PointData:
    """Internal: a point's pooled rounds and their bootstrap replicates."""

    label: str
    settings: dict[str, float | None]
    is_default: bool
    records: list[dict[str, Any]]
    rows: np.ndarray  # (rounds, 4)
    per_record_rows: list[np.ndarray]
    statuses: list[str]
    excluded: bool
    exclusion_reason: str | None
    est: np.ndarray = field(default_factory=lambda: np.full(4, np.nan))  # point estimates per column
    boot: np.ndarray | None = None  # (B, 4) resampled statistics

    def available(self, col: int) -> bool:
        return bool(self.rows.size) and not np.any(np.isnan(self.rows[:, col]))


def _statistic(statistic: str) -> Any:
    return np.mean if statistic == "mean" else np.median


def _bootstrap_point(p: _PointData, statistic: str, n_resamples: int, rng: np.random.Generator) -> None:
    stat = _statistic(statistic)
    p.est = stat(p.rows, axis=0)
    n = p.rows.shape[0]
    if n < 2:
        p.boot = None
        return
    # (B, n, 4) -> statistic over rounds; NaN columns stay NaN (unavailable metrics).
    p.boot = bootstrap_replicates(p.rows, n_resamples, rng, stat)


def _derived(p: _PointData, kind: str, energy_col: int) -> tuple[float, np.ndarray | None]:
    """EDP (``kind="edp"``) or ED2P of a point from its estimates and replicates."""
    power = 1 if kind == "edp" else 2
    value = float(p.est[energy_col] * p.est[_T] ** power)
    boot = None if p.boot is None else p.boot[:, energy_col] * p.boot[:, _T] ** power
    return value, boot


def _replicates(p: _PointData, n_resamples: int) -> np.ndarray:
    """(B, 4) replicates; a single-round point repeats its estimate (it carries no spread)."""
    if p.boot is not None:
        return p.boot
    return np.tile(p.est, (n_resamples, 1))


def _point_stats(p: _PointData, d: _PointData | None, confidence: float, energy_basis: str, simulated: bool,
                 n_resamples: int) -> PointStats:
    est = {name: (bootstrap_estimate(p.est[col], None if p.boot is None else p.boot[:, col], confidence)
                  if p.available(col) else None)
           for name, col in _METRIC_COLUMNS.items()}
    measured = [_num(r.get("telemetry_sm_clock_mhz_mean")) for r in p.records]
    measured_vals = [m for m in measured if m is not None]
    ps = PointStats(
        label=p.label, settings=p.settings, is_default=p.is_default, n_records=len(p.records),
        n_rounds=int(p.rows.shape[0]), clock_verified=p.statuses, excluded=p.excluded,
        exclusion_reason=p.exclusion_reason, simulated=simulated,
        sm_clock_mhz_measured=float(np.mean(measured_vals)) if measured_vals else None,
        time_per_image_s=est["time_per_image_s"], energy_per_image_j=est["energy_per_image_j"],
        net_energy_per_image_j=est["net_energy_per_image_j"], power_w=est["power_w"],
        point_ids=[str(r["point_id"]) for r in p.records if r.get("point_id") is not None],
    )
    for col, edp_name, ed2p_name in ((_E, "edp_js", "ed2p_js2"), (_EN, "net_edp_js", "net_ed2p_js2")):
        if p.available(col):
            for kind, name in (("edp", edp_name), ("ed2p", ed2p_name)):
                value, boot = _derived(p, kind, col)
                setattr(ps, name, bootstrap_estimate(value, boot, confidence))
    if d is None or p is d:
        return ps
    spread = p.boot is not None or d.boot is not None
    rp, rd = _replicates(p, n_resamples), _replicates(d, n_resamples)
    ps.time_change_pct = ratio_estimate(p.est[_T], rp[:, _T], d.est[_T], rd[:, _T], confidence, change_from_ratio,
                                        spread)
    basis_col = _E if energy_basis == "gross" else _EN
    if p.available(_E) and d.available(_E):
        ps.energy_saving_pct = ratio_estimate(p.est[_E], rp[:, _E], d.est[_E], rd[:, _E], confidence,
                                              saving_from_ratio, spread)
    if p.available(_EN) and d.available(_EN):
        ps.net_energy_saving_pct = ratio_estimate(p.est[_EN], rp[:, _EN], d.est[_EN], rd[:, _EN], confidence,
                                                   saving_from_ratio, spread)
    if p.available(basis_col) and d.available(basis_col):
        for power, name in ((1, "edp_change_pct"), (2, "ed2p_change_pct")):
            pv = p.est[basis_col] * p.est[_T] ** power
            dv = d.est[basis_col] * d.est[_T] ** power
            setattr(ps, name, ratio_estimate(pv, rp[:, basis_col] * rp[:, _T] ** power, dv,
                                              rd[:, basis_col] * rd[:, _T] ** power, confidence,
                                              change_from_ratio, spread))
    return ps


def _baseline(d: _PointData, stats: PointStats, by: str | None) -> DefaultBaseline:
    """Pooled default stats and drift across its re-measurements (in the order they were taken)."""
    def key(i: int) -> tuple[Any, ...]:
        rec = d.records[i]
        return (order_key(rec, by) if by else 0, str(rec.get("started_utc") or ""), i)

    order = sorted(range(len(d.records)), key=key)
    rem = []
    series = []
    for i in order:
        rows = d.per_record_rows[i] if i < len(d.per_record_rows) else None
        if rows is None:
            continue
        rec = d.records[i]
        energy = None if np.any(np.isnan(rows[:, _E])) else rows[:, _E]
        row: dict[str, Any] = {"point_id": rec.get("point_id"), "started_utc": rec.get("started_utc"),
                               "sweep_order_index": rec.get("sweep_order_index"), "repeat": rec.get("repeat"),
                               "clock_verified": d.statuses[i], "rounds": int(rows.shape[0]),
                               "time_per_image_s": float(np.mean(rows[:, _T])),
                               "time_per_image_s_ci95": log_t_interval(rows[:, _T]),
                               "energy_per_image_j": None if energy is None else float(np.mean(energy)),
                               "energy_per_image_j_ci95": None if energy is None else log_t_interval(energy)}
        row["_order"] = order_key(rec, by) if by else None
        rem.append(row)
        series.append({"time_per_image_s": rows[:, _T], "energy_per_image_j": energy})
    base = DefaultBaseline(stats=stats, remeasurements=rem)
    if len(rem) < 2:
        for row in rem:
            row.pop("_order")
        return base
    times = [m["time_per_image_s"] for m in rem]
    base.drift_time_rel = times[-1] / times[0] - 1.0
    base.spread_time_rel = (max(times) - min(times)) / float(np.mean(times))
    energies = [m["energy_per_image_j"] for m in rem]
    if all(e is not None for e in energies):
        base.drift_energy_rel = energies[-1] / energies[0] - 1.0
        base.spread_energy_rel = (max(energies) - min(energies)) / float(np.mean(energies))
    check = default_drift_check(series)
    base.drift_check = check
    base.drift_significant = check.significant
    base.drift_verdict = check.verdict
    if check.significant and check.onset is not None:
        base.drift_after_order = rem[check.onset - 1]["_order"]
    for row in rem:
        row.pop("_order")
    return base
