"""DVFS sweep analysis: per-clock time, energy, power, EDP and ED2P with confidence intervals, the
default-clock baseline, and energy-optimal clocks with bootstrap confidence.

Input is a list of flat records (Runner records, or sweep records that add ``*_setting``,
``is_default_clock``, ``clock_verified``, ``point_role`` ...). Records are grouped by their clock
setting (SM clock, memory clock, power limit; ``None`` = as found, the default). Every number is per
image, from the per-round samples each record carries (``time_per_image_s_samples``,
``energy_per_image_j_samples``, ``net_energy_per_image_j_samples``, ``power_w_samples``); a record
without samples contributes its summary value as a single round (no interval from it alone).

Bootstrap: each point's rounds are resampled with replacement (rounds stay paired, so time and
energy of one window move together), independently per point and for the default baseline. Point
intervals are percentile intervals of the resampled statistic; savings and changes against the
default clock are ratio intervals (:mod:`sdbench.analysis.estimates`, which states the conventions).
Each objective's optimum is picked by :func:`sdbench.analysis.optimum.pick_optimum`, and
:func:`sdbench.analysis.optimum.judge_support` says whether the data can support a claim about it
(default-clock drift, from :func:`sdbench.analysis.drift.default_drift_check`, an incomplete sweep, noise).

The pieces: :mod:`~sdbench.analysis.estimates` (estimates and intervals), :mod:`~sdbench.analysis.optimum`
(the optimum picker and the support judgement), :mod:`~sdbench.analysis.drift` (the default-clock drift
test), :mod:`~sdbench.analysis.text` (how numbers are written), :mod:`~sdbench.analysis.synthetic`
(synthetic sweep records); this module groups the records, pools each point and assembles a
:class:`SweepAnalysis`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sdbench.analysis.drift import DriftCheck, default_drift_check, log_t_interval
from sdbench.analysis.estimates import (
    Estimate,
    bootstrap_estimate,
    bootstrap_replicates,
    change_from_ratio,
    interval_estimate,
    ratio_estimate,
    saving_from_ratio,
)
from sdbench.analysis.optimum import (
    DRIFT_REASON,
    INCOMPLETE_REASON,
    OBJECTIVE_NAMES,
    OBJECTIVE_UNITS,
    OBJECTIVES,
    PROVISIONAL,
    Optimum,
    judge_support,
    pick_optimum,
)
from sdbench.analysis.text import (
    SETTING_NAMES,
    SETTING_UNITS,
    est_text,
    markdown_table,
    pct_text,
    rel_text,
    signed_pct_text,
)
from sdbench.errors import ConfigError
from sdbench.record.io import json_safe
from sdbench.record.schema import metric_stats

SETTING_FIELDS: tuple[str, ...] = ("sm_clock_mhz", "mem_clock_mhz", "power_limit_w")

#: Case features that identify a workload (everything that is not a clock setting): records that
#: differ here are analysed separately.
WORKLOAD_FIELDS: tuple[str, ...] = ("model", "scheduler", "steps", "width", "height", "batch_size", "dtype",
                                    "profile", "knobs", "attention", "offload", "guidance_scale")

#: clock_verified values a sweep writes; only "ok" points may be optima. Records without the field
#: (plain benchmark results) count as "not-recorded" and are kept.
VERIFIED_OK = "ok"
NOT_RECORDED = "not-recorded"

ENERGY_BASES: tuple[str, ...] = ("gross", "net")
STATISTICS: tuple[str, ...] = ("mean", "median")

# Columns of a point's round table.
_T, _E, _EN, _P = 0, 1, 2, 3
_METRIC_COLUMNS = {"time_per_image_s": _T, "energy_per_image_j": _E, "net_energy_per_image_j": _EN, "power_w": _P}


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
    #: Measured after the default clock drifted beyond its noise
    #: (see :func:`sdbench.analysis.drift.default_drift_check`).
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
class DefaultBaseline:
    """The default-clock measurements pooled, and whether they moved between re-measurements.

    ``drift_*_rel`` is ``(last - first) / first`` over the re-measurements in the order they were
    taken; ``spread_*_rel`` is ``(max - min) / mean`` of their estimates. ``drift_significant`` and
    ``drift_verdict`` come from :func:`~sdbench.analysis.drift.default_drift_check` (``drift_check``
    holds every comparison);
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
            reasons = [r for r in o.support_reasons if not r.startswith((DRIFT_REASON, INCOMPLETE_REASON))]
            if o.label is not None and reasons:
                out.append(f"NOT SUPPORTED: {OBJECTIVE_NAMES[o.objective]}: the data cannot support a claim "
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
                out.append(f" Drift first to last: time {rel_text(d.drift_time_rel)}, energy "
                           f"{rel_text(d.drift_energy_rel)}; verdict: {d.drift_verdict}.")
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


def _objective_values(p: _PointData, objective: str, basis_col: int, n_resamples: int) -> tuple[float, np.ndarray]:
    reps = _replicates(p, n_resamples)
    if objective in ("energy", "energy_capped"):
        col = _E if objective == "energy" else basis_col
        return float(p.est[col]), reps[:, col]
    if objective == "net_energy":
        return float(p.est[_EN]), reps[:, _EN]
    power = 1 if objective == "edp" else 2
    return float(p.est[basis_col] * p.est[_T] ** power), reps[:, basis_col] * reps[:, _T] ** power


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
        t_point = np.asarray([p.est[_T] for p in candidates])
        feasible = 100.0 * (t_point / d.est[_T] - 1.0) <= cap_pct
        t_reps = np.column_stack([_replicates(p, n_resamples)[:, _T] for p in candidates])
        d_t = _replicates(d, n_resamples)[:, _T][:, None]
        feasible_reps = 100.0 * (t_reps / d_t - 1.0) <= cap_pct

    pick = pick_optimum([p.label for p in candidates], values_arr, reps_arr, lower_is_better=True,
                        confidence=confidence, feasible=feasible, feasible_replicates=feasible_reps)
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
    # A single-round point's replicates repeat its estimate: it has no interval.
    value = interval_estimate(values_arr[winner], pick.interval if best.boot is not None else None)
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
        spread = best.boot is not None or d.boot is not None
        rb, rd = _replicates(best, n_resamples), _replicates(d, n_resamples)
        ecol = _EN if basis == "net" else _E
        if best.available(ecol) and d.available(ecol):
            opt.saving_pct = ratio_estimate(best.est[ecol], rb[:, ecol], d.est[ecol], rd[:, ecol], confidence,
                                            saving_from_ratio, spread)
        opt.time_change_pct = ratio_estimate(best.est[_T], rb[:, _T], d.est[_T], rd[:, _T], confidence,
                                             change_from_ratio, spread)
        d_value, d_reps = _objective_values(d, objective, basis_col, n_resamples)
        opt.objective_change_pct = ratio_estimate(values_arr[winner], reps_arr[:, winner], d_value, d_reps,
                                                   confidence, change_from_ratio, spread)
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
        rows.append([p.label, verified, str(p.n_rounds), est_text(p.time_per_image_s), est_text(p.energy_per_image_j),
                     est_text(p.net_energy_per_image_j), est_text(p.power_w), est_text(p.edp_js),
                     est_text(p.ed2p_js2),
                     "baseline" if p.is_default else ("-" if p.energy_saving_pct is None else pct_text(p.energy_saving_pct)),
                     "baseline" if p.is_default else ("-" if p.time_change_pct is None else signed_pct_text(p.time_change_pct))])
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
        name = OBJECTIVE_NAMES[opt.objective]
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
                     f"{100 * (opt.choice_fraction or 0):.0f} %", f"{est_text(opt.value)} {opt.unit}",
                     "-" if opt.saving_pct is None else pct_text(opt.saving_pct),
                     "-" if opt.time_change_pct is None else signed_pct_text(opt.time_change_pct),
                     opt.basis_text()])
    return header, rows
