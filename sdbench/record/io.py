"""Reading and writing results: one reader for every format, one atomic writer, one JSON Lines appender.

Reading (:func:`read_results`): pytest-benchmark JSON (each benchmark's ``extra_info`` is a record), sdbench
results JSON Lines, ``--export-metrics`` documents, and sweep / plan / results folders (``results.jsonl``, else
``results-shard*.jsonl``, else any ``*.jsonl``, with ``sweep.json`` as metadata). Every row is upgraded to the
current schema step by step (:data:`UPGRADES`, as asv upgrades its results files), and a row or document of a
newer schema is refused (:class:`UnknownSchemaVersion`) rather than read as if current. A torn line (a write
cut short by a crash, at the end of a file or, after an older sdbench appended onto it, in the middle) is
skipped and reported with its file and line (:attr:`Results.torn`); :func:`repair_torn_lines` moves it aside
(``<file>.torn-<n>``) for a resume.

Writing: :func:`atomic_write_bytes` (a temporary file beside the target, flushed and fsynced, renamed over it)
for whole files (documents, sweep.json, state files, merged results); :class:`ResultsWriter` appends one record
per line, each line one ``os.write`` of the whole line, fsynced, and cut back to the last whole line if the
write fails part-way (a full disk leaves no torn line: :class:`ResultsWriteError`, "no space left on device
writing FILE: N records kept"). It never appends onto a torn line (:class:`TornResultsFile`).
:func:`ensure_writable` checks an output path before anything is measured.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdbench.errors import EXIT_ENVIRONMENT, SdbenchError
from sdbench.files import (  # re-exported: the results layer's writer and path checks
    atomic_write_bytes,
    atomic_write_text,
    check_output_paths,
    ensure_writable,
    ensure_writable_dir,
    write_all,
)
from sdbench.record.schema import (
    CASE_RECORD,
    EXPORT_DOCUMENT,
    HEADER_KEYS,
    OLDEST_SCHEMA_VERSION,
    SCHEMA_VERSION,
    Record,
)

__all__ = [
    "UPGRADES",
    "Repair",
    "ResultRow",
    "Results",
    "ResultsReadError",
    "ResultsWriteError",
    "ResultsWriter",
    "TornLine",
    "TornResultsFile",
    "UnknownSchemaVersion",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_paths",
    "ensure_writable",
    "ensure_writable_dir",
    "export_metrics",
    "json_safe",
    "JsonlFile",
    "read_jsonl",
    "read_records",
    "read_results",
    "repair_torn_lines",
    "to_json",
    "upgrade_row",
    "upgrade_v1_to_v2",
    "upgrade_v2_to_v3",
    "upgrade_v3_to_v4",
    "write_csv",
    "write_json",
    "write_lines",
]

Row = dict[str, Any]


# --- errors ---------------------------------------------------------------------------------------------------
class ResultsReadError(SdbenchError):
    """A results file that cannot be read (missing, not a results format, no whole record)."""


class UnknownSchemaVersion(SdbenchError):
    """A row or document written by a newer sdbench: refused, never read as if current."""

    def __init__(self, where: str, version: Any) -> None:
        self.where = where
        self.version = version
        super().__init__(f"{where}: results schema version {version} is newer than this sdbench reads (schema "
                         f"versions {OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION}); read it with the sdbench that "
                         "wrote it, or a newer one")


class TornResultsFile(SdbenchError):
    """A results file ends in a torn line: appending would glue the next record onto the fragment."""

    def __init__(self, path: Path, line: int, n_bytes: int) -> None:
        self.path = path
        super().__init__(f"{path} ends in a torn line (line {line}, {n_bytes} bytes: a write cut short, e.g. by a "
                         "crash); run again with resume (sdbench sweep --resume, or a plan/workers run without "
                         "--no-resume) to move it aside, or move the file away")


class ResultsWriteError(SdbenchError):
    """Results could not be written (a full disk, a quota, an I/O error); what was written before is intact."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, path: Path, error: OSError, records_kept: int | None = None, hint: str = "") -> None:
        self.path = path
        self.error = error
        self.records_kept = records_kept
        self.hint = hint
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            what = f"no space left on device writing {path}"
        else:
            what = f"cannot write {path} ({error.strerror or error})"
        kept = "" if records_kept is None else f": {records_kept} record{'s' if records_kept != 1 else ''} kept"
        super().__init__(what + kept + (f"; {hint}" if hint else ""))

    def with_hint(self, hint: str) -> ResultsWriteError:
        """The same error with what to do next (e.g. how to resume)."""
        return ResultsWriteError(self.path, self.error, self.records_kept, hint)


