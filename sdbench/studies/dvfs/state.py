"""A sweep's output folder on disk: the file names (``plan.json``, ``results.jsonl``, ``sweep.json``), the resume
check against a saved plan (with the repair of a torn results line), the GPU state file and sweep.json written
at the end, and :class:`SweepResult`, what a sweep hands back."""

from __future__ import annotations

import datetime as _dt
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbench.distribute.plan import Plan
from sdbench.errors import ConfigError
from sdbench.gpu.base import GpuDevice
from sdbench.measure.clocks import ClockController, current_settings
from sdbench.record.io import ResultsWriteError, read_jsonl, repair_torn_lines, write_json

__all__ = ["META_FILE", "PLAN_FILE", "RESULTS_FILE", "SWEEP_VERSION", "SweepResult", "write_state_file"]

SWEEP_VERSION = 1
PLAN_FILE, RESULTS_FILE, META_FILE = "plan.json", "results.jsonl", "sweep.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _warn(line: str) -> None:
    print(f"sdbench: warning: {line}", file=sys.stderr, flush=True)


@dataclass
class SweepResult:
    """What a sweep produced: the output folder, its plan, the records of this run and the metadata."""

    output_dir: Path
    plan: Plan
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    results_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.results_path = self.output_dir / RESULTS_FILE

    def all_records(self) -> list[dict[str, Any]]:
        """Every record in ``results.jsonl`` (earlier runs of a resumed sweep included)."""
        return read_jsonl(self.results_path).rows


def _load_for_resume(out_dir: Path, fresh: Plan, notify: Callable[[str], None] = _warn) -> tuple[Plan, list[str]]:
    """The saved plan, if it asks for what ``fresh`` asks for (a resume must not mix sweeps), and what was
    repaired: a torn line in results.jsonl (a crash mid-write) is moved to ``results.jsonl.torn-<n>`` and the
    file cut back to its whole lines, so nothing is appended onto the fragment and its point is measured again."""
    saved = Plan.load(out_dir / PLAN_FILE)
    if saved.meta.get("request_hash") != fresh.meta.get("request_hash"):
        raise ConfigError("resume", str(out_dir), reason="this folder holds a different sweep (other case, grid, order, "
                          "repeats or mode); resume it with the same options or use a new --output-dir")
    repaired = repair_torn_lines(out_dir / RESULTS_FILE).lines()
    for line in repaired:
        notify(line)
    return saved, repaired


def _write_outcome(meta_path: Path, meta: dict[str, Any], state_file: str | os.PathLike[str] | None, gpu: GpuDevice,
                   controller: ClockController, status: str, failing: bool) -> None:
    """The state file first (what the GPU was left at matters most), then sweep.json. While another error is on
    its way out (a full disk), a file that cannot be written is a warning, so that error is the one shown."""
    writes: list[Callable[[], None]] = []
    if state_file is not None:
        writes.append(lambda: write_state_file(state_file, gpu, controller, status))
    writes.append(lambda: write_json(meta_path, meta))
    for write in writes:
        try:
            write()
        except ResultsWriteError as exc:
            if not failing:
                raise
            _warn(str(exc))


def write_state_file(path: str | os.PathLike[str], gpu: GpuDevice, controller: ClockController, status: str) -> None:
    """The GPU's settings after the restore, as JSON (how a test, or a site's epilogue, checks them)."""
    restore = controller.last_restore or {}
    doc = {
        "status": status,
        "restored_by": restore.get("reason"),
        "settings": current_settings(gpu).as_dict(),
        "original_settings": controller.original.as_dict() if controller.original else None,
        "settings_before_restore": restore.get("before"),
        "all_restored": not controller.changed,
        "simulated": bool(getattr(gpu, "simulated", False)),
        "pid": os.getpid(),
        "written_utc": _now(),
    }
    write_json(Path(path), doc)
