"""`sdbench compare`: noise-aware comparison of saved benchmark results, with a non-zero exit on regression.

Reads pytest-benchmark saved JSON (``--benchmark-save`` / ``--benchmark-json``), sdbench results JSON
Lines and ``sdbench generate --export-metrics`` documents through :func:`sdbench.record.io.read_results` (the
format is detected; older rows are upgraded, newer ones refused; a torn line is skipped with a warning). Benchmarks are
paired by name (pytest-benchmark's ``fullname``, a record's ``case_id``) and compared only when their
``case_hash`` -- a hash of what is measured -- is equal; a changed benchmark is reported, never
compared with old results (asv's rule). How energy was measured is part of that identity: energy and power
of a counter-measured record are never compared with a timeline-measured one's (the row says why).

Per pair, three lower-is-better metrics are compared: time (s/image), energy (J/image) and power (W).
Each row's change ``median(candidate) / median(baseline) - 1``, its interval and its verdict come from
one computation (:func:`sdbench.stats.change_interval` on the per-round samples, or
:func:`sdbench.stats.change_interval_from_summaries` when a side saved only summary statistics): the
interval lies above -100 % and contains the change, "slower"/"higher" iff it lies above 0,
"faster"/"lower" iff below, otherwise "unchanged (within noise)" (or "noise unknown" without an
interval). A ``fail_on`` threshold of N percent makes a row a regression, and the exit code 1, iff its
verdict is slower/higher AND its change is at least N percent. Each row records the method that made
its interval (``ci_method``) in the JSON and CSV outputs.

Results from different GPUs, or from one GPU under different clock / power-limit settings, are refused
unless explicitly allowed: timings between two cards of the same model differ by tens of percent.

Library entry points (the pytest plugin's ``--sd-compare-fail`` calls these)::

    result = compare_files(["base.json", "new.json"], fail_on="time:5%,energy:5%")
    print(result.render())
    raise SystemExit(result.exit_code)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdbench.errors import ConfigError, SdbenchError
from sdbench.record.io import ResultRow, Results, read_results
from sdbench.record.io import write_csv as write_records_csv
from sdbench.record.io import write_json as write_json_document
from sdbench.record.schema import CASE_RECORD, MetricStats, energy_method
from sdbench.stats import (
    ChangeEstimate,
    SummaryMoments,
    change_interval,
    change_interval_from_summaries,
)

# --- metrics ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricDef:
    """A compared metric: its key, the record prefix its samples and summaries live under, and its unit."""

    key: str
    prefix: str
    unit: str
    label: str


METRICS: dict[str, MetricDef] = {
    "time": MetricDef("time", "time_per_image_s", "s/image", "time per image"),
    "energy": MetricDef("energy", "energy_per_image_j", "J/image", "energy per image"),
    "power": MetricDef("power", "power_w", "W", "mean power"),
}
#: Metrics that exist only when energy was measured (power is energy over time of each round).
ENERGY_METRICS = frozenset({"energy", "power"})

FAIL_ON_ALLOWED = "metric:N% items separated by commas, metric one of time|energy|power, N a positive number (e.g. time:5%,energy:2.5%)"
_FAIL_ON_ITEM = re.compile(r"^\s*([A-Za-z]+)\s*:\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%\s*$", re.ASCII)

VERDICT_UNCHANGED = "unchanged (within noise)"
VERDICT_NOISE_UNKNOWN = "unchanged (noise unknown)"


def parse_fail_on(text: str) -> dict[str, float]:
    """Parse ``"time:5%,energy:2.5%"`` into ``{"time": 5.0, "energy": 2.5}`` (values are percentages).

    Metrics are ``time``, ``energy`` and ``power`` (case-insensitive); each at most once; N is a positive
    decimal number followed by ``%``. Anything else raises :class:`ConfigError` naming ``fail_on``.
    """
    if not isinstance(text, str):
        raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason="not a string")
    items = text.split(",")
    if not text.strip():
        raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason="empty")
    out: dict[str, float] = {}
    for item in items:
        m = _FAIL_ON_ITEM.match(item)
        if m is None:
            raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason=f"cannot read item {item.strip()!r}")
        metric, number = m.group(1).lower(), m.group(2)
        if metric not in METRICS:
            raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason=f"unknown metric {metric!r}")
        if metric in out:
            raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason=f"metric {metric!r} given twice")
        pct = float(number)
        if not (math.isfinite(pct) and pct > 0):
            raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason=f"{number}% is not a positive finite percentage")
        out[metric] = pct
    return out


def format_fail_on(thresholds_pct: Mapping[str, float]) -> str:
    """The inverse of :func:`parse_fail_on`: ``{"time": 5.0}`` -> ``"time:5%"`` (exact round trip)."""
    return ",".join(f"{k}:{np.format_float_positional(float(v), trim='-')}%" for k, v in thresholds_pct.items())


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"time,energy"`` (or a sequence of names) -> ``("time", "energy")`` in the canonical order."""
    names = [p.strip().lower() for p in text.split(",")] if isinstance(text, str) else [str(p).strip().lower() for p in text]
    names = [n for n in names if n]
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise ConfigError("metric", text, list(METRICS), reason=f"unknown metric {bad[0]!r}" if bad else "empty")
    return tuple(k for k in METRICS if k in names)


