"""The batch sweep: one case measured at several batch sizes through the Runner, and the batch with the
most images/s and the one with the fewest joules per image, each with a bootstrap statement of how sure
that choice is.

`batch_sweep` runs the batch sizes from small to large; an out-of-memory error is recorded for its batch
(memory recovered) and every larger batch is skipped. `summarize_sweep` makes each point's medians and
their confidence intervals (`sdbench.stats.summarize`, the interval of the coverage study in
docs/statistics.md: 95 % of them hold the true median from 3 rounds on) and picks both optima
(`sdbench.analysis.optimum.pick_optimum`: how often the bootstrap picks each batch). A percentile
bootstrap of a 3-round median is no 95 % interval (its resampled medians lie between the smallest and
largest round, which hold the true median only 75 % of the time); it is used for the choice only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sdbench.analysis.estimates import bootstrap_replicates
from sdbench.analysis.optimum import pick_optimum
from sdbench.case import MAX_BATCH, Case
from sdbench.errors import ConfigError
from sdbench.output.tables import CaseClock, duration
from sdbench.record.schema import metric_stats
from sdbench.stats import summarize
from sdbench.studies.batching.memory import attempt
from sdbench.studies.batching.probe import PipelineProbe

if TYPE_CHECKING:
    from sdbench.session import Bench

PointStatus = Literal["ok", "oom", "skipped", "error"]


@dataclass
class SweepPoint:
    """One batch size of a sweep: its record, or why there is none (oom, skipped, error).

    The images/s and J/image fields are medians over the record's per-round samples, with the confidence
    intervals of `sdbench.stats.summarize` (None from a single round); they are filled by `summarize_sweep`.
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
    samples) in which this batch wins; `ci95_low`/`ci95_high` bound its metric (the batch's own interval,
    as in the table). `overlapping` lists the other batches whose interval overlaps the winner's: the
    data do not tell them apart, so the statement says the winner is not a clear one. `batch_size` is None
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
    overlapping: tuple[int, ...] = ()

    def statement(self) -> str:
        """A sentence a user can quote."""
        what = "throughput-optimal" if self.objective.startswith("max") else "energy-optimal"
        if self.batch_size is None:
            return f"{what} batch: none ({self.reason})"
        interval = ("no interval from a single round" if self.ci95_low is None or self.ci95_high is None else
                    f"{100 * self.confidence:.0f}% CI {fmt_value(self.ci95_low)} to {fmt_value(self.ci95_high)}")
        text = (f"{what} batch {self.batch_size}: {fmt_value(self.value)} {self.unit} ({interval}); "
                f"chosen in {100 * (self.choice_fraction or 0.0):.1f}% of {self.n_resamples} bootstrap resamples")
        rivals = sorted(((b, f) for b, f in self.choice_fractions.items() if b != self.batch_size),
                        key=lambda bf: -bf[1])
        close = [f"batch {b} in {100 * f:.1f}%" for b, f in rivals[:3]] if (self.choice_fraction or 0.0) < 0.95 else []
        if self.overlapping:
            close.append(f"its interval overlaps batch {', '.join(map(str, self.overlapping))}'s")
        if close:
            text += "; not a clear winner: " + "; ".join(close)
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choice_fractions"] = {str(k): v for k, v in self.choice_fractions.items()}
        d["overlapping"] = list(self.overlapping)
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


def fmt_value(value: float | None) -> str:
    """A number to four significant digits; ``-`` when there is none."""
    return "-" if value is None else f"{value:.4g}"


def _pick(objective: str, unit: str, batches: list[int], estimates: np.ndarray, resampled: np.ndarray,
          intervals: list[tuple[float, float] | None], confidence: float) -> Optimum:
    """The winner by the point estimates, its own interval, the batches whose interval overlaps it, and how
    often each batch wins across the resamples."""
    # The picker takes the first of equals: a tie goes to the smaller batch (less memory, less latency).
    pick = pick_optimum(batches, estimates, resampled, lower_is_better=not objective.startswith("max"))
    if pick.index is None:
        return Optimum(objective, unit, None, reason="no batch size ran", confidence=confidence)
    own = intervals[pick.index]
    low, high = own if own is not None else (None, None)
    overlapping = tuple(b for b, iv in zip(batches, intervals, strict=True)
                        if b != pick.label and (own is None or iv is None or (iv[0] <= own[1] and own[0] <= iv[1])))
    return Optimum(objective, unit, pick.label, pick.value, low, high, pick.choice_fraction, pick.choice_fractions,
                   pick.n_resamples, confidence, overlapping=overlapping)


