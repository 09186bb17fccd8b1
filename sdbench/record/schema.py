"""The record schema: typed, frozen views of a flat record row, and the version every row carries.

A record is serialised as ONE flat row of JSON values (the same row feeds results JSON Lines, the
``--export-metrics`` document, pytest-benchmark's ``extra_info``, CSV, reports and comparisons); every metric
carries its unit in its name. :class:`Record` is the typed view of such a row: its parts (:class:`CaseInfo`,
:class:`Timing`, :class:`Energy`, :class:`Telemetry`, :class:`Memory`, :class:`Work`, :class:`Environment`,
:class:`ClockPoint`) each own a set of the row's keys (:func:`part_of`), name the ones readers use as typed
attributes, and keep all of theirs in ``fields``, so ``Record.from_row(row).to_row() == row``.

Every measured quantity with rounds is a :class:`MetricStats`: its per-round samples (when saved), the
estimate (the median), its interval, the method that made the interval, the unit and the number of rounds.
:func:`metric_stats` is the one accessor: the samples when the row has them, else the row's summary.

Versions (``schema_version`` on every row and document; rows without one are version 1):

1. sdbench before ``sdbench/record/``: no ``schema_version`` on rows, only on the export document.
2. ``schema_version`` and ``record_type`` on every row and document; the drifted keys fixed
   (``memory_memory_unavailable_reason`` -> ``memory_unavailable_reason``,
   ``memory_nvml_memory_unavailable_reason`` -> ``memory_nvml_unavailable_reason``,
   ``telemetry_telemetry`` -> ``telemetry_available``/``telemetry_reason``, ``activity_<name>`` ->
   ``activity_<name>_mean``). :mod:`sdbench.record.io` upgrades older rows step by step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: The version of the rows this sdbench writes (and the newest it reads).
SCHEMA_VERSION = 4
#: The oldest version :mod:`sdbench.record.io` can upgrade.
OLDEST_SCHEMA_VERSION = 1
#: ``record_type`` of a measured case (and clock point); other types (e.g. ``memory_stress_oom``) are kept
#: and passed through, but carry no case to compare.
CASE_RECORD = "case"
#: ``record_type`` of the ``--export-metrics`` document itself.
EXPORT_DOCUMENT = "export-metrics"
#: The first keys of every row, in this order.
HEADER_KEYS: tuple[str, ...] = ("schema_version", "record_type")

#: Units of the metrics that carry per-round samples (``<name>_samples``).
METRIC_UNITS: dict[str, str] = {
    "time_per_image_s": "s/image",
    "energy_per_image_j": "J/image",
    "net_energy_per_image_j": "J/image",
    "power_w": "W",
}

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _number(value: Any) -> float | None:
    """A finite real number as float; None for anything else (bools, NaN, strings, None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def unit_of(name: str) -> str:
    """A metric's unit, from :data:`METRIC_UNITS` or its name's suffix (``_s``, ``_j``, ``_w``)."""
    if name in METRIC_UNITS:
        return METRIC_UNITS[name]
    for suffix, unit in (("_s", "s"), ("_j", "J"), ("_w", "W"), ("_mhz", "MHz"), ("_bytes", "B")):
        if name.endswith(suffix):
            return unit
    return ""


# --- one metric -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricStats:
    """One metric of one record: per-round samples and their summary, in ``unit``.

    ``estimate`` is the median (of the samples when there are any). ``low``/``high`` is the interval of the
    median the row states (``<name>_ci95_low``/``_ci95_high``, made by ``method``), None where it states none
    (:meth:`with_interval` computes one from the samples). ``mean`` and ``stddev`` are the samples' (ddof=1),
    else the row's summary. ``n`` is the number of rounds (1 for a lone value). ``source`` says where the
    numbers came from ("samples", "record summary", "record median only", "stats.data", ...), and
    ``invalid_samples`` why saved samples were not usable (they are then ignored, never half-used).
    """

    name: str
    unit: str
    estimate: float
    n: int
    samples: tuple[float, ...] | None = None
    low: float | None = None
    high: float | None = None
    method: str | None = None
    mean: float | None = None
    stddev: float | None = None
    source: str = ""
    invalid_samples: str | None = None

    @property
    def median(self) -> float:
        """The estimate (the median), by its statistical name."""
        return self.estimate

    @property
    def has_samples(self) -> bool:
        return self.samples is not None

    @property
    def has_noise(self) -> bool:
        """Whether the spread is known (two or more rounds)."""
        return self.n >= 2 and self.stddev is not None

    @property
    def mean_value(self) -> float:
        """The mean where known, else the estimate."""
        return self.estimate if self.mean is None else self.mean

    def rounds(self, summary_as: str = "estimate") -> tuple[float, ...]:
        """The per-round values: the samples, else the summary as one round, its ``estimate`` (the median) or,
        with ``summary_as="mean"``, its mean (for analyses whose statistic is the mean over rounds)."""
        if self.samples is not None:
            return self.samples
        if summary_as not in ("estimate", "mean"):
            raise ValueError(f"summary_as must be 'estimate' or 'mean', not {summary_as!r}")
        return (self.mean_value,) if summary_as == "mean" else (self.estimate,)

    @classmethod
    def from_samples(cls, name: str, samples: Sequence[float], *, unit: str | None = None, source: str = "samples",
                     low: float | None = None, high: float | None = None, method: str | None = None) -> MetricStats:
        """From per-round samples (finite numbers): median, mean and stddev as :func:`sdbench.stats.summarize`
        computes them; ``low``/``high``/``method`` as the caller states them (see :meth:`with_interval`)."""
        from sdbench.stats import summarize

        values = tuple(float(v) for v in samples)
        s = summarize(values)
        return cls(name, unit_of(name) if unit is None else unit, s.median, s.n, values, low, high, method,
                   s.mean, s.stddev, source)

    @classmethod
    def from_summary(cls, name: str, median: float, *, mean: float | None = None, stddev: float | None = None,
                     n: int | None = None, low: float | None = None, high: float | None = None,
                     method: str | None = None, unit: str | None = None, source: str = "record summary",
                     invalid_samples: str | None = None) -> MetricStats:
        """From summary statistics only; without ``n`` and ``stddev`` it is a lone value (n 1, noise unknown)."""
        unit = unit_of(name) if unit is None else unit
        if n is None or stddev is None:
            return cls(name, unit, median, 1, None, low, high, method, median if mean is None else mean, 0.0,
                       "record median only" if source == "record summary" else source, invalid_samples)
        return cls(name, unit, median, n, None, low, high, method, median if mean is None else mean, stddev, source,
                   invalid_samples)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], name: str) -> MetricStats | None:
        """The ONE accessor of a record's metric: ``<name>_samples`` when the row saved usable ones, else its
        summary (``<name>_median``, or the bare ``<name>`` such as ``power_w``, with ``_mean``, ``_stddev`` and
        ``_n``); None when the row has neither."""
        low, high = _number(row.get(f"{name}_ci95_low")), _number(row.get(f"{name}_ci95_high"))
        method = row.get(f"{name}_ci_method") if isinstance(row.get(f"{name}_ci_method"), str) else None
        raw = row.get(f"{name}_samples")
        invalid = None
        if raw is not None:
            invalid = _invalid_samples(raw)
            if invalid is None:
                return cls.from_samples(name, raw, low=low, high=high, method=method)
        median = _number(row.get(f"{name}_median"))
        if median is None:
            median = _number(row.get(name))
        if median is None:
            return None
        return cls.from_summary(name, median, mean=_number(row.get(f"{name}_mean")),
                                stddev=_number(row.get(f"{name}_stddev")), n=_count(row.get(f"{name}_n")),
                                low=low, high=high, method=method, invalid_samples=invalid)

    @classmethod
    def from_pytest_benchmark(cls, stats: Mapping[str, Any], images_per_call: int = 1) -> MetricStats | None:
        """Time per image from pytest-benchmark's ``stats`` block (seconds per call): its per-round ``data`` when
        saved, else its summary (``median``, ``mean``, ``stddev``, ``rounds``), each divided by the images per call."""
        per_call = max(1, int(images_per_call))
        suffix = f" / {per_call} images" if per_call > 1 else ""
        data = stats.get("data")
        if data is not None and _invalid_samples(data) is None:
            return cls.from_samples("time_per_image_s", [float(x) / per_call for x in data], source="stats.data" + suffix)
        median = _number(stats.get("median"))
        if median is None:
            return None
        mean, stddev, n = _number(stats.get("mean")), _number(stats.get("stddev")), _count(stats.get("rounds"))
        if n is None or stddev is None:
            return cls.from_summary("time_per_image_s", median / per_call, source="stats median only" + suffix)
        return cls.from_summary("time_per_image_s", median / per_call, mean=(median if mean is None else mean) / per_call,
                                stddev=stddev / per_call, n=n, source="stats summary" + suffix)

    def with_interval(self, confidence: float = 0.95) -> MetricStats:
        """This metric with an interval of the median: the stated one, else :func:`sdbench.stats.summarize`'s
        from two or more samples (unchanged when neither exists)."""
        if (self.low is not None and self.high is not None) or self.samples is None or len(self.samples) < 2:
            return self
        from dataclasses import replace

        from sdbench.stats import summarize

        s = summarize(self.samples, confidence=confidence)
        return replace(self, low=s.ci95_low, high=s.ci95_high, method=s.method)