def _normalise_fail_on(fail_on: str | Mapping[str, float] | None) -> dict[str, float]:
    if fail_on is None:
        return {}
    if isinstance(fail_on, str):
        return parse_fail_on(fail_on)
    out: dict[str, float] = {}
    for k, v in fail_on.items():
        key = str(k).lower()
        if key not in METRICS or isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ConfigError("fail_on", dict(fail_on), FAIL_ON_ALLOWED, reason=f"bad item {k!r}: {v!r} (percentages)")
        out[key] = float(v)
    return out


# --- reading results ----------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One benchmark (or results record) in one file."""

    name: str
    case_id: str | None
    case_hash: str | None
    record: dict[str, Any]
    identity: dict[str, Any]  # GPU identity and settings; only fields the file states
    software: dict[str, Any]
    stats: dict[str, Any] | None = None  # pytest-benchmark's stats block, when the file is one
    images_per_call: int = 1

    @property
    def energy_status(self) -> str:
        status = self.record.get("energy_status")
        if status in ("measured", "simulated", "unavailable"):
            return str(status)
        has_energy = self.record.get("energy_per_image_j_samples") or self.record.get("energy_per_image_j_median") is not None
        if not has_energy:
            return "unavailable"
        return "simulated" if self.record.get("energy_simulated") or self.identity.get("gpu_simulated") else "measured"

    @property
    def energy_method(self) -> str | None:
        """How the energy was measured (part of the record's identity; :func:`sdbench.record.schema.energy_method`)."""
        return energy_method(self.record)


@dataclass
class ResultsFile:
    """A parsed results file: its entries by name, its format, and notes and warnings raised while reading."""

    path: Path
    format: str  # "pytest-benchmark" or "records"
    entries: dict[str, Entry]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # torn lines (file and line): records that were skipped


_IDENTITY_SETTINGS = ("sm_clock_mhz_setting", "mem_clock_mhz_setting", "power_limit_w_setting")
_IDENTITY_FIELDS = ("gpu_name", "gpu_uuid", "gpu_simulated", *_IDENTITY_SETTINGS)
_SOFTWARE_FIELDS = ("driver_version", "torch", "diffusers")


