"""What ``sdbench compare`` compares: each benchmark (or results record) of a results file as an
:class:`Entry` with its GPU identity and software, keyed for pairing, the numbers of one metric of an
entry, and how two entries of the same benchmark are matched (pairing keys, identity mismatches,
software changes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbench.errors import SdbenchError
from sdbench.output.compare.metrics import METRICS
from sdbench.record.io import ResultRow, Results
from sdbench.record.schema import CASE_RECORD, MetricStats, energy_method


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


def _norm_setting(value: Any) -> Any:
    # 300 and 300.0 W are the same setting.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def identity_mismatches(base: Entry, cand: Entry) -> list[str]:
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


def software_changes(base: Entry, cand: Entry) -> list[str]:
    """``field old -> new`` for each software version both sides state that differs."""
    return [f"{k} {base.software[k]} -> {cand.software[k]}" for k in _SOFTWARE_FIELDS
            if k in base.software and k in cand.software and base.software[k] != cand.software[k]]


def pairing_keys(base: ResultsFile, cand: ResultsFile) -> tuple[dict[str, Entry], dict[str, Entry], str]:
    """Entries keyed for pairing: by name within one format; by case_id across formats (names differ there)."""
    if base.format == cand.format:
        return base.entries, cand.entries, "name"
    by_id = [{e.case_id: e for e in f.entries.values() if e.case_id} for f in (base, cand)]
    return by_id[0], by_id[1], "case_id"
