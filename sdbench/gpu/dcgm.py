"""GPU activity counters (SM, tensor, DRAM, FP32, FP16 active) from DCGM, for power models.

The seed's power models (FGCS 2023: ``log P`` linear in FP and DRAM activity and ``log f``) need
activity fractions that NVML does not expose; DCGM's profiling fields do. :class:`ActivityMonitor`
samples them in a background thread while a point is measured and reduces them to
``activity_*`` record columns. Where they cannot be had it records ``activity_status:
"absent: <reason>"`` and no numbers.

Sources, in order of preference:

* the simulated GPU's :meth:`~sdbench.gpu.simulated.SimulatedGpu.activity` (so the path is tested
  on CPU; ``activity_status: "simulated"``);
* DCGM's Python bindings (``DcgmReader``, shipped with DCGM under
  ``/usr/local/dcgm/bindings/python3``; importable when that folder is on ``PYTHONPATH``);
* the ``dcgmi`` command: ``dcgmi dmon -e 1002,1004,1005,1007,1008 -d MS -i GPU``, parsed line by line.

DCGM profiling field ids (dcgm_fields.h): 1002 SM active, 1004 tensor pipe active, 1005 DRAM
active, 1007 FP32 pipe active, 1008 FP16 pipe active. (1009 is PCIe TX bytes, not an FP pipe.)
"""

from __future__ import annotations

import importlib
import logging
import shutil
import statistics
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdbench.errors import ConfigError
from sdbench.gpu.base import GpuDevice, GpuError, GpuNotSupported
from sdbench.gpu.clock import WALL_CLOCK, Clock, PeriodicThread

__all__ = [
    "ACTIVITY_BACKENDS",
    "ACTIVITY_NAMES",
    "DCGM_FIELD_IDS",
    "ActivityMonitor",
    "ActivitySample",
    "ActivitySummary",
    "dmon_command",
    "parse_dmon_line",
    "summarise_activity",
]

log = logging.getLogger(__name__)

#: Activity name -> DCGM profiling field id.
DCGM_FIELD_IDS: dict[str, int] = {
    "sm_active": 1002,
    "tensor_active": 1004,
    "dram_active": 1005,
    "fp32_active": 1007,
    "fp16_active": 1008,
}
ACTIVITY_NAMES: tuple[str, ...] = tuple(DCGM_FIELD_IDS)
ACTIVITY_BACKENDS: tuple[str, ...] = ("auto", "simulated", "pydcgm", "dcgmi", "none")

# How long `dcgmi dmon` may take to exit after SIGTERM before it is killed.
_DMON_EXIT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ActivitySample:
    """One reading: fractions in [0, 1] by activity name (``None`` where the source gave none)."""

    t_s: float
    values: dict[str, float | None]


@dataclass(frozen=True)
class ActivitySummary:
    """Mean activity over a window. ``status``: ``measured`` (DCGM), ``simulated``, or ``absent: <reason>``."""

    status: str
    source: str | None
    sample_count: int
    means: dict[str, float | None] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return not self.status.startswith("absent")

    def as_record_fields(self, prefix: str = "activity_") -> dict[str, Any]:
        """``activity_status``, ``activity_source``, ``activity_sample_count`` and ``activity_<name>_mean``."""
        out: dict[str, Any] = {f"{prefix}status": self.status, f"{prefix}source": self.source,
                               f"{prefix}sample_count": self.sample_count}
        for name in ACTIVITY_NAMES:
            out[f"{prefix}{name}_mean"] = self.means.get(name)
        if self.unavailable:
            out[f"{prefix}unavailable"] = dict(self.unavailable)
        return out


