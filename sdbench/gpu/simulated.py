r"""A simulated GPU on a virtual clock, with a physical model built from published card specifications.

Every DVFS, energy and fault path runs on the CPU against it, and because its time is virtual its
numbers are the same on an idle or a loaded host: time moves only when the device does modelled work
or the caller sleeps on :attr:`SimulatedGpu.clock` (a :class:`~sdbench.gpu.clock.VirtualClock`).
The tiny model's real computation may still run on the CPU (its images are real); measurement reads
this clock.

Cards
-----
:data:`CARDS` holds V100 SXM2, A100 SXM4, H100 SXM and H200 with their published dense tensor rates,
memory bandwidth, power limits and clock grids (sources in each entry). ``SimulatedGpu(card="a100")``
or the device string ``simulated:a100`` selects one; the default is the H100.

Work
----
A pipeline call is described to the device by a :class:`WorkProfile`: FLOPs, bytes moved and kernels
of one text encoding, one UNet evaluation and one VAE decode (counted on the meta device by
``sdbench.pipelines.flops``). One piece of work takes, at reference clocks (top SM and memory clock)::

    compute_s = flop / (rate(dtype) * COMPUTE_EFFICIENCY)     # dense tensor rate (fp32: CUDA cores)
    memory_s  = bytes * DRAM_SHARE / (bandwidth * MEMORY_EFFICIENCY)
    latency_s = kernels * kernel_latency_s                     # small kernels: launch and tail

and at SM clock ``f`` and memory clock ``f_m``::

    t(f, f_m) = (compute_s + latency_s) * f_max / f + memory_s * f_m,max / f_m

so compute- and latency-bound work follows the SM clock and memory-bound work the memory clock, and
the progression between cards follows from their rates, not from a table of results.

Power
-----
Voltage rises with the SM clock, faster near the top of the boost range (as on real cards, whose
voltage-frequency curves are convex): ``V(f) = V_min + (V_max - V_min) x^2``, ``x = (f - f_min) / (f_max - f_min)``.
While busy with a piece of work whose SM and memory activity shares are ``a_sm`` and ``a_mem``::

    P = P_idle + P_static + P_mem * (f_m / f_m,max) * a_mem + P_sm * (f V(f)^2) / (f_max V_max^2) * a_sm

with ``a_sm = (compute + LATENCY_SM_ACTIVITY * latency) / t`` and ``a_mem = (memory +
COMPUTE_MEMORY_ACTIVITY * compute) / t`` (each at the current clocks, at most 1). Idle: ``P_idle``.
High clocks pay ``f V^2``, low clocks pay the static power for longer, so energy per unit of work has an
interior minimum; :meth:`SimulatedGpu.expected_call` and :meth:`SimulatedGpu.expected_optimum` give
the true time, energy and optimum clocks for a workload (the known answer sweeps are tested against).

Effective clock while busy: the locked maximum (or ``f_max``), lowered to the highest grid clock whose
power fits the power limit (``sw_power_cap``), then thermal throttling (``dT/dt = (T_ss - T)/tau``,
``T_ss = T_amb + R P``; above ``thermal_throttle_above_c`` the clock drops to ``theta * f`` until T falls
``thermal_hysteresis_c`` below) and injected faults (``clock_drift_mhz``: a lock achieved off target).

Noise
-----
Each call (a ``start`` event) draws a time factor and a power factor from mean-one lognormal
distributions with coefficients of variation ``noise_cv`` and ``power_noise_cv`` (seeded by
``noise_seed``: the same seed gives the same numbers), optionally a heavy tail (``outlier_probability``
of calls ``outlier_factor`` times slower) and a slow drift (``slowdown_rel_per_s``: calls get slower with
virtual time, as a warming card would), so statistics can be tested against a known truth.

Energy counter: ``E0 + floor(1000 E(t_q))`` mJ, ``t_q`` the last multiple of ``energy_update_period_s``
(NVML's 100 ms on an H100). ``power_instant_w`` is ``P`` now (or ``power_report_lag_s`` ago: a real
H100's reading trails the load by ~0.25 s); ``power_average_w`` averages over ``power_average_window_s``.
"""

from __future__ import annotations

import bisect
import collections
import math
import random
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sdbench.errors import ConfigError
from sdbench.gpu.base import (
    CLOCK_EVENT_REASON_BITS,
    GpuDevice,
    GpuInfo,
    GpuNoPermission,
    GpuNotSupported,
)
from sdbench.gpu.clock import VirtualClock
from sdbench.spec.devices import DEFAULT_SIMULATED_CARD, SIMULATED_CARD_KEYS, parse_simulated_device

__all__ = [
    "CARDS",
    "SIMULATED_METHOD_NAMES",
    "CallTruth",
    "CardSpec",
    "SimulatedGpu",
    "SimulatedGpuState",
    "Work",
    "WorkAmount",
    "WorkProfile",
    "parse_simulated_device",
]

