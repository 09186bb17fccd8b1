"""Choosing each objective's optimum among the verified clock points: the objective's value per point and per
bootstrap replicate, the ``energy_capped`` slowdown cap, the pick by :func:`sdbench.analysis.optimum.pick_optimum`
(and with it the clock interval and choice shares), and the optimum's savings against the default clock (their
intervals those of the points table, not of the bootstrap: :mod:`sdbench.analysis.dvfs.points`).
Package-internal: the entry points are in :mod:`sdbench.analysis.dvfs.analyze`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sdbench.analysis.dvfs.points import (
    _E,
    _EN,
    _T,
    _estimate,
    _PointData,
    _product_replicates,
    _ratio,
    _value,
)
from sdbench.analysis.estimates import Powers, change_from_ratio, saving_from_ratio
from sdbench.analysis.optimum import OBJECTIVE_UNITS, Optimum, pick_optimum


def _objective_powers(objective: str, basis_col: int) -> Powers:
    """The objective as a product of a point's columns: energy, net energy, EDP (E t) or ED2P (E t^2)."""
    if objective in ("energy", "energy_capped"):
        return ((_E if objective == "energy" else basis_col, 1),)
    if objective == "net_energy":
        return ((_EN, 1),)
    return ((basis_col, 1), (_T, 1 if objective == "edp" else 2))


def _objective_values(p: _PointData, objective: str, basis_col: int, n_resamples: int) -> tuple[float, np.ndarray]:
    powers = _objective_powers(objective, basis_col)
    return _value(p, powers), _product_replicates(p, powers, n_resamples)


def _optimum(objective: str, candidates: Sequence[_PointData], d: _PointData | None, *, x_field: str, basis_col: int,
             energy_basis: str, energy_available: bool, net_available: bool, cap_pct: float, confidence: float,
             n_resamples: int, simulated: bool, n_clock_points: int) -> Optimum:
    basis = "net" if objective == "net_energy" else ("gross" if objective == "energy" else energy_basis)
    unit = OBJECTIVE_UNITS[objective]
    empty = Optimum(objective=objective, energy_basis=basis, label=None, settings=None, x_field=x_field, x_value=None,
                    value=None, unit=unit, n_resamples=n_resamples, simulated=simulated,
                    slowdown_cap_pct=cap_pct if objective == "energy_capped" else None,
                    n_candidates=len(candidates), n_clock_points=n_clock_points)
    if not candidates:
        empty.reason = ("only the default clock was measured: no clock to choose" if n_clock_points == 0
                        else "no verified clock point to choose from")
        return empty
    if objective == "net_energy" and not net_available:
        empty.reason = "net energy unavailable (no idle-power baseline)"
        return empty
    if not energy_available:
        empty.reason = "energy unavailable"
        return empty
    if objective == "energy_capped" and d is None:
        empty.reason = "needs a default-clock measurement for the slowdown cap"
        return empty

    values = []
    reps = []
    for p in candidates:
        v, r = _objective_values(p, objective, basis_col, n_resamples)
        values.append(v)
        reps.append(r)
    values_arr = np.asarray(values)
    reps_arr = np.column_stack(reps)  # (B, points)
    n_pts = len(candidates)

    feasible = feasible_reps = None
    if objective == "energy_capped":
        assert d is not None
        time = ((_T, 1),)
        t_point = np.asarray([_value(p, time) for p in candidates])
        feasible = 100.0 * (t_point / _value(d, time) - 1.0) <= cap_pct
        t_reps = np.column_stack([_product_replicates(p, time, n_resamples) for p in candidates])
        d_t = _product_replicates(d, time, n_resamples)[:, None]
        feasible_reps = 100.0 * (t_reps / d_t - 1.0) <= cap_pct

    pick = pick_optimum([p.label for p in candidates], values_arr, reps_arr, lower_is_better=True,
                        feasible=feasible, feasible_replicates=feasible_reps)
    if pick.index is None:
        empty.reason = f"no verified point is within {cap_pct:g} % of the default clock's time"
        return empty
    winner = pick.index
    fractions: dict[str, float] = dict(pick.choice_fractions)
    if pick.none_fraction:
        fractions["none"] = pick.none_fraction
    xs = np.asarray([p.settings[x_field] if p.settings[x_field] is not None else np.nan for p in candidates])
    chosen_x = xs[pick.choices[pick.choices >= 0]]
    chosen_x = chosen_x[np.isfinite(chosen_x)]
    clock_ci = None
    clock_ci_points = None
    if chosen_x.size:
        alpha = (1.0 - confidence) / 2.0
        clock_ci = (float(np.quantile(chosen_x, alpha, method="lower")),
                    float(np.quantile(chosen_x, 1.0 - alpha, method="higher")))
        clock_ci_points = len({float(x) for x in xs[np.isfinite(xs)] if clock_ci[0] <= x <= clock_ci[1]})
    best = candidates[winner]
    # The winner's own interval, as its row of the points table has it (a single-round point has none).
    value = _estimate(best, _objective_powers(objective, basis_col), confidence)
    opt = Optimum(objective=objective, energy_basis=basis, label=best.label, settings=best.settings, x_field=x_field,
                  x_value=best.settings[x_field], value=value, unit=unit, clock_ci=clock_ci,
                  clock_ci_points=clock_ci_points, choice_fraction=pick.choice_fraction,
                  choice_fractions=dict(sorted(fractions.items(), key=lambda kv: -kv[1])), n_resamples=n_resamples,
                  simulated=simulated, slowdown_cap_pct=cap_pct if objective == "energy_capped" else None,
                  n_candidates=n_pts, n_clock_points=n_clock_points,
                  repeats_per_point=[min(len(p.records) for p in candidates), max(len(p.records) for p in candidates)],
                  rounds_per_repeat=[min(int(r.shape[0]) for p in candidates for r in p.per_record_rows),
                                     max(int(r.shape[0]) for p in candidates for r in p.per_record_rows)])
    if d is not None:
        ecol = _EN if basis == "net" else _E
        if best.available(ecol) and d.available(ecol):
            opt.saving_pct = _ratio(best, d, ((ecol, 1),), confidence, saving_from_ratio)
        opt.time_change_pct = _ratio(best, d, ((_T, 1),), confidence, change_from_ratio)
        opt.objective_change_pct = _ratio(best, d, _objective_powers(objective, basis_col), confidence,
                                          change_from_ratio)
        if objective == "energy_capped":
            high = opt.time_change_pct.ci_high if opt.time_change_pct.has_ci else opt.time_change_pct.value
            opt.cap_met_with_confidence = bool(high is not None and high <= cap_pct)
    return opt
