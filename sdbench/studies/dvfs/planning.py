"""Planning a sweep: query the device's grid, resolve the specs on it and build the :class:`~sdbench.distribute.plan.Plan`
(its points, and the meta a resume checks: the grid, the order and its seed, a request hash). Only queries:
nothing on the GPU changes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sdbench.case import Case
from sdbench.distribute.plan import Plan, PlanPoint
from sdbench.errors import ConfigError
from sdbench.gpu.base import GpuDevice, GpuNotSupported
from sdbench.measure.clocks import ClockController, validate_clock_mhz
from sdbench.studies.dvfs.grid import (
    DEFAULT_DVFS_SPEC,
    GPU_TYPE_PRESETS,
    resolve_clock_spec,
    resolve_mem_clock_spec,
    resolve_power_limit_spec,
)
from sdbench.studies.dvfs.options import SweepOptions
from sdbench.studies.dvfs.points import _case_dict, sweep_points_from_grid
from sdbench.studies.dvfs.state import SWEEP_VERSION, _now

if TYPE_CHECKING:
    from sdbench.session import Bench

__all__ = ["plan_sweep"]


def _gpu_of(bench: Bench) -> GpuDevice:
    gpu = bench.gpu
    if gpu is None:
        raise ConfigError("device", bench.device, allowed="cuda:N (a GPU with NVML) or simulated",
                          reason="a clock sweep needs a GPU; on a machine without one use --device simulated")
    return gpu


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