# --- JSON ---------------------------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """JSON-ready: NaN/inf become None (JSON has no NaN), tuples become lists, numpy scalars Python ones."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(record: Mapping[str, Any] | Sequence[Any], **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` (key order kept)."""
    return json.dumps(json_safe(record), sort_keys=False, **kwargs)


def stamp(row: Mapping[str, Any]) -> Row:
    """The row as written: ``schema_version`` and ``record_type`` (``case`` unless it says otherwise) first, then
    its fields. A row without a version is taken as current (rows are built current); one that states an older
    version is upgraded first, so nothing is ever labelled current with old keys."""
    if "schema_version" in row and row["schema_version"] != SCHEMA_VERSION:
        row = upgrade_row(row, "record to write")
    out: Row = {"schema_version": SCHEMA_VERSION, "record_type": row.get("record_type") or CASE_RECORD}
    out.update((k, v) for k, v in row.items() if k not in HEADER_KEYS)
    return out


# --- upgrades -------------------------------------------------------------------------------------------------
_V1_RENAMES = {
    "memory_memory_unavailable_reason": "memory_unavailable_reason",
    "memory_nvml_memory_unavailable_reason": "memory_nvml_unavailable_reason",
}


def upgrade_v1_to_v2(row: Mapping[str, Any]) -> Row:
    """Schema 1 -> 2: the header on every row, and the drifted keys under their names.

    ``memory_memory_unavailable_reason`` -> ``memory_unavailable_reason``;
    ``memory_nvml_memory_unavailable_reason`` -> ``memory_nvml_unavailable_reason``;
    ``telemetry_telemetry: X`` -> ``telemetry_available: false, telemetry_reason: "telemetry X"``;
    ``activity_<name>`` (a window mean written without its statistic, as test records did) ->
    ``activity_<name>_mean``. Nothing is dropped; values are unchanged.
    """
    out: Row = {"schema_version": 2, "record_type": row.get("record_type") or CASE_RECORD}
    for key, value in row.items():
        if key in HEADER_KEYS:
            continue
        if key == "telemetry_telemetry":
            out.setdefault("telemetry_available", False)
            out.setdefault("telemetry_reason", f"telemetry {value}")
            continue
        key = _V1_RENAMES.get(key, key)
        if key.startswith("activity_") and key.endswith("_active"):
            key += "_mean"
        out[key] = value
    return out


def upgrade_v2_to_v3(row: Mapping[str, Any]) -> Row:
    """Schema 2 -> 3: the knob ``fp8_torchao`` (fp8 through torchao) was added. A row that records its knobs
    (``knob_fp8_unet``) gets ``knob_fp8_torchao: false``, the only implementation there was, placed after the
    other fp8 knobs; nothing else changes."""
    out: Row = {}
    for key, value in row.items():
        out[key] = value
        if key == "knob_fp8_rowwise" and "knob_fp8_torchao" not in row:
            out["knob_fp8_torchao"] = False
    if "knob_fp8_unet" in row and "knob_fp8_torchao" not in out:
        out["knob_fp8_torchao"] = False
    out["schema_version"] = 3
    return out


def upgrade_v3_to_v4(row: Mapping[str, Any]) -> Row:
    """Schema 3 -> 4: the knob ``freezing`` (inductor freezing of compiled modules) was added. A row that records
    its knobs (``knob_cudnn_benchmark``) gets ``knob_freezing: false``, as every compile before it ran, placed
    where the knob sits (after ``knob_cudnn_benchmark``); nothing else changes."""
    out: Row = {}
    for key, value in row.items():
        out[key] = value
        if key == "knob_cudnn_benchmark" and "knob_freezing" not in row:
            out["knob_freezing"] = False
    out["schema_version"] = 4
    return out


#: ``UPGRADES[v]`` turns a version-``v`` row into a version-``v + 1`` row.
UPGRADES: dict[int, Callable[[Mapping[str, Any]], Row]] = {1: upgrade_v1_to_v2, 2: upgrade_v2_to_v3,
                                                            3: upgrade_v3_to_v4}