#: Achieved share of the dense peak rate by real UNet/VAE kernels (measured SDXL GEMMs run at ~65 %).
COMPUTE_EFFICIENCY = 0.6
#: Achieved share of the memory bandwidth (a large device copy reaches ~90 %, real kernels less).
MEMORY_EFFICIENCY = 0.7
#: Share of the bytes counted on the meta device (every eager op's inputs and outputs) that reaches DRAM;
#: the rest stays in L2. With it, SDXL's eager UNet step on the simulated H100 comes to ~57 ms against the
#: 65.5 ms measured on a real one (BENCHMARKS.md), SD1.5's to ~11 ms (real eager is host-bound at 27.5).
DRAM_SHARE = 0.3
#: How busy the SMs are while kernel latency dominates (small kernels leave most SMs idle).
LATENCY_SM_ACTIVITY = 0.4
#: Memory traffic that compute-bound kernels still generate, as a share of their time.
COMPUTE_MEMORY_ACTIVITY = 0.2
#: Work of a bare ``workload()`` with no modelled work item (tests, pre-existing callers): 70 % compute-
#: and 30 % memory-bound, no kernel latency.
_BARE_SHARES = (0.7, 0.3, 0.0)


@dataclass(frozen=True)
class CardSpec:
    """One GPU model's published figures. Rates are dense (no sparsity), at the top SM clock."""

    key: str
    name: str
    compute_capability: tuple[int, int]
    max_sm_clock_mhz: int
    min_sm_clock_mhz: int
    sm_clock_step_mhz: int
    memory_clocks_mhz: tuple[int, ...]
    memory_total_bytes: int
    memory_bandwidth_gb_s: float
    fp16_tensor_tflops: float
    bf16_tensor_tflops: float | None
    fp8_tensor_tflops: float | None
    fp32_tflops: float
    default_power_limit_w: float
    min_power_limit_w: float
    max_power_limit_w: float
    idle_power_w: float
    static_busy_power_w: float
    memory_busy_power_w: float
    sm_busy_power_w: float
    kernel_latency_s: float
    flash_attention: bool
    source: str

    def dense_tflops(self, dtype: str) -> float:
        """The dense rate for ``dtype`` (fp16, bf16, fp8, fp32); :class:`ConfigError` where the card has none."""
        rate = {"fp16": self.fp16_tensor_tflops, "bf16": self.bf16_tensor_tflops, "fp8": self.fp8_tensor_tflops,
                "fp32": self.fp32_tflops}.get(dtype)
        if rate is None:
            raise ConfigError("dtype", dtype, reason=f"{self.name} has no {dtype} rate")
        return rate

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["compute_capability"] = list(self.compute_capability)
        out["memory_clocks_mhz"] = list(self.memory_clocks_mhz)
        return out


_MIB = 2**20

#: The simulated cards. Power splits (idle, static, memory, SM) are modelling choices, set so that the
#: card's board power at full compute load and top clock exceeds its limit as real cards' does under
#: diffusion UNets (an H100 runs SDXL at its 700 W cap near 1800 MHz); the rest is from the datasheets.
CARDS: dict[str, CardSpec] = {
    "v100": CardSpec(
        key="v100", name="Tesla V100-SXM2-32GB (simulated)", compute_capability=(7, 0),
        max_sm_clock_mhz=1530, min_sm_clock_mhz=135, sm_clock_step_mhz=15, memory_clocks_mhz=(877,),
        memory_total_bytes=32510 * _MIB, memory_bandwidth_gb_s=900.0, fp16_tensor_tflops=125.0,
        bf16_tensor_tflops=None, fp8_tensor_tflops=None, fp32_tflops=15.7, default_power_limit_w=300.0,
        min_power_limit_w=150.0, max_power_limit_w=300.0, idle_power_w=40.0, static_busy_power_w=35.0,
        memory_busy_power_w=50.0, sm_busy_power_w=300.0, kernel_latency_s=6e-6, flash_attention=False,
        source="NVIDIA V100 Tensor Core GPU datasheet (2020): SXM2 125 TFLOP/s fp16 tensor, 15.7 fp32, "
               "900 GB/s HBM2, 300 W, boost 1530 MHz; memory clock 877 MHz; SM grid simplified to 15 MHz steps",
    ),
    "a100": CardSpec(
        key="a100", name="NVIDIA A100-SXM4-40GB (simulated)", compute_capability=(8, 0),
        max_sm_clock_mhz=1410, min_sm_clock_mhz=210, sm_clock_step_mhz=15, memory_clocks_mhz=(1215,),
        memory_total_bytes=40960 * _MIB, memory_bandwidth_gb_s=1555.0, fp16_tensor_tflops=312.0,
        bf16_tensor_tflops=312.0, fp8_tensor_tflops=None, fp32_tflops=19.5, default_power_limit_w=400.0,
        min_power_limit_w=100.0, max_power_limit_w=400.0, idle_power_w=55.0, static_busy_power_w=45.0,
        memory_busy_power_w=70.0, sm_busy_power_w=380.0, kernel_latency_s=5e-6, flash_attention=True,
        source="NVIDIA A100 Tensor Core GPU datasheet (2021): SXM4 312 TFLOP/s fp16/bf16 tensor dense, 19.5 fp32, "
               "1555 GB/s HBM2 (40 GB), 400 W; NVML grid 1410 MHz down in 15 MHz steps, memory 1215 MHz",
    ),
    "h100": CardSpec(
        key="h100", name="NVIDIA H100 80GB HBM3 (simulated)", compute_capability=(9, 0),
        max_sm_clock_mhz=1980, min_sm_clock_mhz=345, sm_clock_step_mhz=15, memory_clocks_mhz=(2619, 1593),
        memory_total_bytes=81559 * _MIB, memory_bandwidth_gb_s=3350.0, fp16_tensor_tflops=989.0,
        bf16_tensor_tflops=989.0, fp8_tensor_tflops=1979.0, fp32_tflops=67.0, default_power_limit_w=700.0,
        min_power_limit_w=200.0, max_power_limit_w=700.0, idle_power_w=70.0, static_busy_power_w=60.0,
        memory_busy_power_w=120.0, sm_busy_power_w=600.0, kernel_latency_s=4e-6, flash_attention=True,
        source="NVIDIA H100 Tensor Core GPU datasheet (2023): SXM 989 TFLOP/s fp16/bf16 tensor dense, 1979 fp8, "
               "67 fp32, 3.35 TB/s HBM3, 700 W; NVML grid 345-1980 MHz in 15 MHz steps, memory 2619/1593 MHz",
    ),
    "h200": CardSpec(
        key="h200", name="NVIDIA H200 (simulated)", compute_capability=(9, 0),
        max_sm_clock_mhz=1980, min_sm_clock_mhz=345, sm_clock_step_mhz=15, memory_clocks_mhz=(3201,),
        memory_total_bytes=143771 * _MIB, memory_bandwidth_gb_s=4800.0, fp16_tensor_tflops=989.0,
        bf16_tensor_tflops=989.0, fp8_tensor_tflops=1979.0, fp32_tflops=67.0, default_power_limit_w=700.0,
        min_power_limit_w=200.0, max_power_limit_w=700.0, idle_power_w=75.0, static_busy_power_w=60.0,
        memory_busy_power_w=140.0, sm_busy_power_w=600.0, kernel_latency_s=4e-6, flash_attention=True,
        source="NVIDIA H200 Tensor Core GPU product brief (2024): SXM 989 TFLOP/s fp16/bf16 tensor dense, 1979 fp8, "
               "141 GB HBM3e at 4.8 TB/s, up to 700 W; H100's SM grid; memory clock 3201 MHz",
    ),
}
DEFAULT_CARD = DEFAULT_SIMULATED_CARD
# The device-string parser (sdbench.spec.devices) names the cards without importing this module.
assert tuple(CARDS) == SIMULATED_CARD_KEYS, (tuple(CARDS), SIMULATED_CARD_KEYS)
#: The fourth group of a simulated card's UUID (hex, like NVML's): the H100 keeps the UUID it always had.
_CARD_UUID_CODES = {"v100": "7000", "a100": "a100", "h100": "8000", "h200": "9200"}

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