def _identity_from_record(rec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """GPU identity and software versions from a flat record's env_* and case fields."""
    ident: dict[str, Any] = {}
    name = rec.get("env_gpu_name") or rec.get("env_torch_gpu_name")
    if name:
        ident["gpu_name"] = name
    if rec.get("env_gpu_uuid"):
        ident["gpu_uuid"] = rec["env_gpu_uuid"]
    if "env_gpu_simulated" in rec:
        ident["gpu_simulated"] = bool(rec["env_gpu_simulated"])
    # The case's requested clock locks / power limit are the settings the numbers were taken under.
    for case_key, key in (("sm_clock_mhz", "sm_clock_mhz_setting"), ("mem_clock_mhz", "mem_clock_mhz_setting"),
                          ("power_limit_w", "power_limit_w_setting")):
        if case_key in rec:
            ident[key] = rec[case_key]
    software = {k: rec[f"env_{k}"] for k in ("torch", "diffusers") if rec.get(f"env_{k}")}
    if rec.get("env_gpu_driver_version"):
        software["driver_version"] = rec["env_gpu_driver_version"]
    return ident, software


def _images_per_call(rec: Mapping[str, Any], params: Mapping[str, Any] | None) -> int:
    for source in (rec, params or {}):
        value = source.get("batch_size")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return 1


def _keep_last(entries: dict[str, Entry], entry: Entry, notes: list[str], path: Path) -> None:
    if entry.name in entries:
        # An appended results file may hold the same case from several runs: the newest one counts.
        notes.append(f"{path.name}: {entry.name} appears more than once; using the last occurrence")
    entries[entry.name] = entry


def _pytest_benchmark_entry(row: ResultRow) -> Entry:
    extra = row.row
    ident, software = _identity_from_record(extra)
    sd = row.machine
    # machine_info.sdbench states the session's GPU and settings; a benchmark's own record is more specific (a
    # DVFS case locks its own clocks), so a value the record states wins, and the session fills what the record
    # leaves unset (None: "the card as found", which may be capped).
    for k in _IDENTITY_FIELDS:
        if k in sd and ident.get(k) is None:
            ident[k] = sd[k]
    software = {**{k: sd[k] for k in _SOFTWARE_FIELDS if sd.get(k)}, **software}
    return Entry(name=str(row.name), case_id=extra.get("case_id"), case_hash=extra.get("case_hash"), record=dict(extra),
                 identity=ident, software=software, stats=dict(row.stats) if row.stats is not None else None,
                 images_per_call=_images_per_call(extra, row.params))


def results_file(results: Results) -> ResultsFile:
    """The entries of a results input read by :func:`sdbench.record.io.read_results`, keyed for pairing: a
    pytest-benchmark benchmark by its ``fullname``, a record by its ``case_id``."""
    entries: dict[str, Entry] = {}
    notes: list[str] = list(results.notes)
    if results.format == "pytest-benchmark":
        for row in results.rows:
            _keep_last(entries, _pytest_benchmark_entry(row), notes, results.path)
        return ResultsFile(results.path, "pytest-benchmark", entries, notes, results.warnings)
    skipped = 0
    for row in results.rows:
        rec = row.row
        if row.record_type != CASE_RECORD:
            skipped += 1  # summaries, sweep headers and other record types carry no case to compare
            continue
        name = rec.get("case_id")
        if not isinstance(name, str):
            raise SdbenchError(f"{row.file}: {row.where} has no case_id")
        ident, software = _identity_from_record(rec)
        entry = Entry(name=name, case_id=name, case_hash=rec.get("case_hash"), record=dict(rec), identity=ident,
                      software=software, images_per_call=_images_per_call(rec, None))
        _keep_last(entries, entry, notes, results.path)
    if skipped:
        notes.append(f"{results.path.name}: {skipped} record(s) that are not cases skipped")
    return ResultsFile(results.path, "records", entries, notes, results.warnings)


def entry_metric(entry: Entry, metric: str) -> MetricStats | None:
    """The numbers for one metric of one entry, best source first; None when the entry has none.

    Sources, first that has a noise estimate wins: the record's per-round samples (the one accessor,
    :meth:`MetricStats.from_row`); for time, pytest-benchmark's ``stats.data`` (seconds per call, divided by the
    images per call); the record's summary; for time, pytest-benchmark's ``stats`` summary (per call, likewise
    divided). Without any noise estimate, a lone median (or ``power_w``) is used, and the comparison says the
    noise is unknown. Raises ValueError for samples present but not finite numbers.
    """
    m = METRICS[metric]
    rec = MetricStats.from_row(entry.record, m.prefix)
    if rec is not None and rec.invalid_samples:
        raise ValueError(rec.invalid_samples)
    if rec is not None and rec.has_samples:
        return rec
    stats = MetricStats.from_pytest_benchmark(entry.stats, entry.images_per_call) if (
        metric == "time" and entry.stats) else None
    if stats is not None and stats.has_samples:
        return stats
    if metric == "time" and entry.stats and entry.stats.get("data") is not None:
        raise ValueError("stats.data samples are not finite numbers")
    available = [s for s in (rec, stats) if s is not None]
    with_noise = [s for s in available if s.n >= 2]
    return (with_noise or available or [None])[0]


# --- the change interval ----------------------------------------------------------------------------------


def change_estimate(new: MetricStats, old: MetricStats, confidence: float, threshold_pct: float | None = None
                    ) -> ChangeEstimate:
    """The one computation behind a row's change, interval and verdict (:mod:`sdbench.stats`).

    Per-round samples on both sides: :func:`sdbench.stats.change_interval`. Otherwise (a side known
    only by summary statistics): :func:`sdbench.stats.change_interval_from_summaries`, which gives an
    interval above -100 % containing the estimate, or none ("noise unknown"). ``threshold_pct`` (a
    ``--fail-on`` percentage) sets ``ChangeEstimate.regression``: slower AND estimate >= threshold.
    """
    threshold_rel = 0.0 if threshold_pct is None else threshold_pct / 100.0
    if new.samples is not None and old.samples is not None:
        return change_interval(new.samples, old.samples, confidence=confidence, threshold_rel=threshold_rel)
    return change_interval_from_summaries(SummaryMoments(new.median, new.mean_value, new.stddev or 0.0, new.n),
                                          SummaryMoments(old.median, old.mean_value, old.stddev or 0.0, old.n),
                                          confidence=confidence, threshold_rel=threshold_rel)


# --- the comparison -----------------------------------------------------------------------------------------


@dataclass
class CompareRow:
    """One metric of one benchmark, candidate against baseline. Relative numbers are fractions (0.1 = +10%)."""

    baseline_file: str
    candidate_file: str
    name: str
    case_id: str | None
    metric: str
    unit: str
    baseline_median: float | None
    candidate_median: float | None
    baseline_n: int | None
    candidate_n: int | None
    rel_change: float | None
    change_ci_low_rel: float | None
    change_ci_high_rel: float | None
    p_value: float | None
    verdict: str
    reason: str
    compared: bool
    regression: bool = False
    fail_on_pct: float | None = None
    source: str = ""
    ci_method: str = ""  # what made the change interval (sdbench.stats.CHANGE_METHODS); "" when not compared
    ci_extended: bool = False  # the interval was widened to contain the estimate


@dataclass
class NotCompared:
    """A benchmark present in one file but not comparable (changed case_hash, or only on one side)."""

    baseline_file: str
    candidate_file: str
    name: str
    reason: str


@dataclass
class CompareResult:
    """Everything ``sdbench compare`` found. ``exit_code`` is 1 when a ``fail_on`` threshold was exceeded."""

    files: list[str]
    metrics: tuple[str, ...]
    fail_on_pct: dict[str, float]
    confidence: float
    rows: list[CompareRow] = field(default_factory=list)
    not_compared: list[NotCompared] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[CompareRow]:
        return [r for r in self.rows if r.regression]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "metrics": list(self.metrics),
            "fail_on": format_fail_on(self.fail_on_pct) if self.fail_on_pct else None,
            "fail_on_pct": self.fail_on_pct,
            "confidence": self.confidence,
            "exit_code": self.exit_code,
            "regressions": len(self.regressions),
            "warnings": self.warnings,
            "notes": self.notes,
            "rows": [asdict(r) for r in self.rows],
            "not_compared": [asdict(n) for n in self.not_compared],
        }

    @property
    def table(self) -> str:
        """The whole human report as text (same as :meth:`render`), for terminal reporters."""
        return self.render()

    def format_table(self, candidate_file: str | None = None, tablefmt: str = "simple") -> str:
        """The comparison table (all candidates, or one), in any tabulate format ("github" for markdown)."""
        from tabulate import tabulate

        rows = [r for r in self.rows if candidate_file is None or r.candidate_file == candidate_file]
        pct = f"{round(self.confidence * 100, 4):g}%"
        body = [[r.case_id or r.name, r.metric, _fmt_value(r.baseline_median, r.unit),
                 _fmt_value(r.candidate_median, r.unit), _fmt_pct(r.rel_change),
                 _fmt_ci(r.change_ci_low_rel, r.change_ci_high_rel), r.verdict,
                 f"REGRESSION (> {r.fail_on_pct:g}%)" if r.regression else ""] for r in rows]
        headers = ["benchmark", "metric", "baseline median", "candidate median", "change", f"{pct} CI of change",
                   "verdict", "regression"]
        return tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)

    def render(self) -> str:
        """The human report: warnings, one table per candidate, what was not compared, notes, the outcome."""
        lines: list[str] = [f"WARNING: {w}" for w in self.warnings]
        baseline = self.files[0]
        for cand in self.files[1:]:
            lines.append(f"== {cand} vs baseline {baseline} ==")
            if any(r.candidate_file == cand for r in self.rows):
                lines.append(self.format_table(cand))
            for nc in self.not_compared:
                if nc.candidate_file == cand:
                    lines.append(f"{nc.reason}: {nc.name}")
            lines.append("")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(self.outcome())
        return "\n".join(lines)

    def markdown(self) -> str:
        """A markdown report (a CI job summary or PR comment)."""
        parts = ["## sdbench compare"]
        if self.warnings:
            parts.append("")
            parts.extend(f"> **Warning:** {w}" for w in self.warnings)
        for cand in self.files[1:]:
            parts += ["", f"### `{cand}` vs baseline `{self.files[0]}`", ""]
            if any(r.candidate_file == cand for r in self.rows):
                parts.append(self.format_table(cand, tablefmt="github"))
            nc = [n for n in self.not_compared if n.candidate_file == cand]
            if nc:
                parts.append("")
                parts.extend(f"- {n.reason}: `{n.name}`" for n in nc)
        if self.notes:
            parts.append("")
            parts.extend(f"- note: {n}" for n in self.notes)
        parts += ["", f"**{self.outcome()}**", ""]
        return "\n".join(parts)

    def outcome(self) -> str:
        if not self.fail_on_pct:
            return "result: no --fail-on thresholds given; exit 0"
        spec = format_fail_on(self.fail_on_pct)
        if self.regressions:
            return f"result: {len(self.regressions)} regression(s) beyond --fail-on {spec}; exit 1"
        return f"result: no significant regression beyond --fail-on {spec}; exit 0"


