"""Statistics for benchmark samples: summaries with confidence intervals, a stop rule, calibration and
change detection.

All metrics here are "lower is better" (seconds, joules), which only matters for the verdict of
:func:`is_significant_change`. Confidence intervals come from scipy: Student's t for the mean, and
``scipy.stats.bootstrap`` (BCa, falling back to percentile when BCa is degenerate) otherwise.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.stats

from sdbench.errors import ConfigError, SdbenchError

Verdict = Literal["faster", "slower", "unchanged"]
StopReason = Literal["converged", "max_rounds", "max_time", "continue"]

CI_METHODS: tuple[str, ...] = ("t", "bootstrap")

# scipy renamed bootstrap's random_state to rng in 1.15; the project allows scipy >= 1.11.
_BOOTSTRAP_SEED_ARG = "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"


def _as_samples(samples: Sequence[float] | np.ndarray, name: str = "samples") -> np.ndarray:
    """Validate samples: a non-empty 1-D sequence of finite numbers."""
    try:
        x = np.asarray(samples, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(name, samples, reason=f"not a sequence of numbers: {exc}") from exc
    if x.ndim != 1:
        raise ConfigError(name, samples, reason="must be one-dimensional")
    if x.size == 0:
        raise ConfigError(name, samples, reason="at least one sample is needed")
    if not np.all(np.isfinite(x)):
        # A NaN or inf timing is a measurement bug; averaging it away would hide it.
        raise ConfigError(name, samples, reason="all samples must be finite")
    return x


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ConfigError("confidence", confidence, reason="a probability strictly between 0 and 1")


def _mean_and_stddev(x: np.ndarray) -> tuple[float, float]:
    """Mean and sample stddev (ddof=1; 0 for one sample), exact for identical samples."""
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        # Summing then dividing can miss the common value by an ulp, leaving a tiny spurious stddev.
        return lo, 0.0
    mean = math.fsum(x.tolist()) / x.size
    # Rounding can push the mean an ulp outside [min, max]; keep the obvious invariant.
    mean = min(max(mean, lo), hi)
    stddev = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return mean, stddev


def t_interval(samples: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t confidence interval of the mean; needs at least 2 samples.

    Zero-spread samples give a zero-width interval at their value.
    """
    _check_confidence(confidence)
    x = _as_samples(samples)
    if x.size < 2:
        raise ConfigError("samples", samples, reason="a confidence interval needs at least 2 samples")
    mean, stddev = _mean_and_stddev(x)
    if stddev == 0.0:
        # scipy returns NaN for scale 0; the interval is the single value.
        return mean, mean
    sem = stddev / math.sqrt(x.size)
    low, high = scipy.stats.t.interval(confidence, df=x.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


def _run_bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
    paired: bool,
    vectorized: bool | None,
) -> tuple[float, float]:
    """scipy's bootstrap with BCa, retried with the percentile method when BCa is degenerate."""
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError("n_resamples", n_resamples, reason="a positive integer")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa warns and returns NaN when all resamples agree (e.g. identical samples); that case
            # is handled by the percentile retry, so the warning is noise. Scoped to this category.
            warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
            # BCa's jackknife divides 0/0 on degenerate data; same story.
            with np.errstate(invalid="ignore", divide="ignore"):
                result = scipy.stats.bootstrap(
                    data,
                    statistic,
                    n_resamples=n_resamples,
                    confidence_level=confidence,
                    method=method,
                    paired=paired,
                    vectorized=vectorized,
                    **{_BOOTSTRAP_SEED_ARG: np.random.default_rng(seed)},
                )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    raise SdbenchError(
        f"bootstrap gave no finite confidence interval for {len(data[0])} samples of {getattr(statistic, '__name__', statistic)!s}"
    )


