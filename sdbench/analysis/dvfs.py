"""DVFS sweep analysis: per-clock time, energy, power, EDP and ED2P with confidence intervals, the
default-clock baseline, and energy-optimal clocks with bootstrap confidence.

Input is a list of flat records (Runner records, or sweep records that add ``*_setting``,
``is_default_clock``, ``clock_verified``, ``point_role`` ...). Records are grouped by their clock
setting (SM clock, memory clock, power limit; ``None`` = as found, the default). Every number is per
image, from the per-round samples each record carries (``time_per_image_s_samples``,
``energy_per_image_j_samples``, ``net_energy_per_image_j_samples``, ``power_w_samples``); a record
without samples contributes its summary value as a single round (no interval from it alone).

Conventions (the seed reported savings against the worst clock; sdbench never does):

* ``energy_saving_pct = 100 * (1 - E_point / E_default)``: positive means the point saves energy.
* ``time_change_pct = 100 * (t_point / t_default - 1)``: positive means the point is slower.
* EDP is ``E * t`` (J s per image), ED2P is ``E * t**2`` (J s^2 per image), with ``E`` and ``t`` the
  point's estimates (mean over rounds by default) of energy and time per image.

Bootstrap: each point's rounds are resampled with replacement (rounds stay paired, so time and
energy of one window move together), independently per point and for the default baseline. Point
intervals are percentile intervals of the resampled statistic. An optimum is recomputed in every
resample (argmin over the candidate points); the report gives how often each point wins, the
interval of the chosen clock, and the interval of the saving *at the chosen point* (what a user who
locks that clock gets).

Relative numbers are ratios. A saving or change interval is the percentile interval of the bootstrap
*ratio* (positive over positive), mapped through ``100 (1 - r)`` or ``100 (r - 1)``: a time or energy
change therefore always lies above -100 % and a saving below +100 %, and every interval contains its
point estimate (:class:`Estimate` refuses one that does not). A verdict printed beside an interval
("saves", "slower", "faster") comes from that interval: "saves" only when it excludes 0.

What the data can support (:attr:`Optimum.supported`, the report's headline):

* **Default-clock drift.** The default clock is re-measured through the sweep. Each later
  re-measurement is compared with the first by a Welch t-test on the log per-round values
  (:func:`default_drift_check`, Bonferroni over every comparison, family-wise level
  :data:`DRIFT_ALPHA`), and the change must also exceed :data:`DRIFT_MIN_REL`. Drift flags every
  point measured after the last re-measurement that still agreed with the first
  (``sweep_order_index``), and no optimum or saving from drifted data is stated with confidence.
* **Incomplete sweeps.** With the sweep's ``sweep.json`` (``points_to_measure`` or
  ``points_planned``), fewer measured points than planned make every optimum *provisional*.
* **Noise.** An optimum whose 95 % clock interval spans more than :data:`MAX_CLOCK_CI_SHARE` of the
  swept range is not located by the data; a point with fewer than :data:`MIN_ROUNDS_FOR_CLAIM`
  pooled rounds has no usable interval.

Every optimum states how many clock points, repeats and rounds stand behind it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from sdbench.errors import ConfigError
from sdbench.record.io import json_safe
from sdbench.record.schema import metric_stats

SETTING_FIELDS: tuple[str, ...] = ("sm_clock_mhz", "mem_clock_mhz", "power_limit_w")
SETTING_UNITS: dict[str, str] = {"sm_clock_mhz": "MHz", "mem_clock_mhz": "MHz", "power_limit_w": "W"}
SETTING_NAMES: dict[str, str] = {"sm_clock_mhz": "SM clock", "mem_clock_mhz": "memory clock",
                                 "power_limit_w": "power limit"}

#: Case features that identify a workload (everything that is not a clock setting): records that
#: differ here are analysed separately.
WORKLOAD_FIELDS: tuple[str, ...] = ("model", "scheduler", "steps", "width", "height", "batch_size", "dtype",
                                    "profile", "knobs", "attention", "offload", "guidance_scale")

#: clock_verified values a sweep writes; only "ok" points may be optima. Records without the field
#: (plain benchmark results) count as "not-recorded" and are kept.
VERIFIED_OK = "ok"
NOT_RECORDED = "not-recorded"

OBJECTIVES: tuple[str, ...] = ("energy", "net_energy", "edp", "ed2p", "energy_capped")
ENERGY_BASES: tuple[str, ...] = ("gross", "net")
STATISTICS: tuple[str, ...] = ("mean", "median")

# Columns of a point's round table.
_T, _E, _EN, _P = 0, 1, 2, 3
_METRIC_COLUMNS = {"time_per_image_s": _T, "energy_per_image_j": _E, "net_energy_per_image_j": _EN, "power_w": _P}


# --- the arithmetic (pure, tested with hypothesis) ---------------------------------------------------
def edp_js(energy_j: float, time_s: float) -> float:
    """Energy-delay product in J*s: ``energy_j * time_s``."""
    return energy_j * time_s


def ed2p_js2(energy_j: float, time_s: float) -> float:
    """Energy-delay-squared product in J*s^2: ``energy_j * time_s**2``."""
    return energy_j * time_s * time_s


def energy_saving_pct(energy_j: float, default_energy_j: float) -> float:
    """Energy saved against the default clock, in percent (positive: the point uses less energy)."""
    if default_energy_j <= 0:
        raise ConfigError("default_energy_j", default_energy_j, reason="a positive energy is needed for a saving")
    return 100.0 * (1.0 - energy_j / default_energy_j)


def time_change_pct(time_s: float, default_time_s: float) -> float:
    """Time change against the default clock, in percent (positive: the point is slower)."""
    if default_time_s <= 0:
        raise ConfigError("default_time_s", default_time_s, reason="a positive time is needed for a change")
    return 100.0 * (time_s / default_time_s - 1.0)


#: Family-wise level of the default-clock drift test (Bonferroni over every comparison): a missed drift
#: lets a contaminated claim through, a false alarm only withholds one, so the conventional 5 %.
DRIFT_ALPHA = 0.05
#: A default-clock change smaller than this (relative) is not called drift, however well measured:
#: sdbench does not claim savings that small from a sweep.
DRIFT_MIN_REL = 0.01
#: Without per-round samples there is no interval to judge a change by: a change above this is
#: flagged as drift anyway (it would swamp any saving), a smaller one is reported as untested.
DRIFT_UNTESTABLE_REL = 0.05

#: An optimum is located by the data when its clock interval spans at most this share of the swept
#: range (a quarter: on a 16-point grid about four neighbouring clocks).
MAX_CLOCK_CI_SHARE = 0.25
#: Fewest pooled rounds per point for a claim: a bootstrap of one or two rounds has no real spread.
MIN_ROUNDS_FOR_CLAIM = 3

BOOTSTRAP_METHOD = "percentile bootstrap over rounds (rounds resampled per point)"
RATIO_METHOD = "percentile bootstrap of the ratio to the default clock (rounds resampled per point)"

# Relative tolerance for "the estimate lies inside its interval" (float rounding of quantiles).
_INSIDE_RTOL = 1e-9


# --- data classes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (``None`` bounds: no interval, e.g. one round).

    ``method`` says what made the interval. An interval always contains its point estimate; a
    violation raises :class:`ValueError` at construction, so no report can print one.
    """

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if self.has_ci:
            assert self.ci_low is not None and self.ci_high is not None
            tol = _INSIDE_RTOL * max(1.0, abs(self.value))
            if not (self.ci_low - tol <= self.value <= self.ci_high + tol):
                raise ValueError(f"estimate {self.value!r} outside its interval [{self.ci_low!r}, {self.ci_high!r}]")

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

    def excludes(self, x: float) -> bool:
        """Whether the interval lies wholly on one side of ``x`` (False without an interval)."""
        return self.has_ci and (self.ci_low > x or self.ci_high < x)  # type: ignore[operator]

    def text(self, fmt: str = ".4g", unit: str = "") -> str:
        """``value [low, high] unit`` for tables."""
        u = f" {unit}" if unit else ""
        if not self.has_ci:
            return f"{self.value:{fmt}}{u}"
        return f"{self.value:{fmt}} [{self.ci_low:{fmt}}, {self.ci_high:{fmt}}]{u}"


