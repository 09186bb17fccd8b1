"""DVFS and power-limit sweeps: `sdbench sweep`, and the library behind it.

A sweep measures one case at a grid of GPU settings (SM clock, memory clock, power limit) and
writes clean records for the analysis (``sdbench.analysis.dvfs``) and reports (``sdbench.output.report``):

1. The grid comes from the device (``nvmlDeviceGetSupportedGraphicsClocks`` and the memory and
   power-limit constraints), picked by a spec: ``every:N``, ``range:MIN-MAX[:N]``, ``list:A,B``,
   ``count:N`` or ``all``. Values are validated against the device's own list; nothing is
   hard-coded. ``--gpu-type`` and ``--profiling-mode`` are conveniences that choose a spec.
2. The plan (``plan.json``, a :class:`sdbench.distribute.plan.Plan`) is written first: points in randomised
   (seeded, recorded), interleaved or descending order, in blocks of one pass per repeat, with the
   default clock (``role: default-clock``: nothing locked) measured at the start, every
   ``default_every`` points, and at the end, so drift over the sweep (heat, other tenants) shows.
3. Execution (:func:`sdbench.distribute.plan.execute`) appends one record per finished point to
   ``results.jsonl``; ``--resume`` skips points already there. Before each point: an idle gap and a
   cooldown until the GPU is within ``cooldown_c`` of its starting idle temperature. Each point's
   settings are locked by a :class:`~sdbench.measure.clocks.ClockController`, the point is measured by
   the one Runner, and the window telemetry verifies the lock. A drifted or throttled point is
   measured once more and, if still wrong, flagged (``clock_verified``), never silently kept.
4. The original GPU settings are restored at the end, on an exception, and on SIGINT/SIGTERM.

Output directory: ``plan.json``, ``results.jsonl``, ``sweep.json`` (device, grid, order, seed,
timestamps, status, the restore, the default-clock drift check, and planned against measured points:
``points_planned``, ``points_to_measure``, ``points_done``, ``points_failed``, ``points_complete``,
``points_flagged`` = ``points_clock_flagged`` + ``points_drift_flagged``, each point once).

Read-only mode (machines whose clocks must not change): query the grid, write the plan, and
measure only the default-clock points, with telemetry (``clock_verified: read-only``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import itertools
import json
import logging
import os
import random
import re
import secrets
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdbench import settings
from sdbench.case import Case
from sdbench.distribute.plan import Plan, PlanPoint, execute
from sdbench.errors import ConfigError, SdbenchError
from sdbench.gpu.base import GpuDevice, GpuNoPermission, GpuNotSupported
from sdbench.gpu.clock import WALL_CLOCK
from sdbench.gpu.dcgm import ActivityMonitor
from sdbench.measure.clocks import (
    ClockController,
    ClockVerification,
    ReadOnlyClockError,
    current_settings,
    validate_clock_mhz,
)
from sdbench.record.io import (
    ResultsWriteError,
    ensure_writable,
    ensure_writable_dir,
    read_jsonl,
    repair_torn_lines,
    write_json,
)
from sdbench.record.schema import metric_stats

if TYPE_CHECKING:
    from sdbench.session import Bench, Measured, MeasureFn, Progress

__all__ = [
    "CLOCK_SPEC_HELP",
    "GPU_TYPE_PRESETS",
    "ORDERS",
    "PROFILING_MODES",
    "ClockLockHook",
    "GpuTypePreset",
    "SweepOptions",
    "SweepResult",
    "SweepSetting",
    "cooldown",
    "default_clock_checks",
    "order_settings",
    "parse_clock_spec",
    "plan_sweep",
    "point_counts",
    "resolve_clock_spec",
    "resolve_mem_clock_spec",
    "resolve_power_limit_spec",
    "run_sweep",
    "summary_lines",
    "sweep_points_from_grid",
]

log = logging.getLogger(__name__)

SWEEP_VERSION = 1
ORDERS: tuple[str, ...] = ("random", "interleaved", "descending")
PROFILING_MODES: tuple[str, ...] = ("baseline", "dvfs", "custom")
ROLE_POINT = "point"
ROLE_DEFAULT = "default-clock"
PLAN_FILE, RESULTS_FILE, META_FILE = "plan.json", "results.jsonl", "sweep.json"
#: Verification outcomes that get a second measurement.
RETRY_STATUSES = frozenset({"drift", "throttled"})

CLOCK_SPEC_HELP = ("all | every:N (every Nth supported clock from the top) | range:MIN-MAX[:N] (supported clocks "
                   "in [MIN, MAX], every Nth) | count:N (N clocks spread evenly over the grid) | list:A,B,... "
                   "(each a supported clock)")
POWER_SPEC_HELP = ("list:W1,W2,... | range:MIN-MAX:STEP (watts) | count:N (N limits spread evenly over the device's "
                   "min..max)")

# ASCII digits only: Python's \d also matches other scripts' digits, which int() would accept.
_SPEC_RE = {
    "all": re.compile(r"all"),
    "every": re.compile(r"every:([0-9]{1,4})"),
    "count": re.compile(r"count:([0-9]{1,4})"),
    "range": re.compile(r"range:([0-9]{1,5})-([0-9]{1,5})(?::([0-9]{1,4}))?"),
    "list": re.compile(r"list:([0-9]{1,5}(?:,[0-9]{1,5})*)"),
}


# ---- grid specs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClockSpec:
    """A parsed grid spec (syntax only; :func:`resolve_clock_spec` checks it against a device)."""

    kind: str  # all | every | count | range | list
    n: int | None = None
    low: int | None = None
    high: int | None = None
    values: tuple[int, ...] = ()


def parse_clock_spec(text: Any, field_name: str = "clocks") -> ClockSpec:
    """Parse ``all``, ``every:N``, ``count:N``, ``range:MIN-MAX[:N]`` or ``list:A,B,...``.

    Only digits, commas and the fixed words pass, so nothing but numbers ever reaches a clock call.
    """
    if not isinstance(text, str):
        raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP)
    spec = text.strip()
    for kind, pattern in _SPEC_RE.items():
        m = pattern.fullmatch(spec)
        if m is None:
            continue
        if kind == "all":
            return ClockSpec("all")
        if kind in ("every", "count"):
            n = int(m.group(1))
            if n < 1:
                raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP, reason=f"{kind} needs N >= 1")
            return ClockSpec(kind, n=n)
        if kind == "range":
            low, high = int(m.group(1)), int(m.group(2))
            n = int(m.group(3)) if m.group(3) else 1
            if low > high:
                raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP, reason=f"MIN {low} exceeds MAX {high}")
            if n < 1:
                raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP, reason="the step N must be >= 1")
            return ClockSpec("range", n=n, low=low, high=high)
        values = tuple(int(v) for v in m.group(1).split(","))
        return ClockSpec("list", values=values)
    raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP)


def _spread(values: Sequence[int], n: int) -> list[int]:
    """``n`` entries of ``values`` spread evenly, first and last included."""
    if n >= len(values):
        return list(values)
    if n == 1:
        return [values[0]]
    idx = sorted({round(i * (len(values) - 1) / (n - 1)) for i in range(n)})
    return [values[i] for i in idx]


def resolve_clock_spec(text: Any, grid: Sequence[int], field_name: str = "clocks") -> list[int]:
    """The supported clocks (descending) that a spec picks from the device's ``grid``.

    ``list:`` values must each be on the grid (an error names the nearest supported clocks);
    ``range:`` takes the grid clocks inside it (an empty range is an error that shows the grid).
    """
    spec = parse_clock_spec(text, field_name)
    clocks = sorted({int(c) for c in grid}, reverse=True)
    if not clocks:
        raise ConfigError(field_name, text, reason="the device lists no supported clocks")
    if spec.kind == "all":
        return clocks
    if spec.kind == "every":
        assert spec.n is not None
        return clocks[:: spec.n]
    if spec.kind == "count":
        assert spec.n is not None
        return _spread(clocks, spec.n)
    if spec.kind == "range":
        assert spec.low is not None and spec.high is not None and spec.n is not None
        inside = [c for c in clocks if spec.low <= c <= spec.high]
        if not inside:
            raise ConfigError(field_name, text, allowed=f"a range overlapping the device's grid, {clocks[-1]}..{clocks[0]} MHz",
                              reason="no supported clock in this range")
        return inside[:: spec.n]
    out = [validate_clock_mhz(field_name, v, clocks) for v in spec.values]
    return sorted(set(out), reverse=True)


def resolve_mem_clock_spec(text: str | None, mem_grid: Sequence[int]) -> list[int | None]:
    """Memory clocks to sweep: ``None`` (nothing locked) when no spec, else the spec on the memory grid."""
    if text is None:
        return [None]
    return list(resolve_clock_spec(text, mem_grid, "mem_clocks"))


def resolve_power_limit_spec(text: str | None, min_w: float, max_w: float) -> list[int | None]:
    """Power limits (whole watts, descending) from ``list:``, ``range:MIN-MAX:STEP`` or ``count:N``.

    Each must lie in the device's ``[min_w, max_w]``; ``None`` spec means "leave the limit alone".
    """
    if text is None:
        return [None]
    spec = text.strip() if isinstance(text, str) else text
    allowed = f"{POWER_SPEC_HELP}; this device accepts {min_w:g}..{max_w:g} W"
    m_list = _SPEC_RE["list"].fullmatch(spec) if isinstance(spec, str) else None
    m_range = _SPEC_RE["range"].fullmatch(spec) if isinstance(spec, str) else None
    m_count = _SPEC_RE["count"].fullmatch(spec) if isinstance(spec, str) else None
    if m_list:
        values = [int(v) for v in m_list.group(1).split(",")]
    elif m_range and m_range.group(3):
        low, high, step = int(m_range.group(1)), int(m_range.group(2)), int(m_range.group(3))
        if low > high or step < 1:
            raise ConfigError("power_limits", text, allowed=allowed, reason="need MIN <= MAX and STEP >= 1")
        values = list(range(low, high + 1, step))
    elif m_count:
        n = int(m_count.group(1))
        if n < 1:
            raise ConfigError("power_limits", text, allowed=allowed, reason="count needs N >= 1")
        lo, hi = int(-(-min_w // 1)), int(max_w // 1)
        values = [hi] if n == 1 else sorted({round(lo + i * (hi - lo) / (n - 1)) for i in range(n)})
    else:
        raise ConfigError("power_limits", text, allowed=allowed)
    for v in values:
        if not min_w <= v <= max_w:
            raise ConfigError("power_limits", v, allowed=f"{min_w:g}..{max_w:g} W", reason="outside the device's power-limit range")
    return list(sorted(set(values), reverse=True))


@dataclass(frozen=True)
class GpuTypePreset:
    """The seed's ``--gpu-type`` grids, as a range and a target spacing; the clocks come from the device."""

    min_mhz: int
    max_mhz: int
    spacing_mhz: int = 60

    def spec(self, grid: Sequence[int]) -> str:
        """A ``range:MIN-MAX:N`` spec whose every-Nth step approximates ``spacing_mhz`` on this grid."""
        clocks = sorted(set(grid), reverse=True)
        gaps = [a - b for a, b in zip(clocks, clocks[1:])]
        step = statistics.median(gaps) if gaps else self.spacing_mhz
        n = max(1, round(self.spacing_mhz / step))
        return f"range:{self.min_mhz}-{self.max_mhz}:{n}"


