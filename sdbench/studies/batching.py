"""Dynamic batching: the largest batch that fits in memory, and the throughput- and energy-optimal batch.

The predecessor's "dynamic batching" was a fixed slice and never looked at memory. Here:

- `find_max_batch` grows the batch by doubling, then bisects between the last batch that fitted and
  the first that failed, one real pipeline call per probe at the case's settings. An out-of-memory
  error is caught inside the process, its memory is recovered (references dropped, `gc.collect()`,
  `torch.cuda.empty_cache()`, peak statistics reset) and the search goes on.
- `batch_sweep` measures several batch sizes through the Runner (`Bench.measure`) and picks the batch
  with the most images/s and the one with the fewest joules per image, each with a bootstrap
  statement of how sure that choice is.
- `plot_batch_sweep` draws the sweep; `sdbench batch` is the command line.

A CPU has no VRAM to run out of, so there a `limit` bounds the search. The out-of-memory path is
exercised on the CPU by a `memory_budget_bytes`: a probe whose peak exceeds the budget raises
`SimulatedOutOfMemoryError`, a subclass of torch's OOM error that goes through exactly the same
except-and-recover path as a real one.
"""

from __future__ import annotations

import gc
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sdbench.analysis.estimates import bootstrap_replicates, percentile_interval
from sdbench.analysis.optimum import pick_optimum
from sdbench.case import MAX_BATCH, Case
from sdbench.errors import ConfigError, SdbenchError, is_out_of_memory
from sdbench.record.schema import metric_stats

if TYPE_CHECKING:
    from sdbench.session import Bench

T = TypeVar("T")

#: Default `limit` of the fits search where there is no VRAM to run out of (the CPU, the simulated GPU).
CPU_DEFAULT_LIMIT = 8
# Messages of RuntimeErrors that mean "out of memory": CUDA's caching allocator and the CPU allocator.
GIB = 2**30

Outcome = Literal["fits", "oom", "error"]


# --- out-of-memory errors and recovery -------------------------------------------------------------
class SimulatedOutOfMemoryError(torch.OutOfMemoryError):
    """A probe's peak memory exceeded the memory budget: handled exactly like a real CUDA OOM.

    It subclasses `torch.OutOfMemoryError` (which is `torch.cuda.OutOfMemoryError`), so every
    `except` that catches a real OOM catches this one too.
    """

    def __init__(self, message: str, *, peak_bytes: int | None = None, budget_bytes: int | None = None) -> None:
        super().__init__(message)
        self.peak_bytes = peak_bytes
        self.budget_bytes = budget_bytes


def _cuda(device: str) -> bool:
    return device.startswith("cuda")


def recover_memory(device: str) -> int | None:
    """Give memory back after an out-of-memory error; returns the bytes still allocated (CUDA), else None.

    Call it only once nothing refers to the failed call's tensors any more (the exception and its
    traceback are gone): `gc.collect()` breaks reference cycles through frames, `empty_cache()` hands
    the cached blocks back to the driver, and the peak statistics are reset so the next probe's peak
    is its own.
    """
    gc.collect()
    if _cuda(device) and torch.cuda.is_available():
        d = torch.device(device)
        torch.cuda.synchronize(d)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(d)
        return int(torch.cuda.memory_allocated(d))
    return None


def _peak_so_far_bytes(device: str) -> int | None:
    """CUDA's high-water mark since the last reset (before a failure: how far the failed call got)."""
    if _cuda(device) and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    return None


@dataclass
class Attempt(Generic[T]):
    """What one guarded call did: its value, or the out-of-memory (or other) failure and the recovery."""

    outcome: Outcome
    value: T | None = None
    message: str | None = None
    oom_simulated: bool = False
    peak_bytes: int | None = None  # on failure: the simulated peak, or CUDA's high-water mark when it failed
    memory_after_recovery_bytes: int | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "fits"