def bootstrap_ci(
    samples: Sequence[float] | np.ndarray,
    statistic: Callable[..., Any] = np.median,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap confidence interval ``(low, high)`` of ``statistic`` over ``samples``.

    ``statistic`` is called like ``np.median`` (scipy passes ``axis=`` when the callable accepts it,
    which vectorises the resampling). Uses BCa, falling back to percentile when BCa is degenerate;
    deterministic for a given ``seed``. Needs at least 2 samples.
    """
    _check_confidence(confidence)
    x = _as_samples(samples)
    if x.size < 2:
        raise ConfigError("samples", samples, reason="a bootstrap interval needs at least 2 samples")
    if float(x.min()) == float(x.max()):
        # Every resample is the same data; the interval is the statistic itself.
        value = float(statistic(x))
        return value, value
    return _run_bootstrap(
        (x,), statistic, confidence=confidence, n_resamples=n_resamples, seed=seed, paired=False, vectorized=None
    )


def bootstrap_ci_paired(
    xs: Sequence[float] | np.ndarray,
    ys: Sequence[float] | np.ndarray,
    fn: Callable[[np.ndarray, np.ndarray], float],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap confidence interval ``(low, high)`` of a quantity derived from paired samples.

    ``xs[i]`` and ``ys[i]`` belong together (e.g. time and energy of round ``i``) and are resampled
    together; ``fn(xs_resample, ys_resample)`` takes two 1-D arrays and returns a float (e.g. the ratio
    of means). BCa with percentile fallback, deterministic for a given ``seed``.
    """
    _check_confidence(confidence)
    x = _as_samples(xs, "xs")
    y = _as_samples(ys, "ys")
    if x.size != y.size:
        raise ConfigError("ys", ys, reason=f"paired samples need equal lengths ({x.size} xs, {y.size} ys)")
    if x.size < 2:
        raise ConfigError("xs", xs, reason="a bootstrap interval needs at least 2 pairs")
    # fn is called per resample (not vectorised): derived quantities are rarely written with axis=.
    return _run_bootstrap(
        (x, y), fn, confidence=confidence, n_resamples=n_resamples, seed=seed, paired=True, vectorized=False
    )


@dataclass(frozen=True)
class SampleStats:
    """Summary of one metric's samples.

    ``cv`` and ``ci95_halfwidth_rel`` are relative to ``|mean|`` (so never negative) and None when
    the mean is 0. The interval fields are None with fewer than 2 samples (``method == "none"``).
    ``ci95_*`` hold the interval at ``confidence`` (0.95 unless asked otherwise). For a bootstrap
    interval, which may be asymmetric, the half-width is ``(high - low) / 2``.
    """

    n: int
    mean: float
    median: float
    stddev: float
    cv: float | None
    min: float
    max: float
    ci95_low: float | None
    ci95_high: float | None
    ci95_halfwidth_rel: float | None
    method: str
    confidence: float = 0.95

    @property
    def ci95_halfwidth(self) -> float | None:
        """Absolute half-width of the interval, None without one."""
        if self.ci95_low is None or self.ci95_high is None:
            return None
        return (self.ci95_high - self.ci95_low) / 2.0

    def as_dict(self, prefix: str) -> dict[str, float | int | str | None]:
        """Flat record fields: ``{prefix}_n``, ``{prefix}_mean``, ``{prefix}_median``, ... ``{prefix}_method``."""
        return {
            f"{prefix}_n": self.n,
            f"{prefix}_mean": self.mean,
            f"{prefix}_median": self.median,
            f"{prefix}_stddev": self.stddev,
            f"{prefix}_cv": self.cv,
            f"{prefix}_min": self.min,
            f"{prefix}_max": self.max,
            f"{prefix}_ci95_low": self.ci95_low,
            f"{prefix}_ci95_high": self.ci95_high,
            f"{prefix}_ci95_halfwidth_rel": self.ci95_halfwidth_rel,
            f"{prefix}_ci_method": self.method,
            f"{prefix}_ci_confidence": self.confidence,
        }


def summarize(
    samples: Sequence[float] | np.ndarray,
    method: str = "t",
    confidence: float = 0.95,
    seed: int = 0,
    *,
    n_resamples: int = 2000,
) -> SampleStats:
    """Summarise samples with a confidence interval of the mean.

    Args:
        samples: at least one finite number.
        method: ``"t"`` (Student's t interval) or ``"bootstrap"`` (``scipy.stats.bootstrap`` of the
            mean, BCa falling back to percentile when degenerate, e.g. all samples equal).
        confidence: interval level.
        seed: bootstrap seed; results are deterministic for a given seed.
        n_resamples: bootstrap resamples.

    With one sample there is no interval: ``method`` is then ``"none"`` and the interval fields None.
    """
    if method not in CI_METHODS:
        raise ConfigError("method", method, allowed=CI_METHODS)
    _check_confidence(confidence)
    x = _as_samples(samples)
    mean, stddev = _mean_and_stddev(x)
    scale = abs(mean)
    cv = stddev / scale if scale > 0.0 else None
    low: float | None = None
    high: float | None = None
    halfwidth_rel: float | None = None
    used = "none"
    if x.size >= 2:
        if stddev == 0.0:
            # Identical samples: a zero-width interval at their value, whatever the method.
            low, high = mean, mean
        elif method == "t":
            low, high = t_interval(x, confidence)
        else:
            low, high = bootstrap_ci(x, np.mean, confidence=confidence, n_resamples=n_resamples, seed=seed)
            # Each resample's mean lies in [min, max]; summing can overshoot by an ulp, so clip.
            low = min(max(low, float(x.min())), float(x.max()))
            high = min(max(high, float(x.min())), float(x.max()))
        used = method
        if scale > 0.0:
            halfwidth_rel = (high - low) / 2.0 / scale
    return SampleStats(
        n=int(x.size),
        mean=mean,
        median=float(np.median(x)),
        stddev=stddev,
        cv=cv,
        min=float(x.min()),
        max=float(x.max()),
        ci95_low=low,
        ci95_high=high,
        ci95_halfwidth_rel=halfwidth_rel,
        method=used,
        confidence=float(confidence),
    )


@dataclass(frozen=True)
class StopDecision:
    """Whether to stop measuring, and why.

    ``reason`` is ``"converged"``, ``"max_rounds"``, ``"max_time"`` or ``"continue"``. ``rounds`` is
    the number of rounds seen; ``rel_halfwidths`` the relative CI half-width per available metric
    (None where undefined), for logging.
    """

    stop: bool
    reason: StopReason
    rounds: int = 0
    rel_halfwidths: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class StopRule:
    """Adaptive stopping: measure until every metric's CI is tight enough, within bounds.

    Rules, in order:

    1. Fewer than ``min_rounds`` rounds: continue, whatever the time. As in pytest-benchmark,
       ``min_rounds`` wins over ``max_time_s``: fewer rounds would give no usable interval.
    2. Every available metric has at least ``max(min_rounds, 2)`` samples and its t-interval
       half-width (at ``confidence``) is within ``target_rel_halfwidth`` of ``|mean|`` (a zero mean
       converges only with a zero-width interval): ``"converged"``.
    3. ``max_rounds`` reached: ``"max_rounds"``.
    4. ``elapsed_s >= max_time_s``: ``"max_time"``.
    5. Otherwise ``"continue"``.
    """

    target_rel_halfwidth: float = 0.02
    min_rounds: int = 3
    max_rounds: int = 50
    max_time_s: float = 600.0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_rel_halfwidth) and self.target_rel_halfwidth > 0):
            raise ConfigError("target_rel_halfwidth", self.target_rel_halfwidth, reason="a positive fraction")
        if isinstance(self.min_rounds, bool) or not isinstance(self.min_rounds, int) or self.min_rounds < 1:
            raise ConfigError("min_rounds", self.min_rounds, reason="a positive integer")
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int) or self.max_rounds < self.min_rounds:
            raise ConfigError("max_rounds", self.max_rounds, reason=f"an integer >= min_rounds ({self.min_rounds})")
        if not (self.max_time_s > 0):
            raise ConfigError("max_time_s", self.max_time_s, reason="positive seconds")
        _check_confidence(self.confidence)

    def decide(self, samples_by_metric: Mapping[str, Sequence[float] | None], elapsed_s: float) -> StopDecision:
        """Decide after a round, from all samples so far per metric and the elapsed seconds.

        Metrics whose samples are None (unavailable, e.g. no energy counter) are ignored; at least
        one metric must be available.
        """
        available = {name: s for name, s in samples_by_metric.items() if s is not None}
        if not available:
            raise ConfigError(
                "samples_by_metric", dict(samples_by_metric), reason="at least one metric must have samples"
            )
        if not math.isfinite(elapsed_s) or elapsed_s < 0:
            raise ConfigError("elapsed_s", elapsed_s, reason="non-negative seconds")
        counts = {name: len(s) for name, s in available.items()}
        rounds = max(counts.values())
        if rounds < self.min_rounds:
            return StopDecision(False, "continue", rounds, {})

        rel: dict[str, float | None] = {}
        converged = True
        for name, s in available.items():
            if counts[name] < self.min_rounds:
                rel[name] = None
                converged = False
                continue
            st = summarize(s, method="t", confidence=self.confidence)
            rel[name] = st.ci95_halfwidth_rel
            if st.ci95_halfwidth_rel is None:
                # Mean 0: only an exactly zero-width interval counts as converged.
                converged = converged and st.ci95_halfwidth == 0.0
            elif st.ci95_halfwidth_rel > self.target_rel_halfwidth:
                converged = False
        if converged:
            return StopDecision(True, "converged", rounds, rel)
        if rounds >= self.max_rounds:
            return StopDecision(True, "max_rounds", rounds, rel)
        if elapsed_s >= self.max_time_s:
            return StopDecision(True, "max_time", rounds, rel)
        return StopDecision(False, "continue", rounds, rel)