def _median_interval(samples: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The coverage-checked interval of the samples' median (`sdbench.stats.summarize`); None from one round."""
    stats = summarize(samples, confidence=confidence)
    if stats.ci95_low is None or stats.ci95_high is None:
        return None
    return float(stats.ci95_low), float(stats.ci95_high)


def summarize_sweep(points: Sequence[SweepPoint], *, n_resamples: int = 2000, seed: int = 0,
                    confidence: float = 0.95, base_case_id: str | None = None) -> BatchSweep:
    """Fill each point's images/s and J/image (medians and their intervals) and pick both optima.

    Each interval is `sdbench.stats.summarize`'s of the batch's per-round samples (images/s: the
    reciprocal of the time per image's, median and bounds alike). The bootstrap resamples every batch
    size's per-round samples independently, recomputes each batch's median, and takes the argmax of
    images/s (argmin of J/image) per resample; the winner's `choice_fraction` is how often it wins.
    Points that did not run (oom, skipped, error) take no part. Energy must be available for every
    point that ran, else the energy optimum is None with the reason.
    """
    if not 0 < confidence < 1:
        raise ConfigError("confidence", confidence, "a fraction in (0, 1)")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError("n_resamples", n_resamples, "a whole number >= 1")
    rng = np.random.default_rng(seed)
    ran = [p for p in points if p.status == "ok" and p.record is not None and p.time_per_image_s_samples]
    batches = [p.batch_size for p in ran]
    tp_est, tp_boot, tp_iv = [], [], []
    for p in ran:
        t = np.asarray(p.time_per_image_s_samples, dtype=float)
        boot = 1.0 / bootstrap_replicates(t, n_resamples, rng, np.median)
        p.images_per_s = float(1.0 / np.median(t))
        t_iv = _median_interval(t, confidence)
        p.images_per_s_ci95 = None if t_iv is None else (1.0 / t_iv[1], 1.0 / t_iv[0])
        tp_est.append(p.images_per_s)
        tp_boot.append(boot)
        tp_iv.append(p.images_per_s_ci95)
    if ran:
        throughput = _pick("max images_per_s", "images/s", batches, np.asarray(tp_est),
                           np.column_stack(tp_boot), tp_iv, confidence)
    else:
        throughput = Optimum("max images_per_s", "images/s", None, reason="no batch size ran", confidence=confidence)

    missing = [p for p in ran if p.energy_per_image_j_samples is None]
    energy_reason: str | None = None
    if not ran:
        energy_reason = "no batch size ran"
    elif missing:
        why = (missing[0].record or {}).get("energy_unavailable_reason") or "no energy reading in the record"
        energy_reason = f"energy unavailable for batch {', '.join(str(p.batch_size) for p in missing)}: {why}"
    e_est, e_boot, e_iv = [], [], []
    for p in ran:
        samples = p.energy_per_image_j_samples
        if samples is None:
            continue
        e = np.asarray(samples, dtype=float)
        boot = bootstrap_replicates(e, n_resamples, rng, np.median)
        p.energy_per_image_j = float(np.median(e))
        p.energy_per_image_j_ci95 = _median_interval(e, confidence)
        e_est.append(p.energy_per_image_j)
        e_boot.append(boot)
        e_iv.append(p.energy_per_image_j_ci95)
    if energy_reason is None:
        energy = _pick("min energy_per_image_j", "J/image", batches, np.asarray(e_est), np.column_stack(e_boot),
                       e_iv, confidence)
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
                confidence: float = 0.95,
                on_point: Callable[[list[SweepPoint], list[int]], None] | None = None,
                now: Callable[[], float] = time.monotonic,
                earlier: Mapping[int, SweepPoint] | None = None) -> BatchSweep:
    """Measure `case` at each batch size through the Runner and pick the throughput and energy optima.

    Batch sizes run from small to large. An out-of-memory error is recorded for its batch (memory is
    recovered) and every larger batch is recorded as skipped, since it would need more memory still;
    the smaller ones keep their results. With `memory_budget_bytes`, each batch is first probed once
    (`PipelineProbe`) and a peak over the budget counts as a (simulated) OOM for that batch.
    `measure` defaults to `bench.measure`. After each batch, `on_point(points so far, batch sizes not yet
    run)` (the CLI writes them out, so a sweep cut short keeps what it measured) and a progress line with
    that batch's wall time and the time left at the pace so far. `earlier` holds the points of a run cut
    short (`resume_points`): those batches are kept as they were, not measured again (an out-of-memory
    one still skips every larger batch).
    """
    sizes = parse_batch_sizes(batch_sizes)
    say = progress or (lambda _msg: None)
    run = measure or (lambda c: bench.measure(c, progress=progress))
    probe = PipelineProbe(bench, case, memory_budget_bytes=memory_budget_bytes) if memory_budget_bytes else None
    device = case.compute_device
    points: list[SweepPoint] = []
    failed_at: int | None = None
    kept = dict(earlier or {})
    clock = CaseClock(len([b for b in sizes if b not in kept]), now=now)
    for i, b in enumerate(sizes):
        if failed_at is not None:
            points.append(SweepPoint(b, "skipped", message=f"not run: batch {failed_at} already ran out of memory"))
            continue
        if b in kept:
            points.append(kept[b])
            failed_at = b if kept[b].status == "oom" else None
            say(f"batch {b}: {kept[b].status}, kept from the earlier run")
            continue
        eta = clock.eta_text()
        clock.start()
        say(f"batch {b} ({i + 1} of {len(sizes)}{'; ' + eta + ' at the pace so far' if eta else ''})")
        case_b = case.with_(batch_size=b)
        probe_peak: int | None = None
        if probe is not None:
            say(f"batch {b}: probe against the memory budget")
            pa = attempt(lambda b=b: probe(b), device)
            if not pa.ok:
                failed_at = b
                points.append(SweepPoint(b, "oom", message=pa.message, oom_simulated=pa.oom_simulated,
                                         probe_peak_bytes=pa.peak_bytes))
                clock.finish()
                if on_point is not None:
                    on_point(list(points), [x for x in sizes[i + 1:] if x not in kept])
                continue
            probe_peak = pa.value.peak_bytes if pa.value is not None else None
        a = attempt(lambda c=case_b: run(c), device, catch_errors=True)
        if a.outcome == "oom":
            failed_at = b
        status: PointStatus = "ok" if a.ok else a.outcome  # type: ignore[assignment]
        points.append(SweepPoint(b, status, a.value, a.message, a.oom_simulated, probe_peak))
        took = clock.finish()
        say(f"batch {b}: {status} in {duration(took)}")
        if on_point is not None:
            on_point(list(points), [x for x in sizes[i + 1:] if x not in kept])
    return summarize_sweep(points, n_resamples=n_resamples, seed=seed, confidence=confidence,
                           base_case_id=_any_batch(case.case_id, case.batch_size))