def attempt(fn: Callable[[], T], device: str, *, catch_errors: bool = False) -> Attempt[T]:
    """Run `fn()`; an out-of-memory error is caught, its memory recovered, and reported as `oom`.

    Other errors propagate, unless `catch_errors` (then they are reported as `error` with their
    message, after the same recovery). sdbench's own errors (a bad configuration) always propagate:
    they are the user's to fix, not a property of the device.
    """
    t0 = time.perf_counter()
    outcome: Outcome = "fits"
    message: str | None = None
    simulated = False
    peak: int | None = None
    try:
        value = fn()
    except SdbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - an OOM is a result; other errors only when asked (else re-raised)
        oom = is_out_of_memory(exc)
        if not (oom or catch_errors):
            raise
        outcome = "oom" if oom else "error"
        message = f"{type(exc).__name__}: {exc}"
        simulated = isinstance(exc, SimulatedOutOfMemoryError)
        peak = exc.peak_bytes if isinstance(exc, SimulatedOutOfMemoryError) else _peak_so_far_bytes(device)
        # The traceback's frames hold the failed call's tensors; clear them so recovery can free them.
        traceback.clear_frames(exc.__traceback__)
        value = None
    # Past the except block Python has unbound `exc`: nothing refers to the failed call any more.
    after: int | None = None
    if outcome != "fits":
        after = recover_memory(device)
    return Attempt(outcome, value, message, simulated, peak, after, time.perf_counter() - t0)