def summarise_activity(samples: Sequence[ActivitySample], status: str, source: str | None,
                       unavailable: Mapping[str, str] | None = None) -> ActivitySummary:
    """Means per activity over ``samples``; none at all -> an absent summary that says so."""
    unavailable = dict(unavailable or {})
    if not samples:
        return ActivitySummary("absent: no activity samples in the measured window", source, 0, {}, unavailable)
    means: dict[str, float | None] = {}
    for name in ACTIVITY_NAMES:
        vals = [s.values.get(name) for s in samples]
        numbers = [v for v in vals if v is not None]
        means[name] = float(statistics.fmean(numbers)) if numbers else None
        if not numbers and name not in unavailable:
            unavailable[name] = f"{source or 'the source'} reported no {name} values"
    return ActivitySummary(status, source, len(samples), means, unavailable)


# ---- dcgmi dmon ----------------------------------------------------------------------------------
def dmon_command(dcgmi: str, gpu_index: int, interval_ms: int, names: Sequence[str] = ACTIVITY_NAMES) -> list[str]:
    """The argv of ``dcgmi dmon`` for these activities (no shell; integers only after the flags)."""
    if not isinstance(gpu_index, int) or gpu_index < 0:
        raise ConfigError("gpu_index", gpu_index, allowed="a GPU index >= 0")
    if not isinstance(interval_ms, int) or interval_ms < 1:
        raise ConfigError("interval_ms", interval_ms, allowed="a whole number of milliseconds >= 1")
    ids = ",".join(str(DCGM_FIELD_IDS[n]) for n in names)
    return [dcgmi, "dmon", "-e", ids, "-d", str(interval_ms), "-i", str(gpu_index)]


def parse_dmon_line(line: str, names: Sequence[str] = ACTIVITY_NAMES) -> dict[str, float | None] | None:
    """Values of one ``dcgmi dmon`` data line (``GPU 0  0.512  0.301  N/A ...``), in ``-e`` order.

    Header lines (``#Entity ...``, ``ID``), blank lines and lines of another shape give ``None``;
    ``N/A`` gives a ``None`` value.
    """
    tokens = line.split()
    if len(tokens) < 2 or tokens[0].startswith("#") or tokens[0] != "GPU" or not tokens[1].isdigit():
        return None
    raw = tokens[2:]
    if len(raw) != len(names):
        return None
    values: dict[str, float | None] = {}
    for name, text in zip(names, raw):
        if text.upper() in ("N/A", "NA", "-"):
            values[name] = None
            continue
        try:
            values[name] = float(text)
        except ValueError:
            return None
    return values


# ---- backends ------------------------------------------------------------------------------------
class _Backend(ABC):
    """A source of activity samples; collects them from start() to stop()."""

    name: str = "?"
    status: str = "measured"
    #: The clock samples are stamped with: the measured device's (virtual for the simulated GPU).
    clock: Clock = WALL_CLOCK

    def __init__(self) -> None:
        self._samples: list[ActivitySample] = []
        self._lock = threading.Lock()
        self.unavailable: dict[str, str] = {}
        self.failure: str | None = None  # why sampling broke off, if it did

    def _add(self, values: dict[str, float | None]) -> None:
        with self._lock:
            self._samples.append(ActivitySample(self.clock.now_s(), values))

    def samples(self) -> list[ActivitySample]:
        with self._lock:
            return list(self._samples)

    def reset(self) -> None:
        with self._lock:
            self._samples = []
        self.failure = None

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...


class _PolledBackend(_Backend):
    """Polls ``read()`` at ``rate_hz`` in a background thread."""

    def __init__(self, rate_hz: float) -> None:
        super().__init__()
        self.rate_hz = rate_hz
        self._thread: PeriodicThread | None = None

    @abstractmethod
    def read(self) -> dict[str, float | None]: ...

    def _sample(self) -> bool:
        self._add(self.read())
        return True

    def start(self) -> None:
        self.reset()
        self._sample()
        self._thread = PeriodicThread(self._sample, self.rate_hz, name=f"sdbench-activity-{self.name}",
                                      clock=self.clock)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            thread.stop()
            self._sample()
        except Exception as exc:  # noqa: BLE001 - DCGM's bindings raise their own classes; recorded, not hidden
            self.failure = f"{type(exc).__name__}: {exc}"
            log.warning("activity sampling (%s) stopped early: %s", self.name, exc)