@dataclass
class PointStats:
    """One clock setting: its records pooled, every metric per image with an interval.

    ``settings`` maps each of :data:`SETTING_FIELDS` to the requested value (``None``: as found).
    Savings fields are ``None`` without a default-clock baseline (or for the baseline itself).
    """

    label: str
    settings: dict[str, float | None]
    is_default: bool
    n_records: int
    n_rounds: int
    clock_verified: list[str]
    excluded: bool
    exclusion_reason: str | None
    simulated: bool
    sm_clock_mhz_measured: float | None
    time_per_image_s: Estimate
    energy_per_image_j: Estimate | None = None
    net_energy_per_image_j: Estimate | None = None
    power_w: Estimate | None = None
    edp_js: Estimate | None = None
    ed2p_js2: Estimate | None = None
    net_edp_js: Estimate | None = None
    net_ed2p_js2: Estimate | None = None
    energy_saving_pct: Estimate | None = None
    net_energy_saving_pct: Estimate | None = None
    time_change_pct: Estimate | None = None
    edp_change_pct: Estimate | None = None
    ed2p_change_pct: Estimate | None = None
    point_ids: list[str] = field(default_factory=list)
    #: Measured after the default clock drifted beyond its noise (see :func:`default_drift_check`).
    drift_affected: bool = False

    def x(self, x_field: str) -> float | None:
        """The point's position on the plot's x axis (for the default: its measured SM clock)."""
        value = self.settings.get(x_field)
        if value is None and self.is_default and x_field == "sm_clock_mhz":
            return self.sm_clock_mhz_measured
        return value

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass
class DriftCheck:
    """Whether the default clock moved beyond its noise between its re-measurements.

    Each later re-measurement is compared with the first, for time and (when every re-measurement
    has it) energy per image: a Welch t-test on the log per-round values, at the family-wise level
    ``alpha`` split evenly over the comparisons (Bonferroni). A comparison is drift when the test
    rejects *and* the change of the means exceeds ``min_rel``. ``ratio_ci`` of a comparison is the
    Welch interval of the ratio of geometric means at the same per-comparison level, so it excludes
    1 exactly when the test rejects. Re-measurements without per-round samples cannot be tested:
    a change above :data:`DRIFT_UNTESTABLE_REL` is flagged anyway.

    ``onset`` is the index (time order) of the first re-measurement that drifted: every point
    measured after re-measurement ``onset - 1`` (the last that agreed) is affected.
    """

    significant: bool | None
    tested: bool
    onset: int | None = None
    metric: str | None = None
    rel_change: float | None = None
    p_value: float | None = None
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    test: str = ""
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def _log_t_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """t interval of the geometric mean of positive samples (``None`` under two samples)."""
    if x.size < 2 or np.any(x <= 0) or not np.all(np.isfinite(x)):
        return None
    lx = np.log(x)
    se = float(np.std(lx, ddof=1)) / math.sqrt(x.size)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, x.size - 1)) * se
    m = float(np.mean(lx))
    return math.exp(m - half), math.exp(m + half)


def _welch_log(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, tuple[float, float]] | None:
    """Welch test of ``log b`` against ``log a``: p-value and the ``level`` interval of the ratio of
    geometric means ``b / a``. ``None`` when either has fewer than two positive samples."""
    if a.size < 2 or b.size < 2 or np.any(a <= 0) or np.any(b <= 0):
        return None
    la, lb = np.log(a), np.log(b)
    va, vb = float(np.var(la, ddof=1)) / a.size, float(np.var(lb, ddof=1)) / b.size
    diff = float(np.mean(lb) - np.mean(la))
    se = math.sqrt(va + vb)
    if se == 0.0:
        # Identical rounds within each: any difference at all is beyond the (zero) noise.
        return (0.0 if diff != 0.0 else 1.0), (math.exp(diff), math.exp(diff))
    df = (va + vb) ** 2 / ((va**2 / (a.size - 1) if va else 0.0) + (vb**2 / (b.size - 1) if vb else 0.0))
    # Welch's t (as scipy.stats.ttest_ind(equal_var=False)), from its parts: the same df gives the interval.
    p = float(2.0 * scipy_stats.t.sf(abs(diff) / se, df))
    half = float(scipy_stats.t.ppf(0.5 + level / 2.0, df)) * se
    return (1.0 if not math.isfinite(p) else p), (math.exp(diff - half), math.exp(diff + half))