def _invalid_samples(raw: Any) -> str | None:
    """Why ``raw`` is not a usable list of per-round samples (None when it is)."""
    if not isinstance(raw, (list, tuple)) or not raw:
        return "samples are not a non-empty list"
    for v in raw:
        if _number(v) is None:
            return f"sample {v!r} is not a finite number"
    return None


def record_is_simulated(rec: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> bool:
    """Whether a record's energy or clock behaviour came from the simulated GPU (or its document says so)."""
    if meta and meta.get("simulated"):
        return True
    return bool(rec.get("energy_simulated") or rec.get("env_gpu_simulated") or rec.get("gpu_simulated")
                or rec.get("device") == "simulated" or rec.get("energy_status") == "simulated")


def metric_stats(row: Mapping[str, Any], name: str) -> MetricStats | None:
    """:meth:`MetricStats.from_row`: a record's metric, from its samples, else its summary."""
    return MetricStats.from_row(row, name)


def energy_method(row: Mapping[str, Any]) -> str | None:
    """How a row's energy was measured: its ``energy_source`` (counter, timeline, rapl, none), with
    ``/simulated`` for the simulated GPU's meter; None when the row does not say (then nothing is assumed).

    Part of a record's identity (:class:`RecordIdentity`): numbers of different methods are different quantities
    (a counter's windows and a power timeline's integral disagree by their own bias), never paired silently."""
    source = row.get("energy_source")
    if not isinstance(source, str):
        return None
    return f"{source}/simulated" if row.get("energy_simulated") is True else source


# --- which part owns a key ------------------------------------------------------------------------------------
#: (part, exact keys, key prefixes), tried in order; keys matching none are the record's ``extra``.
_PARTS: tuple[tuple[str, frozenset[str], tuple[str, ...]], ...] = (
    ("clock", frozenset({"point_id", "point_status", "point_error", "point_role", "repeat", "plan_hash",
                         "started_utc", "is_default_clock", "idle_gap_s", "sm_clock_mhz_setting",
                         "mem_clock_mhz_setting", "power_limit_w_setting"}),
     ("sweep_", "clock_", "cooldown_")),
    ("energy", frozenset({"power_w", "power_w_samples", "idle_power_w", "images_per_kj", "warmup_energy_j",
                          "step_energy_j", "step_energy_median_j", "timeline_energy_per_image_j_median",
                          "counter_timeline_agreement_rel"}),
     ("energy_", "net_energy_", "cpu_energy_")),
    ("work", frozenset({"achieved_tflops", "mfu", "mfu_unavailable_reason", "flop_floor_s_per_image",
                        "fraction_of_flop_floor", "flop_floor_unavailable_reason", "tflop_per_j", "unet_evaluations"}),
     ("flop_", "matmul_ceiling_")),
    ("memory", frozenset(), ("memory_",)),
    ("telemetry", frozenset({"throttled_rounds"}), ("telemetry_", "activity_")),
    ("environment", frozenset({"torch_threads", "worker_host", "cuda_visible_devices", "slurm_job_id",
                               "slurm_array_task_id", "gpu_uuid"}),
     ("env_", "pinning_", "simulated_")),
    ("timing", frozenset({"images_per_s", "time_per_call_s", "rounds", "calls_per_window", "preroll_calls_per_window",
                          "calibration_call_s", "images_measured", "stop_reason", "warmup_s", "warmup_calls",
                          "first_call_s", "time_source", "step_time_s", "step_time_median_s", "step_marks"}),
     ("time_per_image_s", "stop_")),
    ("case", frozenset({"model", "family", "scheduler", "scheduler_class", "prediction_type", "timestep_spacing",
                        "use_karras_sigmas", "algorithm_type", "steps", "width", "height", "resolution", "pixels",
                        "batch_size", "guidance_scale", "cfg", "dtype", "profile", "knobs", "attention",
                        "attention_backend", "attention_processor", "offload", "weights", "weights_source", "seed",
                        "prompt", "negative_prompt", "strength", "tags", "device", "sm_clock_mhz", "mem_clock_mhz",
                        "power_limit_w", "case_id", "case_hash", "pipeline_class", "pipeline_build_s",
                        "optimization_notes", "prompt_tokens", "prompt_max_tokens", "prompt_truncated",
                        "prompt_tokens_dropped", "test"}),
     ("knob_",)),
)
PART_NAMES: tuple[str, ...] = ("case", "timing", "energy", "telemetry", "memory", "work", "environment", "clock")


def part_of(key: str) -> str:
    """The part of a record that owns ``key`` (one of :data:`PART_NAMES`, ``"header"``, or ``"extra"``)."""
    if key in HEADER_KEYS:
        return "header"
    if key.startswith("phase_"):
        # phase_<name>_energy_j is energy, phase_<name>_s is time.
        return "energy" if key.endswith("_energy_j") else "timing"
    for part, exact, prefixes in _PARTS:
        if key in exact or key.startswith(prefixes):
            return part
    return "extra"


def _split(row: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = {name: {} for name in (*PART_NAMES, "extra", "header")}
    for key, value in row.items():
        parts[part_of(key)][key] = value
    return parts


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# --- the parts ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseInfo:
    """What was measured: the case's features as it ran (``Case.features()``, the pipeline and the knobs applied)."""

    case_id: str | None
    case_hash: str | None
    model: str | None
    scheduler: str | None
    steps: int | None
    width: int | None
    height: int | None
    batch_size: int | None
    dtype: str | None
    profile: str | None
    device: str | None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> CaseInfo:
        return cls(_str(f.get("case_id")), _str(f.get("case_hash")), _str(f.get("model")), _str(f.get("scheduler")),
                   _int(f.get("steps")), _int(f.get("width")), _int(f.get("height")), _int(f.get("batch_size")),
                   _str(f.get("dtype")), _str(f.get("profile")), _str(f.get("device")), MappingProxyType(dict(f)))


@dataclass(frozen=True)
class Timing:
    """Time per image over the measured rounds, and how the rounds were taken (calibration, stop rule, warm-up)."""

    time_per_image: MetricStats | None
    images_per_s: float | None
    rounds: int | None
    stop_reason: str | None
    time_source: str | None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> Timing:
        return cls(MetricStats.from_row(f, "time_per_image_s"), _number(f.get("images_per_s")), _int(f.get("rounds")),
                   _str(f.get("stop_reason")), _str(f.get("time_source")), MappingProxyType(dict(f)))


@dataclass(frozen=True)
class Energy:
    """Energy per image (gross and idle-subtracted), power, and how the energy was measured.

    ``method`` (``source`` plus ``/simulated`` for a simulated meter) is part of the record's identity: numbers of
    different methods are never compared as one quantity."""

    source: str | None  # counter | timeline | rapl | none
    meter: str | None
    status: str | None  # measured | simulated | unavailable
    simulated: bool | None
    unavailable_reason: str | None
    per_image: MetricStats | None
    net_per_image: MetricStats | None
    power: MetricStats | None
    idle_power_w: float | None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @property
    def method(self) -> str | None:
        """How the energy was measured, e.g. ``counter``, ``timeline/simulated`` (:func:`energy_method`)."""
        return energy_method(self.fields)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> Energy:
        return cls(_str(f.get("energy_source")), _str(f.get("energy_meter")), _str(f.get("energy_status")),
                   _bool(f.get("energy_simulated")), _str(f.get("energy_unavailable_reason")),
                   MetricStats.from_row(f, "energy_per_image_j"), MetricStats.from_row(f, "net_energy_per_image_j"),
                   MetricStats.from_row(f, "power_w"), _number(f.get("idle_power_w")), MappingProxyType(dict(f)))


@dataclass(frozen=True)
class Telemetry:
    """What the GPU did during the measured windows: clocks, temperature, throttling, activity counters."""

    available: bool | None
    reason: str | None
    sm_clock_mhz_mean: float | None
    mem_clock_mhz_mean: float | None
    temperature_c_max: float | None
    power_limit_w: float | None
    throttled: bool | None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> Telemetry:
        return cls(_bool(f.get("telemetry_available")), _str(f.get("telemetry_reason")),
                   _number(f.get("telemetry_sm_clock_mhz_mean")), _number(f.get("telemetry_mem_clock_mhz_mean")),
                   _number(f.get("telemetry_temperature_c_max")), _number(f.get("telemetry_power_limit_w")),
                   _bool(f.get("telemetry_throttled")), MappingProxyType(dict(f)))


@dataclass(frozen=True)
class Memory:
    """Peak memory: torch's allocator (CUDA only) and NVML's view of the device."""

    peak_allocated_bytes: int | None
    peak_reserved_bytes: int | None
    nvml_used_bytes: int | None
    unavailable_reason: str | None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> Memory:
        return cls(_int(f.get("memory_peak_allocated_bytes")), _int(f.get("memory_peak_reserved_bytes")),
                   _int(f.get("memory_nvml_used_bytes")), _str(f.get("memory_unavailable_reason")),
                   MappingProxyType(dict(f)))


@dataclass(frozen=True)
class Work:
    """Counted work and what fraction of the hardware it used: FLOPs per image, MFU, the FLOP floor."""

    flop_per_image: float | None
    achieved_tflops: float | None
    mfu: float | None
    fraction_of_flop_floor: float | None
    matmul_ceiling_tflops: float | None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> Work:
        return cls(_number(f.get("flop_per_image")), _number(f.get("achieved_tflops")), _number(f.get("mfu")),
                   _number(f.get("fraction_of_flop_floor")), _number(f.get("matmul_ceiling_tflops")),
                   MappingProxyType(dict(f)))


@dataclass(frozen=True)
class Environment:
    """What the record was measured on: host, software versions, the GPU (``env_*``), the worker and, for the
    simulated GPU, its settings and true answer (``simulated_*``)."""

    gpu_name: str | None
    gpu_uuid: str | None
    gpu_simulated: bool | None
    driver_version: str | None
    torch: str | None
    diffusers: str | None
    host: str | None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> Environment:
        return cls(_str(f.get("env_gpu_name") or f.get("env_torch_gpu_name")), _str(f.get("env_gpu_uuid")),
                   _bool(f.get("env_gpu_simulated")), _str(f.get("env_gpu_driver_version")), _str(f.get("env_torch")),
                   _str(f.get("env_diffusers")), _str(f.get("env_host")), MappingProxyType(dict(f)))


@dataclass(frozen=True)
class ClockPoint:
    """A plan or sweep point: its id, role and outcome, the GPU settings it asked for and how they were verified."""

    point_id: str | None
    point_status: str | None
    point_role: str | None
    sm_clock_mhz_setting: float | None
    mem_clock_mhz_setting: float | None
    power_limit_w_setting: float | None
    is_default_clock: bool | None
    clock_verified: str | None
    sweep_order_index: int | None
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> ClockPoint:
        return cls(_str(f.get("point_id")), _str(f.get("point_status")), _str(f.get("point_role")),
                   _number(f.get("sm_clock_mhz_setting")), _number(f.get("mem_clock_mhz_setting")),
                   _number(f.get("power_limit_w_setting")), _bool(f.get("is_default_clock")),
                   _str(f.get("clock_verified")), _int(f.get("sweep_order_index")), MappingProxyType(dict(f)))


@dataclass(frozen=True)
class RecordIdentity:
    """What makes two records measurements of the same thing: the case (its hash) and how energy was measured."""

    case_hash: str | None
    energy_method: str | None


@dataclass(frozen=True)
class Record:
    """A typed, read-only view of one flat record row (see the module docstring)."""

    schema_version: int
    record_type: str
    case: CaseInfo
    timing: Timing
    energy: Energy
    telemetry: Telemetry
    memory: Memory
    work: Work
    environment: Environment
    clock: ClockPoint | None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @property
    def identity(self) -> RecordIdentity:
        return RecordIdentity(self.case.case_hash, self.energy.method)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Record:
        """The typed view of a current (version :data:`SCHEMA_VERSION`) row; read older rows through
        :func:`sdbench.record.io.upgrade_row` first."""
        parts = _split(row)
        version = row.get("schema_version", SCHEMA_VERSION)
        return cls(
            schema_version=version if isinstance(version, int) else SCHEMA_VERSION,
            record_type=str(row.get("record_type") or CASE_RECORD),
            case=CaseInfo.from_fields(parts["case"]),
            timing=Timing.from_fields(parts["timing"]),
            energy=Energy.from_fields(parts["energy"]),
            telemetry=Telemetry.from_fields(parts["telemetry"]),
            memory=Memory.from_fields(parts["memory"]),
            work=Work.from_fields(parts["work"]),
            environment=Environment.from_fields(parts["environment"]),
            clock=ClockPoint.from_fields(parts["clock"]) if parts["clock"] else None,
            extra=MappingProxyType(parts["extra"]),
        )

    def to_row(self) -> dict[str, Any]:
        """The flat row: the header, then every part's fields."""
        row: dict[str, Any] = {"schema_version": self.schema_version, "record_type": self.record_type}
        for part in (self.case, self.timing, self.energy, self.telemetry, self.memory, self.work, self.environment):
            row.update(part.fields)
        if self.clock is not None:
            row.update(self.clock.fields)
        row.update(self.extra)
        return row