class _SimulatedBackend(_PolledBackend):
    name = "simulated"
    status = "simulated"

    def __init__(self, device: GpuDevice, rate_hz: float) -> None:
        super().__init__(rate_hz)
        self.device = device
        self.clock = device.clock
        self.unavailable = {n: "the simulated GPU models no FP32 pipe activity" for n in ACTIVITY_NAMES
                            if n not in ("sm_active", "tensor_active", "dram_active", "fp16_active")}

    def read(self) -> dict[str, float | None]:
        act = self.device.activity()
        return {n: (float(act[n]) if n in act else None) for n in ACTIVITY_NAMES}


class _DcgmReaderBackend(_PolledBackend):
    """DCGM's own Python reader (``DcgmReader.DcgmReader``)."""

    name = "pydcgm"

    def __init__(self, module: Any, gpu_index: int, rate_hz: float) -> None:
        super().__init__(rate_hz)
        self.gpu_index = gpu_index
        interval_us = max(int(1e6 / rate_hz), 1000)
        self._reader = module.DcgmReader(fieldIds=list(DCGM_FIELD_IDS.values()), updateFrequency=interval_us,
                                         gpuIds=[gpu_index])

    def read(self) -> dict[str, float | None]:
        latest = self._reader.GetLatestGpuValuesAsFieldIdDict()
        per_gpu = latest.get(self.gpu_index, {}) if isinstance(latest, Mapping) else {}
        out: dict[str, float | None] = {}
        for name, fid in DCGM_FIELD_IDS.items():
            value = per_gpu.get(fid)
            out[name] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        return out