def default_drift_check(remeasurements: Sequence[Mapping[str, Any]], *, alpha: float = DRIFT_ALPHA,
                        min_rel: float = DRIFT_MIN_REL) -> DriftCheck:
    """Test the default clock's re-measurements (in the order taken) for drift beyond their noise.

    Each entry maps ``"time_per_image_s"`` and optionally ``"energy_per_image_j"`` to its per-round
    values (a sequence or array; one value when the record has no samples). See :class:`DriftCheck`.
    Used by the analysis and by the sweep's own summary (``sdbench.studies.dvfs.default_clock_checks``).
    """
    test = (f"Welch t-test on log per-round values, each re-measurement against the first; family-wise "
            f"alpha {alpha:g} (Bonferroni), and a change above {100 * min_rel:g} %")
    if len(remeasurements) < 2:
        return DriftCheck(significant=None, tested=False, test=test,
                          verdict="not checked: the default clock was measured once")
    metrics = ["time_per_image_s"]
    if all(m.get("energy_per_image_j") is not None for m in remeasurements):
        metrics.insert(0, "energy_per_image_j")  # energy first: it is what savings are claimed on
    values = [{k: np.asarray(m[k], dtype=float) for k in metrics} for m in remeasurements]
    n_tests = (len(values) - 1) * len(metrics)
    level = 1.0 - alpha / n_tests
    comparisons: list[dict[str, Any]] = []
    tested_all = True
    for j in range(1, len(values)):
        for k in metrics:
            a, b = values[0][k], values[j][k]
            rel = float(np.mean(b) / np.mean(a) - 1.0)
            welch = _welch_log(a, b, level)
            if welch is None:
                tested_all = False
                drifted = abs(rel) > DRIFT_UNTESTABLE_REL
                comparisons.append({"remeasurement": j, "metric": _METRIC_NAMES[k], "rel_change": rel,
                                    "p_value": None, "ratio_ci": None, "tested": False, "drift": drifted})
                continue
            p_value, ratio_ci = welch
            drifted = p_value < alpha / n_tests and abs(rel) > min_rel
            comparisons.append({"remeasurement": j, "metric": _METRIC_NAMES[k], "rel_change": rel, "p_value": p_value,
                                "ratio_ci": list(ratio_ci), "level": level, "tested": True, "drift": drifted})
    drifted_rows = [c for c in comparisons if c["drift"]]
    check = DriftCheck(significant=bool(drifted_rows), tested=tested_all, comparisons=comparisons, test=test)
    if drifted_rows:
        first = drifted_rows[0]
        check.onset, check.metric = first["remeasurement"], first["metric"]
        check.rel_change, check.p_value = first["rel_change"], first["p_value"]
        check.verdict = (f"drift beyond the noise: {_drift_phrase(first)} at re-measurement {first['remeasurement'] + 1} "
                         f"of {len(values)}")
    else:
        largest = max(comparisons, key=lambda c: abs(c["rel_change"]))
        check.metric, check.rel_change, check.p_value = largest["metric"], largest["rel_change"], largest["p_value"]
        check.verdict = f"stable within the noise (largest change: {_drift_phrase(largest)})"
        if not tested_all:
            check.verdict += f"; no per-round samples for some re-measurements, so changes under " \
                             f"{100 * DRIFT_UNTESTABLE_REL:g} % could not be tested"
    return check


_METRIC_NAMES = {"energy_per_image_j": "energy", "time_per_image_s": "time"}


def _drift_phrase(c: Mapping[str, Any]) -> str:
    """``energy +7.1 % [+3.2, +11.2] (p = 0.0003)`` for one drift comparison."""
    text = f"{c['metric']} {100 * c['rel_change']:+.1f} %"
    if c.get("ratio_ci"):
        lo, hi = c["ratio_ci"]
        text += " " + _interval_text(100 * (lo - 1.0), 100 * (hi - 1.0), True, bool(c["drift"]))
    if c.get("p_value") is not None:
        text += f" (p = {c['p_value']:.2g})"
    elif not c.get("tested", True):
        text += " (untested: no per-round samples)"
    return text


@dataclass
class DefaultBaseline:
    """The default-clock measurements pooled, and whether they moved between re-measurements.

    ``drift_*_rel`` is ``(last - first) / first`` over the re-measurements in the order they were
    taken; ``spread_*_rel`` is ``(max - min) / mean`` of their estimates. ``drift_significant`` and
    ``drift_verdict`` come from :func:`default_drift_check` (``drift_check`` holds every comparison);
    ``drift_after_order`` is the order key (``sweep_order_index``, else ``started_utc``) of the last
    re-measurement that agreed with the first: points measured after it are ``drift_affected``.
    """

    stats: PointStats
    remeasurements: list[dict[str, Any]]
    drift_time_rel: float | None = None
    drift_energy_rel: float | None = None
    spread_time_rel: float | None = None
    spread_energy_rel: float | None = None
    drift_significant: bool | None = None
    drift_verdict: str | None = None
    drift_check: DriftCheck | None = None
    drift_after_order: Any = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**asdict(self), "stats": self.stats.to_dict(),
                          "drift_check": self.drift_check.to_dict() if self.drift_check else None})


#: ``Optimum.support`` values.
SUPPORTED, PROVISIONAL, UNSUPPORTED, NO_OPTIMUM = "supported", "provisional", "unsupported", "none"


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
    ``support_reasons`` says why not (the rules are in the module docstring). What stands behind it: ``n_candidates`` verified clock points
    (of ``n_clock_points`` measured), ``repeats_per_point`` and ``rounds_per_repeat`` as
    ``[min, max]``, and the sweep's ``points_measured`` of ``points_planned`` (``None``: unknown).
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
        name = _OBJECTIVE_NAMES[self.objective]
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


_OBJECTIVE_NAMES = {"energy": "minimum energy", "net_energy": "minimum net energy (idle subtracted)",
                    "edp": "minimum EDP", "ed2p": "minimum ED2P",
                    "energy_capped": "minimum energy under the slowdown cap"}
_OBJECTIVE_UNITS = {"energy": "J/image", "net_energy": "J/image", "edp": "J*s/image", "ed2p": "J*s^2/image",
                    "energy_capped": "J/image"}


