r"""A simulated GPU with a small physical model, so every DVFS, energy and fault path runs on CPU.

Defaults resemble an H100 SXM. Time is real wall time (``time.perf_counter``), so meters and
samplers that poll the device in background threads see the same timeline as the caller.

Model
-----
Clock grid (from parameters, not a table)::

    f_k = f_max - k * df,  k = 0, 1, ...  while f_k > f_min, then f_min     (1980 ... 345 MHz)

Voltage is linear in the SM clock::

    V(f) = V_min + (V_max - V_min) * (f - f_min) / (f_max - f_min)

Board power at utilisation ``u`` (1 while a :meth:`SimulatedGpu.workload` is open, else 0)::

    P(f, f_m) = P_idle + u * (P_static + P_mem * f_m / f_m,max + c * f * V(f)^2)

with ``c`` chosen so that ``P(f_max, f_m,max) = P_full`` (650 W by default).

Work done in ``t_ref`` seconds at the reference point (f_max, f_m,max) takes, at (f, f_m)::

    t = t_ref * s(f, f_m),   s(f, f_m) = m * f_m,max / f_m + (1 - m) * f_max / f

where ``m`` is the memory-bound fraction (0.3). The energy per unit of work is therefore
``e(f) = P(f) * s(f)``: high clocks pay ``f V^2``, low clocks pay the static power for longer, so
``e`` has an interior minimum (about 1260 MHz with the defaults; see
:meth:`SimulatedGpu.expected_energy_optimal_sm_clock_mhz`).

Effective clock while busy: the locked maximum (or f_max), then

* power cap: if ``P(f) > P_limit`` the clock drops to the highest grid clock whose power fits
  (f_min if none does) and the ``sw_power_cap`` reason is set;
* thermal: temperature follows ``dT/dt = (T_ss - T) / tau`` with ``T_ss = T_amb + R * P``; above
  ``thermal_throttle_above_c`` the clock drops to the highest grid clock <= ``theta * f`` and the
  ``sw_thermal_slowdown`` and ``hw_thermal_slowdown`` reasons are set, until T falls
  ``thermal_hysteresis_c`` below the threshold;
* drift (injected fault): a locked clock is achieved ``clock_drift_mhz`` off target.

While idle the SM clock reads the locked minimum (or f_min) with the ``gpu_idle`` reason.

Workload stretch: inside ``workload()`` the caller does real CPU work, which the model treats as
running at the reference point. Progress ``p = integral of dt / s(f(t))`` is accumulated while
busy; on leaving the context the device stays busy (sleeping) until ``p`` reaches the wall time
spent inside, so the total wall time is ``t_ref * s(f)`` even if the clock changed on the way.

Energy: ``E(t)`` is integrated exactly over piecewise-constant segments (every state change
closes a segment; with thermal throttling enabled, segments are at most ``min(50 ms, tau/20)``).
The counter reports ``E0 + floor(1000 * E(t_q))`` mJ at ``t_q``, the last multiple of
``energy_update_period_s`` since construction, like NVML's 100 ms counter on an H100.
``power_instant_w`` is ``P`` now (or ``P(t - power_report_lag_s)``: a real H100's reading trails the
load by ~0.25 s); ``power_average_w`` is ``(E(t) - E(t - 1 s)) / 1 s``.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sdbench.errors import ConfigError
from sdbench.gpu.base import (
    CLOCK_EVENT_REASON_BITS,
    GpuDevice,
    GpuInfo,
    GpuNoPermission,
    GpuNotSupported,
)

__all__ = ["SimulatedGpu", "SimulatedGpuState", "SIMULATED_METHOD_NAMES"]

#: Methods that the ``unsupported`` fault can switch off.
SIMULATED_METHOD_NAMES: frozenset[str] = frozenset(
    {
        "info",
        "total_energy_mj",
        "power_instant_w",
        "power_average_w",
        "sm_clock_mhz",
        "mem_clock_mhz",
        "clock_event_reasons",
        "temperature_c",
        "utilization_pct",
        "memory_used_bytes",
        "power_limit_w",
        "supported_memory_clocks_mhz",
        "supported_sm_clocks_mhz",
        "activity",
        "set_locked_sm_clocks",
        "reset_locked_sm_clocks",
        "set_locked_mem_clocks",
        "reset_locked_mem_clocks",
        "set_power_limit_w",
    }
)

_CONTROL_METHODS = frozenset(
    {
        "set_locked_sm_clocks",
        "reset_locked_sm_clocks",
        "set_locked_mem_clocks",
        "reset_locked_mem_clocks",
        "set_power_limit_w",
    }
)

# Share of compute-bound time spent in tensor-core / plain FP16 pipes: synthetic constants that
# only need to move with the model (a diffusion UNet is tensor-core heavy).
_TENSOR_SHARE_OF_COMPUTE = 0.8
_FP16_SHARE_OF_COMPUTE = 0.15

_REASON_IDLE = CLOCK_EVENT_REASON_BITS["gpu_idle"]
_REASON_APP_CLOCKS = CLOCK_EVENT_REASON_BITS["applications_clocks_setting"]
_REASON_POWER_CAP = CLOCK_EVENT_REASON_BITS["sw_power_cap"]
_REASON_THERMAL = CLOCK_EVENT_REASON_BITS["sw_thermal_slowdown"] | CLOCK_EVENT_REASON_BITS["hw_thermal_slowdown"]

# Longest wait between progress checks while stretching a workload: short enough that a clock
# change during the stretch is honoured promptly.
_STRETCH_POLL_S = 0.02


@dataclass(frozen=True)
class SimulatedGpuState:
    """The settings a user can change; ``None`` means not locked."""

    locked_sm_clocks_mhz: tuple[int, int] | None
    locked_mem_clocks_mhz: tuple[int, int] | None
    power_limit_w: float


@dataclass(frozen=True)
class _OperatingPoint:
    sm_clock_mhz: float
    mem_clock_mhz: float
    power_w: float
    reasons: int
    busy: bool
    time_scale: float


class SimulatedGpu(GpuDevice):
    """A GPU whose power, clocks, temperature and speed follow the model in the module docstring.

    Fault injection: ``lock_fails`` (SM clock locking raises :class:`GpuNoPermission`),
    ``clock_drift_mhz`` (locked clocks are achieved this far off), ``thermal_throttle_above_c``
    (thermal throttling above this temperature), ``unsupported`` (method names that raise
    :class:`GpuNotSupported`), ``no_permission`` (every control method raises GpuNoPermission).
    """

    simulated = True

    def __init__(
        self,
        *,
        index: int = 0,
        name: str = "Simulated H100 80GB HBM3 (simulated)",
        max_sm_clock_mhz: int = 1980,
        min_sm_clock_mhz: int = 345,
        sm_clock_step_mhz: int = 15,
        memory_clocks_mhz: Iterable[int] = (2619, 1593),
        memory_total_bytes: int = 81559 * 2**20,
        memory_used_bytes: int = 512 * 2**20,
        idle_power_w: float = 70.0,
        static_busy_power_w: float = 110.0,
        memory_busy_power_w: float = 50.0,
        full_load_power_w: float = 650.0,
        v_min: float = 0.60,
        v_max: float = 1.05,
        memory_bound_fraction: float = 0.3,
        default_power_limit_w: float = 700.0,
        min_power_limit_w: float = 200.0,
        max_power_limit_w: float = 700.0,
        energy_update_period_s: float = 0.1,
        initial_energy_mj: int = 0,
        power_average_window_s: float = 1.0,
        power_report_lag_s: float = 0.0,
        ambient_c: float = 30.0,
        thermal_resistance_c_per_w: float = 0.07,
        thermal_time_constant_s: float = 10.0,
        thermal_throttle_above_c: float | None = None,
        thermal_hysteresis_c: float = 2.0,
        thermal_throttle_factor: float = 0.7,
        lock_fails: bool = False,
        clock_drift_mhz: int = 0,
        unsupported: Iterable[str] = (),
        no_permission: bool = False,
    ) -> None:
        if not 0 < min_sm_clock_mhz < max_sm_clock_mhz:
            raise ConfigError("min_sm_clock_mhz", min_sm_clock_mhz, reason=f"need 0 < min < max_sm_clock_mhz={max_sm_clock_mhz}")
        if sm_clock_step_mhz <= 0:
            raise ConfigError("sm_clock_step_mhz", sm_clock_step_mhz, reason="must be positive")
        mem_clocks = sorted({int(c) for c in memory_clocks_mhz}, reverse=True)
        if not mem_clocks or mem_clocks[-1] <= 0:
            raise ConfigError("memory_clocks_mhz", list(memory_clocks_mhz), reason="need at least one positive clock")
        if not 0.0 <= memory_bound_fraction < 1.0:
            raise ConfigError("memory_bound_fraction", memory_bound_fraction, allowed="[0, 1)")
        if not 0 < v_min <= v_max:
            raise ConfigError("v_min", v_min, reason=f"need 0 < v_min <= v_max={v_max}")
        dynamic_at_max_w = full_load_power_w - idle_power_w - static_busy_power_w - memory_busy_power_w
        if dynamic_at_max_w <= 0:
            raise ConfigError(
                "full_load_power_w", full_load_power_w, reason="must exceed idle + static + memory busy power"
            )
        if not min_power_limit_w <= default_power_limit_w <= max_power_limit_w:
            raise ConfigError(
                "default_power_limit_w",
                default_power_limit_w,
                allowed=f"{min_power_limit_w}..{max_power_limit_w} W",
            )
        if power_report_lag_s < 0:
            raise ConfigError("power_report_lag_s", power_report_lag_s, reason="must be >= 0")
        if energy_update_period_s <= 0:
            raise ConfigError("energy_update_period_s", energy_update_period_s, reason="must be positive")
        if thermal_time_constant_s <= 0:
            raise ConfigError("thermal_time_constant_s", thermal_time_constant_s, reason="must be positive")
        if not 0 < thermal_throttle_factor <= 1:
            raise ConfigError("thermal_throttle_factor", thermal_throttle_factor, allowed="(0, 1]")
        unsupported_set = frozenset(unsupported)
        unknown = unsupported_set - SIMULATED_METHOD_NAMES
        if unknown:
            raise ConfigError("unsupported", sorted(unknown), allowed=sorted(SIMULATED_METHOD_NAMES))

        self.index = index
        self.name = name
        self._f_max = int(max_sm_clock_mhz)
        self._f_min = int(min_sm_clock_mhz)
        grid = list(range(self._f_max, self._f_min, -int(sm_clock_step_mhz)))
        grid.append(self._f_min)
        self._sm_grid = grid
        self._sm_grid_set = frozenset(grid)
        self._sm_grid_text = f"{self._f_min}..{self._f_max} MHz in {sm_clock_step_mhz} MHz steps (supported_sm_clocks_mhz)"
        self._mem_clocks = mem_clocks
        self._fm_max = mem_clocks[0]
        self._memory_total_bytes = int(memory_total_bytes)
        self._memory_used_bytes = int(memory_used_bytes)
        self._p_idle_w = float(idle_power_w)
        self._p_static_w = float(static_busy_power_w)
        self._p_mem_w = float(memory_busy_power_w)
        self._v_min = float(v_min)
        self._v_max = float(v_max)
        self._c_w_per_mhz_v2 = dynamic_at_max_w / (self._f_max * self._v_max**2)
        self._m = float(memory_bound_fraction)
        self._default_power_limit_w = float(default_power_limit_w)
        self._min_power_limit_w = float(min_power_limit_w)
        self._max_power_limit_w = float(max_power_limit_w)
        self.energy_update_period_s = float(energy_update_period_s)
        self._initial_energy_mj = int(initial_energy_mj)
        self._avg_window_s = float(power_average_window_s)
        self._lag_s = float(power_report_lag_s)
        self._ambient_c = float(ambient_c)
        self._r_c_per_w = float(thermal_resistance_c_per_w)
        self._tau_s = float(thermal_time_constant_s)
        self._throttle_above_c = thermal_throttle_above_c
        self._hysteresis_c = float(thermal_hysteresis_c)
        self._throttle_factor = float(thermal_throttle_factor)
        self._lock_fails = lock_fails
        self._drift_mhz = int(clock_drift_mhz)
        self._unsupported = unsupported_set
        self._no_permission = no_permission
        self.power_instant_source = "simulated"
        self.power_instant_fallback_reason = None

        self._lock = threading.RLock()
        self._locked_sm: tuple[int, int] | None = None
        self._locked_mem: tuple[int, int] | None = None
        self._power_limit_w = self._default_power_limit_w
        now = time.perf_counter()
        self._t_epoch = now
        self._t = now
        self._energy_j = 0.0
        self._counter_mj = self._initial_energy_mj
        self._counter_t = now
        self._temp_c = self._ambient_c + self._r_c_per_w * self._p_idle_w
        self._thermal_throttled = False
        self._busy_depth = 0
        self._utilization = 0.0
        self._progress_ref_s = 0.0
        # (time, energy) at segment ends; power is constant in between, so interpolation is exact.
        self._history: collections.deque[tuple[float, float]] = collections.deque([(now, 0.0)])

    # ---- model (pure functions of the parameters) ---------------------------------------------
    def _voltage_v(self, f_mhz: float) -> float:
        frac = (f_mhz - self._f_min) / (self._f_max - self._f_min)
        return self._v_min + (self._v_max - self._v_min) * frac

    def _mem(self, mem_clock_mhz: float | None) -> float:
        return float(self._fm_max if mem_clock_mhz is None else mem_clock_mhz)

    def expected_busy_power_w(
        self, sm_clock_mhz: float, mem_clock_mhz: float | None = None, utilization: float = 1.0
    ) -> float:
        """Model board power in watts while busy at this clock (top memory clock by default)."""
        fm = self._mem(mem_clock_mhz)
        dynamic_w = self._c_w_per_mhz_v2 * sm_clock_mhz * self._voltage_v(sm_clock_mhz) ** 2
        return self._p_idle_w + utilization * (self._p_static_w + self._p_mem_w * fm / self._fm_max + dynamic_w)

    def expected_time_scale(self, sm_clock_mhz: float, mem_clock_mhz: float | None = None) -> float:
        """How many times longer work takes at this clock than at max SM and memory clock."""
        fm = self._mem(mem_clock_mhz)
        return self._m * self._fm_max / fm + (1.0 - self._m) * self._f_max / sm_clock_mhz

    def expected_energy_per_ref_s_j(self, sm_clock_mhz: float, mem_clock_mhz: float | None = None) -> float:
        """Model energy in joules for the work that takes one second at the reference clocks."""
        return self.expected_busy_power_w(sm_clock_mhz, mem_clock_mhz) * self.expected_time_scale(
            sm_clock_mhz, mem_clock_mhz
        )

    def expected_energy_optimal_sm_clock_mhz(self, mem_clock_mhz: float | None = None) -> int:
        """The grid SM clock that minimises energy per unit of work (ignores power cap and heat)."""
        return min(self._sm_grid, key=lambda f: self.expected_energy_per_ref_s_j(f, mem_clock_mhz))

    @property
    def default_state(self) -> SimulatedGpuState:
        """The settings at construction; the resets bring :meth:`state` back to this."""
        return SimulatedGpuState(None, None, self._default_power_limit_w)

    def state(self) -> SimulatedGpuState:
        """Current settings (locked ranges, power limit)."""
        with self._lock:
            return SimulatedGpuState(self._locked_sm, self._locked_mem, self._power_limit_w)

    # ---- dynamic state ------------------------------------------------------------------------
    def _highest_grid_clock_at_most(self, f_mhz: float) -> int:
        for f in self._sm_grid:
            if f <= f_mhz:
                return f
        return self._f_min

    def _operating_point(self) -> _OperatingPoint:
        """The device's state now; constant until the next state change or segment end."""
        fm = float(self._locked_mem[1] if self._locked_mem else self._fm_max)
        busy = self._busy_depth > 0
        reasons = 0
        if not busy:
            f = float(self._locked_sm[0] if self._locked_sm else self._f_min)
            reasons |= _REASON_IDLE
        else:
            f = float(self._locked_sm[1] if self._locked_sm else self._f_max)
            if f < self._f_max:
                reasons |= _REASON_APP_CLOCKS
            if self.expected_busy_power_w(f, fm, self._utilization) > self._power_limit_w:
                reasons |= _REASON_POWER_CAP
                fitting = [
                    g
                    for g in self._sm_grid
                    if g <= f and self.expected_busy_power_w(g, fm, self._utilization) <= self._power_limit_w
                ]
                f = float(fitting[0] if fitting else self._f_min)
        if self._thermal_throttled:
            reasons |= _REASON_THERMAL
            if busy:
                f = float(self._highest_grid_clock_at_most(f * self._throttle_factor))
        if self._locked_sm is not None and self._drift_mhz:
            f = min(max(f + self._drift_mhz, self._f_min), self._f_max)
        if busy:
            power_w = self.expected_busy_power_w(f, fm, self._utilization)
            scale = self.expected_time_scale(f, fm)
        else:
            power_w = self._p_idle_w
            scale = 1.0
        return _OperatingPoint(f, fm, power_w, reasons, busy, scale)

    def _integrate_to(self, t_end: float) -> None:
        max_step_s = min(0.05, self._tau_s / 20.0) if self._throttle_above_c is not None else math.inf
        while self._t < t_end:
            dt = min(t_end - self._t, max_step_s)
            op = self._operating_point()
            self._energy_j += op.power_w * dt
            if op.busy:
                self._progress_ref_s += dt / op.time_scale
            steady_c = self._ambient_c + self._r_c_per_w * op.power_w
            self._temp_c = steady_c + (self._temp_c - steady_c) * math.exp(-dt / self._tau_s)
            self._t += dt
            if self._throttle_above_c is not None:
                if not self._thermal_throttled and self._temp_c > self._throttle_above_c:
                    self._thermal_throttled = True
                elif self._thermal_throttled and self._temp_c < self._throttle_above_c - self._hysteresis_c:
                    self._thermal_throttled = False
            self._history.append((self._t, self._energy_j))

    def _advance(self, now: float | None = None) -> None:
        """Bring the model up to ``now`` (call with the lock held, before any state change)."""
        if now is None:
            now = time.perf_counter()
        period = self.energy_update_period_s
        last_tick = self._t_epoch + math.floor((now - self._t_epoch) / period) * period
        if last_tick > self._counter_t and last_tick >= self._t:
            self._integrate_to(last_tick)
            self._counter_mj = self._initial_energy_mj + math.floor(self._energy_j * 1000.0)
            self._counter_t = last_tick
        elif last_tick > self._counter_t:
            # The tick lies inside an already-integrated stretch: interpolate within it.
            self._counter_mj = self._initial_energy_mj + math.floor(self._energy_at(last_tick) * 1000.0)
            self._counter_t = last_tick
        self._integrate_to(now)
        horizon = now - 2.0 * max(self._avg_window_s, self._lag_s)
        while len(self._history) > 2 and self._history[1][0] <= horizon:
            self._history.popleft()

    def _energy_at(self, t: float) -> float:
        """Integrated energy at time ``t`` within the kept history (linear: power is piecewise constant)."""
        hist = self._history
        if t <= hist[0][0]:
            return hist[0][1]
        prev_t, prev_e = hist[0]
        for t_i, e_i in hist:
            if t_i >= t:
                if t_i == prev_t:
                    return e_i
                return prev_e + (e_i - prev_e) * (t - prev_t) / (t_i - prev_t)
            prev_t, prev_e = t_i, e_i
        return prev_e

    def _check(self, method: str) -> None:
        if method in self._unsupported:
            raise GpuNotSupported(f"{method} is not supported on {self.name} (injected fault)")
        if method in _CONTROL_METHODS and self._no_permission:
            raise GpuNoPermission(f"{method} on simulated GPU {self.index}", "injected fault: no_permission")

    def _now_point(self, method: str) -> _OperatingPoint:
        with self._lock:
            self._check(method)
            self._advance()
            return self._operating_point()

    # ---- GpuDevice queries --------------------------------------------------------------------
    def info(self) -> GpuInfo:
        self._check("info")
        with self._lock:
            limit_w = self._power_limit_w
        return GpuInfo(
            index=self.index,
            name=self.name,
            uuid=f"GPU-51a0a7ed-0000-4000-8000-{self.index:012d}",
            driver_version="simulated",
            cuda_driver_version=None,
            memory_total_bytes=self._memory_total_bytes,
            power_limit_w=limit_w,
            default_power_limit_w=self._default_power_limit_w,
            min_power_limit_w=self._min_power_limit_w,
            max_power_limit_w=self._max_power_limit_w,
            default_sm_clock_mhz=self._f_max,
            max_sm_clock_mhz=self._f_max,
            compute_capability=(9, 0),
            simulated=True,
            physical_index=self.index,
        )

    def total_energy_mj(self) -> int:
        with self._lock:
            self._check("total_energy_mj")
            self._advance()
            return self._counter_mj

    def power_instant_w(self) -> float:
        if not self._lag_s:
            return self._now_point("power_instant_w").power_w
        with self._lock:
            self._check("power_instant_w")
            now = time.perf_counter()
            self._advance(now)
            return self._power_at(now - self._lag_s)

    def _power_at(self, t: float) -> float:
        """The (piecewise-constant) power at time ``t`` within the kept history; idle before it."""
        hist = self._history
        prev_t, prev_e = hist[0]
        if t < prev_t:
            return self._p_idle_w
        for t_i, e_i in hist:
            if t_i > t and t_i > prev_t:
                return (e_i - prev_e) / (t_i - prev_t)
            prev_t, prev_e = t_i, e_i
        return self._operating_point().power_w

    def power_average_w(self) -> float:
        """Trailing average over ``power_average_window_s`` (shorter right after construction)."""
        with self._lock:
            self._check("power_average_w")
            now = time.perf_counter()
            self._advance(now)
            start = max(now - self._avg_window_s, self._t_epoch)
            if now <= start:
                return self._operating_point().power_w
            return (self._energy_j - self._energy_at(start)) / (now - start)

    def sm_clock_mhz(self) -> int:
        return int(round(self._now_point("sm_clock_mhz").sm_clock_mhz))

    def mem_clock_mhz(self) -> int:
        return int(round(self._now_point("mem_clock_mhz").mem_clock_mhz))

    def clock_event_reasons(self) -> int:
        return self._now_point("clock_event_reasons").reasons

    def temperature_c(self) -> float:
        with self._lock:
            self._check("temperature_c")
            self._advance()
            return self._temp_c

    def utilization_pct(self) -> tuple[float, float]:
        with self._lock:
            self._check("utilization_pct")
            self._advance()
            activity = self._activity_now()
        return 100.0 * activity["sm_active"], 100.0 * activity["dram_active"]

    def memory_used_bytes(self) -> int:
        self._check("memory_used_bytes")
        return self._memory_used_bytes

    def power_limit_w(self) -> float:
        with self._lock:
            self._check("power_limit_w")
            return self._power_limit_w

    def supported_memory_clocks_mhz(self) -> list[int]:
        self._check("supported_memory_clocks_mhz")
        return list(self._mem_clocks)

    def supported_sm_clocks_mhz(self, mem_clock_mhz: int) -> list[int]:
        self._check("supported_sm_clocks_mhz")
        if mem_clock_mhz not in self._mem_clocks:
            raise ConfigError("mem_clock_mhz", mem_clock_mhz, allowed=self._mem_clocks)
        return list(self._sm_grid)

    def activity(self) -> dict[str, float]:
        """Model activity fractions now: ``sm_active`` is the utilisation, the rest split the busy
        time into compute-bound (tensor / fp16 pipes) and memory-bound (dram) shares of ``s(f)``."""
        with self._lock:
            self._check("activity")
            self._advance()
            return self._activity_now()

    def _activity_now(self) -> dict[str, float]:
        op = self._operating_point()
        if not op.busy:
            return {"sm_active": 0.0, "tensor_active": 0.0, "dram_active": 0.0, "fp16_active": 0.0}
        u = self._utilization
        compute_share = (1.0 - self._m) * self._f_max / op.sm_clock_mhz / op.time_scale
        memory_share = self._m * self._fm_max / op.mem_clock_mhz / op.time_scale
        return {
            "sm_active": u,
            "tensor_active": u * compute_share * _TENSOR_SHARE_OF_COMPUTE,
            "dram_active": u * memory_share,
            "fp16_active": u * compute_share * _FP16_SHARE_OF_COMPUTE,
        }

    # ---- GpuDevice controls -------------------------------------------------------------------
    def set_locked_sm_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock; both ends must be grid clocks (see :meth:`supported_sm_clocks_mhz`)."""
        self._check("set_locked_sm_clocks")
        if self._lock_fails:
            raise GpuNoPermission(f"set_locked_sm_clocks on simulated GPU {self.index}", "injected fault: lock_fails")
        for field, value in (("min_mhz", min_mhz), ("max_mhz", max_mhz)):
            if value not in self._sm_grid_set:
                raise ConfigError(field, value, allowed=self._sm_grid_text)
        if min_mhz > max_mhz:
            raise ConfigError("min_mhz", min_mhz, reason=f"must not exceed max_mhz={max_mhz}")
        with self._lock:
            self._advance()
            self._locked_sm = (int(min_mhz), int(max_mhz))

    def reset_locked_sm_clocks(self) -> None:
        self._check("reset_locked_sm_clocks")
        with self._lock:
            self._advance()
            self._locked_sm = None

    def set_locked_mem_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the memory clock; both ends must be listed by :meth:`supported_memory_clocks_mhz`."""
        self._check("set_locked_mem_clocks")
        for field, value in (("min_mhz", min_mhz), ("max_mhz", max_mhz)):
            if value not in self._mem_clocks:
                raise ConfigError(field, value, allowed=self._mem_clocks)
        if min_mhz > max_mhz:
            raise ConfigError("min_mhz", min_mhz, reason=f"must not exceed max_mhz={max_mhz}")
        with self._lock:
            self._advance()
            self._locked_mem = (int(min_mhz), int(max_mhz))

    def reset_locked_mem_clocks(self) -> None:
        self._check("reset_locked_mem_clocks")
        with self._lock:
            self._advance()
            self._locked_mem = None

    def set_power_limit_w(self, watts: float) -> None:
        self._check("set_power_limit_w")
        if not self._min_power_limit_w <= watts <= self._max_power_limit_w:
            raise ConfigError(
                "power_limit_w", watts, allowed=f"{self._min_power_limit_w:g}..{self._max_power_limit_w:g} W"
            )
        with self._lock:
            self._advance()
            self._power_limit_w = float(watts)

    # ---- busy/idle ----------------------------------------------------------------------------
    @contextmanager
    def workload(self, utilization: float = 1.0) -> Iterator[None]:
        """Mark the device busy; on a normal exit, stretch wall time to the effective clock.

        Nesting is allowed (the outermost context does the stretch). An exception inside ends
        the work at once, without stretching.
        """
        if not 0.0 < utilization <= 1.0:
            raise ConfigError("utilization", utilization, allowed="(0, 1]")
        with self._lock:
            now = time.perf_counter()
            self._advance(now)
            outermost = self._busy_depth == 0
            if outermost:
                self._utilization = utilization
                self._progress_ref_s = 0.0
            self._busy_depth += 1
            t_enter = now
        try:
            yield
        except BaseException:
            with self._lock:
                self._advance()
                self._busy_depth -= 1
            raise
        if outermost:
            with self._lock:
                self._advance()
                inside_s = self._t - t_enter
            self._stretch_until(inside_s)
        with self._lock:
            self._advance()
            self._busy_depth -= 1

    def _stretch_until(self, inside_s: float) -> None:
        """Stay busy (sleeping, lock released) until model progress covers ``inside_s``."""
        while True:
            with self._lock:
                self._advance()
                owed_ref_s = inside_s - self._progress_ref_s
                scale = self._operating_point().time_scale
            if owed_ref_s <= 0:
                return
            time.sleep(min(owed_ref_s * scale, _STRETCH_POLL_S))
