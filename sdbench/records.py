"""Records: one flat row per case (and clock point), and the sinks that keep them.

A record is a plain dict of JSON-ready values: the case's features plus metrics whose names carry
their unit. The same row feeds JSON/CSV export, pytest-benchmark's extra_info, reports and compares.
Results files are JSON Lines, appended and flushed after every case, so a crash loses at most the
case in flight.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1

Record = dict[str, Any]


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



def to_json(record: Mapping[str, Any], **kwargs: Any) -> str:
    return json.dumps(json_safe(record), sort_keys=False, **kwargs)


class ResultsWriter:
    """Append records to a JSON Lines file, flushed and synced after each one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: Mapping[str, Any]) -> None:
        line = to_json(record) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """Read a JSON Lines results file; a torn last line (a crash mid-write) is skipped."""
    out: list[Record] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return out


def iter_scalar_columns(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Columns holding scalars in any record, in first-seen order (nested lists stay in JSON only)."""
    cols: dict[str, None] = {}
    for rec in records:
        for k, v in rec.items():
            if v is None or isinstance(v, (str, int, float, bool)):
                cols.setdefault(k, None)
    return list(cols)


def write_csv(records: list[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the scalar columns of `records` as CSV (lists such as per-step times stay in the JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = iter_scalar_columns(records)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: json_safe(rec.get(k)) for k in cols})
    return path


def export_metrics(records: list[Mapping[str, Any]], path: str | os.PathLike[str], meta: Mapping[str, Any]) -> Path:
    """Write the `--export-metrics` document (schema in README: {schema_version, sdbench, environment, records})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema_version": SCHEMA_VERSION, **meta, "records": list(records)}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_json(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def flatten(prefix: str, values: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for k, v in values.items():
        yield (f"{prefix}_{k}" if prefix else k), v


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` all or nothing: a temporary file beside it, flushed, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def ensure_writable(path: str | os.PathLike[str], field: str = "output") -> Path:
    """Check before measuring that ``path`` can be written (its folder made if missing), so a bad output path is
    one clear error up front instead of lost results at the end. Raises ConfigError naming ``field``."""
    from sdbench.errors import ConfigError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.{os.getpid()}.probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(field, str(path), reason=f"cannot be written: {exc.strerror or exc}") from None
    if path.is_dir():
        raise ConfigError(field, str(path), reason="is a folder; give a file name")
    return path
