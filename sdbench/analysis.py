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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sdbench.errors import ConfigError
from sdbench.records import json_safe
from sdbench.stats import is_significant_change

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


# --- data classes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval (``None`` bounds: no interval, e.g. one round)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

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

    def x(self, x_field: str) -> float | None:
        """The point's position on the plot's x axis (for the default: its measured SM clock)."""
        value = self.settings.get(x_field)
        if value is None and self.is_default and x_field == "sm_clock_mhz":
            return self.sm_clock_mhz_measured
        return value

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass
class DefaultBaseline:
    """The default-clock measurements pooled, and how much they moved between re-measurements.

    ``drift_*_rel`` is ``(last - first) / first`` over the re-measurements in the order they were
    taken; ``spread_*_rel`` is ``(max - min) / mean`` of their estimates. ``drift_significant`` comes
    from :func:`sdbench.stats.is_significant_change` (last against first, 1 % threshold).
    """

    stats: PointStats
    remeasurements: list[dict[str, Any]]
    drift_time_rel: float | None = None
    drift_energy_rel: float | None = None
    spread_time_rel: float | None = None
    spread_energy_rel: float | None = None
    drift_significant: bool | None = None
    drift_verdict: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**asdict(self), "stats": self.stats.to_dict()})


@dataclass
class Optimum:
    """The best verified point for one objective, and how sure the bootstrap is about it.

    ``choice_fraction`` is the share of resamples in which this point wins; ``choice_fractions``
    the same for every point that ever wins (``"none"``: no point met the slowdown cap).
    ``clock_ci`` is the interval of the chosen ``x_field`` value across resamples (grid values).
    ``saving_pct`` is the saving of the objective's energy (gross or net) at this point against the
    default clock; ``objective_change_pct`` the change of the objective itself (negative is better).
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

    def statement(self) -> str:
        """One line a researcher can paste: the optimum, its confidence, and the saving."""
        name = _OBJECTIVE_NAMES[self.objective]
        if self.label is None:
            return f"{name}: no optimum ({self.reason})"
        sim = " [SIMULATED]" if self.simulated else ""
        parts = [f"{name}: {self.label}"]
        if self.clock_ci is not None:
            unit = SETTING_UNITS[self.x_field]
            parts.append(f"({SETTING_NAMES[self.x_field]} 95% CI {self.clock_ci[0]:g}-{self.clock_ci[1]:g} {unit}, "
                         f"chosen in {100 * (self.choice_fraction or 0):.0f}% of {self.n_resamples} resamples)")
        head = " ".join(parts)
        against = []
        if self.saving_pct is not None:
            kind = "net energy" if self.energy_basis == "net" else "energy"
            against.append(f"{kind} saved vs the default clock {_pct_text(self.saving_pct)}")
        if self.time_change_pct is not None:
            against.append(f"time {_signed_pct_text(self.time_change_pct)}")
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
    """Everything the report needs about one workload's sweep."""

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


def _samples(rec: Mapping[str, Any], metric: str) -> np.ndarray | None:
    """Per-round samples of a metric, or its summary as one round, or None."""
    raw = rec.get(f"{metric}_samples")
    if isinstance(raw, (list, tuple)) and raw:
        vals = [_num(v) for v in raw]
        if all(v is not None for v in vals):
            return np.asarray(vals, dtype=float)
    for suffix in ("_mean", "_median", ""):
        v = _num(rec.get(f"{metric}{suffix}"))
        if v is not None:
            return np.asarray([v])
    return None


def _round_table(rec: Mapping[str, Any], notes: list[str]) -> np.ndarray | None:
    """Rows = measured rounds; columns time, energy, net energy, power (NaN where absent)."""
    t = _samples(rec, "time_per_image_s")
    if t is None:
        return None
    table = np.full((t.size, 4), np.nan)
    table[:, _T] = t
    for metric, col in (("energy_per_image_j", _E), ("net_energy_per_image_j", _EN), ("power_w", _P)):
        s = _samples(rec, metric)
        if s is None:
            continue
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


def _estimate(value: float, boot: np.ndarray | None, confidence: float) -> Estimate:
    if boot is None or not np.all(np.isfinite(boot)):
        return Estimate(float(value))
    lo, hi = _quantiles(boot, confidence)
    # Percentile bounds of a statistic of resamples can miss the point estimate by rounding only.
    return Estimate(float(value), min(lo, float(value)), max(hi, float(value)))


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
    value = fn(num_value, den_value)
    if not any_spread:
        return Estimate(value)
    reps = fn(num_reps, den_reps)
    return _estimate(value, reps, confidence)


def _saving(e: Any, e0: Any) -> Any:
    return 100.0 * (1.0 - e / e0)


