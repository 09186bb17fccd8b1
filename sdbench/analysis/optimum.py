"""Bootstrap optima: which candidate optimises an objective, how sure the bootstrap is of that choice,
and whether the data can support a claim about it.

:func:`pick_optimum` is the one picker every study uses (the DVFS analysis for clocks, the batching
study for batch sizes): given each candidate's point estimate and its bootstrap replicates (resampled
independently per candidate), the winner is the best point estimate, and the choice is recomputed in
every resample (argmin or argmax over the candidates). It reports how often each candidate wins, the
fraction of resamples that chose the winner. It gives no interval of the winner's value: a percentile
interval of a few rounds' replicates is no 95 % interval (docs/statistics.md); each study states the
winner's own interval.

For clock optima (:class:`Optimum`) the report gives how often each point wins, the interval of the
chosen clock, and the interval of the saving *at the chosen point* (what a user who locks that clock
gets). What the data can support (:attr:`Optimum.supported`, the report's headline; :func:`judge_support`):

* **Default-clock drift** (:mod:`sdbench.analysis.drift`): no optimum or saving from drifted data is
  stated with confidence.
* **Incomplete sweeps.** With the sweep's ``sweep.json`` (``points_to_measure`` or
  ``points_planned``), fewer measured points than planned make every optimum *provisional*.
* **Noise.** An optimum whose 95 % clock interval spans more than :data:`MAX_CLOCK_CI_SHARE` of the
  swept range is not located by the data; a point with fewer than :data:`MIN_ROUNDS_FOR_CLAIM`
  pooled rounds has no usable interval.

Every optimum states how many clock points, repeats and rounds stand behind it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from sdbench.analysis.estimates import Estimate
from sdbench.analysis.text import SETTING_NAMES, SETTING_UNITS, saving_text, time_change_text
from sdbench.errors import ConfigError
from sdbench.record.io import json_safe

if TYPE_CHECKING:
    from sdbench.analysis.drift import DriftCheck

L = TypeVar("L", bound=Hashable)

OBJECTIVES: tuple[str, ...] = ("energy", "net_energy", "edp", "ed2p", "energy_capped")
OBJECTIVE_NAMES = {"energy": "minimum energy", "net_energy": "minimum net energy (idle subtracted)",
                   "edp": "minimum EDP", "ed2p": "minimum ED2P",
                   "energy_capped": "minimum energy under the slowdown cap"}
OBJECTIVE_UNITS = {"energy": "J/image", "net_energy": "J/image", "edp": "J*s/image", "ed2p": "J*s^2/image",
                   "energy_capped": "J/image"}

#: An optimum is located by the data when its clock interval spans at most this share of the swept
#: range (a quarter: on a 16-point grid about four neighbouring clocks).
MAX_CLOCK_CI_SHARE = 0.25
#: Fewest pooled rounds per point for a claim: a bootstrap of one or two rounds has no real spread.
MIN_ROUNDS_FOR_CLAIM = 3

#: ``Optimum.support`` values.
SUPPORTED, PROVISIONAL, UNSUPPORTED, NO_OPTIMUM = "supported", "provisional", "unsupported", "none"
#: How a support reason starts (the headline states these once, not per optimum).
DRIFT_REASON = "the default clock drifted beyond its noise"
INCOMPLETE_REASON = "incomplete sweep"


# --- the picker ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pick(Generic[L]):
    """What :func:`pick_optimum` chose.

    ``index`` and ``label`` name the winner by the point estimates (``None``: no candidate is
    feasible) and ``value`` is its estimate. ``choices`` holds, per resample, the index of the
    candidate that won it, ``-1`` where none did (no feasible candidate, or a best value that is not
    finite); ``choice_fractions`` maps every candidate that won a resample, in candidate order, to the
    share of resamples it won, ``none_fraction`` is the share won by none, and ``choice_fraction``
    the winner's share.
    """

    index: int | None
    label: L | None
    value: float | None
    choice_fraction: float
    choice_fractions: dict[L, float]
    none_fraction: float
    choices: np.ndarray
    n_resamples: int


def pick_optimum(labels: Sequence[L], estimates: Sequence[float] | np.ndarray, replicates: np.ndarray, *,
                 lower_is_better: bool = True,
                 feasible: Sequence[bool] | np.ndarray | None = None,
                 feasible_replicates: np.ndarray | None = None) -> Pick[L]:
    """Choose the candidate that optimises an objective, and say how sure the bootstrap is of it.

    Args:
        labels: one label per candidate (what :attr:`Pick.label` and the fractions are keyed by).
        estimates: each candidate's point estimate, shape ``(n,)``.
        replicates: each candidate's bootstrap replicates, shape ``(B, n)`` (resample ``b`` of every
            candidate in row ``b``); ``B`` is the number of resamples.
        lower_is_better: minimise (energy, J/image) or, when False, maximise (images/s).
        feasible: which candidates may win by their estimates (default: all), shape ``(n,)``.
        feasible_replicates: which may win each resample (default: all), shape ``(B, n)``.

    The winner is the best feasible estimate, and each resample's choice is the best feasible
    replicate; of equals the first candidate wins (order the candidates so that the first is the one
    to prefer).
    """
    est = np.asarray(estimates, dtype=float)
    reps = np.asarray(replicates, dtype=float)
    n = len(labels)
    if n == 0:
        raise ConfigError("labels", [], reason="no candidate to choose from")
    if est.shape != (n,) or reps.ndim != 2 or reps.shape[1] != n or reps.shape[0] < 1:
        raise ConfigError("replicates", f"estimates {est.shape}, replicates {reps.shape}",
                          reason=f"needs {n} estimates and (resamples, {n}) replicates")
    worst = np.inf if lower_is_better else -np.inf
    best = np.argmin if lower_is_better else np.argmax
    ok = np.ones(n, dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    masked = reps if feasible_replicates is None else np.where(np.asarray(feasible_replicates, dtype=bool), reps, worst)
    n_resamples = reps.shape[0]
    choices = best(masked, axis=1)
    # A resample whose best is not a finite value (every candidate infeasible in it) chose none.
    none_mask = ~np.isfinite(masked[np.arange(n_resamples), choices])
    choices = np.where(none_mask, -1, choices)
    fractions: dict[L, float] = {}
    for i in range(n):
        c = int(np.sum(choices == i))
        if c:
            fractions[labels[i]] = c / n_resamples
    none_fraction = float(none_mask.sum()) / n_resamples
    if not ok.any():
        return Pick(None, None, None, 0.0, fractions, none_fraction, choices, n_resamples)
    winner = int(best(np.where(ok, est, worst)))
    return Pick(winner, labels[winner], float(est[winner]), fractions.get(labels[winner], 0.0), fractions,
                none_fraction, choices, n_resamples)


# --- clock optima ----------------------------------------------------------------------------------
@dataclass
class Optimum:
    """The best verified point for one objective, how sure the bootstrap is about it, and whether the
    data can support a claim about it.

    ``choice_fraction`` is the share of resamples in which this point wins; ``choice_fractions``
    the same for every point that ever wins (``"none"``: no point met the slowdown cap).
    ``clock_ci`` is the interval of the chosen ``x_field`` value across resamples (grid values);
    ``clock_ci_points`` how many candidate clock points lie inside it.
    ``saving_pct`` is the saving of the objective's energy (gross or net) at this point against the
    default clock; ``objective_change_pct`` the change of the objective itself (negative is better).

    ``supported`` is True only when a confident claim can be made: ``support`` is ``"supported"``,
    ``"provisional"`` (an incomplete sweep), ``"unsupported"`` (default-clock drift, points without
    an interval, or noise that does not locate the optimum) or ``"none"`` (no optimum);
    ``support_reasons`` says why not (the rules are in the module docstring; :func:`judge_support` sets
    them). What stands behind it: ``n_candidates`` verified clock points (of ``n_clock_points``
    measured), ``repeats_per_point`` and ``rounds_per_repeat`` as ``[min, max]``, and the sweep's
    ``points_measured`` of ``points_planned`` (``None``: unknown).
    """

    objective: str
    energy_basis: str
    label: str | None
    settings: dict[str, float | None] | None
    x_field: str
    x_value: float | None
    value: Estimate | None
    unit: str
    clock_ci: tuple[float, float] | None = None
    clock_ci_points: int | None = None
    choice_fraction: float | None = None
    choice_fractions: dict[str, float] = field(default_factory=dict)
    saving_pct: Estimate | None = None
    time_change_pct: Estimate | None = None
    objective_change_pct: Estimate | None = None
    slowdown_cap_pct: float | None = None
    cap_met_with_confidence: bool | None = None
    n_resamples: int = 0
    simulated: bool = False
    reason: str | None = None
    supported: bool = False
    support: str = NO_OPTIMUM
    support_reasons: list[str] = field(default_factory=list)
    n_candidates: int = 0
    n_clock_points: int = 0
    repeats_per_point: list[int] | None = None
    rounds_per_repeat: list[int] | None = None
    points_measured: int | None = None
    points_planned: int | None = None

    def basis_text(self) -> str:
        """What the optimum rests on: ``3 verified clock points (4 of 35 planned points measured),
        3 repeats each x 5 rounds``."""
        parts = f"{self.n_candidates} verified clock point{'s' if self.n_candidates != 1 else ''}"
        if self.points_planned is not None and self.points_measured is not None:
            parts += f" ({self.points_measured} of {self.points_planned} planned points measured)"
        if self.repeats_per_point:
            lo, hi = self.repeats_per_point
            n = f"{lo}" if lo == hi else f"{lo}-{hi}"
            parts += f", {n} repeat{'s' if hi != 1 else ''} each"
            if self.rounds_per_repeat:
                rlo, rhi = self.rounds_per_repeat
                parts += f" x {rlo if rlo == rhi else f'{rlo}-{rhi}'} round{'s' if rhi != 1 else ''}"
        return parts

    def statement(self) -> str:
        """One line a researcher can paste: the optimum, what it rests on, its confidence and the
        saving; or, when the data cannot support a claim, why, with point estimates only."""
        name = OBJECTIVE_NAMES[self.objective]
        if self.label is None:
            return f"{name}: no optimum ({self.reason})"
        sim = " [SIMULATED]" if self.simulated else ""
        kind = "net energy" if self.energy_basis == "net" else "energy"
        if not self.supported:
            tag = "PROVISIONAL" if self.support == PROVISIONAL else "NOT SUPPORTED"
            head = (f"{name}: {self.label} [{tag}: the data cannot support this claim: "
                    f"{'; '.join(self.support_reasons)}] (point estimates only; from {self.basis_text()})")
            against = []
            if self.saving_pct is not None:
                against.append(f"{kind} saved vs the default clock {self.saving_pct.value:.1f} % (estimate)")
            if self.time_change_pct is not None:
                against.append(f"time {self.time_change_pct.value:+.1f} % (estimate)")
            if self.slowdown_cap_pct is not None:
                against.append(f"cap <= {self.slowdown_cap_pct:g} % slower met by the estimate only")
            return head + ("; " + ", ".join(against) if against else "") + sim
        parts = [f"{name}: {self.label}"]
        detail = []
        if self.clock_ci is not None:
            unit = SETTING_UNITS[self.x_field]
            detail.append(f"{SETTING_NAMES[self.x_field]} 95% CI {self.clock_ci[0]:g}-{self.clock_ci[1]:g} {unit}, "
                          f"chosen in {100 * (self.choice_fraction or 0):.0f}% of {self.n_resamples} resamples")
        detail.append(f"chosen from {self.basis_text()}")
        parts.append(f"({'; '.join(detail)})")
        head = " ".join(parts)
        against = []
        if self.saving_pct is not None:
            against.append(saving_text(self.saving_pct, kind))
        if self.time_change_pct is not None:
            against.append(time_change_text(self.time_change_pct))
        if self.slowdown_cap_pct is not None:
            against.append(f"cap <= {self.slowdown_cap_pct:g} % slower"
                           + (" met with 95 % confidence" if self.cap_met_with_confidence
                              else " met by the estimate, not with 95 % confidence"))
        return head + ("; " + ", ".join(against) if against else "") + sim

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def judge_support(opt: Optimum, *, rounds: Mapping[str, int], clock_values: Iterable[float | None],
                  drift: DriftCheck | None, coverage: Mapping[str, Any], confidence: float) -> None:
    """Set ``supported``, ``support`` and ``support_reasons`` (see :class:`Optimum` and the module docstring).

    ``rounds``: the pooled rounds of every candidate point and of the default baseline, by label;
    ``clock_values``: the candidates' ``x_field`` settings; ``drift``: the default clock's drift check
    (``None``: not checked); ``coverage``: :func:`sdbench.analysis.dvfs.records.sweep_coverage`.
    """
    opt.points_measured, opt.points_planned = coverage.get("points_measured"), coverage.get("points_planned")
    if opt.label is None:
        opt.supported, opt.support = False, NO_OPTIMUM
        opt.support_reasons = [opt.reason or "no optimum"]
        return
    reasons: list[str] = []
    provisional = coverage.get("complete") is False
    if provisional:
        reasons.append(f"{INCOMPLETE_REASON}: only {coverage['points_measured']} of {coverage['points_planned']} "
                       "planned points measured")
    if drift is not None and drift.significant:
        reasons.append(f"{DRIFT_REASON} ({drift.metric} {100 * (drift.rel_change or 0.0):+.1f} %)")
    few = [label for label, n in rounds.items() if n < MIN_ROUNDS_FOR_CLAIM]
    if few:
        reasons.append(f"{len(few)} point(s) with fewer than {MIN_ROUNDS_FOR_CLAIM} rounds, too few for an interval "
                       f"({', '.join(few[:3])}{', ...' if len(few) > 3 else ''})")
    xs = sorted({float(x) for x in clock_values if x is not None})
    k = opt.clock_ci_points
    if opt.clock_ci is not None and k is not None and k >= 2 and len(xs) >= 2:
        share = (opt.clock_ci[1] - opt.clock_ci[0]) / (xs[-1] - xs[0])
        if share > MAX_CLOCK_CI_SHARE:
            reasons.append(f"the noise does not locate the optimum: its {100 * confidence:g} % clock interval "
                           f"{opt.clock_ci[0]:g}-{opt.clock_ci[1]:g} {SETTING_UNITS[opt.x_field]} spans {k} of "
                           f"{len(xs)} clock points, {100 * share:.0f} % of the swept range")
    none_share = opt.choice_fractions.get("none", 0.0)
    if none_share > 1.0 - confidence:
        reasons.append(f"in {100 * none_share:.0f} % of resamples no point met the slowdown cap")
    opt.support_reasons = reasons
    opt.supported = not reasons
    only_incomplete = provisional and len(reasons) == 1
    opt.support = SUPPORTED if not reasons else (PROVISIONAL if only_incomplete else UNSUPPORTED)
