"""Running a sweep: :func:`run_sweep` plans it, checks permission and every output path before any point, runs the
points through :func:`sdbench.distribute.plan.execute` (idle gap and cooldown, then the clock lock), restores the
GPU's settings and writes sweep.json and the state file, whatever ends the sweep."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdbench.case import Case
from sdbench.distribute.plan import PlanPoint, execute
from sdbench.errors import ConfigError, SdbenchError
from sdbench.gpu.base import GpuNotSupported
from sdbench.gpu.dcgm import ActivityMonitor
from sdbench.measure.clocks import ClockController, current_settings
from sdbench.record.io import ResultsWriteError, ensure_writable, ensure_writable_dir, read_jsonl, write_json
from sdbench.studies.dvfs.measuring import ClockLockHook, _AbortOnRefusal, _SweepAborted, cooldown
from sdbench.studies.dvfs.options import SweepOptions
from sdbench.studies.dvfs.planning import _gpu_of, plan_sweep
from sdbench.studies.dvfs.points import ROLE_DEFAULT
from sdbench.studies.dvfs.state import (
    META_FILE,
    PLAN_FILE,
    RESULTS_FILE,
    SWEEP_VERSION,
    SweepResult,
    _load_for_resume,
    _now,
    _warn,
    _write_outcome,
)
from sdbench.studies.dvfs.summary import default_clock_checks, point_counts

if TYPE_CHECKING:
    from sdbench.session import Bench

__all__ = ["run_sweep"]


def _progress_bar(enabled: bool) -> tuple[Callable[[int, int, PlanPoint], None], Callable[[bool], None]]:
    """An execute() progress callback that drives a tqdm bar with ETA, and its closer.

    ``close(complete)`` fills the bar only for a sweep that completed; an interrupted, aborted or failed one
    keeps the count it reached (never "100 %" for points not measured) and says so."""
    state: dict[str, Any] = {"bar": None}

    def update(n: int, total: int, point: PlanPoint) -> None:
        if not enabled:
            return
        if state["bar"] is None:
            from tqdm import tqdm

            state["bar"] = tqdm(total=total, unit="point", desc="sweep", file=sys.stderr, dynamic_ncols=True)
        bar = state["bar"]
        bar.update(n - bar.n)
        clock = point.case.get("sm_clock_mhz")
        bar.set_postfix_str(f"{point.role} {'sm ' + str(clock) + ' MHz' if clock else 'default clock'}")

    def close(complete: bool) -> None:
        bar = state["bar"]
        if bar is None:
            return
        if complete:
            bar.update(bar.total - bar.n)
        else:
            bar.set_postfix_str(f"stopped: {bar.n} of {bar.total} points")
        bar.close()

    return update, close


def run_sweep(bench: Bench, base_case: Case, output_dir: str | os.PathLike[str], options: SweepOptions | None = None, *,
              resume: bool = False, progress: bool = True, state_file: str | os.PathLike[str] | None = None,
              plan_only: bool = False, argv: Sequence[str] | None = None,
              on_point: Callable[[int, int, PlanPoint], None] | None = None) -> SweepResult:
    """Plan and run a sweep of ``base_case`` on ``bench``'s GPU into ``output_dir`` (see the package docstring).

    ``resume``: continue the sweep saved in ``output_dir``, skipping finished points.
    ``state_file``: after the settings are restored (also after SIGTERM), write the GPU's settings
    there as JSON. ``plan_only``: write plan.json and sweep.json, measure nothing. ``on_point`` is
    called before each point (index, total, point), as execute's progress callback.
    """
    options = options or SweepOptions()
    out = Path(output_dir)
    gpu = _gpu_of(bench)
    controller = ClockController(gpu, clock_command=options.clock_command, read_only=options.read_only)
    plan = plan_sweep(bench, base_case, options, controller)
    if not plan_only:
        # Whether this process may change what the points change is found out now, before any point is measured
        # or anything is written: a refusal ends the sweep here (exit 3) instead of after its first point.
        controller.probe_permission(**{kind: any(p.case.get(f) is not None for p in plan.points)
                                       for kind, f in (("sm", "sm_clock_mhz"), ("mem", "mem_clock_mhz"),
                                                       ("power", "power_limit_w"))})
    # Every output is checked before anything is measured: a bad path is one line now, not lost points later.
    ensure_writable_dir(out, "output_dir")
    if state_file is not None:
        ensure_writable(state_file, "state_file")
    results_path = out / RESULTS_FILE
    repaired: list[str] = []
    if resume and (out / PLAN_FILE).is_file():
        plan, repaired = _load_for_resume(out, plan)
    elif results_path.is_file() and results_path.stat().st_size > 0:
        raise ConfigError("output_dir", str(out), reason="it already holds a sweep's results; pass --resume to continue "
                          "that sweep, or choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / PLAN_FILE)
    order_index = {p.point_id: i for i, p in enumerate(plan.points)}
    to_run = [p for p in plan.points if not options.read_only or p.role == ROLE_DEFAULT]
    info = gpu.info()
    meta: dict[str, Any] = {
        "sweep_version": SWEEP_VERSION,
        "status": "planned" if plan_only else "running",
        "started_utc": _now(),
        "finished_utc": None,
        "argv": list(argv) if argv is not None else None,
        "compute_device": bench.device,
        "device": info.as_dict(),
        "simulated": bool(info.simulated),
        "clock_control": controller.mode,
        "clock_command": options.clock_command,
        "read_only": options.read_only,
        "resumed": bool(resume),
        "plan_hash": plan.plan_hash,
        "points_planned": len(plan.points),
        "points_to_measure": len(to_run),
        "order": plan.meta.get("order"),
        "order_seed": plan.meta.get("order_seed"),
        "grid": plan.meta.get("grid"),
        "profiling_mode": plan.meta.get("profiling_mode"),
        "gpu_type_preset": plan.meta.get("gpu_type_preset"),
        "gpu_type_note": plan.meta.get("gpu_type_note"),
        "repeats": plan.meta.get("repeats"),
        "default_every": plan.meta.get("default_every"),
        "cooldown_c": options.cooldown_c,
        "cooldown_timeout_s": options.cooldown_timeout_s,
        "idle_gap_s": options.idle_gap_s,
        "retries": options.retries,
        "original_settings": current_settings(gpu).as_dict(),
    }
    if repaired:
        meta["torn_lines_repaired"] = repaired
    write_json(out / META_FILE, meta)
    if plan_only:
        return SweepResult(out, plan, [], meta)

    activity = ActivityMonitor(gpu, backend=options.activity)
    meta["activity_source"] = activity.source
    meta["activity_absent_reason"] = activity.absent_reason
    try:
        start_temperature_c: float | None = float(gpu.temperature_c())
    except GpuNotSupported:
        start_temperature_c = None
    meta["start_temperature_c"] = start_temperature_c
    sweep_id = f"{plan.plan_hash}-{meta['started_utc']}"
    first = {"done": False}

    def settle() -> dict[str, Any]:
        fields: dict[str, Any] = {"idle_gap_s": 0.0}
        if first["done"] and options.idle_gap_s > 0:
            gpu.clock.sleep(options.idle_gap_s)  # the device's clock: virtual on the simulated GPU
            fields["idle_gap_s"] = options.idle_gap_s
        first["done"] = True
        if options.cooldown_c is not None and start_temperature_c is not None:
            fields.update(cooldown(gpu, start_temperature_c + options.cooldown_c, options.cooldown_timeout_s))
        return fields

    clock_lock = ClockLockHook(controller, retries=options.retries, activity=activity, before_retry=settle)

    @contextlib.contextmanager
    def point_context(point: PlanPoint, case: Case) -> Iterator[dict[str, Any]]:
        # Settle before the lock: the idle gap and the cooldown run at idle, whatever the last lock was.
        extra = settle()
        extra.update(sweep_order_index=order_index[point.point_id], sweep_id=sweep_id,
                     sweep_read_only=options.read_only, sweep_start_temperature_c=start_temperature_c)
        yield extra

    update_bar, close_bar = _progress_bar(progress)

    def on_progress(n: int, total: int, point: PlanPoint) -> None:
        update_bar(n, total, point)
        if on_point is not None:
            on_point(n, total, point)

    records: list[dict[str, Any]] = []
    status = "interrupted"
    failing = True  # until the sweep completes: then a failure to write sweep.json is the error to raise
    try:
        with controller, bench.hooked(_AbortOnRefusal(), clock_lock):
            records = execute(plan, to_run, results_path, resume=True, bench=bench,
                              point_context=point_context, progress=on_progress, notify=_warn)
        status = "complete"
        failing = False
    except _SweepAborted as exc:
        status = "aborted"
        meta["abort_reason"] = str(exc.cause)
        raise exc.cause from None
    except ResultsWriteError as exc:
        # A full disk: the earlier points are whole on disk; the state and sweep.json still get written below.
        status = "failed"
        meta["failure"] = str(exc)
        raise exc.with_hint("free some space, then run the same command with --resume") from None
    except SdbenchError as exc:
        status = "failed"
        meta["failure"] = str(exc)
        raise
    except BaseException as exc:
        meta["interrupted_by"] = type(exc).__name__ + (f" (exit status {exc.code})" if isinstance(exc, SystemExit) else "")
        raise
    finally:
        close_bar(status == "complete")
        meta["status"] = status
        meta["finished_utc"] = _now()
        meta["restore"] = controller.last_restore
        meta["settings_after"] = current_settings(gpu).as_dict()
        meta["settings_restored"] = not controller.changed
        done = read_jsonl(results_path).rows
        meta["default_clock_checks"] = default_clock_checks(done)
        meta.update(point_counts(done, meta["default_clock_checks"]))
        # Planned against measured, for the report's "N of M points" (points_to_measure is the plan).
        meta["points_complete"] = meta["points_done"] >= meta["points_to_measure"]
        _write_outcome(out / META_FILE, meta, state_file, gpu, controller, status, failing)
    return SweepResult(out, plan, records, meta)