def _change(t: Any, t0: Any) -> Any:
    return 100.0 * (t / t0 - 1.0)


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
    return [analyze_sweep(group, meta=meta, **kwargs) for group in groups.values()]


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
        meta: the sweep's ``sweep.json`` (its ``simulated`` flag is honoured).
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
    baseline = _baseline(default_pd, stats_by_label[default_pd.label]) if default_pd else None
    if baseline is not None and baseline.drift_significant:
        notes.append(f"the default clock moved between its re-measurements (time {_rel_text(baseline.drift_time_rel)}, "
                     f"energy {_rel_text(baseline.drift_energy_rel)}): savings carry that drift")
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
    )


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


def _baseline(d: _PointData, stats: PointStats) -> DefaultBaseline:
    """Pooled default stats and drift across its re-measurements (in the order they were taken)."""
    order = sorted(range(len(d.records)), key=lambda i: (str(d.records[i].get("started_utc") or ""), i))
    rem = []
    for i in order:
        rows = d.per_record_rows[i] if i < len(d.per_record_rows) else None
        if rows is None:
            continue
        rem.append({"point_id": d.records[i].get("point_id"), "started_utc": d.records[i].get("started_utc"),
                    "repeat": d.records[i].get("repeat"), "clock_verified": d.statuses[i],
                    "rounds": int(rows.shape[0]),
                    "time_per_image_s": float(np.mean(rows[:, _T])),
                    "energy_per_image_j": None if np.any(np.isnan(rows[:, _E])) else float(np.mean(rows[:, _E]))})
    base = DefaultBaseline(stats=stats, remeasurements=rem)
    if len(rem) < 2:
        return base
    first, last = order[0], order[-1]
    times = [m["time_per_image_s"] for m in rem]
    base.drift_time_rel = times[-1] / times[0] - 1.0
    base.spread_time_rel = (max(times) - min(times)) / float(np.mean(times))
    energies = [m["energy_per_image_j"] for m in rem]
    col = _T
    if all(e is not None for e in energies):
        base.drift_energy_rel = energies[-1] / energies[0] - 1.0
        base.spread_energy_rel = (max(energies) - min(energies)) / float(np.mean(energies))
        col = _E
    a, b = d.per_record_rows[last][:, col], d.per_record_rows[first][:, col]
    change = is_significant_change(a, b, threshold_rel=0.01)
    base.drift_significant = change.verdict != "unchanged"
    metric = "energy" if col == _E else "time"
    direction = {"slower": "rose", "faster": "fell"}.get(change.verdict, change.verdict)
    base.drift_verdict = f"{metric} {direction} ({change.reason})"
    return base


def _optimum(objective: str, candidates: Sequence[_PointData], d: _PointData | None, *, x_field: str, basis_col: int,
             energy_basis: str, energy_available: bool, net_available: bool, cap_pct: float, confidence: float,
             n_resamples: int, simulated: bool, n_clock_points: int) -> Optimum:
    basis = "net" if objective == "net_energy" else ("gross" if objective == "energy" else energy_basis)
    unit = _OBJECTIVE_UNITS[objective]
    empty = Optimum(objective=objective, energy_basis=basis, label=None, settings=None, x_field=x_field, x_value=None,
                    value=None, unit=unit, n_resamples=n_resamples, simulated=simulated,
                    slowdown_cap_pct=cap_pct if objective == "energy_capped" else None)
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
    if chosen_x.size:
        alpha = (1.0 - confidence) / 2.0
        clock_ci = (float(np.quantile(chosen_x, alpha, method="lower")),
                    float(np.quantile(chosen_x, 1.0 - alpha, method="higher")))
    best = candidates[winner]
    spread = best.boot is not None
    opt = Optimum(objective=objective, energy_basis=basis, label=best.label, settings=best.settings, x_field=x_field,
                  x_value=best.settings[x_field], value=_estimate(values_arr[winner], reps_arr[:, winner] if spread else None,
                                                                  confidence),
                  unit=unit, clock_ci=clock_ci, choice_fraction=fractions.get(best.label, 0.0),
                  choice_fractions=dict(sorted(fractions.items(), key=lambda kv: -kv[1])), n_resamples=n_resamples,
                  simulated=simulated, slowdown_cap_pct=cap_pct if objective == "energy_capped" else None)
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
def _pct_text(e: Estimate) -> str:
    if e.has_ci:
        return f"{e.value:.1f} % [{e.ci_low:.1f}, {e.ci_high:.1f}]"
    return f"{e.value:.1f} %"