def iterations_per_window(
    call_duration_s: float,
    resolution_s: float | None,
    min_periods: int = 20,
    max_iterations: int = 1000,
) -> int:
    """How many calls to time together so one measurement spans ``min_periods`` timer periods.

    The smallest ``n >= 1`` with ``n * call_duration_s >= min_periods * resolution_s``, capped at
    ``max_iterations`` (like pytest-benchmark calibrating iterations to its timer's precision).
    ``resolution_s`` None (resolution unknown or irrelevant) gives 1. A call too fast to measure
    (``call_duration_s == 0``) gives ``max_iterations``.
    """
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise ConfigError("max_iterations", max_iterations, reason="a positive integer")
    if isinstance(min_periods, bool) or not isinstance(min_periods, int) or min_periods < 1:
        raise ConfigError("min_periods", min_periods, reason="a positive integer")
    if not (math.isfinite(call_duration_s) and call_duration_s >= 0):
        raise ConfigError("call_duration_s", call_duration_s, reason="non-negative finite seconds")
    if resolution_s is None:
        return 1
    if not (math.isfinite(resolution_s) and resolution_s >= 0):
        raise ConfigError("resolution_s", resolution_s, reason="non-negative finite seconds or None")
    window_s = min_periods * resolution_s
    if call_duration_s == 0.0:
        return 1 if window_s == 0.0 else max_iterations
    n = max(1, math.ceil(window_s / call_duration_s))
    # The division rounds; settle the float boundary with the same product the contract states.
    while n > 1 and (n - 1) * call_duration_s >= window_s:
        n -= 1
    while n * call_duration_s < window_s:
        n += 1
    return min(n, max_iterations)