class _DcgmiBackend(_Backend):
    """``dcgmi dmon`` in a subprocess; a reader thread parses its lines as they arrive."""

    name = "dcgmi"

    def __init__(self, dcgmi: str, gpu_index: int, rate_hz: float) -> None:
        super().__init__()
        self.argv = dmon_command(dcgmi, gpu_index, max(int(round(1000.0 / rate_hz)), 1))
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._errors: list[str] = []

    def _read_lines(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            values = parse_dmon_line(line)
            if values is not None:
                self._add(values)
            elif line.strip().lower().startswith("error"):
                self._errors.append(line.strip())

    def start(self) -> None:
        self.reset()
        self._errors = []
        self._proc = subprocess.Popen(self.argv, shell=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        self._reader = threading.Thread(target=self._read_lines, args=(self._proc,), name="sdbench-dcgmi", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        exited_early = proc.poll() is not None
        if not exited_early:
            proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=_DMON_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        if self._reader is not None:
            self._reader.join(timeout=_DMON_EXIT_TIMEOUT_S)
        if exited_early and proc.returncode != 0:
            detail = "; ".join(self._errors) or (stderr or "").strip() or f"exit status {proc.returncode}"
            self.failure = f"dcgmi dmon failed: {detail}"


# ---- the instrument ------------------------------------------------------------------------------
def _import_dcgm_reader() -> Any | None:
    for name in ("DcgmReader", "pydcgm.DcgmReader"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "DcgmReader"):
            return module
    return None


def _gpu_index(device: GpuDevice) -> int:
    info = device.info()
    return int(info.physical_index if info.physical_index is not None else info.index)


class ActivityMonitor:
    """Samples activity counters while a point is measured; see the module docstring.

    Usage: ``start()`` before the measurement, :meth:`mark_measured_start` when the measured rounds
    begin (samples before it, such as the idle baseline and the warm-up, are left out; the Runner's
    ``round 1`` progress message does it through :meth:`progress_hook`), ``stop(windows)``
    afterwards returns the :class:`ActivitySummary` of the samples inside the measured windows.
    Never raises for a missing source: the summary says why.
    """

    def __init__(self, device: GpuDevice | None, *, backend: str = "auto", rate_hz: float = 10.0,
                 dcgmi_path: str | None = None) -> None:
        if backend not in ACTIVITY_BACKENDS:
            raise ConfigError("activity backend", backend, allowed=ACTIVITY_BACKENDS)
        if not rate_hz > 0:
            raise ConfigError("rate_hz", rate_hz, reason="must be positive")
        self.device = device
        self.rate_hz = float(rate_hz)
        self._mark_t: float | None = None
        self._backend: _Backend | None = None
        self.absent_reason: str | None = None
        try:
            self._backend = self._choose(backend, dcgmi_path)
        except (GpuError, OSError, RuntimeError, AttributeError, TypeError) as exc:
            # A DCGM that is installed but broken (no host engine, profiling module off) is absent too.
            self.absent_reason = f"DCGM could not be opened ({type(exc).__name__}: {exc})"

    def _choose(self, backend: str, dcgmi_path: str | None) -> _Backend | None:
        device = self.device
        if backend == "none":
            self.absent_reason = "activity sampling disabled"
            return None
        if device is None:
            self.absent_reason = "no GPU (activity counters need DCGM on an NVIDIA GPU)"
            return None
        if backend in ("auto", "simulated") and getattr(device, "simulated", False):
            try:
                device.activity()
            except GpuNotSupported as exc:
                self.absent_reason = f"the simulated GPU has activity switched off ({exc})"
                return None
            return _SimulatedBackend(device, self.rate_hz)
        if backend == "simulated":
            self.absent_reason = "not a simulated GPU"
            return None
        if backend in ("auto", "pydcgm"):
            module = _import_dcgm_reader()
            if module is not None:
                return _DcgmReaderBackend(module, _gpu_index(device), self.rate_hz)
            if backend == "pydcgm":
                self.absent_reason = "DCGM's Python bindings (DcgmReader) are not importable"
                return None
        dcgmi = dcgmi_path or shutil.which("dcgmi")
        if dcgmi is None:
            self.absent_reason = ("DCGM not found: no dcgmi on PATH and no DcgmReader module "
                                  "(NVML has no SM/tensor/DRAM/FP activity counters)")
            return None
        return _DcgmiBackend(dcgmi, _gpu_index(device), self.rate_hz)

    @property
    def source(self) -> str | None:
        """``simulated``, ``pydcgm``, ``dcgmi``, or ``None`` when absent."""
        return self._backend.name if self._backend is not None else None

    def start(self) -> None:
        """Start sampling (forgets samples of an earlier point)."""
        self._mark_t = None
        if self._backend is not None:
            self._backend.start()

    def mark_measured_start(self) -> None:
        """From now on samples count (the measured rounds begin)."""
        if self._mark_t is None:
            self._mark_t = self._backend.clock.now_s() if self._backend is not None else time.perf_counter()

    def progress_hook(self, message: str) -> None:
        """A Runner progress callback: the first ``round ...`` message marks the measured start."""
        if message.startswith("round "):
            self.mark_measured_start()

    def stop(self, windows: Sequence[tuple[float, float]] | None = None) -> ActivitySummary:
        """Stop sampling and summarise: the samples inside the measured ``windows`` (perf_counter
        ``(t0_s, t1_s)`` pairs, e.g. the Runner's), else those since the mark, else all of them."""
        backend = self._backend
        if backend is None:
            return ActivitySummary(f"absent: {self.absent_reason or 'no activity source'}", None, 0)
        backend.stop()
        samples = backend.samples()
        inside = [s for s in samples if any(t0 <= s.t_s <= t1 for t0, t1 in windows or ())]
        if inside:
            samples = inside
        elif self._mark_t is not None:
            # Windows shorter than the sampling period hold no sample: fall back to the measured span.
            samples = [s for s in samples if s.t_s >= self._mark_t]
        if backend.failure is not None and not samples:
            return ActivitySummary(f"absent: {backend.failure}", backend.name, 0, {}, dict(backend.unavailable))
        return summarise_activity(samples, backend.status, backend.name, backend.unavailable)