def _signed_pct_text(e: Estimate) -> str:
    if e.has_ci:
        return f"{e.value:+.1f} % [{e.ci_low:+.1f}, {e.ci_high:+.1f}]"
    return f"{e.value:+.1f} %"


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
        rows.append([p.label, verified, str(p.n_rounds), _est_text(p.time_per_image_s), _est_text(p.energy_per_image_j),
                     _est_text(p.net_energy_per_image_j), _est_text(p.power_w), _est_text(p.edp_js),
                     _est_text(p.ed2p_js2),
                     "baseline" if p.is_default else ("-" if p.energy_saving_pct is None else _pct_text(p.energy_saving_pct)),
                     "baseline" if p.is_default else ("-" if p.time_change_pct is None else _signed_pct_text(p.time_change_pct))])
    return header, rows


def optima_table(a: SweepAnalysis) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the optima table."""
    unit = SETTING_UNITS[a.x_field]
    header = ["objective", "point", f"{SETTING_NAMES[a.x_field]} 95% CI ({unit})", "chosen in", "value",
              "energy saved % vs default", "time change % vs default"]
    rows = []
    for opt in a.optima.values():
        name = _OBJECTIVE_NAMES[opt.objective]
        if opt.objective == "energy_capped":
            name += f" (<= {opt.slowdown_cap_pct:g} % slower)"
        if opt.objective in ("edp", "ed2p", "energy_capped"):
            name += f" [{opt.energy_basis}]"
        if opt.label is None:
            rows.append([name, f"none: {opt.reason}", "-", "-", "-", "-", "-"])
            continue
        ci = "-" if opt.clock_ci is None else f"{opt.clock_ci[0]:g} - {opt.clock_ci[1]:g}"
        rows.append([name, opt.label + (" (SIMULATED)" if opt.simulated else ""), ci,
                     f"{100 * (opt.choice_fraction or 0):.0f} %", f"{_est_text(opt.value)} {opt.unit}",
                     "-" if opt.saving_pct is None else _pct_text(opt.saving_pct),
                     "-" if opt.time_change_pct is None else _signed_pct_text(opt.time_change_pct)])
    return header, rows


def markdown_table(table: tuple[list[str], list[list[str]]]) -> str:
    header, rows = table
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)


# --- synthetic records (SIMULATED; for demos and tests) ------------------------------------------------
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
    clock_verified: Mapping[int, str] | None = None,
    activity: bool = True,
    steps: int = 30,
    seed: int = 0,
    workload: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Sweep records drawn from :class:`sdbench.gpu.simulated.SimulatedGpu`'s physical model.

    Every record is flagged simulated (``energy_simulated``, ``env_gpu_simulated``). Per round:
    ``t = ref_time_s * s(f) * (1 + noise)``, ``P = P(f) * (1 + noise)``, ``E = P * t``; the default
    clock runs at the model's maximum clock, re-measured ``default_repeats`` times, drifting by
    ``default_drift_rel`` in energy from the first to the last. ``clock_verified`` maps SM clocks to
    a status other than "ok" (e.g. ``{1260: "drift"}``). Per-step and per-phase fields are included.
    """
    from sdbench.gpu.simulated import SimulatedGpu

    gpu = SimulatedGpu(idle_power_w=idle_power_w)
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
    records = []
    for n, i in enumerate(order):
        sm, mem, rep, role = plan[i]
        f_eff = float(sm if sm is not None else f_max)
        fm = float(mem if mem is not None else mem_max)
        p_true = gpu.expected_busy_power_w(f_eff, fm)
        scale = gpu.expected_time_scale(f_eff, fm)
        drift = 1.0
        if role == "default-clock" and default_repeats > 1:
            drift = 1.0 + default_drift_rel * rep / (default_repeats - 1)
        t = ref_time_s * scale * (1.0 + noise_rel * rng.standard_normal(rounds))
        p = p_true * drift * (1.0 + noise_rel * rng.standard_normal(rounds))
        e = p * t
        net = e - idle_power_w * t
        rec = dict(base)
        rec.update({
            "case_id": f"synthetic-sm{sm}" if sm else "synthetic-default",
            "sm_clock_mhz": sm, "mem_clock_mhz": mem, "power_limit_w": None,
            "sm_clock_mhz_setting": sm, "mem_clock_mhz_setting": mem, "power_limit_w_setting": None,
            "is_default_clock": role == "default-clock", "point_role": role, "repeat": rep,
            "clock_verified": "ok" if sm is None else verified.get(int(sm), "ok"),
            "point_id": f"{role}-{sm}-{mem}-{rep}", "point_status": "ok",
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
            rec.update({"activity_sm_active": 1.0, "activity_tensor_active": 0.8 * compute_share * jitter[0],
                        "activity_fp16_active": 0.15 * compute_share * jitter[1],
                        "activity_dram_active": memory_share * jitter[2]})
        records.append(rec)
    return records
