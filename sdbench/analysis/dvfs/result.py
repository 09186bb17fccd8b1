"""What an analysis returns and how it is written: :class:`PointStats` (one clock setting), :class:`DefaultBaseline`
(the default clock and its drift), :class:`SweepAnalysis` (one workload's sweep: its headline, JSON and markdown),
and the points and optima tables and provenance lines that the markdown and the report share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sdbench.analysis.drift import DriftCheck
from sdbench.analysis.estimates import Estimate
from sdbench.analysis.optimum import DRIFT_REASON, INCOMPLETE_REASON, OBJECTIVE_NAMES, PROVISIONAL, Optimum
from sdbench.analysis.text import (
    SETTING_NAMES,
    SETTING_UNITS,
    est_text,
    markdown_table,
    pct_text,
    rel_text,
    signed_pct_text,
)
from sdbench.record.io import json_safe

__all__ = [
    "DefaultBaseline",
    "PointStats",
    "SweepAnalysis",
    "optima_table",
    "points_table",
    "provenance_lines",
]


@dataclass
class PointStats:
    """One clock setting: its records pooled, every metric per image with an interval.

    ``settings`` maps each of :data:`~sdbench.analysis.dvfs.records.SETTING_FIELDS` to the requested value
    (``None``: as found).
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
        out.append(f"{h}# Points ({self.statistic} per image, {100 * self.confidence:g} % CI; optima chosen "
                   f"over {self.n_resamples} bootstrap resamples)")
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