def _version(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResultsReadError(f"{where}: schema_version {value!r} is not a whole number")
    if value > SCHEMA_VERSION:
        raise UnknownSchemaVersion(where, value)
    if value < OLDEST_SCHEMA_VERSION:
        raise ResultsReadError(f"{where}: schema_version {value} is older than any sdbench wrote")
    return value


def upgrade_row(row: Mapping[str, Any], where: str = "record") -> Row:
    """``row`` in the current schema, upgraded one version at a time (a row without ``schema_version`` is
    version 1). Raises :class:`UnknownSchemaVersion` for a newer row, naming ``where`` (file and line)."""
    version = _version(row.get("schema_version", 1), where)
    out: Row = dict(row)
    while version < SCHEMA_VERSION:
        out = UPGRADES[version](out)
        version += 1
    return out


# --- JSON Lines: torn lines -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TornLine:
    """A line of a JSON Lines file that holds no whole record: a write cut short (at the end of the file), or a
    fragment an older sdbench appended the next record onto (in the middle)."""

    path: Path
    line: int  # 1-based
    offset: int  # byte offset of the line in the file
    data: bytes  # the line's bytes, without its newline
    at_end: bool  # the last line, with no newline after it

    def describe(self) -> str:
        """One line for the user: file, line, size, and that it was skipped."""
        where = "the last line, cut short" if self.at_end else "not a whole JSON record"
        return (f"{self.path}: line {self.line}: torn line ({len(self.data)} bytes, {where}: a write cut short, "
                "e.g. by a crash); skipped")


@dataclass(frozen=True)
class _Scan:
    rows: list[tuple[int, Row]]  # (1-based line, the row as written)
    torn: list[TornLine]
    good_spans: list[tuple[int, int]]  # byte ranges of whole lines (without their newlines)
    needs_newline: bool  # the last line is whole but has no newline after it


def _scan(path: Path, data: bytes) -> _Scan:
    rows: list[tuple[int, Row]] = []
    torn: list[TornLine] = []
    spans: list[tuple[int, int]] = []
    needs_newline = False
    offset = 0
    parts = data.split(b"\n")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        start, offset = offset, offset + len(part) + 1
        if not part.strip():
            continue
        try:
            value = json.loads(part.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if isinstance(value, dict):
            rows.append((i + 1, value))
            spans.append((start, start + len(part)))
            needs_newline = last
        else:
            torn.append(TornLine(path, i + 1, start, part, at_end=last))
    return _Scan(rows, torn, spans, needs_newline)


@dataclass
class JsonlFile:
    """The whole rows of a JSON Lines file (current schema) and its torn lines; a missing file is empty."""

    path: Path
    rows: list[Row] = field(default_factory=list)
    torn: list[TornLine] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [t.describe() for t in self.torn]


def read_jsonl(path: str | os.PathLike[str]) -> JsonlFile:
    """Every whole row of a JSON Lines results file, upgraded to the current schema, and its torn lines (skipped).

    A missing or empty file holds no rows. Raises :class:`UnknownSchemaVersion` for a row of a newer schema."""
    p = Path(path)
    if not p.exists():
        return JsonlFile(p)
    scan = _scan(p, _read_bytes(p))
    return JsonlFile(p, [upgrade_row(r, f"{p}: line {n}") for n, r in scan.rows], list(scan.torn))


@dataclass
class Repair:
    """What :func:`repair_torn_lines` did to one file."""

    path: Path
    torn: list[TornLine] = field(default_factory=list)
    moved_to: Path | None = None
    newline_added: bool = False

    @property
    def repaired(self) -> bool:
        return bool(self.torn) or self.newline_added

    def lines(self) -> list[str]:
        """What to tell the user, one line per torn line."""
        return [f"{t.path}: line {t.line}: torn line ({len(t.data)} bytes) moved to {self.moved_to}; the point it "
                "held will be measured again" for t in self.torn]


def _free_torn_path(path: Path) -> Path:
    n = 1
    while True:
        candidate = path.with_name(f"{path.name}.torn-{n}")
        if not candidate.exists():
            return candidate
        n += 1


def repair_torn_lines(path: str | os.PathLike[str]) -> Repair:
    """Make ``path`` hold whole lines only, keeping every byte: torn lines are moved to ``<file>.torn-<n>`` (the
    first free n) and the file is cut back to its last whole line (a torn end) or rewritten atomically without
    them (a torn line in the middle). A missing file needs no repair. Call only while nothing appends to it."""
    p = Path(path)
    if not p.is_file():
        return Repair(p)
    data = _read_bytes(p)
    scan = _scan(p, data)
    report = Repair(p, list(scan.torn))
    if scan.torn:
        report.moved_to = _free_torn_path(p)
        # The torn bytes exactly as they were in the file (a line in the middle with its newline).
        atomic_write_bytes(report.moved_to, b"".join(t.data + (b"" if t.at_end else b"\n") for t in scan.torn))
        if all(t.offset >= (scan.good_spans[-1][1] if scan.good_spans else 0) for t in scan.torn):
            # Only the end is torn: cut back to the newline of the last whole line.
            keep = scan.good_spans[-1][1] + 1 if scan.good_spans else 0
            with open(p, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            atomic_write_bytes(p, b"".join(data[a:b] + b"\n" for a, b in scan.good_spans))
    elif scan.needs_newline:
        # A whole last record without its newline: the next append would be glued onto it.
        with open(p, "ab") as fh:
            fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        report.newline_added = True
    return report


# --- the reader -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResultRow:
    """One record as read: the flat row in the current schema, where it came from, and for pytest-benchmark JSON
    the benchmark's name, ``stats`` and ``params`` and the session's ``machine_info.sdbench``."""

    row: Row
    file: Path
    where: str  # "line 3", "records[2]", "benchmarks[1]"
    name: str | None = None
    stats: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None
    machine: Mapping[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> Record:
        """The typed view of the row."""
        return Record.from_row(self.row)

    @property
    def record_type(self) -> str:
        return str(self.row.get("record_type") or CASE_RECORD)


@dataclass
class Results:
    """Everything read from one input: its rows (current schema), metadata, the files read, torn lines, notes."""

    path: Path
    format: str  # pytest-benchmark | jsonl | export | json | folder
    rows: list[ResultRow]
    meta: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    torn: list[TornLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What the user must hear about the input: one line per torn line (file and line)."""
        return [t.describe() for t in self.torn]

    def records(self, record_type: str | None = CASE_RECORD) -> list[Row]:
        """The flat rows of ``record_type`` (None: every row)."""
        return [r.row for r in self.rows if record_type is None or r.record_type == record_type]


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ResultsReadError(f"results file not found: {path}")
    if not path.is_file():
        raise ResultsReadError(f"not a results file: {path} (a directory or special file)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ResultsReadError(f"cannot read results file {path}: {exc}") from exc


def _jsonl_rows(path: Path, data: bytes, whole_exc: Exception | None = None) -> Results:
    scan = _scan(path, data)
    if not scan.rows:
        if whole_exc is not None:
            raise ResultsReadError(f"{path} is neither JSON nor JSON Lines: {whole_exc}")
        first = scan.torn[0].line if scan.torn else 1
        raise ResultsReadError(f"{path}: no whole record ({len(scan.torn)} line(s) that are not JSON records, the "
                               f"first at line {first})")
    rows = [ResultRow(upgrade_row(r, f"{path}: line {n}"), path, f"line {n}") for n, r in scan.rows]
    return Results(path, "jsonl", rows, files=[path], torn=list(scan.torn))


def _rows_of(path: Path, items: Sequence[Any], where: str) -> list[ResultRow]:
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ResultsReadError(f"{path}: {where}[{i}] is not a JSON object")
        out.append(ResultRow(upgrade_row(item, f"{path}: {where}[{i}]"), path, f"{where}[{i}]"))
    return out


def _pytest_benchmark(path: Path, doc: Mapping[str, Any]) -> Results:
    machine = doc.get("machine_info") if isinstance(doc.get("machine_info"), Mapping) else {}
    sd = machine.get("sdbench") if isinstance(machine.get("sdbench"), Mapping) else {}
    rows = []
    for i, bench in enumerate(doc["benchmarks"]):
        if not isinstance(bench, Mapping):
            raise ResultsReadError(f"{path}: benchmarks[{i}] is not an object")
        name = bench.get("fullname") or bench.get("name")
        if not isinstance(name, str):
            raise ResultsReadError(f"{path}: benchmarks[{i}] has no name/fullname")
        extra = bench.get("extra_info") if isinstance(bench.get("extra_info"), Mapping) else {}
        # A benchmark that is not sdbench's has no record: its extra_info stays as it is.
        row = upgrade_row(extra, f"{path}: benchmarks[{i}].extra_info") if extra else {}
        stats = bench.get("stats") if isinstance(bench.get("stats"), Mapping) else None
        params = bench.get("params") if isinstance(bench.get("params"), Mapping) else None
        rows.append(ResultRow(row, path, f"benchmarks[{i}]", name, stats, params, dict(sd)))
    return Results(path, "pytest-benchmark", rows, meta={"machine_info": dict(machine)}, files=[path])


def _document(path: Path, doc: Any, whole_exc: Exception | None) -> Results:
    if isinstance(doc, Mapping) and isinstance(doc.get("benchmarks"), list):
        return _pytest_benchmark(path, doc)
    if isinstance(doc, Mapping) and isinstance(doc.get("records"), list):
        _version(doc.get("schema_version", 1), str(path))
        meta = {k: v for k, v in doc.items() if k != "records"}
        return Results(path, "export", _rows_of(path, doc["records"], "records"), meta=meta, files=[path])
    if isinstance(doc, list):
        return Results(path, "json", _rows_of(path, doc, "records"), files=[path])
    if isinstance(doc, Mapping) and "case_id" in doc:
        # A JSON Lines file holding a single record.
        return Results(path, "jsonl", [ResultRow(upgrade_row(doc, f"{path}: line 1"), path, "line 1")], files=[path])
    raise ResultsReadError(f"{path}: not a results file sdbench knows (expected pytest-benchmark JSON with "
                           "'benchmarks', an --export-metrics document with 'records', or results JSON Lines)")


def _read_file(path: Path) -> Results:
    data = _read_bytes(path)
    if not data.strip():
        raise ResultsReadError(f"no records in {path}: the results file is empty")
    if path.suffix != ".jsonl":
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _jsonl_rows(path, data, exc)
        return _document(path, doc, None)
    return _jsonl_rows(path, data)


def _folder_meta(folder: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    meta_path = folder / "sweep.json"
    if meta_path.is_file():
        try:
            loaded = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResultsReadError(f"{meta_path} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ResultsReadError(f"{meta_path} must hold a JSON object")
        meta = loaded
    plan_path = folder / "plan.json"
    if "points_planned" not in meta and plan_path.is_file():
        # A sweep killed before writing sweep.json: its plan still says how many points were planned.
        try:
            plan_doc = json.loads(plan_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            plan_doc = None
        if isinstance(plan_doc, dict) and isinstance(plan_doc.get("points"), list):
            meta = {**meta, "points_planned": len(plan_doc["points"])}
    return meta


def folder_results_files(folder: Path) -> list[Path]:
    """The results files of a sweep, plan or results folder: ``results.jsonl``, else the plan shards
    ``results-shard*.jsonl``, else every ``*.jsonl``."""
    if (folder / "results.jsonl").is_file():
        return [folder / "results.jsonl"]
    return sorted(folder.glob("results-shard*.jsonl")) or sorted(folder.glob("*.jsonl"))


def read_results(path: str | os.PathLike[str]) -> Results:
    """Read one results input of any format (see the module docstring), every row in the current schema.

    Raises :class:`ResultsReadError` for a missing or unreadable input or one holding no record, and
    :class:`UnknownSchemaVersion` for rows or documents of a newer schema. Torn lines are skipped and listed in
    :attr:`Results.torn` (and :attr:`Results.warnings`); the caller shows them.
    """
    p = Path(path)
    if not p.exists():
        raise ResultsReadError(f"results file not found: {p} (give a results file or a sweep/plan folder)")
    if not p.is_dir():
        return _read_file(p)
    meta = _folder_meta(p)
    files = folder_results_files(p)
    if not files:
        raise ResultsReadError(f"no results in {p}: expected results.jsonl (a sweep directory), "
                               "results-shard*.jsonl (plan shards) or another .jsonl results file")
    out = Results(p, "folder", [], meta=meta, files=files)
    for f in files:
        # One shard may hold nothing yet, or only the line a crash tore: the folder's other files still count.
        scan = _scan(f, _read_bytes(f))
        out.rows.extend(ResultRow(upgrade_row(r, f"{f}: line {n}"), f, f"line {n}") for n, r in scan.rows)
        out.torn.extend(scan.torn)
    if not out.rows:
        raise ResultsReadError(f"no records in {', '.join(str(f) for f in files)}")
    return out


def read_records(path: str | os.PathLike[str]) -> list[Row]:
    """Every row of one results input in the current schema, torn lines skipped: a JSON Lines file (an empty one
    holds none), or any other input :func:`read_results` reads."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".json":
        return read_results(p).records(None)
    if not p.exists():
        raise ResultsReadError(f"results file not found: {p}")
    return read_jsonl(p).rows


# --- writing --------------------------------------------------------------------------------------------------
def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any] | Sequence[Any], indent: int | None = 1) -> Path:
    """Write a JSON document atomically (NaN as null); a failure is a :class:`ResultsWriteError`."""
    p = Path(path)
    try:
        return atomic_write_text(p, to_json(doc, indent=indent) + "\n")
    except OSError as exc:
        raise ResultsWriteError(p, exc) from exc


def write_lines(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> Path:
    """Write a whole JSON Lines results file atomically (e.g. merged shards); a failure is a
    :class:`ResultsWriteError` and leaves the old file intact."""
    p = Path(path)
    try:
        return atomic_write_text(p, "".join(to_json(stamp(r)) + "\n" for r in records))
    except OSError as exc:
        raise ResultsWriteError(p, exc) from exc


def export_metrics(records: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], meta: Mapping[str, Any]) -> Path:
    """Write the ``--export-metrics`` document: ``{schema_version, record_type: "export-metrics", command, argv,
    created, environment, ..., records}`` (README), every record stamped with its schema version."""
    doc = {"schema_version": SCHEMA_VERSION, "record_type": EXPORT_DOCUMENT,
           **{k: v for k, v in meta.items() if k not in HEADER_KEYS}, "records": [stamp(r) for r in records]}
    return write_json(path, doc, indent=2)


def iter_scalar_columns(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Columns holding scalars in any record, in first-seen order (nested lists stay in JSON only)."""
    cols: dict[str, None] = {}
    for rec in records:
        for k, v in rec.items():
            if v is None or isinstance(v, (str, int, float, bool)):
                cols.setdefault(k, None)
    return list(cols)


def write_csv(records: list[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the scalar columns of ``records`` as CSV, atomically (lists such as per-step times stay in JSON)."""
    cols = iter_scalar_columns(records)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: json_safe(rec.get(k)) for k in cols})
    return atomic_write_text(path, buf.getvalue())


def _whole_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


class ResultsWriter:
    """Append records to a JSON Lines file: one record per line, all or nothing, on disk before ``append`` returns.

    Each line is stamped with the schema version (:func:`stamp`) and written with one ``os.write`` of the whole
    line (looping only on a short write), then fsynced. If the write fails part-way, the file is cut back to where
    the line began, so it never holds a torn line, and :class:`ResultsWriteError` says how many records it keeps.
    A file that already ends in a torn line is refused (:class:`TornResultsFile`): appending would glue the record
    onto the fragment (repair it first: :func:`repair_torn_lines`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        """Raise :class:`TornResultsFile` if the file ends in a torn line (call before measuring into it)."""
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                if not size:
                    return
                fh.seek(size - 1)
                if fh.read(1) == b"\n":
                    return
        except FileNotFoundError:
            return
        lines = self.path.read_bytes().split(b"\n")
        raise TornResultsFile(self.path, len(lines), len(lines[-1]))

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line."""
        data = (to_json(stamp(record)) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ResultsWriteError(self.path, exc, _whole_lines(self.path)) from exc
        try:
            start = os.fstat(fd).st_size
            if start and os.pread(fd, 1, start - 1) != b"\n":
                lines = self.path.read_bytes().split(b"\n")
                raise TornResultsFile(self.path, len(lines), len(lines[-1]))
            try:
                write_all(fd, data)
                os.fsync(fd)
            except OSError as exc:
                # Cut back to the last whole line: a crash later must not find half a record.
                try:
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                except OSError:
                    pass  # the cut itself failed: the reader still skips a torn last line
                raise ResultsWriteError(self.path, exc, _whole_lines(self.path)) from exc
        finally:
            os.close(fd)

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.append(record)