#: The seed's grids (A100 1410..510, V100 1380..510, H100 up to 1980), spaced about 60 MHz.
GPU_TYPE_PRESETS: dict[str, GpuTypePreset] = {
    "A100": GpuTypePreset(510, 1410),
    "V100": GpuTypePreset(510, 1380),
    "H100": GpuTypePreset(510, 1980),
}
DEFAULT_DVFS_SPEC = "every:4"


# ---- settings, order and points ------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSetting:
    """One point's GPU settings; all ``None`` is the default clock (nothing locked)."""

    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_limit_w: int | None = None

    @property
    def is_default(self) -> bool:
        return self.sm_clock_mhz is None and self.mem_clock_mhz is None and self.power_limit_w is None

    def sort_key(self) -> tuple[int, int, int]:
        """High to low by SM clock, then memory clock, then power limit (None = the card's top)."""
        big = 1 << 30
        return (-(self.sm_clock_mhz or big), -(self.mem_clock_mhz or big), -(self.power_limit_w or big))


def order_settings(settings: Sequence[SweepSetting], order: str, rng: random.Random | None = None) -> list[SweepSetting]:
    """Settings in measurement order.

    ``random``: a seeded shuffle, so frequency is not confounded with the GPU warming up;
    ``interleaved``: alternately from the top and the bottom of the grid (high, low, next high, ...),
    a deterministic way to keep neighbouring clocks apart in time; ``descending``: the predecessor's
    high-to-low order, kept only for comparison (it confounds frequency with temperature).
    """
    if order not in ORDERS:
        raise ConfigError("order", order, allowed=ORDERS)
    ranked = sorted(settings, key=SweepSetting.sort_key)
    if order == "descending":
        return ranked
    if order == "interleaved":
        out: list[SweepSetting] = []
        lo, hi = 0, len(ranked) - 1
        while lo <= hi:
            out.append(ranked[lo])
            if lo != hi:
                out.append(ranked[hi])
            lo, hi = lo + 1, hi - 1
        return out
    if rng is None:
        raise ConfigError("rng", None, reason="a random order needs a seeded random.Random")
    shuffled = list(ranked)
    rng.shuffle(shuffled)
    return shuffled