# --- peak memory of one call -----------------------------------------------------------------------
class LiveTensorPeak(TorchDispatchMode):
    """The peak bytes of tensors alive during a call on the CPU, where torch keeps no peak statistics.

    Every aten op's outputs are seen through torch's dispatch-mode extension point; a storage is
    counted once while any tensor on it is alive (views share it). Workspaces private to a kernel
    are not seen, so this is a lower bound of what the allocator really held.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._storages: dict[int, list[int]] = {}  # data_ptr -> [nbytes, tensors alive on it]

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self._storages[key]
            self.live_bytes -= entry[0]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            nbytes = storage.nbytes()
            if nbytes == 0:
                continue
            key = storage.data_ptr()
            entry = self._storages.get(key)
            if entry is None:
                self._storages[key] = [nbytes, 1]
                self.live_bytes += nbytes
                self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            else:
                entry[1] += 1
            weakref.finalize(t, self._release, key)
        return out


def module_bytes(pipe: Any) -> int:
    """Bytes of the pipeline's parameters and buffers (each storage once), what stays resident."""
    seen: set[int] = set()
    total = 0
    for component in getattr(pipe, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in [*component.parameters(), *component.buffers()]:
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


@dataclass(frozen=True)
class ProbeResult:
    """One probe call that fitted: its peak memory and where that number comes from."""

    peak_bytes: int | None
    peak_source: str
    reserved_peak_bytes: int | None = None


class PipelineProbe:
    """One real pipeline call at the case's settings with a given batch size, and its peak memory.

    On CUDA the peak is `torch.cuda.max_memory_allocated` since a reset just before the call; on the
    CPU it is the pipeline's weights plus the live-tensor peak of the call (`LiveTensorPeak`). With
    `memory_budget_bytes`, a peak above the budget raises `SimulatedOutOfMemoryError`, as if the
    device had only that much memory.

    `probe_steps` (None: the case's own) shortens each probe call: peak memory does not grow with
    the number of denoising steps (each step's activations are freed before the next), so fewer
    steps find the same boundary sooner.
    """

    def __init__(self, bench: Bench, case: Case, *, memory_budget_bytes: int | None = None,
                 probe_steps: int | None = None) -> None:
        if memory_budget_bytes is not None and (not isinstance(memory_budget_bytes, int) or memory_budget_bytes <= 0):
            raise ConfigError("memory_budget_bytes", memory_budget_bytes, "a positive whole number of bytes")
        self.bench = bench
        self.case = case if probe_steps is None else case.with_(steps=probe_steps)
        self.memory_budget_bytes = memory_budget_bytes
        self.device = case.compute_device

    def case_for(self, batch_size: int) -> Case:
        return self.case.with_(batch_size=batch_size)

    def __call__(self, batch_size: int) -> ProbeResult:
        from sdbench.pipelines.build import set_scheduler

        case = self.case_for(batch_size)
        built, applied = self.bench.pipeline(case)
        overrides = {"timestep_spacing": case.timestep_spacing} if case.timestep_spacing else None
        set_scheduler(built.pipe, case.scheduler, overrides)
        # The Runner's own call, so a probe runs exactly what a measurement of this case runs.
        call = self.bench.runner.make_call(case, built, applied)
        reserved: int | None = None
        with torch.inference_mode():
            if _cuda(self.device):
                d = torch.device(self.device)
                torch.cuda.synchronize(d)
                torch.cuda.reset_peak_memory_stats(d)
                images = call()
                torch.cuda.synchronize(d)
                peak = int(torch.cuda.max_memory_allocated(d))
                reserved = int(torch.cuda.max_memory_reserved(d))
                source = "torch.cuda.max_memory_allocated"
            else:
                with LiveTensorPeak() as tracker:
                    images = call()
                peak = module_bytes(built.pipe) + tracker.peak_bytes
                source = "weights + live-tensor peak (CPU)"
        if self.memory_budget_bytes is not None and peak > self.memory_budget_bytes:
            # Raised while `images` is still referenced, as a real OOM would be: recovery must free it.
            raise SimulatedOutOfMemoryError(
                f"simulated out of memory: batch {batch_size} peaked at {peak} bytes, over the budget of "
                f"{self.memory_budget_bytes} bytes", peak_bytes=peak, budget_bytes=self.memory_budget_bytes)
        del images
        return ProbeResult(peak, source, reserved)


def device_memory_total_bytes(bench: Bench, device: str) -> int | None:
    """The GPU's total memory: torch's view on CUDA; None on the CPU (the simulated GPU's is not real)."""
    if _cuda(device) and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return None


# --- the largest batch that fits -----------------------------------------------------------------
@dataclass(frozen=True)
class ProbeOutcome:
    """One probe of the search: the batch size, whether it fitted, its peak and the recovery after a failure."""

    batch_size: int
    outcome: Outcome
    peak_bytes: int | None
    duration_s: float
    message: str | None = None
    oom_simulated: bool = False
    memory_after_recovery_bytes: int | None = None


@dataclass
class MaxBatchResult:
    """Where the fits search ended. `stopped_because` is "oom", "limit" or "error: <message>"."""

    case_id: str
    device: str
    largest_fitting_batch: int | None
    first_failed_batch: int | None
    stopped_because: str
    start: int
    limit: int
    probes: list[ProbeOutcome]
    device_memory_total_bytes: int | None
    memory_budget_bytes: int | None
    peak_source: str | None
    probe_steps: int | None
    note: str | None = None

    @property
    def peak_bytes_by_batch(self) -> dict[int, int | None]:
        """Peak memory of each probed batch (a failed probe: how far it got, where known)."""
        return {p.batch_size: p.peak_bytes for p in self.probes}

    @property
    def oom_recoveries(self) -> int:
        return sum(1 for p in self.probes if p.outcome == "oom")

    @property
    def oom_simulated(self) -> bool:
        return any(p.oom_simulated for p in self.probes)

    def summary_line(self) -> str:
        """One sentence: the largest batch that fitted and why the search stopped."""
        fit = "no batch fitted" if self.largest_fitting_batch is None else f"largest batch that fit: {self.largest_fitting_batch}"
        if self.stopped_because == "oom":
            kind = "simulated out of memory" if self.oom_simulated else "out of memory"
            why = f"first that failed: {self.first_failed_batch} ({kind})"
        elif self.stopped_because == "limit":
            why = f"stopped at the limit of {self.limit} without running out of memory"
        else:
            why = f"stopped on {self.stopped_because}"
        return f"{fit}; {why}; {len(self.probes)} probe(s), {self.oom_recoveries} OOM recover{'y' if self.oom_recoveries == 1 else 'ies'}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["peak_bytes_by_batch"] = {str(k): v for k, v in self.peak_bytes_by_batch.items()}
        d["oom_recoveries"] = self.oom_recoveries
        d["oom_simulated"] = self.oom_simulated
        return d

    def as_record_fields(self, prefix: str = "max_batch_") -> dict[str, Any]:
        """Flat fields to add to a record (e.g. `sd_measure(case, **result.as_record_fields())`)."""
        return {
            f"{prefix}largest_fitting": self.largest_fitting_batch,
            f"{prefix}first_failed": self.first_failed_batch,
            f"{prefix}stopped_because": self.stopped_because,
            f"{prefix}limit": self.limit,
            f"{prefix}peak_bytes_by_batch": {str(k): v for k, v in self.peak_bytes_by_batch.items()},
            f"{prefix}peak_source": self.peak_source,
            f"{prefix}device_memory_total_bytes": self.device_memory_total_bytes,
            f"{prefix}memory_budget_bytes": self.memory_budget_bytes,
            f"{prefix}oom_simulated": self.oom_simulated,
            f"{prefix}oom_recoveries": self.oom_recoveries,
            f"{prefix}probes": len(self.probes),
            f"{prefix}probe_steps": self.probe_steps,
            f"{prefix}note": self.note,
        }


def _check_batch(field_name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise ConfigError(field_name, value, f"a whole number from 1 to {MAX_BATCH}")
    return value


def find_max_batch(bench: Bench, case: Case, *, start: int = 1, limit: int | None = None,
                   probe: Callable[[int], ProbeResult | int | None] | None = None,
                   memory_budget_bytes: int | None = None, probe_steps: int | None = None,
                   progress: Callable[[str], None] | None = None) -> MaxBatchResult:
    """The largest batch of `case` that fits in memory: doubling from `start`, then bisection.

    Each probe is one call of `probe(batch_size)` (default: `PipelineProbe`, one real pipeline call
    at the case's settings), which returns the peak bytes (a `ProbeResult`, an int or None) or raises
    an out-of-memory error. An OOM is caught here, memory is recovered and the search goes on; any
    other error ends the search with `stopped_because = "error: ..."`.

    `limit` bounds the batch (default: 8 where there is no VRAM to run out of, else 512, the largest
    batch a Case allows). With `memory_budget_bytes` the default probe raises a simulated OOM when a
    call's peak exceeds the budget. The search assumes memory grows with the batch size; under that
    assumption, when it stops on "oom", `first_failed_batch == largest_fitting_batch + 1`.
    """
    device = case.compute_device
    start = _check_batch("start", start)
    if limit is None:
        limit = MAX_BATCH if _cuda(device) else CPU_DEFAULT_LIMIT
    limit = _check_batch("limit", limit)
    if limit < start:
        raise ConfigError("limit", limit, f"a batch size >= start ({start})")
    if probe is not None and (memory_budget_bytes is not None or probe_steps is not None):
        raise ConfigError("probe", "given", "memory_budget_bytes and probe_steps only with the default probe",
                          reason="an injected probe decides what fits itself")
    run_probe = probe or PipelineProbe(bench, case, memory_budget_bytes=memory_budget_bytes, probe_steps=probe_steps)
    say = progress or (lambda _msg: None)
    probes: list[ProbeOutcome] = []
    peak_source: str | None = None
    error: str | None = None

    def fits(batch: int) -> bool | None:
        """Probe `batch`: True if it fitted, False on OOM, None on another error (the search ends)."""
        nonlocal peak_source, error
        say(f"probe batch {batch}")
        a = attempt(lambda: run_probe(batch), device, catch_errors=True)
        peak = a.peak_bytes
        if a.ok:
            value = a.value
            if isinstance(value, ProbeResult):
                peak, peak_source = value.peak_bytes, value.peak_source
            elif isinstance(value, int) and not isinstance(value, bool):
                peak = value
        probes.append(ProbeOutcome(batch, a.outcome, peak, a.duration_s, a.message, a.oom_simulated,
                                   a.memory_after_recovery_bytes))
        say(f"batch {batch}: {a.outcome}" + (f" ({a.message})" if a.message else ""))
        if a.outcome == "error":
            error = a.message
            return None
        return a.ok

    # Grow by doubling until a failure or the limit; `good` is the last batch that fitted (0: none yet).
    good, bad = 0, None
    batch = start
    while True:
        ok = fits(batch)
        if ok is None:
            break
        if not ok:
            bad = batch
            break
        good = batch
        if batch >= limit:
            break
        batch = min(batch * 2, limit)
    # Bisect between the last success and the first failure (below `start` too, if `start` failed).
    while error is None and bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        ok = fits(mid)
        if ok is None:
            break
        if ok:
            good = mid
        else:
            bad = mid

    if error is not None:
        stopped = f"error: {error}"
    elif bad is not None:
        stopped = "oom"
    else:
        stopped = "limit"
    note = None
    if not _cuda(device):
        note = (f"simulated OOM: memory budget of {memory_budget_bytes} bytes against the CPU live-tensor peak"
                if memory_budget_bytes is not None else
                f"{device}: no VRAM to run out of; the search is bounded by limit={limit}")
    elif memory_budget_bytes is not None:
        note = f"simulated OOM: memory budget of {memory_budget_bytes} bytes (a smaller card than this one)"
    return MaxBatchResult(
        case_id=case.case_id, device=case.device, largest_fitting_batch=good or None, first_failed_batch=bad,
        stopped_because=stopped, start=start, limit=limit, probes=probes,
        device_memory_total_bytes=device_memory_total_bytes(bench, device) if bench is not None else None,
        memory_budget_bytes=memory_budget_bytes, peak_source=peak_source, probe_steps=probe_steps, note=note)


# --- energy- and throughput-optimal batch ----------------------------------------------------------
PointStatus = Literal["ok", "oom", "skipped", "error"]


@dataclass
class SweepPoint:
    """One batch size of a sweep: its record, or why there is none (oom, skipped, error).

    The images/s and J/image fields are medians over the record's per-round samples, with percentile
    bootstrap intervals; they are filled by `summarize_sweep`.
    """

    batch_size: int
    status: PointStatus
    record: dict[str, Any] | None = None
    message: str | None = None
    oom_simulated: bool = False
    probe_peak_bytes: int | None = None
    images_per_s: float | None = None
    images_per_s_ci95: tuple[float, float] | None = None
    energy_per_image_j: float | None = None
    energy_per_image_j_ci95: tuple[float, float] | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SweepPoint:
        return cls(int(record["batch_size"]), "ok", dict(record))

    @property
    def time_per_image_s_samples(self) -> list[float]:
        """Per-round time per image: the record's samples, else its estimate as one round (none without either)."""
        m = metric_stats(self.record or {}, "time_per_image_s")
        return list(m.rounds()) if m is not None and (m.samples is not None or m.estimate) else []

    @property
    def energy_per_image_j_samples(self) -> list[float] | None:
        """Per-round energy per image: the record's samples, else its estimate as one round; None without energy."""
        m = metric_stats(self.record or {}, "energy_per_image_j")
        return None if m is None else list(m.rounds())

    @property
    def peak_bytes(self) -> int | None:
        """CUDA's peak from the measurement, else the pre-measurement probe's peak."""
        rec = self.record or {}
        return rec.get("memory_peak_allocated_bytes") or self.probe_peak_bytes

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "record"}
        d["peak_bytes"] = self.peak_bytes
        d["case_id"] = (self.record or {}).get("case_id")
        return d


@dataclass(frozen=True)
class Optimum:
    """The batch size that optimises one objective, with how sure the bootstrap is of that choice.

    `choice_fraction` is the fraction of bootstrap resamples (of every batch size's per-round
    samples) in which this batch wins; `ci95_low`/`ci95_high` bound its metric. `batch_size` is None
    when the objective cannot be evaluated, and `reason` says why. The choice is made by
    `sdbench.analysis.optimum.pick_optimum` (the picker the DVFS analysis uses for clocks).
    """

    objective: str  # "max images_per_s" | "min energy_per_image_j"
    unit: str
    batch_size: int | None
    value: float | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    choice_fraction: float | None = None
    choice_fractions: dict[int, float] = field(default_factory=dict)
    n_resamples: int = 0
    confidence: float = 0.95
    reason: str | None = None

    def statement(self) -> str:
        """A sentence a user can quote."""
        what = "throughput-optimal" if self.objective.startswith("max") else "energy-optimal"
        if self.batch_size is None:
            return f"{what} batch: none ({self.reason})"
        text = (f"{what} batch {self.batch_size}: {_fmt(self.value)} {self.unit} "
                f"({100 * self.confidence:.0f}% CI {_fmt(self.ci95_low)} to {_fmt(self.ci95_high)}); "
                f"chosen in {100 * (self.choice_fraction or 0.0):.1f}% of {self.n_resamples} bootstrap resamples")
        rivals = sorted(((b, f) for b, f in self.choice_fractions.items() if b != self.batch_size),
                        key=lambda bf: -bf[1])
        if rivals and (self.choice_fraction or 0.0) < 0.95:
            text += "; not a clear winner: " + ", ".join(f"batch {b} in {100 * f:.1f}%" for b, f in rivals[:3])
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choice_fractions"] = {str(k): v for k, v in self.choice_fractions.items()}
        d["statement"] = self.statement()
        return d


@dataclass
class BatchSweep:
    """A batch-size sweep of one case: each point, and the throughput and energy optima."""

    points: list[SweepPoint]
    throughput: Optimum
    energy: Optimum
    energy_simulated: bool
    oom_simulated: bool = False
    base_case_id: str | None = None

    @property
    def records(self) -> list[dict[str, Any]]:
        return [p.record for p in self.points if p.record is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_case_id": self.base_case_id,
            "points": [p.to_dict() for p in self.points],
            "throughput_optimum": self.throughput.to_dict(),
            "energy_optimum": self.energy.to_dict(),
            "energy_simulated": self.energy_simulated,
            "oom_simulated": self.oom_simulated,
        }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pick(objective: str, unit: str, batches: list[int], estimates: np.ndarray, resampled: np.ndarray,
          confidence: float) -> Optimum:
    """The winner by the point estimates, and how often each batch wins across the resamples."""
    # The picker takes the first of equals: a tie goes to the smaller batch (less memory, less latency).
    pick = pick_optimum(batches, estimates, resampled, lower_is_better=not objective.startswith("max"),
                        confidence=confidence)
    low, high = pick.interval if pick.interval is not None else (None, None)
    return Optimum(objective, unit, pick.label, pick.value, low, high, pick.choice_fraction, pick.choice_fractions,
                   pick.n_resamples, confidence)


def summarize_sweep(points: Sequence[SweepPoint], *, n_resamples: int = 2000, seed: int = 0,
                    confidence: float = 0.95, base_case_id: str | None = None) -> BatchSweep:
    """Fill each point's images/s and J/image (medians, bootstrap CIs) and pick both optima.

    The bootstrap resamples every batch size's per-round samples independently, recomputes each
    batch's median, and takes the argmax of images/s (argmin of J/image) per resample; the winner's
    `choice_fraction` is how often it wins. Points that did not run (oom, skipped, error) take no
    part. Energy must be available for every point that ran, else the energy optimum is None with
    the reason.
    """
    if not 0 < confidence < 1:
        raise ConfigError("confidence", confidence, "a fraction in (0, 1)")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError("n_resamples", n_resamples, "a whole number >= 1")
    rng = np.random.default_rng(seed)
    ran = [p for p in points if p.status == "ok" and p.record is not None and p.time_per_image_s_samples]
    batches = [p.batch_size for p in ran]
    tp_est, tp_boot = [], []
    for p in ran:
        t = np.asarray(p.time_per_image_s_samples, dtype=float)
        boot = 1.0 / bootstrap_replicates(t, n_resamples, rng, np.median)
        p.images_per_s = float(1.0 / np.median(t))
        p.images_per_s_ci95 = percentile_interval(boot, confidence)
        tp_est.append(p.images_per_s)
        tp_boot.append(boot)
    if ran:
        throughput = _pick("max images_per_s", "images/s", batches, np.asarray(tp_est),
                           np.column_stack(tp_boot), confidence)
    else:
        throughput = Optimum("max images_per_s", "images/s", None, reason="no batch size ran", confidence=confidence)

    missing = [p for p in ran if p.energy_per_image_j_samples is None]
    energy_reason: str | None = None
    if not ran:
        energy_reason = "no batch size ran"
    elif missing:
        why = (missing[0].record or {}).get("energy_unavailable_reason") or "no energy reading in the record"
        energy_reason = f"energy unavailable for batch {', '.join(str(p.batch_size) for p in missing)}: {why}"
    e_est, e_boot = [], []
    for p in ran:
        samples = p.energy_per_image_j_samples
        if samples is None:
            continue
        e = np.asarray(samples, dtype=float)
        boot = bootstrap_replicates(e, n_resamples, rng, np.median)
        p.energy_per_image_j = float(np.median(e))
        p.energy_per_image_j_ci95 = percentile_interval(boot, confidence)
        e_est.append(p.energy_per_image_j)
        e_boot.append(boot)
    if energy_reason is None:
        energy = _pick("min energy_per_image_j", "J/image", batches, np.asarray(e_est), np.column_stack(e_boot),
                       confidence)
    else:
        energy = Optimum("min energy_per_image_j", "J/image", None, reason=energy_reason, confidence=confidence)
    simulated = any(bool((p.record or {}).get("energy_simulated")) for p in ran)
    return BatchSweep(list(points), throughput, energy, simulated, any(p.oom_simulated for p in points), base_case_id)


def parse_batch_sizes(value: str | Iterable[int]) -> list[int]:
    """`"1,2,4,8"` (or a list) -> sorted unique batch sizes; a bad list raises ConfigError naming it."""
    allowed = f"comma-separated whole numbers from 1 to {MAX_BATCH}, each once, e.g. 1,2,4,8"
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",")]
        if not value.strip() or any(not s for s in items):
            raise ConfigError("batch_sizes", value, allowed, reason="an empty entry")
        sizes: list[Any] = []
        for s in items:
            try:
                sizes.append(int(s))
            except ValueError:
                raise ConfigError("batch_sizes", value, allowed, reason=f"{s!r} is not a whole number") from None
    else:
        sizes = list(value)
    if not sizes:
        raise ConfigError("batch_sizes", value, allowed, reason="no batch sizes")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= MAX_BATCH:
            raise ConfigError("batch_sizes", value, allowed, reason=f"{s!r} is out of range")
    if len(set(sizes)) != len(sizes):
        raise ConfigError("batch_sizes", value, allowed, reason="a batch size is repeated")
    return sorted(sizes)