def _any_batch(case_id: str, batch_size: int) -> str:
    """The case id with its batch size replaced by ``*``: the id every point of one sweep shares."""
    return case_id.replace(f"-b{batch_size}-", "-b*-", 1)


def resume_points(doc: Mapping[str, Any], case: Case, sizes: Sequence[int],
                  environment: Mapping[str, Any]) -> dict[int, SweepPoint]:
    """The points of an earlier `sdbench batch` run's ``batch-sweep.json`` that a resumed sweep keeps.

    Kept: measured batches (their records) and out-of-memory ones, of the same case but its batch size,
    on the same GPU; a batch that failed otherwise is measured again. A file of another case, another
    GPU, or batches outside `sizes` is refused (ConfigError naming what differs), so a resumed sweep never
    mixes measurements that a fresh one would not hold together."""
    base = _any_batch(case.case_id, case.batch_size)
    records = {int(r["batch_size"]): r for r in doc.get("records", []) if r.get("batch_size") is not None}
    for b, rec in records.items():
        theirs = _any_batch(str(rec.get("case_id", "")), b)
        if theirs != base:
            raise ConfigError("resume", theirs, f"a sweep of {base}",
                              reason="the earlier run measured another case; resume with its flags or another "
                                     "--output-dir")
    for key in ("gpu_uuid", "compute_device"):
        was, now = (doc.get("environment") or {}).get(key), environment.get(key)
        if was != now:
            raise ConfigError("resume", f"{key} {was}", f"{key} {now}",
                              reason="the earlier run measured on another device")
    kept: dict[int, SweepPoint] = {}
    # An incomplete file lists its points at the top, a finished one in its summary.
    for d in doc.get("points") or (doc.get("summary") or {}).get("points") or []:
        b, status = int(d["batch_size"]), d.get("status")
        if b not in sizes:
            raise ConfigError("resume", f"batch {b}", f"--batch-sizes including {b}",
                              reason="the earlier run measured a batch size this sweep does not hold")
        if status == "ok" and b in records:
            kept[b] = SweepPoint.from_record(records[b])
        elif status == "oom":
            kept[b] = SweepPoint(b, "oom", message=d.get("message"), oom_simulated=bool(d.get("oom_simulated")),
                                 probe_peak_bytes=d.get("probe_peak_bytes"))
    return kept
