"""The largest batch of a case that fits in memory: doubling from a start, then bisection.

Each probe is one guarded call (`sdbench.studies.batching.memory.attempt`) of a probe (default: one real
pipeline call, `sdbench.studies.batching.probe.PipelineProbe`); an out-of-memory error is a result, its
memory is recovered and the search goes on. `MaxBatchResult` is where the search ended, with every probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sdbench.case import MAX_BATCH, Case
from sdbench.errors import ConfigError
from sdbench.studies.batching.memory import Outcome, attempt, is_cuda
from sdbench.studies.batching.probe import PipelineProbe, ProbeResult, device_memory_total_bytes

if TYPE_CHECKING:
    from sdbench.session import Bench

#: Default `limit` of the fits search where there is no VRAM to run out of (the CPU, the simulated GPU).
CPU_DEFAULT_LIMIT = 8


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
        limit = MAX_BATCH if is_cuda(device) else CPU_DEFAULT_LIMIT
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
    if not is_cuda(device):
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