# Share of compute-bound time spent in tensor-core / plain FP16 pipes (for the DCGM-like counters).
_TENSOR_SHARE_OF_COMPUTE = 0.8
_FP16_SHARE_OF_COMPUTE = 0.15

_REASON_IDLE = CLOCK_EVENT_REASON_BITS["gpu_idle"]
_REASON_APP_CLOCKS = CLOCK_EVENT_REASON_BITS["applications_clocks_setting"]
_REASON_POWER_CAP = CLOCK_EVENT_REASON_BITS["sw_power_cap"]
_REASON_THERMAL = CLOCK_EVENT_REASON_BITS["sw_thermal_slowdown"] | CLOCK_EVENT_REASON_BITS["hw_thermal_slowdown"]


# ---- work ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkAmount:
    """What one piece of a pipeline call asks of the device: FLOPs, bytes moved, kernels launched."""

    flop: float = 0.0
    bytes: float = 0.0
    kernels: int = 0

    def __add__(self, other: WorkAmount) -> WorkAmount:
        return WorkAmount(self.flop + other.flop, self.bytes + other.bytes, self.kernels + other.kernels)

    def times(self, n: float) -> WorkAmount:
        return WorkAmount(self.flop * n, self.bytes * n, int(round(self.kernels * n)))


@dataclass(frozen=True)
class WorkProfile:
    """One pipeline call as the device sees it: text encoding, ``unet_evals`` UNet evaluations, a VAE
    decode, and a little overhead (scheduler arithmetic, copies); ``dtype`` picks the card's rate."""

    text: WorkAmount
    unet_eval: WorkAmount
    vae_decode: WorkAmount
    unet_evals: int
    dtype: str = "fp16"
    overhead: WorkAmount = field(default_factory=lambda: WorkAmount(kernels=20))

    def total(self) -> WorkAmount:
        return self.text + self.unet_eval.times(self.unet_evals) + self.vae_decode + self.overhead

    def phases(self) -> list[tuple[str, WorkAmount]]:
        """The call's work in order, as the events of a call execute it."""
        return ([("text_encode", self.text)] + [("unet_eval", self.unet_eval)] * self.unet_evals
                + [("vae_decode", self.vae_decode), ("overhead", self.overhead)])


@dataclass(frozen=True)
class Work:
    """A piece of work in seconds at the reference clocks, split by what bounds it."""

    compute_s: float
    memory_s: float
    latency_s: float

    @property
    def total_s(self) -> float:
        return self.compute_s + self.memory_s + self.latency_s