def _case_dict(case: Case) -> dict[str, Any]:
    d = dataclasses.asdict(case)
    d["tags"] = list(case.tags)
    return d


def sweep_points_from_grid(base_case: Case, sm_clocks_mhz: Sequence[int | None] = (None,), *,
                           mem_clocks_mhz: Sequence[int | None] = (None,), power_limits_w: Sequence[int | None] = (None,),
                           repeats: int = 1, order: str = "random", seed: int = 0, default_every: int = 5,
                           include_default: bool = True) -> list[PlanPoint]:
    """The plan points of a sweep over the cross product of the given settings.

    One block per repeat, each in ``order`` (a random order draws from ``random.Random(seed)``,
    so a seed reproduces it). Default-clock points (role ``default-clock``, nothing locked) come
    first, after every ``default_every`` sweep points (0: only first and last), and last. Point ids
    are ``s<order index>-<case hash>-r<repeat>``: stable for a saved plan, so resume can skip them.
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError("repeats", repeats, allowed="a whole number >= 1")
    if not isinstance(default_every, int) or isinstance(default_every, bool) or default_every < 0:
        raise ConfigError("default_every", default_every, allowed="a whole number >= 0 (0: only first and last)")
    settings = [SweepSetting(sm, mem, pl) for sm, mem, pl in itertools.product(sm_clocks_mhz, mem_clocks_mhz, power_limits_w)]
    settings = [s for s in dict.fromkeys(settings) if not s.is_default]
    rng = random.Random(seed)
    sequence: list[tuple[SweepSetting, int]] = []
    if not settings:
        # Baseline: the default clock, once per repeat.
        sequence = [(SweepSetting(), r) for r in range(repeats)] if include_default else []
    else:
        if include_default:
            sequence.append((SweepSetting(), 0))
        since_default = 0
        for r in range(repeats):
            for s in order_settings(settings, order, rng):
                if include_default and default_every and since_default == default_every:
                    sequence.append((SweepSetting(), r))
                    since_default = 0
                sequence.append((s, r))
                since_default += 1
        if include_default:
            sequence.append((SweepSetting(), repeats - 1))
    points = []
    for idx, (s, r) in enumerate(sequence):
        case = base_case.with_(sm_clock_mhz=s.sm_clock_mhz, mem_clock_mhz=s.mem_clock_mhz, power_limit_w=s.power_limit_w)
        role = ROLE_DEFAULT if s.is_default else ROLE_POINT
        points.append(PlanPoint(point_id=f"s{idx:04d}-{case.case_hash}-r{r}", case=_case_dict(case), repeat=r, role=role))
    return points


# ---- options and planning ------------------------------------------------------------------------
@dataclass
class SweepOptions:
    """What to sweep and how (the library form of `sdbench sweep`'s flags)."""

    clocks: str | None = None  # grid spec; None: chosen by profiling_mode / gpu_type
    mem_clocks: str | None = None
    power_limits: str | None = None
    profiling_mode: str = "dvfs"
    gpu_type: str | None = None
    repeats: int = 1
    order: str = "random"
    order_seed: int | None = None  # None: drawn at random and recorded
    default_every: int = 5
    cooldown_c: float | None = 5.0  # None: no cooldown
    cooldown_timeout_s: float = 120.0
    idle_gap_s: float = 2.0
    read_only: bool = False
    clock_command: list[str] | None = None
    activity: str = "auto"  # activity counter backend (sdbench.gpu.dcgm)
    retries: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the options once, when they are made: each field against its row of the settings table
        (sdbench.settings, scope ``sweep``), then the rules that join them (a mode and its grid flags)."""
        for name in ("profiling_mode", "gpu_type", "repeats", "order", "order_seed", "default_every", "cooldown_c",
                     "cooldown_timeout_s", "idle_gap_s", "activity", "retries"):
            settings.check(f"sweep.{name}", getattr(self, name))
        if self.profiling_mode == "custom" and self.clocks is None and self.power_limits is None and self.mem_clocks is None:
            raise ConfigError("profiling_mode", "custom", reason="custom needs --clocks (or --mem-clocks / --power-limits)")
        if self.profiling_mode == "baseline" and (self.clocks or self.mem_clocks or self.power_limits):
            raise ConfigError("profiling_mode", "baseline", reason="baseline measures the default clock only; drop --clocks, "
                              "--mem-clocks and --power-limits or use --profiling-mode custom")


def _gpu_of(bench: Bench) -> GpuDevice:
    gpu = bench.gpu
    if gpu is None:
        raise ConfigError("device", bench.device, allowed="cuda:N (a GPU with NVML) or simulated",
                          reason="a clock sweep needs a GPU; on a machine without one use --device simulated")
    return gpu


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _request_hash(base_case: Case, points: Sequence[PlanPoint], options: SweepOptions) -> str:
    """What the sweep measures, minus the order seed: a resumed sweep must ask for the same thing."""
    settings = sorted({(p.case.get("sm_clock_mhz") or 0, p.case.get("mem_clock_mhz") or 0, p.case.get("power_limit_w") or 0)
                       for p in points})
    blob = json.dumps({"case": base_case.case_hash, "settings": settings, "repeats": options.repeats,
                       "order": options.order, "default_every": options.default_every,
                       "read_only": options.read_only}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def plan_sweep(bench: Bench, base_case: Case, options: SweepOptions, controller: ClockController | None = None) -> Plan:
    """Query the device's grid, resolve the specs on it, and build the sweep's :class:`Plan`.

    Only queries: nothing on the GPU changes. The plan's ``meta`` records the grid, the order and
    its seed, and a request hash that ``resume`` checks.
    """
    gpu = _gpu_of(bench)
    ctrl = controller or ClockController(gpu, read_only=True, handle_signals=False)
    info = gpu.info()
    mem_grid = ctrl.supported_mem_clocks_mhz()
    mem_clocks = resolve_mem_clock_spec(options.mem_clocks, mem_grid)
    sm_grid = ctrl.supported_sm_clocks_mhz()
    spec = options.clocks
    preset_note = None
    if spec is None and options.profiling_mode == "dvfs":
        if options.gpu_type is not None:
            spec = GPU_TYPE_PRESETS[options.gpu_type].spec(sm_grid)
            if options.gpu_type.lower() not in info.name.lower():
                preset_note = (f"--gpu-type {options.gpu_type} chose the grid spacing, but the device is {info.name!r}; "
                               "the clocks are this device's")
        else:
            spec = DEFAULT_DVFS_SPEC
    sm_clocks: list[int | None] = [None]
    if spec is not None:
        # The SM grid can differ by memory clock: every combination is validated on its own grid.
        per_mem = {m: ctrl.supported_sm_clocks_mhz(m) for m in mem_clocks if m is not None}
        sm_clocks = list(resolve_clock_spec(spec, sm_grid))
        for m, grid_m in per_mem.items():
            for c in sm_clocks:
                if c is not None:
                    validate_clock_mhz(f"clocks (at memory clock {m} MHz)", c, grid_m)
    power_limits: list[int | None] = [None]
    if options.power_limits is not None:
        lo_w, hi_w = ctrl.power_limit_range_w()
        power_limits = resolve_power_limit_spec(options.power_limits, lo_w, hi_w)
    seed = options.order_seed if options.order_seed is not None else secrets.randbits(32)
    points = sweep_points_from_grid(base_case, sm_clocks, mem_clocks_mhz=mem_clocks, power_limits_w=power_limits,
                                    repeats=options.repeats, order=options.order, seed=seed,
                                    default_every=options.default_every)
    runner = dataclasses.asdict(bench.runner.config) if getattr(bench, "runner", None) is not None else {}
    meta = {
        "kind": "sweep",
        "sweep_version": SWEEP_VERSION,
        "created_utc": _now(),
        "profiling_mode": options.profiling_mode,
        "gpu_type_preset": options.gpu_type,
        "gpu_type_note": preset_note,
        "clock_spec": spec,
        "mem_clock_spec": options.mem_clocks,
        "power_limit_spec": options.power_limits,
        "grid": {
            "supported_sm_clocks_mhz": sm_grid,
            "supported_mem_clocks_mhz": mem_grid,
            "sm_clocks_mhz": [c for c in sm_clocks if c is not None],
            "mem_clocks_mhz": [c for c in mem_clocks if c is not None],
            "power_limits_w": [p for p in power_limits if p is not None],
            "power_limit_range_w": list(_optional_range(ctrl)),
        },
        "order": options.order,
        "order_seed": seed,
        "order_seed_given": options.order_seed is not None,
        "repeats": options.repeats,
        "default_every": options.default_every,
        "read_only": options.read_only,
        "base_case": _case_dict(base_case),
        "request_hash": _request_hash(base_case, points, options),
    }
    return Plan(points=points, runner=runner, device=bench.device, meta=meta)


def _optional_range(ctrl: ClockController) -> tuple[float, ...]:
    try:
        return ctrl.power_limit_range_w()
    except GpuNotSupported:
        return ()


# ---- cooldown ------------------------------------------------------------------------------------
def cooldown(device: GpuDevice, max_temperature_c: float, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """Wait, idle, until the GPU is at or below ``max_temperature_c`` (or ``timeout_s`` passes).

    Time is the device's own clock (``device.clock``): the wall clock for a real GPU, the simulated
    GPU's virtual clock for it, so a simulated cooldown takes no host time and does not depend on
    the host's load. Returns the record fields ``cooldown_s`` (device seconds),
    ``cooldown_start_temperature_c``, ``cooldown_end_temperature_c``, ``cooldown_timed_out`` (or
    ``cooldown_status`` if the temperature cannot be read).
    """
    # A stand-in device without a clock (a test double) runs on the host's.
    clock = getattr(device, "clock", None) or WALL_CLOCK
    try:
        start_c = float(device.temperature_c())
    except GpuNotSupported as exc:
        return {"cooldown_status": f"unavailable: {exc}", "cooldown_s": 0.0}
    t0 = clock.now_s()
    temp_c = start_c
    timed_out = False
    while temp_c > max_temperature_c:
        if clock.now_s() - t0 >= timeout_s:
            timed_out = True
            break
        clock.sleep(poll_s)
        temp_c = float(device.temperature_c())
    return {"cooldown_status": "timed-out" if timed_out else "ok", "cooldown_s": clock.now_s() - t0,
            "cooldown_target_c": max_temperature_c, "cooldown_start_temperature_c": start_c,
            "cooldown_end_temperature_c": temp_c, "cooldown_timed_out": timed_out}


# ---- measuring one point at its settings ---------------------------------------------------------
class ClockLockHook:
    """A :class:`~sdbench.session.PointHook` that runs each case at the case's clock and power settings.

    For each attempt: lock the settings (``controller.apply``), measure (the Bench's one measurement path),
    verify the lock with the telemetry in the record (``telemetry_sm_clock_mhz_mean``,
    ``telemetry_throttle_reasons``) and with each measured window's own telemetry
    (``clock_window_verified``). A ``drift`` or ``throttled`` result is measured again up to ``retries``
    times (``before_retry`` runs first: a cooldown); the final record carries the last verification
    (``clock_verified`` ...) and the first one's status, so a point that never verified is flagged rather
    than silently kept. With an ``activity`` monitor, the ``activity_*`` means cover the measured windows only.

    Install it on the Bench that measures (``with bench.hooked(ClockLockHook(controller)): ...``); the sweep
    and the DVFS suite's fixture both do.
    """

    def __init__(self, controller: ClockController, *, retries: int = 1,
                 activity: ActivityMonitor | None = None, before_retry: Callable[[], Any] | None = None) -> None:
        self.controller = controller
        self.retries = retries
        self.activity = activity
        self.before_retry = before_retry

    def _expected_reasons(self, case: Case) -> set[str]:
        # A power-limit point asks for the power cap; hitting it is the point, not a fault.
        return {"sw_power_cap"} if case.power_limit_w is not None else set()

    def _verify(self, case: Case, record: dict[str, Any], windows: Sequence[Any]) -> tuple[ClockVerification, list[str]]:
        """The point's verdict: the whole measurement's telemetry (the record) and each window's.

        Any throttled window makes the point throttled; else any drifted window makes it drift; a
        window without telemetry samples (shorter than the sampling period) does not count.
        """
        expected = self._expected_reasons(case)
        overall = self.controller.verify(record, case.sm_clock_mhz, mem_clock_mhz=case.mem_clock_mhz,
                                         expected_reasons=expected)
        per_window = [self.controller.verify(w.telemetry, case.sm_clock_mhz, mem_clock_mhz=case.mem_clock_mhz,
                                             expected_reasons=expected) for w in windows if getattr(w, "telemetry", None)]
        for status in ("throttled", "drift"):
            worst = [v for v in [overall, *per_window] if v.status == status]
            if worst:
                return worst[0], [v.status for v in per_window]
        return overall, [v.status for v in per_window]

    def measure(self, case: Case, measure: MeasureFn, progress: Progress | None) -> Measured:
        """Lock, measure, verify (retrying a wrong point); the record gets the clock fields."""
        attempts: list[ClockVerification] = []
        record: dict[str, Any] = {}
        measurement: Any = None
        window_statuses: list[str] = []
        activity_fields: dict[str, Any] = {}
        for attempt in range(1 + self.retries):
            if attempt and self.before_retry is not None:
                self.before_retry()
            self.controller.apply(case.sm_clock_mhz, case.mem_clock_mhz, case.power_limit_w)
            hook = progress
            if self.activity is not None:
                self.activity.start()
                hook = _chain(self.activity.progress_hook, progress)
            windows: list[Any] = []
            try:
                record, measurement = measure(case, hook)
                windows = list(measurement.windows)
            finally:
                if self.activity is not None:
                    bounds = [(w.t0_s, w.t1_s) for w in windows]
                    activity_fields = self.activity.stop(bounds).as_record_fields()
            verification, window_statuses = self._verify(case, record, windows)
            attempts.append(verification)
            if verification.status not in RETRY_STATUSES:
                break
            log.warning("%s: %s (attempt %d of %d)", case.case_id, verification.message, attempt + 1, 1 + self.retries)
        final = attempts[-1]
        record.update(final.as_record_fields())
        record.update(
            clock_window_verified=window_statuses,
            clock_attempts=len(attempts),
            clock_first_attempt_verified=attempts[0].status,
            clock_first_attempt_error_mhz=attempts[0].error_mhz,
            clock_control=self.controller.mode,
            sm_clock_mhz_setting=case.sm_clock_mhz,
            mem_clock_mhz_setting=case.mem_clock_mhz,
            power_limit_w_setting=case.power_limit_w,
            is_default_clock=case.sm_clock_mhz is None and case.mem_clock_mhz is None and case.power_limit_w is None,
        )
        if self.activity is not None:
            record.update(activity_fields)
        return record, measurement


def _chain(first: Callable[[str], None], second: Callable[[str], None] | None) -> Callable[[str], None]:
    def both(message: str) -> None:
        first(message)
        if second is not None:
            second(message)
    return both


class _SweepAborted(Exception):  # noqa: N818 - internal control flow, never shown
    """Carries an error that must stop the whole sweep through `plan.execute`.

    Deliberately not an SdbenchError or RuntimeError: `execute` records those as a failed point and
    goes on, which for a refused clock lock would repeat the refusal at every point.
    """

    def __init__(self, cause: SdbenchError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _AbortOnRefusal:
    """The sweep's outermost hook: a permission refusal (from the clock lock inside it) stops the whole sweep."""

    def measure(self, case: Case, measure: MeasureFn, progress: Progress | None) -> Measured:
        try:
            return measure(case, progress)
        except (GpuNoPermission, ReadOnlyClockError) as exc:
            raise _SweepAborted(exc) from exc


# ---- running -------------------------------------------------------------------------------------
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


def default_clock_checks(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How much the default clock's time and energy per image moved over the sweep, whether that is
    beyond their noise, and which points it flags.

    ``time_drift_rel`` / ``energy_drift_rel``: ``max / min - 1`` of the re-measurements' medians.
    ``drift_significant``, ``drift_verdict``, ``drift_test`` and ``comparisons`` come from
    :func:`sdbench.analysis.drift.default_drift_check` on the per-round samples (the same test the report
    uses). When it drifted, ``drift_after_order_index`` is the ``sweep_order_index`` of the last
    re-measurement that agreed with the first, and ``drift_flagged_point_ids`` the sweep points
    (role ``point``) measured after it.
    """
    import numpy as np

    from sdbench.analysis.drift import default_drift_check

    ok = [r for r in records if r.get("point_status") == "ok"]
    defaults = sorted((r for r in ok if r.get("point_role") == ROLE_DEFAULT), key=lambda r: r.get("sweep_order_index", 0))
    rows = [{"sweep_order_index": r.get("sweep_order_index"), "point_id": r.get("point_id"),
             "time_per_image_s_median": r.get("time_per_image_s_median"),
             "energy_per_image_j_median": r.get("energy_per_image_j_median"),
             "telemetry_temperature_c_max": r.get("telemetry_temperature_c_max")} for r in defaults]
    out: dict[str, Any] = {"points": rows}
    for key, name in (("time_per_image_s_median", "time"), ("energy_per_image_j_median", "energy")):
        values = [row[key] for row in rows if row[key]]
        out[f"{name}_drift_rel"] = (max(values) / min(values) - 1.0) if len(values) >= 2 else None
    series = []
    for r in defaults:
        t, e = metric_stats(r, "time_per_image_s"), metric_stats(r, "energy_per_image_j")
        if t is None:
            continue
        series.append({"time_per_image_s": np.asarray(t.rounds("mean")),
                       "energy_per_image_j": None if e is None else np.asarray(e.rounds("mean")),
                       "sweep_order_index": r.get("sweep_order_index", 0)})
    check = default_drift_check(series)
    out.update(drift_significant=check.significant, drift_verdict=check.verdict, drift_test=check.test,
               comparisons=check.comparisons, drift_after_order_index=None, drift_flagged_point_ids=[])
    if check.significant and check.onset is not None:
        after = series[check.onset - 1]["sweep_order_index"]
        out["drift_after_order_index"] = after
        out["drift_flagged_point_ids"] = [r.get("point_id") for r in ok if r.get("point_role") == ROLE_POINT
                                          and r.get("sweep_order_index", 0) > after]
    return out


def point_counts(records: Sequence[dict[str, Any]], checks: dict[str, Any]) -> dict[str, int]:
    """What sweep.json says about the measured points: ``points_done`` (ok), ``points_failed``,
    ``points_clock_flagged`` (clock not verified), ``points_drift_flagged`` (measured after the default
    clock drifted) and ``points_flagged`` (either; each point once)."""
    ok = [r for r in records if r.get("point_status") == "ok"]
    clock = {r.get("point_id") for r in ok if r.get("clock_verified") not in ("ok", "read-only")}
    drift = set(checks.get("drift_flagged_point_ids") or [])
    return {"points_done": len(ok), "points_failed": len(records) - len(ok), "points_clock_flagged": len(clock),
            "points_drift_flagged": len(drift), "points_flagged": len(clock | drift)}


def _progress_bar(enabled: bool) -> tuple[Callable[[int, int, PlanPoint], None], Callable[[], None]]:
    """An execute() progress callback that drives a tqdm bar with ETA, and its closer."""
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

    def close() -> None:
        bar = state["bar"]
        if bar is not None:
            bar.update(bar.total - bar.n)
            bar.close()

    return update, close


def _warn(line: str) -> None:
    print(f"sdbench: warning: {line}", file=sys.stderr, flush=True)


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


def run_sweep(bench: Bench, base_case: Case, output_dir: str | os.PathLike[str], options: SweepOptions | None = None, *,
              resume: bool = False, progress: bool = True, state_file: str | os.PathLike[str] | None = None,
              plan_only: bool = False, argv: Sequence[str] | None = None,
              on_point: Callable[[int, int, PlanPoint], None] | None = None) -> SweepResult:
    """Plan and run a sweep of ``base_case`` on ``bench``'s GPU into ``output_dir`` (see the module docstring).

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
        close_bar()
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


# ---- what `sdbench sweep` prints ---------------------------------------------------------------------
def _summary_table(records: Sequence[dict[str, Any]], checks: dict[str, Any] | None = None) -> str:
    """One row per point in sweep order; a point measured after the default clock drifted says so."""
    from tabulate import tabulate

    drifted = set((checks or {}).get("drift_flagged_point_ids") or [])
    rows = []
    for r in sorted(records, key=lambda r: r.get("sweep_order_index", 0)):
        if r.get("point_status") != "ok":
            rows.append([r.get("sweep_order_index"), r.get("point_role"), r.get("sm_clock_mhz") or "default", "error",
                         "-", "-", r.get("point_error")])
            continue
        e = r.get("energy_per_image_j_median")
        note = r.get("clock_verify_message") or ""
        if r.get("point_id") in drifted:
            note = "FLAGGED: after the default clock drifted" + (f"; {note}" if note else "")
        rows.append([r.get("sweep_order_index"), r.get("point_role"), r.get("sm_clock_mhz_setting") or "default",
                     r.get("clock_verified"), f"{r['time_per_image_s_median']:.4g}",
                     f"{e:.4g}" if e is not None else "-", note])
    return tabulate(rows, headers=["#", "role", "sm MHz", "verified", "s/image", "J/image", "note"])


def summary_lines(meta: dict[str, Any]) -> list[str]:
    """The sweep's closing lines: the default-clock check (a WARNING when it drifted beyond its
    noise), then done/planned and flagged counts."""
    lines = []
    checks = meta.get("default_clock_checks") or {}
    drift_t, drift_e = checks.get("time_drift_rel"), checks.get("energy_drift_rel")
    if drift_t is not None:
        line = (f"default clock re-measured {len(checks.get('points', []))} times: time moved {100 * drift_t:.1f} %"
                + (f", energy {100 * drift_e:.1f} %" if drift_e is not None else ""))
        if checks.get("drift_verdict"):
            line += f"; {checks['drift_verdict']}"
        lines.append(line)
    if checks.get("drift_significant"):
        lines.append(f"WARNING: the default clock drifted beyond its noise; {meta.get('points_drift_flagged', 0)} "
                     f"point(s) measured after index {checks.get('drift_after_order_index')} are flagged: savings "
                     "and optima from this sweep cannot be claimed with confidence")
    done, planned = meta.get("points_done"), meta.get("points_to_measure")
    incomplete = "" if done is None or planned is None or done >= planned else " (INCOMPLETE)"
    lines.append(f"sweep {meta['status']}: {done} of {planned} point(s) done{incomplete}, "
                 f"{meta.get('points_flagged', 0)} flagged ({meta.get('points_clock_flagged', 0)} clock not verified, "
                 f"{meta.get('points_drift_flagged', 0)} after default-clock drift); order {meta['order']} "
                 f"(seed {meta['order_seed']}); settings restored: {meta['settings_restored']}")
    return lines