def _fmt_value(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.4g} {unit}"


def _fmt_pct(rel: float | None) -> str:
    return "-" if rel is None else f"{100.0 * rel:+.1f}%"


def _fmt_ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "-"
    return f"[{100.0 * low:+.1f}%, {100.0 * high:+.1f}%]"


def _norm_setting(value: Any) -> Any:
    # 300 and 300.0 W are the same setting.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _identity_mismatches(base: Entry, cand: Entry) -> list[str]:
    """Fields both sides state that differ (GPU name/UUID/simulated, clock and power-limit settings)."""
    out = []
    for key in _IDENTITY_FIELDS:
        if key in base.identity and key in cand.identity:
            b, c = base.identity[key], cand.identity[key]
            if key in ("gpu_name", "gpu_uuid") and (b is None or c is None):
                continue  # not reported is unknown, not different
            if _norm_setting(b) != _norm_setting(c):
                out.append(f"{key} {b!r} (baseline) != {c!r} (candidate)")
    return out


def _software_changes(base: Entry, cand: Entry) -> list[str]:
    return [f"{k} {base.software[k]} -> {cand.software[k]}" for k in _SOFTWARE_FIELDS
            if k in base.software and k in cand.software and base.software[k] != cand.software[k]]


def _pairing_keys(base: ResultsFile, cand: ResultsFile) -> tuple[dict[str, Entry], dict[str, Entry], str]:
    """Entries keyed for pairing: by name within one format; by case_id across formats (names differ there)."""
    if base.format == cand.format:
        return base.entries, cand.entries, "name"
    by_id = [{e.case_id: e for e in f.entries.values() if e.case_id} for f in (base, cand)]
    return by_id[0], by_id[1], "case_id"