@dataclass
class SweepAnalysis:
    """Everything the report needs about one workload's sweep.

    ``coverage``: ``points_planned`` (from ``sweep.json``; ``None`` unknown), ``points_measured``
    (records with ``point_status == "ok"``), ``points_failed``, ``complete`` (``None``: unknown),
    ``sweep_status``, ``repeats_planned``. ``drift_flagged``: labels of the clock points measured
    after the default clock drifted. :attr:`headline` is the report's first lines;
    :attr:`headline_warnings` only the warnings (drift, incomplete sweep, unsupported optima).
    """

    workload: dict[str, Any]
    x_field: str
    series_fields: list[str]
    points: list[PointStats]
    default: DefaultBaseline | None
    optima: dict[str, Optimum]
    excluded: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    simulated: bool
    provenance: dict[str, Any]
    energy_available: bool
    net_energy_available: bool
    confidence: float
    n_resamples: int
    seed: int
    statistic: str
    energy_basis: str
    slowdown_cap_pct: float
    notes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    coverage: dict[str, Any] = field(default_factory=dict)
    drift_flagged: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """Whether the default clock drifted beyond its noise between its re-measurements."""
        return bool(self.default is not None and self.default.drift_significant)

    @property
    def incomplete(self) -> bool:
        """Whether fewer points were measured than the sweep planned (False when unknown)."""
        return self.coverage.get("complete") is False

    @property
    def headline_warnings(self) -> list[str]:
        """Warnings a reader must see before any number: drift, an incomplete sweep, unsupported optima."""
        out = []
        if self.drifted:
            assert self.default is not None and self.default.drift_check is not None
            check = self.default.drift_check
            n_clock = len(self.points)
            out.append(f"WARNING: the default clock drifted beyond its noise between its re-measurements "
                       f"({check.verdict}); {len(self.drift_flagged)} of {n_clock} clock point(s) were measured "
                       "after the drift and are flagged; no optimum or saving from these data is claimed "
                       "with confidence.")
        if self.incomplete:
            c = self.coverage
            status = f", sweep {c['sweep_status']}" if c.get("sweep_status") not in (None, "complete") else ""
            out.append(f"INCOMPLETE SWEEP: {c['points_measured']} of {c['points_planned']} planned points measured"
                       f"{status}; every optimum is provisional.")
        for o in self.optima.values():
            # Drift and incompleteness are said once above; other reasons are per optimum.
            reasons = [r for r in o.support_reasons if not r.startswith((_DRIFT_REASON, _INCOMPLETE_REASON))]
            if o.label is not None and reasons:
                out.append(f"NOT SUPPORTED: {_OBJECTIVE_NAMES[o.objective]}: the data cannot support a claim "
                           f"({'; '.join(reasons)}).")
        return out

    @property
    def headline(self) -> list[str]:
        """The report's headline: the warnings, or (none) what was measured and that it held."""
        warnings = self.headline_warnings
        if warnings:
            return warnings
        c = self.coverage
        parts = []
        if c.get("points_planned") is not None:
            parts.append(f"{c['points_measured']} of {c['points_planned']} planned points measured")
        else:
            parts.append(f"{c.get('points_measured', len(self.records))} point(s) measured")
        if self.default is not None and self.default.drift_check is not None and self.default.drift_significant is False:
            parts.append(f"default clock {self.default.drift_check.verdict} over "
                         f"{len(self.default.remeasurements)} re-measurements")
        elif self.default is not None and len(self.default.remeasurements) < 2:
            parts.append("default clock measured once (drift not checked)")
        return ["; ".join(parts) + "."]

    @property
    def workload_label(self) -> str:
        w = self.workload
        parts = [str(w.get("model", "?"))]
        if w.get("width") and w.get("height"):
            parts.append(f"{w['width']}x{w['height']}")
        for key, fmt in (("scheduler", "{}"), ("steps", "{} steps"), ("batch_size", "batch {}"), ("dtype", "{}"),
                         ("profile", "{}"), ("attention", "{}")):
            if w.get(key) is not None:
                parts.append(fmt.format(w[key]))
        return ", ".join(parts)

    @property
    def all_points(self) -> list[PointStats]:
        """The default baseline (first, when present) and every clock point."""
        return ([self.default.stats] if self.default else []) + self.points

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the raw records)."""
        return json_safe({
            "simulated": self.simulated,
            "workload": self.workload,
            "workload_label": self.workload_label,
            "x_field": self.x_field,
            "series_fields": self.series_fields,
            "energy_available": self.energy_available,
            "net_energy_available": self.net_energy_available,
            "settings": {"confidence": self.confidence, "n_resamples": self.n_resamples, "seed": self.seed,
                         "statistic": self.statistic, "energy_basis": self.energy_basis,
                         "slowdown_cap_pct": self.slowdown_cap_pct},
            "default": self.default.to_dict() if self.default else None,
            "points": [p.to_dict() for p in self.points],
            "optima": {k: v.to_dict() for k, v in self.optima.items()},
            "excluded": self.excluded,
            "failed": self.failed,
            "provenance": self.provenance,
            "notes": self.notes,
            "coverage": self.coverage,
            "drift_flagged": self.drift_flagged,
            "headline": self.headline,
            "headline_warnings": self.headline_warnings,
        })

    def markdown(self, heading_level: int = 2) -> str:
        """A markdown summary: banner, points table, baseline and drift, optima, exclusions."""
        h = "#" * heading_level
        out: list[str] = []
        out.append(f"{h} {self.workload_label}")
        out.append("")
        if self.simulated:
            out.append("> **SIMULATED DATA**: energy, power and clock behaviour come from sdbench's simulated GPU "
                       "(a physical model), not from a measurement on real hardware.")
            out.append("")
        out.extend(f"> **{line}**" if line in self.headline_warnings else f"> {line}" for line in self.headline)
        out.append("")
        out.extend(f"- {line}" for line in provenance_lines(self.provenance))
        out.append("")
        out.append(f"{h}# Points ({self.statistic} per image, {100 * self.confidence:g} % bootstrap CI, "
                   f"{self.n_resamples} resamples)")
        out.append("")
        out.append(markdown_table(points_table(self)))
        out.append("")
        if self.default is not None:
            d = self.default
            out.append(f"{h}# Default-clock baseline")
            out.append("")
            out.append(f"{len(d.remeasurements)} measurement(s) pooled, {d.stats.n_rounds} rounds.")
            if len(d.remeasurements) > 1:
                out.append(f" Drift first to last: time {_rel_text(d.drift_time_rel)}, energy "
                           f"{_rel_text(d.drift_energy_rel)}; verdict: {d.drift_verdict}.")
                if d.drift_check is not None:
                    out.append(f" Test: {d.drift_check.test}.")
                if self.drift_flagged:
                    out.append(f" Flagged (measured after the drift): {', '.join(self.drift_flagged)}.")
            out.append("")
        else:
            out.append("No default-clock measurement: savings against the default clock are unavailable.")
            out.append("")
        out.append(f"{h}# Optima")
        out.append("")
        out.append(markdown_table(optima_table(self)))
        out.append("")
        for opt in self.optima.values():
            out.append(f"- {opt.statement()}")
        out.append("")
        for title, items in (
                ("Excluded from the optima (clock not verified)", [f"{ex['label']}: {ex['reason']}" for ex in self.excluded]),
                ("Failed points", [f"{fl.get('point_id') or fl.get('label')}: {fl.get('error')}" for fl in self.failed]),
                ("Notes", list(self.notes))):
            if items:
                out += [f"{h}# {title}", "", *(f"- {item}" for item in items), ""]
        return "\n".join(out)


# --- record helpers --------------------------------------------------------------------------------
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


def record_is_simulated(rec: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> bool:
    """Whether a record's energy or clock behaviour came from the simulated GPU."""
    if meta and meta.get("simulated"):
        return True
    return bool(rec.get("energy_simulated") or rec.get("env_gpu_simulated") or rec.get("gpu_simulated")
                or rec.get("device") == "simulated" or rec.get("energy_status") == "simulated")