def batch_sweep(bench: Bench, case: Case, batch_sizes: str | Iterable[int], *,
                measure: Callable[[Case], dict[str, Any]] | None = None, memory_budget_bytes: int | None = None,
                progress: Callable[[str], None] | None = None, n_resamples: int = 2000, seed: int = 0,
                confidence: float = 0.95) -> BatchSweep:
    """Measure `case` at each batch size through the Runner and pick the throughput and energy optima.

    Batch sizes run from small to large. An out-of-memory error is recorded for its batch (memory is
    recovered) and every larger batch is recorded as skipped, since it would need more memory still;
    the smaller ones keep their results. With `memory_budget_bytes`, each batch is first probed once
    (`PipelineProbe`) and a peak over the budget counts as a (simulated) OOM for that batch.
    `measure` defaults to `bench.measure`.
    """
    sizes = parse_batch_sizes(batch_sizes)
    say = progress or (lambda _msg: None)
    run = measure or (lambda c: bench.measure(c, progress=progress))
    probe = PipelineProbe(bench, case, memory_budget_bytes=memory_budget_bytes) if memory_budget_bytes else None
    device = case.compute_device
    points: list[SweepPoint] = []
    failed_at: int | None = None
    for b in sizes:
        if failed_at is not None:
            points.append(SweepPoint(b, "skipped", message=f"not run: batch {failed_at} already ran out of memory"))
            continue
        case_b = case.with_(batch_size=b)
        probe_peak: int | None = None
        if probe is not None:
            say(f"batch {b}: probe against the memory budget")
            pa = attempt(lambda b=b: probe(b), device)
            if not pa.ok:
                failed_at = b
                points.append(SweepPoint(b, "oom", message=pa.message, oom_simulated=pa.oom_simulated,
                                         probe_peak_bytes=pa.peak_bytes))
                continue
            probe_peak = pa.value.peak_bytes if pa.value is not None else None
        say(f"batch {b}: measure")
        a = attempt(lambda c=case_b: run(c), device, catch_errors=True)
        if a.outcome == "oom":
            failed_at = b
        status: PointStatus = "ok" if a.ok else a.outcome  # type: ignore[assignment]
        points.append(SweepPoint(b, status, a.value, a.message, a.oom_simulated, probe_peak))
    return summarize_sweep(points, n_resamples=n_resamples, seed=seed, confidence=confidence,
                           base_case_id=case.case_id.replace(f"-b{case.batch_size}-", "-b*-", 1))