def _compare_metric(base: Entry, cand: Entry, metric: str, confidence: float, fail_on_pct: dict[str, float],
                    base_file: str, cand_file: str) -> CompareRow:
    m = METRICS[metric]
    row = CompareRow(base_file, cand_file, cand.name, cand.case_id, metric, m.unit, None, None, None, None, None, None,
                     None, None, verdict="", reason="", compared=False, fail_on_pct=fail_on_pct.get(metric))
    if metric in ENERGY_METRICS:
        statuses = (base.energy_status, cand.energy_status)
        if "unavailable" in statuses:
            side = "baseline" if statuses[0] == "unavailable" else "candidate"
            if statuses == ("unavailable", "unavailable"):
                side = "both sides"
            row.verdict = f"{metric} unavailable"
            row.reason = f"energy_status 'unavailable' on {side}: not compared, never fails the run"
            return row
        if statuses[0] != statuses[1]:
            row.verdict = "not compared (simulated vs measured)"
            row.reason = f"energy is {statuses[0]} in the baseline and {statuses[1]} in the candidate"
            return row
        methods = (base.energy_method, cand.energy_method)
        if None not in methods and methods[0] != methods[1]:
            # How energy was measured is part of what a record measures: a counter's windows and a power
            # timeline's integral are different quantities, never paired as one.
            row.verdict = f"not compared ({methods[0]} vs {methods[1]} energy)"
            row.reason = f"energy measured by {methods[0]} in the baseline and by {methods[1]} in the candidate"
            return row
    try:
        old, new = entry_metric(base, metric), entry_metric(cand, metric)
    except ValueError as exc:
        row.verdict, row.reason = "not compared (invalid samples)", str(exc)
        return row
    if old is None or new is None:
        row.verdict = f"{metric} unavailable"
        row.reason = f"no {m.label} in the {'baseline' if old is None else 'candidate'}"
        return row
    threshold = fail_on_pct.get(metric)
    ch = change_estimate(new, old, confidence, threshold)
    row.baseline_median, row.candidate_median = old.median, new.median
    row.baseline_n, row.candidate_n = old.n, new.n
    # Estimate, interval, verdict and regression all come from ch, so they cannot disagree.
    row.rel_change = ch.estimate_rel
    row.change_ci_low_rel, row.change_ci_high_rel = ch.low_rel, ch.high_rel
    row.ci_method, row.ci_extended = ch.method, ch.extended
    if not ch.noise_known:
        shown = VERDICT_NOISE_UNKNOWN
    elif ch.verdict == "unchanged":
        shown = VERDICT_UNCHANGED
    else:
        # "slower"/"faster" read wrongly for joules and watts: those say higher/lower.
        shown = ch.verdict if metric == "time" else {"slower": "higher", "faster": "lower"}[ch.verdict]
    row.p_value, row.verdict, row.reason, row.compared = ch.p_value, shown, ch.reason, True
    row.source = old.source if old.source == new.source else f"{old.source} / {new.source}"
    row.regression = threshold is not None and ch.regression
    return row


