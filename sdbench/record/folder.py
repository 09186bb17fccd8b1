"""Where a run's results go: ``sdbench-results/<YYYYmmdd-HHMMSS>-<suites>/`` under the current directory, holding
the records (JSON Lines), pytest-benchmark's JSON and a markdown summary."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from sdbench import settings

RESULTS_ROOT = "sdbench-results"
RECORDS_NAME = "records.jsonl"
BENCHMARK_JSON_NAME = "benchmark.json"
SUMMARY_NAME = "summary.md"


def results_label(suites: list[str] | None) -> str:
    """The suites part of a results folder's name: 'speed', 'speed+dvfs', 'all', '4-suites' ('sdbench' for none)."""
    if not suites:
        return "sdbench"
    if set(suites) >= set(settings.SUITES):
        return "all"
    if len(suites) <= 3:
        return "+".join(suites)
    return f"{len(suites)}-suites"


def default_results_dir(suites: list[str] | None, when: _dt.datetime | None = None) -> Path:
    """sdbench-results/<YYYYmmdd-HHMMSS>-<suites>, relative to the current directory, not taken yet."""
    stamp = (when or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(RESULTS_ROOT) / f"{stamp}-{results_label(suites)}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def shown_path(path: str | os.PathLike[str]) -> str:
    """`path` relative to the current directory when it lies under it (as a user would type it)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) if p.is_absolute() else str(p)
    except ValueError:
        return str(p)