def workload_key(rec: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The workload identity of a record (case features except clock settings)."""
    return tuple((k, rec.get(k)) for k in WORKLOAD_FIELDS if k in rec)


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




# --- the bootstrap ---------------------------------------------------------------------------------
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
    idx = rng.integers(0, n, size=(n_resamples, n))
    # (B, n, 4) -> statistic over rounds; NaN columns stay NaN (unavailable metrics).
    p.boot = stat(p.rows[idx], axis=1)


def _quantiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _estimate(value: float, boot: np.ndarray | None, confidence: float, method: str = BOOTSTRAP_METHOD) -> Estimate:
    if boot is None or not np.all(np.isfinite(boot)) or not math.isfinite(float(value)):
        return Estimate(float(value))
    lo, hi = _quantiles(boot, confidence)
    # A percentile interval of a skewed statistic can, rarely, miss the point estimate (it is the
    # statistic of the sample, not the resamples' median): widen to contain it, never print one outside.
    return Estimate(float(value), min(lo, float(value)), max(hi, float(value)), method)


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


def _objective_values(p: _PointData, objective: str, basis_col: int, n_resamples: int) -> tuple[float, np.ndarray]:
    reps = _replicates(p, n_resamples)
    if objective in ("energy", "energy_capped"):
        col = _E if objective == "energy" else basis_col
        return float(p.est[col]), reps[:, col]
    if objective == "net_energy":
        return float(p.est[_EN]), reps[:, _EN]
    power = 1 if objective == "edp" else 2
    return float(p.est[basis_col] * p.est[_T] ** power), reps[:, basis_col] * reps[:, _T] ** power


def _ratio_estimate(num_value: float, num_reps: np.ndarray, den_value: float, den_reps: np.ndarray,
                    confidence: float, fn: Any, any_spread: bool) -> Estimate:
    """A saving or change from the ratio ``num / den``, its interval from the bootstrap ratio.

    ``fn`` maps a ratio to percent (:func:`_saving` or :func:`_change`, both monotone). The
    interval is the percentile interval of the replicate ratios, mapped through ``fn``; it is given
    only when every replicate of both is positive and finite, so the ratio interval lies in
    ``(0, inf)``: a change stays above -100 %, a saving below +100 %. A non-positive estimate (a net
    energy at or below idle) gives the value with no interval.

    Duplicates in spirit the ratio interval that sdbench.stats is getting (a log-ratio interval);
    here the ratio is of two bootstrapped statistics, so it stays a bootstrap interval.
    """
    ratio = num_value / den_value if den_value else math.nan
    value = float(fn(ratio))
    if not any_spread or not (num_value > 0 and den_value > 0):
        return Estimate(value)
    num_reps, den_reps = np.asarray(num_reps, dtype=float), np.asarray(den_reps, dtype=float)
    ok = np.all(np.isfinite(num_reps)) and np.all(np.isfinite(den_reps)) and np.all(num_reps > 0) \
        and np.all(den_reps > 0)
    if not ok:
        return Estimate(value)
    lo_r, hi_r = _quantiles(num_reps / den_reps, confidence)
    lo_r, hi_r = min(lo_r, ratio), max(hi_r, ratio)  # contain the estimate (see _estimate)
    bounds = sorted((float(fn(lo_r)), float(fn(hi_r))))
    return Estimate(value, min(bounds[0], value), max(bounds[1], value), RATIO_METHOD)


def _saving(ratio: Any) -> Any:
    """Percent saved at ``ratio = E / E_default`` (decreasing in the ratio, below 100 for a positive one)."""
    return 100.0 * (1.0 - ratio)


def _change(ratio: Any) -> Any:
    """Percent change at ``ratio = x / x_default`` (increasing, above -100 for a positive one)."""
    return 100.0 * (ratio - 1.0)


# --- the analysis ----------------------------------------------------------------------------------
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

    Read the result through :attr:`SweepAnalysis.optima` (each :class:`Optimum`'s ``supported``,
    ``x_value``, ``clock_ci``, ``value``, ``saving_pct``) and :attr:`SweepAnalysis.headline_warnings`.
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
        notes.append(f"the default clock moved between its re-measurements (time {_rel_text(baseline.drift_time_rel)}, "
                     f"energy {_rel_text(baseline.drift_energy_rel)}): savings carry that drift")
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
    for opt in optima.values():
        _judge_support(opt, candidates, default_pd, baseline, coverage, confidence)
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


_DRIFT_REASON = "the default clock drifted beyond its noise"
_INCOMPLETE_REASON = "incomplete sweep"


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


def _judge_support(opt: Optimum, candidates: Sequence[_PointData], d: _PointData | None,
                   baseline: DefaultBaseline | None, coverage: Mapping[str, Any], confidence: float) -> None:
    """Set ``supported``, ``support`` and ``support_reasons`` (see :class:`Optimum` and the module docstring)."""
    opt.points_measured, opt.points_planned = coverage.get("points_measured"), coverage.get("points_planned")
    if opt.label is None:
        opt.supported, opt.support = False, NO_OPTIMUM
        opt.support_reasons = [opt.reason or "no optimum"]
        return
    reasons: list[str] = []
    provisional = coverage.get("complete") is False
    if provisional:
        reasons.append(f"{_INCOMPLETE_REASON}: only {coverage['points_measured']} of {coverage['points_planned']} "
                       "planned points measured")
    if baseline is not None and baseline.drift_significant:
        check = baseline.drift_check
        what = f"{check.metric} {100 * (check.rel_change or 0.0):+.1f} %" if check else ""
        reasons.append(f"{_DRIFT_REASON} ({what})")
    few = [p.label for p in [*candidates, *([d] if d is not None else [])] if p.rows.shape[0] < MIN_ROUNDS_FOR_CLAIM]
    if few:
        reasons.append(f"{len(few)} point(s) with fewer than {MIN_ROUNDS_FOR_CLAIM} rounds, too few for an interval "
                       f"({', '.join(few[:3])}{', ...' if len(few) > 3 else ''})")
    xs = sorted({float(p.settings[opt.x_field]) for p in candidates if p.settings[opt.x_field] is not None})
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


def _axes(points: Sequence[_PointData]) -> tuple[str, list[str]]:
    """The setting that varies most is the x axis; other varying settings make series."""
    distinct = {f: {p.settings[f] for p in points if p.settings[f] is not None} for f in SETTING_FIELDS}
    x_field = max(SETTING_FIELDS, key=lambda f: (len(distinct[f]), -SETTING_FIELDS.index(f)))
    if not distinct[x_field]:
        x_field = "sm_clock_mhz"
    series = [f for f in SETTING_FIELDS if f != x_field and len({p.settings[f] for p in points}) > 1]
    return x_field, series


def _point_stats(p: _PointData, d: _PointData | None, confidence: float, energy_basis: str, simulated: bool,
                 n_resamples: int) -> PointStats:
    est = {name: (_estimate(p.est[col], None if p.boot is None else p.boot[:, col], confidence)
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
                setattr(ps, name, _estimate(value, boot, confidence))
    if d is None or p is d:
        return ps
    spread = p.boot is not None or d.boot is not None
    rp, rd = _replicates(p, n_resamples), _replicates(d, n_resamples)
    ps.time_change_pct = _ratio_estimate(p.est[_T], rp[:, _T], d.est[_T], rd[:, _T], confidence, _change, spread)
    basis_col = _E if energy_basis == "gross" else _EN
    if p.available(_E) and d.available(_E):
        ps.energy_saving_pct = _ratio_estimate(p.est[_E], rp[:, _E], d.est[_E], rd[:, _E], confidence, _saving, spread)
    if p.available(_EN) and d.available(_EN):
        ps.net_energy_saving_pct = _ratio_estimate(p.est[_EN], rp[:, _EN], d.est[_EN], rd[:, _EN], confidence,
                                                   _saving, spread)
    if p.available(basis_col) and d.available(basis_col):
        for power, name in ((1, "edp_change_pct"), (2, "ed2p_change_pct")):
            pv = p.est[basis_col] * p.est[_T] ** power
            dv = d.est[basis_col] * d.est[_T] ** power
            setattr(ps, name, _ratio_estimate(pv, rp[:, basis_col] * rp[:, _T] ** power, dv,
                                              rd[:, basis_col] * rd[:, _T] ** power, confidence, _change, spread))
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
                               "time_per_image_s_ci95": _log_t_interval(rows[:, _T]),
                               "energy_per_image_j": None if energy is None else float(np.mean(energy)),
                               "energy_per_image_j_ci95": None if energy is None else _log_t_interval(energy)}
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


def _optimum(objective: str, candidates: Sequence[_PointData], d: _PointData | None, *, x_field: str, basis_col: int,
             energy_basis: str, energy_available: bool, net_available: bool, cap_pct: float, confidence: float,
             n_resamples: int, simulated: bool, n_clock_points: int) -> Optimum:
    basis = "net" if objective == "net_energy" else ("gross" if objective == "energy" else energy_basis)
    unit = _OBJECTIVE_UNITS[objective]
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

    if objective == "energy_capped":
        assert d is not None
        t_point = np.asarray([p.est[_T] for p in candidates])
        feasible = 100.0 * (t_point / d.est[_T] - 1.0) <= cap_pct
        t_reps = np.column_stack([_replicates(p, n_resamples)[:, _T] for p in candidates])
        d_t = _replicates(d, n_resamples)[:, _T][:, None]
        feasible_reps = 100.0 * (t_reps / d_t - 1.0) <= cap_pct
    else:
        feasible = np.ones(n_pts, dtype=bool)
        feasible_reps = np.ones_like(reps_arr, dtype=bool)

    if not feasible.any():
        empty.reason = f"no verified point is within {cap_pct:g} % of the default clock's time"
        return empty
    winner = int(np.argmin(np.where(feasible, values_arr, np.inf)))
    masked = np.where(feasible_reps, reps_arr, np.inf)
    choice = np.argmin(masked, axis=1)
    none_mask = ~np.isfinite(masked[np.arange(masked.shape[0]), choice])
    labels = [p.label for p in candidates]
    fractions: dict[str, float] = {}
    for i in range(n_pts):
        c = int(np.sum((choice == i) & ~none_mask))
        if c:
            fractions[labels[i]] = c / n_resamples
    if none_mask.any():
        fractions["none"] = float(none_mask.sum()) / n_resamples
    xs = np.asarray([p.settings[x_field] if p.settings[x_field] is not None else np.nan for p in candidates])
    chosen_x = xs[choice[~none_mask]]
    chosen_x = chosen_x[np.isfinite(chosen_x)]
    clock_ci = None
    clock_ci_points = None
    if chosen_x.size:
        alpha = (1.0 - confidence) / 2.0
        clock_ci = (float(np.quantile(chosen_x, alpha, method="lower")),
                    float(np.quantile(chosen_x, 1.0 - alpha, method="higher")))
        clock_ci_points = len({float(x) for x in xs[np.isfinite(xs)] if clock_ci[0] <= x <= clock_ci[1]})
    best = candidates[winner]
    spread = best.boot is not None
    opt = Optimum(objective=objective, energy_basis=basis, label=best.label, settings=best.settings, x_field=x_field,
                  x_value=best.settings[x_field], value=_estimate(values_arr[winner], reps_arr[:, winner] if spread else None,
                                                                  confidence),
                  unit=unit, clock_ci=clock_ci, clock_ci_points=clock_ci_points,
                  choice_fraction=fractions.get(best.label, 0.0),
                  choice_fractions=dict(sorted(fractions.items(), key=lambda kv: -kv[1])), n_resamples=n_resamples,
                  simulated=simulated, slowdown_cap_pct=cap_pct if objective == "energy_capped" else None,
                  n_candidates=n_pts, n_clock_points=n_clock_points,
                  repeats_per_point=[min(len(p.records) for p in candidates), max(len(p.records) for p in candidates)],
                  rounds_per_repeat=[min(int(r.shape[0]) for p in candidates for r in p.per_record_rows),
                                     max(int(r.shape[0]) for p in candidates for r in p.per_record_rows)])
    if d is not None:
        spread = best.boot is not None or d.boot is not None
        rb, rd = _replicates(best, n_resamples), _replicates(d, n_resamples)
        ecol = _EN if basis == "net" else _E
        if best.available(ecol) and d.available(ecol):
            opt.saving_pct = _ratio_estimate(best.est[ecol], rb[:, ecol], d.est[ecol], rd[:, ecol], confidence, _saving,
                                             spread)
        opt.time_change_pct = _ratio_estimate(best.est[_T], rb[:, _T], d.est[_T], rd[:, _T], confidence, _change, spread)
        d_value, d_reps = _objective_values(d, objective, basis_col, n_resamples)
        opt.objective_change_pct = _ratio_estimate(values_arr[winner], reps_arr[:, winner], d_value, d_reps,
                                                   confidence, _change, spread)
        if objective == "energy_capped":
            high = opt.time_change_pct.ci_high if opt.time_change_pct.has_ci else opt.time_change_pct.value
            opt.cap_met_with_confidence = bool(high is not None and high <= cap_pct)
    return opt


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


def provenance_lines(prov: Mapping[str, Any]) -> list[str]:
    """Human-readable statements: which parts are real measurements and which are simulation."""
    lines = []
    gpus = ", ".join(prov.get("gpu_names") or []) or "no GPU recorded"
    compute = ", ".join(prov.get("compute_devices") or []) or "unknown"
    lines.append(f"GPU: {gpus}" + (" (SIMULATED)" if prov.get("gpu_simulated") else ""))
    if prov.get("gpu_simulated") or prov.get("energy_simulated"):
        lines.append(f"time: wall-clock on {compute}, stretched by the simulated GPU's clock model (simulation)")
        lines.append("energy and power: simulated GPU energy counter (simulation, not a measurement)")
    else:
        sources = ", ".join(prov.get("energy_sources") or []) or "none"
        lines.append(f"time: measured on {compute} ({', '.join(prov.get('time_source') or []) or 'timer'})")
        lines.append(f"energy and power: measured ({sources})")
    lines.append(f"clocks: {prov.get('clock_control')}")
    return lines


# --- tables ----------------------------------------------------------------------------------------
def _num_text(x: float, signed: bool, side: int) -> str:
    """``x`` to one decimal; when ``side`` is +1 (-1) and one decimal would print it at or below
    (above) 0, more decimals (up to six) instead: a printed number never crosses the verdict's side."""
    def wrong_side(t: str) -> bool:
        return (side > 0 and float(t) <= 0.0) or (side < 0 and float(t) >= 0.0)

    for decimals in range(1, 7):  # as few decimals as keep the number on its side of 0
        text = f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"
        if not wrong_side(text):
            return text
    return f"{x:+.2g}" if signed else f"{x:.2g}"


def _interval_text(lo: float, hi: float, signed: bool, away_from_zero: bool) -> str:
    """``[lo, hi]``; an interval that excludes 0 (``away_from_zero``) is printed on its side of 0."""
    side = (1 if lo > 0 else -1) if away_from_zero else 0
    return f"[{_num_text(lo, signed, side)}, {_num_text(hi, signed, side)}]"


def _pct_text(e: Estimate) -> str:
    if e.has_ci:
        assert e.ci_low is not None and e.ci_high is not None
        side = (1 if e.ci_low > 0 else -1) if e.excludes(0.0) else 0
        return f"{_num_text(e.value, False, side)} % {_interval_text(e.ci_low, e.ci_high, False, side != 0)}"
    return f"{e.value:.1f} %"


def _signed_pct_text(e: Estimate) -> str:
    if e.has_ci:
        assert e.ci_low is not None and e.ci_high is not None
        side = (1 if e.ci_low > 0 else -1) if e.excludes(0.0) else 0
        return f"{_num_text(e.value, True, side)} % {_interval_text(e.ci_low, e.ci_high, True, side != 0)}"
    return f"{e.value:+.1f} %"


def saving_text(e: Estimate, kind: str = "energy") -> str:
    """A saving with a verdict that its interval backs: "saves" only when the interval lies above 0,
    "uses more" only below 0, else "not distinguishable from no saving"; no interval, no verdict."""
    if not e.has_ci:
        return f"{kind} saved vs the default clock {e.value:.1f} % (no interval)"
    assert e.ci_low is not None and e.ci_high is not None
    if e.ci_low > 0:
        return f"saves {_pct_text(e)} {kind} vs the default clock"
    if e.ci_high < 0:
        more = Estimate(-e.value, -e.ci_high, -e.ci_low)
        return f"uses {_pct_text(more)} more {kind} than the default clock"
    return f"{kind} saved vs the default clock {_pct_text(e)}: not distinguishable from no saving"


def time_change_text(e: Estimate) -> str:
    """A time change with the verdict its interval backs (slower / faster / not distinguishable)."""
    if not e.has_ci:
        return f"time {e.value:+.1f} % (no interval)"
    assert e.ci_low is not None and e.ci_high is not None
    if e.ci_low > 0:
        return f"time {_signed_pct_text(e)} (slower)"
    if e.ci_high < 0:
        return f"time {_signed_pct_text(e)} (faster)"
    return f"time {_signed_pct_text(e)} (not distinguishable from the default clock's time)"


def _rel_text(rel: float | None) -> str:
    return "-" if rel is None else f"{100 * rel:+.2f} %"


def _est_text(e: Estimate | None, fmt: str = ".4g") -> str:
    return "-" if e is None else e.text(fmt)


def points_table(a: SweepAnalysis) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the points table (default first), shared by markdown and HTML."""
    header = ["point", "verified", "rounds", "s/image", "J/image", "net J/image", "W", "EDP J*s", "ED2P J*s^2",
              "energy saved %", "time change %"]
    rows = []
    for p in a.all_points:
        verified = ", ".join(sorted(set(p.clock_verified)))
        if p.excluded:
            verified += " (EXCLUDED)"
        if p.drift_affected:
            verified += " (AFTER DEFAULT-CLOCK DRIFT)"
        rows.append([p.label, verified, str(p.n_rounds), _est_text(p.time_per_image_s), _est_text(p.energy_per_image_j),
                     _est_text(p.net_energy_per_image_j), _est_text(p.power_w), _est_text(p.edp_js),
                     _est_text(p.ed2p_js2),
                     "baseline" if p.is_default else ("-" if p.energy_saving_pct is None else _pct_text(p.energy_saving_pct)),
                     "baseline" if p.is_default else ("-" if p.time_change_pct is None else _signed_pct_text(p.time_change_pct))])
    return header, rows


def _claim_text(opt: Optimum) -> str:
    if opt.supported:
        return "supported"
    tag = "provisional" if opt.support == PROVISIONAL else "NOT SUPPORTED"
    return f"{tag}: {'; '.join(opt.support_reasons)}"


def optima_table(a: SweepAnalysis) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the optima table. An optimum the data cannot support shows point
    estimates only (no interval, no resampling share), and the reason in its claim column."""
    unit = SETTING_UNITS[a.x_field]
    header = ["objective", "point", "claim", f"{SETTING_NAMES[a.x_field]} 95% CI ({unit})", "chosen in", "value",
              "energy saved % vs default", "time change % vs default", "based on"]
    rows = []
    for opt in a.optima.values():
        name = _OBJECTIVE_NAMES[opt.objective]
        if opt.objective == "energy_capped":
            name += f" (<= {opt.slowdown_cap_pct:g} % slower)"
        if opt.objective in ("edp", "ed2p", "energy_capped"):
            name += f" [{opt.energy_basis}]"
        if opt.label is None:
            rows.append([name, f"none: {opt.reason}", "-", "-", "-", "-", "-", "-", "-"])
            continue
        point = opt.label + (" (SIMULATED)" if opt.simulated else "")
        if not opt.supported:
            def est(e: Estimate | None, signed: bool = False) -> str:
                return "-" if e is None else (f"{e.value:+.1f} %" if signed else f"{e.value:.1f} %") + " (estimate)"
            value = "-" if opt.value is None else f"{opt.value.value:.4g} {opt.unit} (estimate)"
            rows.append([name, point, _claim_text(opt), "not claimed", "not claimed", value, est(opt.saving_pct),
                         est(opt.time_change_pct, True), opt.basis_text()])
            continue
        ci = "-" if opt.clock_ci is None else f"{opt.clock_ci[0]:g} - {opt.clock_ci[1]:g}"
        rows.append([name, point, _claim_text(opt), ci,
                     f"{100 * (opt.choice_fraction or 0):.0f} %", f"{_est_text(opt.value)} {opt.unit}",
                     "-" if opt.saving_pct is None else _pct_text(opt.saving_pct),
                     "-" if opt.time_change_pct is None else _signed_pct_text(opt.time_change_pct),
                     opt.basis_text()])
    return header, rows


def markdown_table(table: tuple[list[str], list[list[str]]]) -> str:
    header, rows = table
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)