def compare_results(files: Sequence[ResultsFile], fail_on: str | Mapping[str, float] | None = None,
                    allow_cross_gpu: bool = False, metrics: str | Sequence[str] | None = None,
                    confidence: float = 0.95) -> CompareResult:
    """Compare already-loaded results files: each later one against the first. See :func:`compare_files`."""
    if len(files) < 2:
        raise ConfigError("paths", [str(f.path) for f in files], "a baseline and at least one candidate file")
    if not (isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0.0 < confidence < 1.0):
        raise ConfigError("confidence", confidence, "a probability strictly between 0 and 1 (e.g. 0.95)")
    thresholds = _normalise_fail_on(fail_on)
    chosen = parse_metrics(metrics) if metrics is not None else tuple(METRICS)
    # A metric that gates the run is always compared, even when --metric leaves it out.
    chosen = tuple(k for k in METRICS if k in chosen or k in thresholds)
    result = CompareResult([str(f.path) for f in files], chosen, thresholds, float(confidence))
    baseline = files[0]
    for f in files:
        result.notes.extend(f.notes)
        # A file given twice (or read twice) warns once about each torn line.
        result.warnings.extend(w for w in f.warnings if w not in result.warnings)
    pairs: list[tuple[ResultsFile, list[tuple[Entry, Entry]]]] = []
    refusals: list[str] = []
    for cand in files[1:]:
        base_by, cand_by, key = _pairing_keys(baseline, cand)
        if key == "case_id":
            result.notes.append(f"{cand.path.name} and {baseline.path.name} are different formats: paired by case_id")
        common = [k for k in base_by if k in cand_by]
        if not common:
            raise SdbenchError(f"no common benchmarks between {baseline.path} and {cand.path} (paired by {key}; "
                               f"{len(base_by)} in the baseline, {len(cand_by)} in the candidate)")
        mismatches: dict[str, None] = {}
        software: dict[str, None] = {}
        matched: list[tuple[Entry, Entry]] = []
        for k in common:
            b, c = base_by[k], cand_by[k]
            mismatches.update(dict.fromkeys(_identity_mismatches(b, c)))
            software.update(dict.fromkeys(_software_changes(b, c)))
            if b.case_hash and c.case_hash and b.case_hash != c.case_hash:
                result.not_compared.append(NotCompared(str(baseline.path), str(cand.path), c.name,
                                                       f"changed benchmark, not compared (case_hash {b.case_hash} -> {c.case_hash})"))
                continue
            matched.append((b, c))
        for k in base_by:
            if k not in cand_by:
                result.not_compared.append(NotCompared(str(baseline.path), str(cand.path), base_by[k].name,
                                                       "only in the baseline, not compared"))
        for k in cand_by:
            if k not in base_by:
                result.not_compared.append(NotCompared(str(baseline.path), str(cand.path), cand_by[k].name,
                                                       "new benchmark (no baseline), not compared"))
        if not matched:
            raise SdbenchError(f"no comparable benchmarks between {baseline.path} and {cand.path}: all {len(common)} "
                               "shared benchmarks changed what they measure (case_hash differs)")
        if mismatches:
            what = "; ".join(mismatches)
            if allow_cross_gpu:
                result.warnings.append(f"{cand.path} vs {baseline.path} compares different GPUs or settings "
                                       f"(--allow-cross-gpu): {what}")
            else:
                refusals.append(f"{cand.path} vs {baseline.path}: {what}")
        if software:
            result.notes.append(f"{cand.path.name}: software differs from the baseline: {'; '.join(software)}")
        pairs.append((cand, matched))
    if refusals:
        raise SdbenchError("refusing to compare results from different GPUs or clock/power-limit settings ("
                           + " | ".join(refusals) + "); timings are only comparable on one GPU under one setting, "
                           "pass --allow-cross-gpu to compare anyway")
    for cand, matched in pairs:
        for b, c in matched:
            for metric in chosen:
                result.rows.append(_compare_metric(b, c, metric, result.confidence, thresholds, str(baseline.path),
                                                   str(cand.path)))
    unavailable = [r for r in result.rows if r.metric == "energy" and r.verdict == "energy unavailable"]
    if unavailable:
        result.notes.append(f"energy unavailable on a side for {len(unavailable)} comparison(s): not compared; "
                            "energy that could not be measured never fails the run")
    blind = [r for r in result.rows if r.verdict == VERDICT_NOISE_UNKNOWN and r.metric in thresholds]
    if blind:
        result.notes.append(f"{len(blind)} gated comparison(s) have no noise estimate (fewer than 2 rounds on a side): "
                            "they cannot be judged and do not fail the run")
    methods: dict[str, int] = {}
    for r in result.rows:
        if r.compared and r.ci_method:
            methods[r.ci_method] = methods.get(r.ci_method, 0) + 1
    if methods:
        used = ", ".join(f"{k} ({v})" for k, v in methods.items())
        extended = sum(r.ci_extended for r in result.rows)
        result.notes.append(f"change intervals: {used}" + (f"; {extended} widened to contain their estimate" if extended else "")
                            + " (see docs/statistics.md)")
    if any(r.verdict == "not compared (simulated vs measured)" for r in result.rows):
        result.notes.append("simulated and measured energy are never compared with each other")
    if any(r.verdict.endswith(" energy)") and r.verdict.startswith("not compared (") for r in result.rows):
        result.notes.append("energy measured by different methods (counter, timeline, rapl) is never compared")
    return result