# --- reporting -------------------------------------------------------------------------------------
def _ci_text(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    if ci is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _gib(n_bytes: int | None) -> str:
    return "-" if not n_bytes else f"{n_bytes / GIB:.3f}"


def sweep_table(sweep: BatchSweep) -> str:
    """The sweep as a table: batch, status, images/s and J/image with 95% CIs, peak GiB."""
    from tabulate import tabulate

    rows = []
    for p in sweep.points:
        energy = _ci_text(p.energy_per_image_j, p.energy_per_image_j_ci95)
        if p.status == "ok" and p.energy_per_image_j is None:
            energy = "unavailable"
        elif energy != "-" and sweep.energy_simulated:
            energy += " (sim)"
        status = p.status if p.status != "oom" else ("oom (simulated)" if p.oom_simulated else "oom")
        rows.append([p.batch_size, status, _ci_text(p.images_per_s, p.images_per_s_ci95), energy, _gib(p.peak_bytes)])
    return tabulate(rows, headers=["batch", "status", "images/s [95% CI]", "J/image [95% CI]", "peak GiB"])


def max_batch_table(result: MaxBatchResult) -> str:
    """The fits search's probes in the order they ran."""
    from tabulate import tabulate

    rows = [[p.batch_size, p.outcome + (" (simulated)" if p.oom_simulated else ""), _gib(p.peak_bytes),
             f"{p.duration_s:.2f}"] for p in result.probes]
    return tabulate(rows, headers=["batch", "outcome", "peak GiB", "probe s"])


def plot_batch_sweep(sweep: BatchSweep, path: str | Path) -> Path:
    """Images/s and J/image against batch size with CI error bars and the optima marked; writes a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    ax_t, ax_e = fig.subplots(1, 2)
    panels = ((ax_t, "images_per_s", "images_per_s_ci95", sweep.throughput, "images/s (higher is better)"),
              (ax_e, "energy_per_image_j", "energy_per_image_j_ci95", sweep.energy, "J/image (lower is better)"))
    failed = [p for p in sweep.points if p.status != "ok"]
    for ax, attr, ci_attr, optimum, label in panels:
        pts = [p for p in sweep.points if getattr(p, attr) is not None]
        if pts:
            xs = [p.batch_size for p in pts]
            ys = [getattr(p, attr) for p in pts]
            cis = [getattr(p, ci_attr) or (y, y) for p, y in zip(pts, ys)]
            yerr = np.array([[y - lo for y, (lo, _) in zip(ys, cis)], [hi - y for y, (_, hi) in zip(ys, cis)]])
            ax.errorbar(xs, ys, yerr=np.clip(yerr, 0, None), marker="o", capsize=3, label="median, 95% CI")
            if optimum.batch_size is not None:
                ax.plot([optimum.batch_size], [optimum.value], marker="*", markersize=16, color="tab:red",
                        linestyle="none", label=f"optimum: batch {optimum.batch_size} "
                                                f"({100 * (optimum.choice_fraction or 0):.0f}% of resamples)")
        for p in failed:
            ax.axvline(p.batch_size, color="grey", linestyle=":", linewidth=1)
            ax.annotate(p.status + (" (sim)" if p.oom_simulated else ""), (p.batch_size, 0.02),
                        xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color="grey")
        ax.set_xscale("log", base=2)
        ax.set_xticks([p.batch_size for p in sweep.points], [str(p.batch_size) for p in sweep.points])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        if pts:
            ax.legend(fontsize=7)
    notes = []
    if sweep.energy.batch_size is None:
        notes.append(f"energy unavailable: {sweep.energy.reason}")
        ax_e.text(0.5, 0.5, "energy unavailable", transform=ax_e.transAxes, ha="center", va="center", color="grey")
    elif sweep.energy_simulated:
        notes.append("energy: simulated GPU (a physical model, not a measurement)")
    if sweep.oom_simulated:
        notes.append("OOM simulated by a memory budget")
    title = f"batch sweep: {sweep.base_case_id or ''}"
    if notes:
        title += "\n" + "; ".join(notes)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, format="png", dpi=100)
    return path


def prompt_token_fields(bench: Bench, case: Case) -> dict[str, Any]:
    """How long the case's prompt is in CLIP tokens and whether CLIP's context truncates it.

    CLIP text encoders see at most `model_max_length` (77) tokens, start and end included; a longer
    prompt is cut there, so its extra words cost no compute and change no image.
    """
    built, _ = bench.pipeline(case)
    tokenizer = getattr(built.pipe, "tokenizer", None) or getattr(built.pipe, "tokenizer_2", None)
    if tokenizer is None:
        return {"prompt_tokens": None, "prompt_token_reason": "the pipeline has no tokenizer"}
    n_tokens = len(tokenizer(case.prompt, truncation=False).input_ids)
    max_tokens = int(tokenizer.model_max_length)
    return {"prompt_tokens": n_tokens, "prompt_max_tokens": max_tokens, "prompt_truncated": n_tokens > max_tokens,
            "prompt_tokens_dropped": max(0, n_tokens - max_tokens)}