# --- synthetic records (SIMULATED; for demos and tests) ------------------------------------------------
#: A true per-image curve: ``(sm_clock_mhz, mem_clock_mhz) -> (time_s, busy_power_w)``.
TrueCurve = Callable[[float, float], tuple[float, float]]


def simulated_true_curve(ref_time_s: float = 2.0, idle_power_w: float = 70.0) -> TrueCurve:
    """The simulated GPU's noise-free model as a :data:`TrueCurve`: ``t = ref_time_s * s(f)`` and
    ``P(f)`` from :class:`sdbench.gpu.simulated.SimulatedGpu` (what :func:`synthetic_sweep_records`
    draws from by default, and what a known-answer test takes as the truth)."""
    from sdbench.gpu.simulated import SimulatedGpu

    gpu = SimulatedGpu(idle_power_w=idle_power_w)

    def curve(sm_clock_mhz: float, mem_clock_mhz: float) -> tuple[float, float]:
        return (ref_time_s * gpu.expected_time_scale(sm_clock_mhz, mem_clock_mhz),
                gpu.expected_busy_power_w(sm_clock_mhz, mem_clock_mhz))

    return curve


def synthetic_sweep_records(
    *,
    sm_clocks_mhz: Sequence[int] = (1980, 1800, 1620, 1440, 1260, 1080, 900, 720),
    mem_clocks_mhz: Sequence[int | None] = (None,),
    rounds: int = 8,
    repeats: int = 1,
    default_repeats: int = 3,
    noise_rel: float = 0.01,
    ref_time_s: float = 2.0,
    idle_power_w: float = 70.0,
    default_drift_rel: float = 0.0,
    drift_rel: float = 0.0,
    true_curve: TrueCurve | None = None,
    clock_verified: Mapping[int, str] | None = None,
    activity: bool = True,
    steps: int = 30,
    seed: int = 0,
    workload: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Sweep records drawn from a known true curve (by default the simulated GPU's physical model).

    Every record is flagged simulated (``energy_simulated``, ``env_gpu_simulated``). Per round:
    ``t = t(f) * (1 + noise)``, ``P = P(f) * drift * (1 + noise)``, ``E = P * t``, with
    ``(t(f), P(f)) = true_curve(f, mem)`` (default :func:`simulated_true_curve`) and ``1 + noise``
    lognormal with mean 1 and CV ``noise_rel`` (the per-round noise; positive at any CV). The default clock runs at the model's
    maximum clock, re-measured ``default_repeats`` times, spread over the sweep (first and last
    included). Injected drift: ``default_drift_rel`` moves only the default re-measurements' energy
    (0 at the first, the full amount at the last); ``drift_rel`` moves every record's power the same
    way along the measurement order (the GPU or host changing under the whole sweep). Records carry
    ``sweep_order_index``. ``clock_verified`` maps SM clocks to a status other than "ok" (e.g.
    ``{1260: "drift"}``). Per-step and per-phase fields are included.
    """
    from sdbench.gpu.simulated import SimulatedGpu

    gpu = SimulatedGpu(idle_power_w=idle_power_w)
    curve = true_curve or simulated_true_curve(ref_time_s, idle_power_w)
    f_max = gpu.info().max_sm_clock_mhz
    mem_max = max(gpu.supported_memory_clocks_mhz())
    m_fraction = 0.3  # SimulatedGpu's default memory-bound fraction (its activity split uses the same)
    rng = np.random.default_rng(seed)
    verified = dict(clock_verified or {})
    base = {"record_type": "case", "model": "sd15", "scheduler": "euler", "steps": steps, "width": 512, "height": 512,
            "pixels": 512 * 512, "batch_size": 1, "dtype": "fp16", "profile": "eager", "knobs": "", "attention": "sdpa",
            "offload": "none", "guidance_scale": 7.5, "device": "simulated", "energy_simulated": True,
            "env_gpu_simulated": True, "env_gpu_name": gpu.name, "energy_source": "counter",
            "time_source": "perf_counter", "env_compute_device": "cpu"}
    base.update(workload or {})
    plan: list[tuple[int | None, int | None, int, str]] = []
    for r in range(default_repeats):
        plan.append((None, None, r, "default-clock"))
    for mem in mem_clocks_mhz:
        for f in sm_clocks_mhz:
            for r in range(repeats):
                plan.append((int(f), mem, r, "point"))
    # Randomised point order (as a sweep runs), the default re-measurements spread over it, first and last.
    order = [int(i) for i in rng.permutation(len(plan)) if i >= default_repeats]
    slots = np.linspace(0, len(order), default_repeats).round().astype(int) if default_repeats else []
    for slot, i in sorted(zip(slots, range(default_repeats)), reverse=True):
        order.insert(int(slot), i)
    # Lognormal factors of mean 1 and CV noise_rel: positive, like a time or a power, at any CV.
    sigma = math.sqrt(math.log1p(noise_rel**2))

    def noise(size: int) -> np.ndarray:
        return np.exp(sigma * rng.standard_normal(size) - sigma**2 / 2.0)

    records = []
    for n, i in enumerate(order):
        sm, mem, rep, role = plan[i]
        f_eff = float(sm if sm is not None else f_max)
        fm = float(mem if mem is not None else mem_max)
        t_true, p_true = curve(f_eff, fm)
        scale = gpu.expected_time_scale(f_eff, fm)
        drift = 1.0 + drift_rel * n / max(1, len(order) - 1)
        if role == "default-clock" and default_repeats > 1:
            drift *= 1.0 + default_drift_rel * rep / (default_repeats - 1)
        t = t_true * noise(rounds)
        p = p_true * drift * noise(rounds)
        e = p * t
        net = e - idle_power_w * t
        rec = dict(base)
        rec.update({
            "case_id": f"synthetic-sm{sm}" if sm else "synthetic-default",
            "sm_clock_mhz": sm, "mem_clock_mhz": mem, "power_limit_w": None,
            "sm_clock_mhz_setting": sm, "mem_clock_mhz_setting": mem, "power_limit_w_setting": None,
            "is_default_clock": role == "default-clock", "point_role": role, "repeat": rep,
            "clock_verified": "ok" if sm is None else verified.get(int(sm), "ok"),
            "point_id": f"{role}-{sm}-{mem}-{rep}", "point_status": "ok", "sweep_order_index": n,
            "started_utc": f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00",
            "rounds": rounds,
            "time_per_image_s_samples": t.tolist(), "time_per_image_s_mean": float(t.mean()),
            "time_per_image_s_median": float(np.median(t)),
            "energy_per_image_j_samples": e.tolist(), "energy_per_image_j_mean": float(e.mean()),
            "energy_per_image_j_median": float(np.median(e)),
            "net_energy_per_image_j_samples": net.tolist(), "net_energy_per_image_j_median": float(np.median(net)),
            "power_w_samples": p.tolist(), "power_w": float(np.median(p)), "idle_power_w": idle_power_w,
            "telemetry_sm_clock_mhz_mean": f_eff, "telemetry_mem_clock_mhz_mean": fm,
            "telemetry_power_limit_w": 700.0, "env_gpu_default_sm_clock_mhz": f_max,
        })
        # Per step and phase: the denoise loop takes 90 % of a call, text encode 2 %, VAE decode 8 %.
        call_t = float(np.median(t))
        call_p = float(np.median(p))
        step_t = call_t * 0.90 / steps
        rec["step_time_s"] = [step_t * (1.3 if k == 0 else 1.0) for k in range(steps)]
        rec["step_energy_j"] = [s * call_p for s in rec["step_time_s"]]
        for phase, share, rel_power in (("text_encode", 0.02, 0.6), ("denoise", 0.90, 1.0), ("vae_decode", 0.07, 0.85),
                                        ("other", 0.01, 0.5)):
            rec[f"phase_{phase}_s"] = call_t * share
            rec[f"phase_{phase}_energy_j"] = call_t * share * call_p * rel_power
        if activity:
            compute_share = (1.0 - m_fraction) * f_max / f_eff / scale
            memory_share = m_fraction * mem_max / fm / scale
            # Counter sampling noise keeps fp and DRAM activity from being exactly collinear, as on hardware.
            jitter = 1.0 + noise_rel * rng.standard_normal(3)
            # Named as a sweep's records name them (sdbench.gpu.dcgm: activity_<counter>_mean over the windows).
            rec.update({"activity_status": "simulated", "activity_sm_active_mean": 1.0,
                        "activity_tensor_active_mean": 0.8 * compute_share * jitter[0],
                        "activity_fp16_active_mean": 0.15 * compute_share * jitter[1],
                        "activity_dram_active_mean": memory_share * jitter[2]})
        records.append(rec)
    return records