def compare_files(paths: Sequence[str | os.PathLike[str]], fail_on: str | Mapping[str, float] | None = None,
                  allow_cross_gpu: bool = False, metrics: str | Sequence[str] | None = None,
                  confidence: float = 0.95) -> CompareResult:
    """Compare results files: ``paths[0]`` is the baseline, every later file a candidate against it.

    Args:
        paths: two or more pytest-benchmark JSON, results JSON Lines or ``--export-metrics`` files.
        fail_on: ``"time:5%,energy:5%"`` or ``{"time": 5.0}`` (percentages): a benchmark that is
            significantly slower (higher) by more than N percent in that metric sets ``exit_code`` 1.
        allow_cross_gpu: compare results from different GPUs / clock or power-limit settings (adds a
            warning) instead of raising :class:`SdbenchError`.
        metrics: which of ``time``, ``energy``, ``power`` to compare (default all); ``fail_on`` metrics
            are always included.
        confidence: level of the confidence intervals and of the significance test.

    Raises :class:`SdbenchError` (or its :class:`ConfigError`) for missing/unreadable files, bad
    arguments, no common benchmarks, or a refused cross-GPU comparison.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise ConfigError("paths", paths, "a list of two or more results files")
    # Validate arguments before touching the files, so a typo is reported as such.
    _normalise_fail_on(fail_on)
    if metrics is not None:
        parse_metrics(metrics)
    if len(paths) < 2:
        raise ConfigError("paths", [str(p) for p in paths], "a baseline and at least one candidate file")
    return compare_results([results_file(read_results(p)) for p in paths], fail_on=fail_on,
                           allow_cross_gpu=allow_cross_gpu, metrics=metrics, confidence=confidence)


def write_json(result: CompareResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result.to_dict()`` as JSON (NaN as null), atomically."""
    return write_json_document(path, result.to_dict(), indent=2)


def write_csv(result: CompareResult, path: str | os.PathLike[str]) -> Path:
    """Write one CSV row per compared metric (the table's rows, with every field)."""
    return write_records_csv([asdict(r) for r in result.rows], path)


def write_markdown(result: CompareResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result.markdown()`` (the report CI summaries show), making its folder if need be."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.markdown(), encoding="utf-8")
    return out
