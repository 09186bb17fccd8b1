"""Per-point estimates: a record's round table, a point's pooled rounds and their bootstrap replicates (rounds
resampled with replacement, paired across metrics; they serve the pick of an optimum), its
:class:`~sdbench.analysis.dvfs.result.PointStats` with savings against the default clock, and the default-clock
baseline with its drift check. Package-internal: the entry points are in :mod:`sdbench.analysis.dvfs.analyze`.

Intervals are not bootstrap intervals (a percentile bootstrap of 3 rounds holds the truth 70-77 % of the
time): with the mean, the delta-method t interval of the log of a product of means and Welch's for a ratio
to the default clock (:func:`sdbench.analysis.estimates.mean_product_estimate`); with the median,
sdbench.stats's ``summarize`` and ``change_interval`` of the rounds' products (docs/statistics.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdbench.analysis.drift import default_drift_check, log_t_interval
from sdbench.analysis.dvfs.records import _num, order_key
from sdbench.analysis.dvfs.result import DefaultBaseline, PointStats
from sdbench.analysis.estimates import (
    MEDIAN_RATIO_METHOD,
    Estimate,
    Powers,
    bootstrap_indices,
    change_from_ratio,
    mean_product_estimate,
    mean_product_ratio_estimate,
    saving_from_ratio,
)
from sdbench.record.schema import metric_stats
from sdbench.stats import change_interval, summarize

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
    statistic: str = "mean"
    idx: np.ndarray | None = None  # (B, rounds): the rounds each bootstrap resample drew; None from one round

    def available(self, col: int) -> bool:
        return bool(self.rows.size) and not np.any(np.isnan(self.rows[:, col]))


def _bootstrap_point(p: _PointData, statistic: str, n_resamples: int, rng: np.random.Generator) -> None:
    """Draw the point's bootstrap resamples of its rounds (kept as indices, so every product, EDP included,
    is resampled with the same rounds); a single-round point has none."""
    p.statistic = statistic
    n = p.rows.shape[0]
    p.idx = bootstrap_indices(n, n_resamples, rng) if n >= 2 else None


def _per_round(rows: np.ndarray, powers: Powers) -> np.ndarray:
    """Each round's product ``prod_j x_j ** k_j`` (the last axis holds the columns)."""
    out = np.ones(rows.shape[:-1])
    for col, k in powers:
        out = out * rows[..., col] ** k
    return out


def _value(p: _PointData, powers: Powers) -> float:
    """The point's estimate of the product: of the means (``statistic="mean"``: total energy over images,
    then the product), or the median of each round's product."""
    if p.statistic == "mean":
        return float(np.prod([np.mean(p.rows[:, col]) ** k for col, k in powers]))
    return float(np.median(_per_round(p.rows, powers)))


def _product_replicates(p: _PointData, powers: Powers, n_resamples: int) -> np.ndarray:
    """(B,) bootstrap replicates of :func:`_value` (for the pick); a single-round point repeats its value."""
    if p.idx is None:
        return np.full(n_resamples, _value(p, powers))
    drawn = p.rows[p.idx]  # (B, n, 4)
    if p.statistic == "mean":
        return np.prod([np.mean(drawn[..., col], axis=1) ** k for col, k in powers], axis=0)
    return np.median(_per_round(drawn, powers), axis=1)


def _estimate(p: _PointData, powers: Powers, confidence: float) -> Estimate:
    """The point's estimate of the product with its interval: the delta-method t interval of a product of
    means, or sdbench.stats.summarize's interval of the median of the rounds' products (docs/statistics.md)."""
    if p.statistic == "mean":
        return mean_product_estimate(p.rows, powers, confidence)
    value = _value(p, powers)
    x = _per_round(p.rows, powers)
    if x.size < 2 or not np.all(np.isfinite(x)):
        return Estimate(value)
    st = summarize(x, confidence=confidence)
    if st.ci95_low is None or st.ci95_high is None:
        return Estimate(value)
    return Estimate(value, min(float(st.ci95_low), value), max(float(st.ci95_high), value), st.method)


def _ratio(p: _PointData, d: _PointData, powers: Powers, confidence: float, fn: Any) -> Estimate:
    """``fn`` (saving or change) of the point's product over the default's, with its interval."""
    if p.statistic == "mean":
        return mean_product_ratio_estimate(p.rows, d.rows, powers, confidence, fn)
    a, b = _value(p, powers), _value(d, powers)
    value = float(fn(a / b)) if b else float("nan")
    xp, xd = _per_round(p.rows, powers), _per_round(d.rows, powers)
    if xp.size < 2 or xd.size < 2 or not (np.all(np.isfinite(xp)) and np.all(np.isfinite(xd))):
        return Estimate(value)
    ch = change_interval(xp, xd, confidence=confidence)
    if ch.low_rel is None or ch.high_rel is None or not (a > 0 and b > 0):
        return Estimate(value)
    bounds = sorted((float(fn(1.0 + ch.low_rel)), float(fn(1.0 + ch.high_rel))))
    return Estimate(value, min(bounds[0], value), max(bounds[1], value), MEDIAN_RATIO_METHOD)


def _point_stats(p: _PointData, d: _PointData | None, confidence: float, energy_basis: str, simulated: bool,
                 n_resamples: int) -> PointStats:
    est = {name: _estimate(p, ((col, 1),), confidence) if p.available(col) else None
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
            setattr(ps, edp_name, _estimate(p, ((col, 1), (_T, 1)), confidence))
            setattr(ps, ed2p_name, _estimate(p, ((col, 1), (_T, 2)), confidence))
    if d is None or p is d:
        return ps
    ps.time_change_pct = _ratio(p, d, ((_T, 1),), confidence, change_from_ratio)
    basis_col = _E if energy_basis == "gross" else _EN
    if p.available(_E) and d.available(_E):
        ps.energy_saving_pct = _ratio(p, d, ((_E, 1),), confidence, saving_from_ratio)
    if p.available(_EN) and d.available(_EN):
        ps.net_energy_saving_pct = _ratio(p, d, ((_EN, 1),), confidence, saving_from_ratio)
    if p.available(basis_col) and d.available(basis_col):
        for power, name in ((1, "edp_change_pct"), (2, "ed2p_change_pct")):
            setattr(ps, name, _ratio(p, d, ((basis_col, 1), (_T, power)), confidence, change_from_ratio))
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