@dataclass(frozen=True)
class CallTruth:
    """The model's noiseless answer for one call at a clock setting (no heat, no drift)."""

    sm_clock_mhz: float  # the clock the work ran at (below the asked one where the power limit binds)
    time_s: float
    energy_j: float
    power_capped: bool

    @property
    def power_w(self) -> float:
        return self.energy_j / self.time_s

    @property
    def edp_js(self) -> float:
        return self.energy_j * self.time_s


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

    ``card`` picks the published figures (:data:`CARDS`); any :class:`CardSpec` field can be overridden by
    keyword (``max_sm_clock_mhz=1000``...). Fault injection: ``lock_fails`` (SM clock locking raises
    :class:`GpuNoPermission`), ``clock_drift_mhz`` (locked clocks are achieved this far off),
    ``thermal_throttle_above_c``, ``unsupported`` (method names that raise :class:`GpuNotSupported`),
    ``no_permission`` (every control method raises :class:`GpuNoPermission`).
    """

    simulated = True

    def __init__(
        self,
        *,
        card: str | CardSpec = DEFAULT_CARD,
        index: int = 0,
        name: str | None = None,
        max_sm_clock_mhz: int | None = None,
        min_sm_clock_mhz: int | None = None,
        sm_clock_step_mhz: int | None = None,
        memory_clocks_mhz: Iterable[int] | None = None,
        memory_total_bytes: int | None = None,
        memory_used_bytes: int = 512 * _MIB,
        idle_power_w: float | None = None,
        static_busy_power_w: float | None = None,
        memory_busy_power_w: float | None = None,
        sm_busy_power_w: float | None = None,
        default_power_limit_w: float | None = None,
        min_power_limit_w: float | None = None,
        max_power_limit_w: float | None = None,
        v_min: float = 0.60,
        v_max: float = 1.05,
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
        noise_cv: float = 0.0,
        power_noise_cv: float = 0.0,
        noise_seed: int = 0,
        outlier_probability: float = 0.0,
        outlier_factor: float = 1.5,
        slowdown_rel_per_s: float = 0.0,
        lock_fails: bool = False,
        clock_drift_mhz: int = 0,
        unsupported: Iterable[str] = (),
        no_permission: bool = False,
        clock: VirtualClock | None = None,
    ) -> None:
        if isinstance(card, str):
            if card not in CARDS:
                raise ConfigError("simulated card", card, allowed=sorted(CARDS))
            card = CARDS[card]
        overrides = {k: v for k, v in dict(
            name=name, max_sm_clock_mhz=max_sm_clock_mhz, min_sm_clock_mhz=min_sm_clock_mhz,
            sm_clock_step_mhz=sm_clock_step_mhz,
            memory_clocks_mhz=None if memory_clocks_mhz is None else tuple(memory_clocks_mhz),
            memory_total_bytes=memory_total_bytes, idle_power_w=idle_power_w, static_busy_power_w=static_busy_power_w,
            memory_busy_power_w=memory_busy_power_w, sm_busy_power_w=sm_busy_power_w,
            default_power_limit_w=default_power_limit_w, min_power_limit_w=min_power_limit_w,
            max_power_limit_w=max_power_limit_w).items() if v is not None}
        spec = replace(card, **overrides)
        self._validate(spec, v_min, v_max, energy_update_period_s, power_report_lag_s, thermal_time_constant_s,
                       thermal_throttle_factor, noise_cv, power_noise_cv, outlier_probability, outlier_factor)
        unsupported_set = frozenset(unsupported)
        unknown = unsupported_set - SIMULATED_METHOD_NAMES
        if unknown:
            raise ConfigError("unsupported", sorted(unknown), allowed=sorted(SIMULATED_METHOD_NAMES))

        self.card = spec
        self.index = index
        self.name = spec.name
        self._f_max = int(spec.max_sm_clock_mhz)
        self._f_min = int(spec.min_sm_clock_mhz)
        grid = list(range(self._f_max, self._f_min, -int(spec.sm_clock_step_mhz)))
        grid.append(self._f_min)
        self._sm_grid = grid
        self._sm_grid_set = frozenset(grid)
        self._sm_grid_text = (f"{self._f_min}..{self._f_max} MHz in {spec.sm_clock_step_mhz} MHz steps "
                              "(supported_sm_clocks_mhz)")
        self._mem_clocks = sorted({int(c) for c in spec.memory_clocks_mhz}, reverse=True)
        self._fm_max = self._mem_clocks[0]
        self._memory_used_bytes = int(memory_used_bytes)
        self._v_min = float(v_min)
        self._v_max = float(v_max)
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
        self.noise_cv = float(noise_cv)
        self.power_noise_cv = float(power_noise_cv)
        self.noise_seed = int(noise_seed)
        self._outlier_p = float(outlier_probability)
        self._outlier_factor = float(outlier_factor)
        self._slowdown_rel_per_s = float(slowdown_rel_per_s)
        self._rng = random.Random(self.noise_seed)
        self._lock_fails = lock_fails
        self._drift_mhz = int(clock_drift_mhz)
        self._unsupported = unsupported_set
        self._no_permission = no_permission
        self.power_instant_source = "simulated"
        self.power_instant_fallback_reason = None

        self.clock = clock if clock is not None else VirtualClock()
        self._lock = threading.RLock()
        self._locked_sm: tuple[int, int] | None = None
        self._locked_mem: tuple[int, int] | None = None
        self._power_limit_w = float(spec.default_power_limit_w)
        now = self.clock.now_s()
        self._t_epoch = now
        self._t = now
        self._energy_j = 0.0
        self._temp_c = self._ambient_c + self._r_c_per_w * spec.idle_power_w
        self._thermal_throttled = False
        self._busy_depth = 0
        self._utilization = 1.0
        self._work: Work = Work(*_BARE_SHARES)
        self._power_factor = 1.0
        self._progress_ref_s = 0.0
        # (time, energy) at segment ends; power is constant in between, so interpolation is exact.
        self._hist_t: list[float] = [now]
        self._hist_e: list[float] = [0.0]
        # The call in progress (events from the Runner): its noise and which parts it has done.
        self._profile: WorkProfile | None = None
        self._profile_work: dict[str, Work] = {}
        self._call_factor = 1.0
        self._call_power_factor = 1.0
        self._call_done: collections.Counter[str] = collections.Counter()
        self.calls_started = 0
        self.clock.listeners.append(self._on_clock_move)

    @staticmethod
    def _validate(spec: CardSpec, v_min: float, v_max: float, period_s: float, lag_s: float, tau_s: float,
                  throttle_factor: float, noise_cv: float, power_noise_cv: float, outlier_p: float,
                  outlier_factor: float) -> None:
        if not 0 < spec.min_sm_clock_mhz < spec.max_sm_clock_mhz:
            raise ConfigError("min_sm_clock_mhz", spec.min_sm_clock_mhz,
                              reason=f"need 0 < min < max_sm_clock_mhz={spec.max_sm_clock_mhz}")
        if spec.sm_clock_step_mhz <= 0:
            raise ConfigError("sm_clock_step_mhz", spec.sm_clock_step_mhz, reason="must be positive")
        if not spec.memory_clocks_mhz or min(spec.memory_clocks_mhz) <= 0:
            raise ConfigError("memory_clocks_mhz", list(spec.memory_clocks_mhz), reason="need at least one positive clock")
        if not 0 < v_min <= v_max:
            raise ConfigError("v_min", v_min, reason=f"need 0 < v_min <= v_max={v_max}")
        for name in ("idle_power_w", "static_busy_power_w", "memory_busy_power_w", "sm_busy_power_w"):
            if not getattr(spec, name) >= 0:
                raise ConfigError(name, getattr(spec, name), reason="must be >= 0 W")
        if spec.sm_busy_power_w <= 0:
            raise ConfigError("sm_busy_power_w", spec.sm_busy_power_w, reason="must be positive")
        if not spec.min_power_limit_w <= spec.default_power_limit_w <= spec.max_power_limit_w:
            raise ConfigError("default_power_limit_w", spec.default_power_limit_w,
                              allowed=f"{spec.min_power_limit_w}..{spec.max_power_limit_w} W")
        if lag_s < 0:
            raise ConfigError("power_report_lag_s", lag_s, reason="must be >= 0")
        if period_s <= 0:
            raise ConfigError("energy_update_period_s", period_s, reason="must be positive")
        if tau_s <= 0:
            raise ConfigError("thermal_time_constant_s", tau_s, reason="must be positive")
        if not 0 < throttle_factor <= 1:
            raise ConfigError("thermal_throttle_factor", throttle_factor, allowed="(0, 1]")
        for name, value in (("noise_cv", noise_cv), ("power_noise_cv", power_noise_cv)):
            if not 0 <= value < 1:
                raise ConfigError(name, value, allowed="[0, 1)")
        if not 0 <= outlier_p < 1:
            raise ConfigError("outlier_probability", outlier_p, allowed="[0, 1)")
        if not outlier_factor >= 1:
            raise ConfigError("outlier_factor", outlier_factor, reason="must be >= 1")

    # ---- model (pure functions of the parameters) ---------------------------------------------
    def _voltage_v(self, f_mhz: float) -> float:
        frac = (f_mhz - self._f_min) / (self._f_max - self._f_min)
        return self._v_min + (self._v_max - self._v_min) * frac * frac

    def _mem(self, mem_clock_mhz: float | None) -> float:
        return float(self._fm_max if mem_clock_mhz is None else mem_clock_mhz)

    def work_for(self, amount: WorkAmount, dtype: str = "fp16") -> Work:
        """``amount`` in seconds at the reference clocks on this card (see the module docstring)."""
        compute_s = 0.0
        if amount.flop:
            compute_s = amount.flop / (self.card.dense_tflops(dtype) * 1e12 * COMPUTE_EFFICIENCY)
        return Work(
            compute_s=compute_s,
            memory_s=amount.bytes * DRAM_SHARE / (self.card.memory_bandwidth_gb_s * 1e9 * MEMORY_EFFICIENCY),
            latency_s=amount.kernels * self.card.kernel_latency_s,
        )

    def _shares(self, work: Work, f: float, fm: float) -> tuple[float, float, float]:
        """(time at these clocks, SM activity, memory activity) of ``work``."""
        sm_part = (work.compute_s + work.latency_s) * self._f_max / f
        mem_part = work.memory_s * self._fm_max / fm
        t = sm_part + mem_part
        if t <= 0:
            return 0.0, 0.0, 0.0
        compute = work.compute_s * self._f_max / f
        latency = work.latency_s * self._f_max / f
        a_sm = min(1.0, (compute + LATENCY_SM_ACTIVITY * latency) / t)
        a_mem = min(1.0, (mem_part + COMPUTE_MEMORY_ACTIVITY * compute) / t)
        return t, a_sm, a_mem

    def _power_for(self, work: Work, f: float, fm: float, utilization: float = 1.0) -> float:
        _, a_sm, a_mem = self._shares(work, f, fm)
        c = self.card
        dynamic = c.sm_busy_power_w * f * self._voltage_v(f) ** 2 / (self._f_max * self._v_max**2) * a_sm
        memory = c.memory_busy_power_w * fm / self._fm_max * a_mem
        return c.idle_power_w + utilization * (c.static_busy_power_w + memory + dynamic)

    def _scale_for(self, work: Work, f: float, fm: float) -> float:
        t, _, _ = self._shares(work, f, fm)
        return t / work.total_s if work.total_s > 0 else 1.0

    def expected_busy_power_w(self, sm_clock_mhz: float, mem_clock_mhz: float | None = None,
                              utilization: float = 1.0, work: Work | None = None) -> float:
        """Model board power in watts while busy at this clock (top memory clock by default) with ``work``'s
        activity mix (a bare workload's mix when None)."""
        return self._power_for(work or Work(*_BARE_SHARES), sm_clock_mhz, self._mem(mem_clock_mhz), utilization)

    def expected_time_scale(self, sm_clock_mhz: float, mem_clock_mhz: float | None = None,
                            work: Work | None = None) -> float:
        """How many times longer ``work`` takes at this clock than at the top SM and memory clocks."""
        return self._scale_for(work or Work(*_BARE_SHARES), sm_clock_mhz, self._mem(mem_clock_mhz))

    def expected_energy_per_ref_s_j(self, sm_clock_mhz: float, mem_clock_mhz: float | None = None) -> float:
        """Model energy in joules for bare work that takes one second at the reference clocks."""
        return self.expected_busy_power_w(sm_clock_mhz, mem_clock_mhz) * self.expected_time_scale(
            sm_clock_mhz, mem_clock_mhz)

    def expected_energy_optimal_sm_clock_mhz(self, mem_clock_mhz: float | None = None) -> int:
        """The grid SM clock that minimises energy per unit of bare work (ignores power cap and heat)."""
        return min(self._sm_grid, key=lambda f: self.expected_energy_per_ref_s_j(f, mem_clock_mhz))

    def _capped_clock(self, work: Work, f_asked: float, fm: float, limit_w: float,
                      utilization: float = 1.0) -> tuple[float, bool]:
        if self._power_for(work, f_asked, fm, utilization) <= limit_w:
            return f_asked, False
        fitting = [g for g in self._sm_grid
                   if g <= f_asked and self._power_for(work, g, fm, utilization) <= limit_w]
        return float(fitting[0] if fitting else self._f_min), True

    def expected_call(self, profile: WorkProfile, sm_clock_mhz: float | None = None,
                      mem_clock_mhz: float | None = None, power_limit_w: float | None = None) -> CallTruth:
        """The true time and energy of one call of ``profile`` with the SM clock locked at ``sm_clock_mhz``
        (None: the default, unlocked) at the power limit (default: the card's): no noise, heat or drift."""
        fm = self._mem(mem_clock_mhz)
        f_asked = float(self._f_max if sm_clock_mhz is None else sm_clock_mhz)
        limit_w = self.card.default_power_limit_w if power_limit_w is None else power_limit_w
        time_s = energy_j = 0.0
        capped_any = False
        clocks = []
        for _, amount in profile.phases():
            work = self.work_for(amount, profile.dtype)
            if work.total_s <= 0:
                continue
            f, capped = self._capped_clock(work, f_asked, fm, limit_w)
            capped_any = capped_any or capped
            t = work.total_s * self._scale_for(work, f, fm)
            time_s += t
            energy_j += t * self._power_for(work, f, fm)
            clocks.append((t, f))
        f_eff = sum(t * f for t, f in clocks) / time_s if time_s else f_asked
        return CallTruth(f_eff, time_s, energy_j, capped_any)

    def expected_optimum(self, profile: WorkProfile, objective: str = "energy",
                         mem_clock_mhz: float | None = None) -> tuple[int, CallTruth]:
        """The grid SM clock minimising ``objective`` (``energy`` per call, or ``edp``) and its truth."""
        if objective not in ("energy", "edp"):
            raise ConfigError("objective", objective, allowed=("energy", "edp"))
        truths = {f: self.expected_call(profile, f, mem_clock_mhz) for f in self._sm_grid}

        def key(f: int) -> float:
            return truths[f].energy_j if objective == "energy" else truths[f].edp_js

        best = min(self._sm_grid, key=key)
        return best, truths[best]

    @property
    def default_state(self) -> SimulatedGpuState:
        """The settings at construction; the resets bring :meth:`state` back to this."""
        return SimulatedGpuState(None, None, float(self.card.default_power_limit_w))

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
        """The device's state now; constant until the next state change."""
        fm = float(self._locked_mem[1] if self._locked_mem else self._fm_max)
        busy = self._busy_depth > 0
        reasons = 0
        work = self._work
        if not busy:
            f = float(self._locked_sm[0] if self._locked_sm else self._f_min)
            reasons |= _REASON_IDLE
        else:
            f = float(self._locked_sm[1] if self._locked_sm else self._f_max)
            if f < self._f_max:
                reasons |= _REASON_APP_CLOCKS
            f, capped = self._capped_clock(work, f, fm, self._power_limit_w / self._power_factor, self._utilization)
            if capped:
                reasons |= _REASON_POWER_CAP
        if self._thermal_throttled:
            reasons |= _REASON_THERMAL
            if busy:
                f = float(self._highest_grid_clock_at_most(f * self._throttle_factor))
        if self._locked_sm is not None and self._drift_mhz:
            f = min(max(f + self._drift_mhz, self._f_min), self._f_max)
        if busy:
            power_w = self._power_for(work, f, fm, self._utilization) * self._power_factor
            scale = self._scale_for(work, f, fm)
        else:
            power_w = self.card.idle_power_w
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
            self._hist_t.append(self._t)
            self._hist_e.append(self._energy_j)
        # Forget what no query can reach any more (in batches: the lists are searched by bisection).
        if len(self._hist_t) > 4096:
            horizon = self._t - 2.0 * max(self._avg_window_s, self._lag_s, self.energy_update_period_s)
            cut = bisect.bisect_right(self._hist_t, horizon) - 1
            if cut > 0:
                del self._hist_t[:cut]
                del self._hist_e[:cut]

    def _on_clock_move(self, t_s: float) -> None:
        with self._lock:
            self._integrate_to(t_s)

    def _advance(self) -> None:
        """Bring the model up to the clock (a no-op when the clock's listener already did)."""
        self._integrate_to(self.clock.now_s())

    def _energy_at(self, t: float) -> float:
        """Integrated energy at time ``t`` within the kept history (linear: power is piecewise constant)."""
        ts, es = self._hist_t, self._hist_e
        if t <= ts[0]:
            return es[0]
        i = bisect.bisect_left(ts, t)
        if i >= len(ts):
            return es[-1]
        t_i, e_i = ts[i], es[i]
        prev_t, prev_e = ts[i - 1], es[i - 1]
        if t_i == prev_t:
            return e_i
        return prev_e + (e_i - prev_e) * (t - prev_t) / (t_i - prev_t)

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
            uuid=f"GPU-51a0a7ed-0000-4000-{_CARD_UUID_CODES.get(self.card.key, '8000')}-{self.index:012d}",
            driver_version="simulated",
            cuda_driver_version=None,
            memory_total_bytes=int(self.card.memory_total_bytes),
            power_limit_w=limit_w,
            default_power_limit_w=float(self.card.default_power_limit_w),
            min_power_limit_w=float(self.card.min_power_limit_w),
            max_power_limit_w=float(self.card.max_power_limit_w),
            default_sm_clock_mhz=self._f_max,
            max_sm_clock_mhz=self._f_max,
            compute_capability=tuple(self.card.compute_capability),  # type: ignore[arg-type]
            simulated=True,
            physical_index=self.index,
        )

    def total_energy_mj(self) -> int:
        with self._lock:
            self._check("total_energy_mj")
            self._advance()
            period = self.energy_update_period_s
            last_tick = self._t_epoch + math.floor((self._t - self._t_epoch) / period + 1e-9) * period
            return self._initial_energy_mj + math.floor(self._energy_at(last_tick) * 1000.0 + 1e-6)

    def power_instant_w(self) -> float:
        if not self._lag_s:
            return self._now_point("power_instant_w").power_w
        with self._lock:
            self._check("power_instant_w")
            self._advance()
            return self._power_at(self._t - self._lag_s)

    def _power_at(self, t: float) -> float:
        """The (piecewise-constant) power at time ``t`` within the kept history; idle before it."""
        ts, es = self._hist_t, self._hist_e
        if t < ts[0]:
            return self.card.idle_power_w
        i = bisect.bisect_right(ts, t)  # the first segment end after t
        while i < len(ts) and ts[i] <= ts[i - 1]:
            i += 1
        if i >= len(ts):
            return self._operating_point().power_w
        return (es[i] - es[i - 1]) / (ts[i] - ts[i - 1])

    def power_average_w(self) -> float:
        """Trailing average over ``power_average_window_s`` (shorter right after construction)."""
        with self._lock:
            self._check("power_average_w")
            self._advance()
            start = max(self._t - self._avg_window_s, self._t_epoch)
            if self._t <= start:
                return self._operating_point().power_w
            return (self._energy_j - self._energy_at(start)) / (self._t - start)

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
        """Model activity fractions now: ``sm_active`` is the utilisation; the current work's time at these
        clocks splits into compute-bound (tensor / fp16 pipes) and memory-bound (dram) shares."""
        with self._lock:
            self._check("activity")
            self._advance()
            return self._activity_now()

    def _activity_now(self) -> dict[str, float]:
        op = self._operating_point()
        if not op.busy:
            return {"sm_active": 0.0, "tensor_active": 0.0, "dram_active": 0.0, "fp16_active": 0.0}
        u = self._utilization
        w = self._work
        t, _, _ = self._shares(w, op.sm_clock_mhz, op.mem_clock_mhz)
        compute_share = (w.compute_s + w.latency_s) * self._f_max / op.sm_clock_mhz / t if t else 0.0
        memory_share = w.memory_s * self._fm_max / op.mem_clock_mhz / t if t else 0.0
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
        for name, value in (("min_mhz", min_mhz), ("max_mhz", max_mhz)):
            if value not in self._sm_grid_set:
                raise ConfigError(name, value, allowed=self._sm_grid_text)
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
        for name, value in (("min_mhz", min_mhz), ("max_mhz", max_mhz)):
            if value not in self._mem_clocks:
                raise ConfigError(name, value, allowed=self._mem_clocks)
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
        c = self.card
        if not c.min_power_limit_w <= watts <= c.max_power_limit_w:
            raise ConfigError("power_limit_w", watts, allowed=f"{c.min_power_limit_w:g}..{c.max_power_limit_w:g} W")
        with self._lock:
            self._advance()
            self._power_limit_w = float(watts)

    # ---- work on the virtual clock ------------------------------------------------------------
    @contextmanager
    def workload(self, utilization: float = 1.0) -> Iterator[None]:
        """Mark the device busy (a bare work mix unless a modelled piece of work runs inside).

        Time inside passes only through :meth:`execute`, the Runner's call events, or
        ``clock.sleep`` (busy time at the current clock). Nesting is allowed.
        """
        if not 0.0 < utilization <= 1.0:
            raise ConfigError("utilization", utilization, allowed="(0, 1]")
        with self._lock:
            self._advance()
            if self._busy_depth == 0:
                self._utilization = utilization
            self._busy_depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._advance()
                self._busy_depth -= 1

    def execute(self, work: Work, *, time_factor: float = 1.0, power_factor: float = 1.0) -> float:
        """Run ``work`` (seconds at the reference clocks) at whatever clock the device gives it, moving the
        clock until done; returns the seconds it took. Power and thermal limits apply on the way."""
        ref_s = work.total_s * time_factor
        if ref_s <= 0:
            return 0.0
        with self._lock:
            self._advance()
            saved = (self._work, self._power_factor, self._progress_ref_s, self._utilization)
            self._work, self._power_factor, self._progress_ref_s = work, power_factor, 0.0
            if self._busy_depth == 0:
                self._utilization = 1.0  # work outside any workload() runs at full utilisation
            self._busy_depth += 1
            t_start = self._t
        try:
            thermal = self._throttle_above_c is not None
            max_step_s = min(0.05, self._tau_s / 20.0) if thermal else math.inf
            while True:
                with self._lock:
                    self._advance()
                    owed_ref_s = ref_s - self._progress_ref_s
                    dt = owed_ref_s * self._operating_point().time_scale
                    now = self.clock.now_s()
                    # Done once what is owed is below what the clock can still resolve (rounding).
                    if dt <= max(1e-12, 4.0 * math.ulp(now)):
                        break
                self.clock.advance_to(now + min(dt, max_step_s))
        finally:
            with self._lock:
                self._advance()
                self._busy_depth -= 1
                self._work, self._power_factor, self._progress_ref_s, self._utilization = saved
        return self._t - t_start

    def execute_ref_s(self, ref_s: float) -> float:
        """Run bare work worth ``ref_s`` seconds at the reference clocks (tests); returns the seconds taken."""
        shares = _BARE_SHARES
        return self.execute(Work(shares[0] * ref_s, shares[1] * ref_s, shares[2] * ref_s))

    # ---- the Runner's call events ---------------------------------------------------------------
    def set_work_profile(self, profile: WorkProfile | None) -> None:
        """What one pipeline call asks of the device, for the call events (None: calls do no work)."""
        self._profile = profile
        self._profile_work = {} if profile is None else {
            "text_encode": self.work_for(profile.text, profile.dtype),
            "unet_eval": self.work_for(profile.unet_eval, profile.dtype),
            "vae_decode": self.work_for(profile.vae_decode, profile.dtype),
            "overhead": self.work_for(profile.overhead, profile.dtype),
        }

    @property
    def work_profile(self) -> WorkProfile | None:
        return self._profile

    def _draw_call_noise(self) -> None:
        rng = self._rng
        factor = 1.0
        if self.noise_cv > 0:
            sigma = math.sqrt(math.log1p(self.noise_cv**2))
            factor = rng.lognormvariate(-0.5 * sigma * sigma, sigma)
        if self._outlier_p > 0 and rng.random() < self._outlier_p:
            factor *= self._outlier_factor
        if self._slowdown_rel_per_s:
            factor *= 1.0 + self._slowdown_rel_per_s * (self.clock.now_s() - self._t_epoch)
        power = 1.0
        if self.power_noise_cv > 0:
            sigma = math.sqrt(math.log1p(self.power_noise_cv**2))
            power = rng.lognormvariate(-0.5 * sigma * sigma, sigma)
        self._call_factor, self._call_power_factor = factor, power

    def _run_part(self, part: str, count: int = 1) -> None:
        work = self._profile_work.get(part)
        if work is None:
            return
        for _ in range(count):
            self.execute(work, time_factor=self._call_factor, power_factor=self._call_power_factor)
        self._call_done[part] += count

    def on_event(self, label: str) -> None:
        """A mark inside a pipeline call (``start``, ``text_end``, ``step``, ``decode_end``, ``end``, ...): the
        device does the work that ended there. ``end`` does whatever the call's marks did not cover."""
        if label == "start":
            self.calls_started += 1
            self._call_done = collections.Counter()
            self._draw_call_noise()
        elif label == "text_end":
            self._run_part("text_encode")
        elif label == "step":
            self._run_part("unet_eval")
        elif label == "decode_end":
            self._run_part("vae_decode")
        elif label == "end" and self._profile is not None:
            done = self._call_done
            if not done["text_encode"]:
                self._run_part("text_encode")
            missing = self._profile.unet_evals - done["unet_eval"]
            if missing > 0:
                self._run_part("unet_eval", missing)
            if not done["vae_decode"]:
                self._run_part("vae_decode")
            self._run_part("overhead")

    def describe(self) -> Mapping[str, Any]:
        """The simulation's settings, for records (card, noise, seed, faults)."""
        return {"card": self.card.key, "noise_cv": self.noise_cv, "power_noise_cv": self.power_noise_cv,
                "noise_seed": self.noise_seed, "outlier_probability": self._outlier_p,
                "slowdown_rel_per_s": self._slowdown_rel_per_s, "clock_drift_mhz": self._drift_mhz,
                "clock": "virtual"}