def relative_change(new: float, old: float) -> float | None:
    """``(new - old) / |old|``; 0 when both are 0, None when only ``old`` is 0 (undefined)."""
    if old == 0:
        return 0.0 if new == 0 else None
    return (new - old) / abs(old)


@dataclass(frozen=True)
class ChangeResult:
    """Outcome of comparing new samples with old ones for a lower-is-better metric.

    ``rel_change_median`` is ``(median(new) - median(old)) / |median(old)|``. ``verdict`` is
    ``"faster"``/``"slower"`` only for a significant change at least ``threshold_rel`` large;
    ``reason`` says why the verdict was reached.
    """

    rel_change_median: float | None
    verdict: Verdict
    significant: bool
    p_value: float | None
    ci_overlap: bool | None
    reason: str


def _welch_p_value(a: np.ndarray, b: np.ndarray) -> float:
    ma, sa = _mean_and_stddev(a)
    mb, sb = _mean_and_stddev(b)
    if sa == 0.0 and sb == 0.0:
        # Welch's t is undefined with no spread anywhere: the means either differ exactly or not.
        return 1.0 if ma == mb else 0.0
    with warnings.catch_warnings():
        # scipy warns of precision loss for nearly identical samples (common for steady GPU timings);
        # the p-value is still usable, and the CI-overlap test guards the verdict as well.
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        return float(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)


def is_significant_change(
    new_samples: Sequence[float] | np.ndarray,
    old_samples: Sequence[float] | np.ndarray,
    threshold_rel: float,
    confidence: float = 0.95,
) -> ChangeResult:
    """Is ``new`` really faster or slower than ``old`` (lower is better)?

    A difference inside the noise is not a change: the verdict is ``"unchanged"`` when either side
    has fewer than 2 samples, the two t-intervals of the mean (at ``confidence``) overlap, Welch's
    t-test is not significant at ``1 - confidence``, the median and mean move in opposite directions,
    or ``|relative change of medians| < threshold_rel``. Swapping new and old mirrors the
    significance tests (not the relative change's magnitude, which is relative to ``old``).
    """
    _check_confidence(confidence)
    if not (math.isfinite(threshold_rel) and threshold_rel >= 0):
        raise ConfigError("threshold_rel", threshold_rel, reason="a non-negative fraction")
    new = _as_samples(new_samples, "new_samples")
    old = _as_samples(old_samples, "old_samples")
    rel = relative_change(float(np.median(new)), float(np.median(old)))
    if new.size < 2 or old.size < 2:
        return ChangeResult(rel, "unchanged", False, None, None, "fewer than 2 samples on a side: noise unknown")
    new_low, new_high = t_interval(new, confidence)
    old_low, old_high = t_interval(old, confidence)
    overlap = new_low <= old_high and old_low <= new_high
    p_value = _welch_p_value(new, old)
    significant = (not overlap) and p_value < 1.0 - confidence
    if not significant:
        why = "confidence intervals overlap" if overlap else "Welch t-test not significant"
        return ChangeResult(rel, "unchanged", False, p_value, overlap, why)
    mean_delta = _mean_and_stddev(new)[0] - _mean_and_stddev(old)[0]
    median_delta = float(np.median(new)) - float(np.median(old))
    if median_delta == 0.0 or (median_delta > 0) != (mean_delta > 0):
        return ChangeResult(rel, "unchanged", True, p_value, overlap, "median and mean disagree on the direction")
    if rel is not None and abs(rel) < threshold_rel:
        return ChangeResult(rel, "unchanged", True, p_value, overlap, f"change below threshold {threshold_rel:g}")
    verdict = "slower" if median_delta > 0 else "faster"
    return ChangeResult(rel, verdict, True, p_value, overlap, "significant change")
