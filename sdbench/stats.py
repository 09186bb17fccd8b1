"""Statistics for benchmark samples: intervals of the median, change intervals, a stop rule, calibration.

Every record reports the MEDIAN of its per-round samples as the headline (``images_per_s = 1 / median``,
``sdbench compare`` compares medians), so every interval here is an interval of the median, and every
change interval is an interval of the ratio of medians. The methods, when each is used, and a coverage
study that shows they hold their level are in ``docs/statistics.md``; in short:

* :func:`summarize` -- positive samples (time, energy, power): with enough rounds for order statistics
  to reach the confidence level (6 at 95 %) the distribution-free order-statistic interval of the median,
  interpolated (Hettmansperger-Sheather); with fewer, Student's t on the logs ("log-t", exact for
  lognormal rounds, whose median is ``exp(mu)``), widened to contain the sample median where it does
  not. Both live inside ``(0, inf)``. Samples that may be <= 0 (an idle-subtracted energy) use the same
  order-statistic interval on the raw scale, or Student's t of the raw values with few rounds.
* :func:`change_interval` -- ``median(new) / median(old) - 1`` with an interval from the log ratio
  (the ratio of medians from both sides' order-statistic intervals, or Welch's t on the logs with
  fewer rounds), so it lies above -100 % and contains its estimate; the verdict is read off the same
  interval ("slower" iff it lies above 0, "faster" iff below).
* :class:`StopRule` -- stops when the record's own interval is tight enough, or early
  (``noise_limited``) when the spread seen says the target is out of reach within the caps.

All metrics here are "lower is better" (seconds, joules), which only matters for the verdict words.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.integrate
import scipy.optimize
import scipy.stats

from sdbench.errors import ConfigError, SdbenchError

Verdict = Literal["faster", "slower", "unchanged"]
StopReason = Literal["converged", "noise_limited", "max_rounds", "max_time", "continue"]

#: Interval methods :func:`summarize` can be asked for. ``"auto"`` picks per the module docstring; the
#: others force one (falling back to what ``"auto"`` would do where the forced one cannot work).
CI_METHODS: tuple[str, ...] = ("auto", "log-t", "median-order-statistic", "bootstrap-percentile")
#: Every value ``SampleStats.method`` (``<prefix>_ci_method``) can take.
INTERVAL_METHODS: tuple[str, ...] = ("log-t", "median-order-statistic", "bootstrap-percentile", "t", "zero-spread",
                                     "none")
#: Every value ``ChangeEstimate.method`` can take.
CHANGE_METHODS: tuple[str, ...] = ("log-welch", "ratio-of-medians", "summary-log-welch", "raw-welch", "zero-spread",
                                   "none")

#: A round is an outlier when it lies more than this many robust standard deviations (1.4826 x MAD, in
#: log space for positive samples) from the median: the Iglewicz-Hoaglin modified z-score rule.
OUTLIER_MAD_K = 3.5
#: MAD -> standard deviation for normal data (1 / Phi^-1(3/4)).
MAD_TO_SD = 1.482602218505602
#: Standard error of a sample median over that of a sample mean for normal data: sqrt(pi / 2).
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2.0)
#: The stop rule calls a metric noise-limited only when even this one-sided lower confidence bound of
#: its spread could not reach the target within the caps (a noisy early spread estimate does not stop).
SPREAD_LOWER_CONFIDENCE = 0.90

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


# --- the interval of the median: vectorised over rows, so the coverage study runs the same code ---------------


@functools.lru_cache(maxsize=1024)
def _order_statistic_plan(n: int, confidence: float) -> tuple[int, float] | None:
    """``(k, lam)`` of the Hettmansperger-Sheather interval of the median of ``n`` samples; None when
    no order-statistic interval reaches ``confidence`` (``[x(1), x(n)]`` covers with ``1 - 2 / 2**n``).

    ``[x(k), x(n-k+1)]`` (1-based) covers the median of any continuous distribution with probability
    ``g(k) = 1 - 2 * P(B <= k - 1)``, ``B ~ Binomial(n, 1/2)`` (the interval ``scipy.stats.quantile_test``
    returns). ``k`` is the largest with ``g(k) >= confidence``; interpolating towards the next narrower
    pair by ``lam`` brings the coverage from ``g(k)`` close to ``confidence`` (Hettmansperger and Sheather
    1986, "Confidence intervals based on interpolated order statistics", Stat. Prob. Letters 4).
    """
    def coverage(k: int) -> float:
        return float(1.0 - 2.0 * scipy.stats.binom.cdf(k - 1, n, 0.5))

    if n < 2 or coverage(1) < confidence:
        return None
    k = 1
    while k + 1 <= n - k and coverage(k + 1) >= confidence:
        k += 1
    if k + 1 > n - k:
        return k, 0.0  # no narrower pair to interpolate towards: keep the (over-covering) k pair
    g_k, g_next = coverage(k), coverage(k + 1)
    share = (g_k - confidence) / (g_k - g_next)
    lam = (n - k) * share / (k + (n - 2 * k) * share)
    return k, float(lam)


def order_statistic_min_n(confidence: float = 0.95) -> int:
    """Fewest samples whose order-statistic interval of the median reaches ``confidence`` (6 at 0.95)."""
    _check_confidence(confidence)
    n = 2
    while _order_statistic_plan(n, float(confidence)) is None:
        n += 1
    return n


def _order_statistic_rows(ys: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Hettmansperger-Sheather bounds per row of sorted ``ys`` (the caller checked the plan exists)."""
    n = ys.shape[1]
    plan = _order_statistic_plan(n, confidence)
    assert plan is not None
    k, lam = plan
    low = lam * ys[:, k] + (1.0 - lam) * ys[:, k - 1]
    high = lam * ys[:, n - k - 1] + (1.0 - lam) * ys[:, n - k]
    return low, high


def _t_rows(ys: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Student's t interval of the mean per row."""
    n = ys.shape[1]
    centre = ys.mean(axis=1)
    sem = ys.std(axis=1, ddof=1) / math.sqrt(n)
    t = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1))
    return centre - t * sem, centre + t * sem


def _outlier_counts(ys: np.ndarray) -> np.ndarray:
    """Rounds per row beyond ``OUTLIER_MAD_K`` robust standard deviations of the row's median.

    With a zero MAD (more than half the rounds equal) any round off the median counts: the bulk has no
    spread at all, so a round that differs is not part of it.
    """
    centre = np.median(ys, axis=1, keepdims=True)
    dev = np.abs(ys - centre)
    scale = MAD_TO_SD * np.median(dev, axis=1, keepdims=True)
    return np.sum(dev > OUTLIER_MAD_K * scale, axis=1)


_CODE_NAMES = ("zero-spread", "log-t", "median-order-statistic", "t")
_ZERO, _LOG_T, _ORDER, _RAW_T = range(4)


@dataclass(frozen=True)
class _IntervalRows:
    low: np.ndarray
    high: np.ndarray
    median: np.ndarray
    code: np.ndarray  # index into _CODE_NAMES
    extended: np.ndarray  # the t interval was widened to contain the median


def _median_interval_rows(x: np.ndarray, confidence: float, *, log_scale: bool, force: str = "auto") -> _IntervalRows:
    """The interval of the median of each row of ``x`` (shape ``(rows, n)``, ``n >= 2``).

    ``log_scale`` (all samples > 0): intervals computed on ``log(x)`` and mapped back, so they lie in
    ``(0, inf)``. ``force`` is ``"auto"``, ``"log-t"`` or ``"median-order-statistic"``.
    """
    xs = np.sort(x, axis=1)
    rows, n = xs.shape
    median = np.median(xs, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ys = np.log(xs) if log_scale else xs
    order_ok = _order_statistic_plan(n, confidence) is not None
    use_order = np.full(rows, order_ok and force != "log-t")
    low_y, high_y = _t_rows(ys, confidence)
    if order_ok:
        o_low, o_high = _order_statistic_rows(ys, confidence)
        low_y, high_y = np.where(use_order, o_low, low_y), np.where(use_order, o_high, high_y)
    with np.errstate(over="ignore", under="ignore"):
        low, high = (np.exp(low_y), np.exp(high_y)) if log_scale else (low_y, high_y)
    if log_scale:
        # exp of a very negative log underflows to 0; the bound is positive, just below float range.
        low = np.maximum(low, np.finfo(float).tiny)
    code = np.where(use_order, _ORDER, _LOG_T if log_scale else _RAW_T)
    # The t interval centres on the mean (of the logs), which can sit far enough from the median that the
    # median falls outside; widen it to contain the point estimate. The order-statistic interval holds the
    # median by construction (x(k+1) <= median <= x(n-k)); the clip below only absorbs exp/log rounding.
    extended = ~use_order & ((median < low) | (median > high))
    low, high = np.minimum(low, median), np.maximum(high, median)
    zero = xs[:, 0] == xs[:, -1]
    low, high = np.where(zero, median, low), np.where(zero, median, high)
    code = np.where(zero, _ZERO, code)
    extended &= ~zero
    return _IntervalRows(low, high, median, code, extended)


@dataclass(frozen=True)
class SampleStats:
    """Summary of one metric's samples, with an interval of the MEDIAN (the headline estimate).

    ``cv`` is ``stddev / |mean|``; ``ci95_halfwidth_rel`` is ``(high - low) / 2 / |median|`` (the stop
    rule's measure); both None when their denominator is 0. The interval is at ``confidence`` (0.95
    unless asked otherwise) whatever the ``ci95_`` names say, and always contains the median; for
    positive samples ``0 < ci95_low <= median <= ci95_high``. ``method`` names what made it (one of
    :data:`INTERVAL_METHODS`; ``"none"`` with one sample, when the interval fields are None).
    ``extended``: a t interval was widened to contain the median. ``outliers``: rounds beyond
    :data:`OUTLIER_MAD_K` robust standard deviations (log scale when positive). ``log_sd``: sample
    standard deviation of the logs (about the CV for small spreads), None unless all samples are > 0.
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
    extended: bool = False
    outliers: int = 0
    log_sd: float | None = None

    @property
    def ci95_halfwidth(self) -> float | None:
        """Absolute half-width ``(high - low) / 2`` of the interval, None without one."""
        if self.ci95_low is None or self.ci95_high is None:
            return None
        return (self.ci95_high - self.ci95_low) / 2.0

    def as_dict(self, prefix: str) -> dict[str, float | int | str | bool | None]:
        """Flat record fields: ``{prefix}_n``, ``{prefix}_mean``, ``{prefix}_median``, ... ``{prefix}_ci_method``."""
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
            f"{prefix}_ci_extended": self.extended,
            f"{prefix}_outliers": self.outliers,
            f"{prefix}_log_sd": self.log_sd,
        }


def _resolve_positive(x: np.ndarray, positive: bool | None, name: str = "samples") -> bool:
    all_positive = bool(np.all(x > 0.0))
    if positive is None:
        return all_positive
    if positive and not all_positive:
        raise ConfigError(name, x.tolist(), reason="positive=True but a sample is <= 0")
    return bool(positive)


def _bootstrap_median_interval(x: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    """``scipy.stats.bootstrap`` percentile interval of the median (resampled medians are sample values
    or midpoints of two, so the bounds lie in ``[min, max]``)."""
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError("n_resamples", n_resamples, reason="a positive integer")
    result = scipy.stats.bootstrap((x,), np.median, n_resamples=n_resamples, confidence_level=confidence,
                                   method="percentile", vectorized=True,
                                   **{_BOOTSTRAP_SEED_ARG: np.random.default_rng(seed)})
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarize(
    samples: Sequence[float] | np.ndarray,
    method: str = "auto",
    confidence: float = 0.95,
    seed: int = 0,
    *,
    n_resamples: int = 2000,
    positive: bool | None = None,
) -> SampleStats:
    """Summarise samples with a confidence interval of their median.

    Args:
        samples: at least one finite number.
        method: ``"auto"`` (below), ``"log-t"``, ``"median-order-statistic"`` or ``"bootstrap-percentile"``
            (``scipy.stats.bootstrap`` percentile interval of the median; deterministic for ``seed``).
            A forced method that cannot work falls back to ``"auto"``'s choice (order statistics with
            too few samples, log-t with a sample <= 0); ``SampleStats.method`` says what was used.
        confidence: interval level.
        seed, n_resamples: bootstrap settings.
        positive: None detects (all samples > 0: log scale); True insists (ConfigError otherwise);
            False uses the raw scale even for positive samples.

    ``"auto"``: identical samples give a zero-width interval ("zero-spread"). With at least
    :func:`order_statistic_min_n` samples, the interpolated order-statistic interval of the median
    ("median-order-statistic": distribution-free, so outliers and heavy tails cannot bias it; on the
    log scale when positive). With fewer, where no order-statistic interval reaches ``confidence``,
    Student's t on the logs ("log-t", exact for lognormal rounds) or of the raw values ("t", when a
    sample is <= 0), widened to contain the median where it does not (``extended``). One sample: no
    interval (``"none"``).
    """
    if method not in CI_METHODS:
        raise ConfigError("method", method, allowed=CI_METHODS)
    _check_confidence(confidence)
    x = _as_samples(samples)
    log_scale = _resolve_positive(x, positive)
    mean, stddev = _mean_and_stddev(x)
    median = float(np.median(x))
    cv = stddev / abs(mean) if mean != 0.0 else None
    log_sd = None
    outliers = 0
    if log_scale:
        logs = np.log(x)
        log_sd = float(np.std(logs, ddof=1)) if x.size > 1 and stddev > 0.0 else 0.0
        outliers = int(_outlier_counts(logs[None, :])[0])
    elif x.size > 1:
        outliers = int(_outlier_counts(x[None, :])[0])
    low: float | None = None
    high: float | None = None
    used = "none"
    extended = False
    if x.size >= 2:
        if method == "bootstrap-percentile" and stddev > 0.0:
            low, high = _bootstrap_median_interval(x, float(confidence), n_resamples, seed)
            # Resampled medians lie in [min, max]; scipy's percentile interpolation can overshoot an ulp.
            low, high = max(low, float(x.min())), min(high, float(x.max()))
            extended = not (low <= median <= high)
            low, high, used = min(low, median), max(high, median), "bootstrap-percentile"
        else:
            force = method if (method != "log-t" or log_scale) else "auto"
            rows = _median_interval_rows(x[None, :], float(confidence), log_scale=log_scale,
                                         force=force if force != "bootstrap-percentile" else "auto")
            low, high = float(rows.low[0]), float(rows.high[0])
            used, extended = _CODE_NAMES[int(rows.code[0])], bool(rows.extended[0])
    halfwidth_rel = (high - low) / 2.0 / abs(median) if low is not None and high is not None and median != 0.0 else None
    return SampleStats(
        n=int(x.size),
        mean=mean,
        median=median,
        stddev=stddev,
        cv=cv,
        min=float(x.min()),
        max=float(x.max()),
        ci95_low=low,
        ci95_high=high,
        ci95_halfwidth_rel=halfwidth_rel,
        method=used,
        confidence=float(confidence),
        extended=extended,
        outliers=outliers,
        log_sd=log_sd,
    )


# --- the change between two sets of samples -----------------------------------------------------------------


@dataclass(frozen=True)
class ChangeEstimate:
    """``new`` against ``old`` for a lower-is-better metric: one estimate, one interval, one verdict.

    ``estimate_rel`` is ``median(new) / median(old) - 1``; ``[low_rel, high_rel]`` its interval at
    ``confidence`` (``method``: one of :data:`CHANGE_METHODS`), which always contains the estimate and,
    for positive samples, lies above -1 (-100 %). The verdict is read off that interval and nothing
    else: ``"slower"`` iff ``low_rel > 0``, ``"faster"`` iff ``high_rel < 0``, else ``"unchanged"``
    (also when there is no interval: ``noise_known`` False). ``regression`` (what ``--fail-on`` gates)
    is ``verdict == "slower" and estimate_rel >= threshold_rel``. ``p_value`` is the p-value of the
    test dual to the interval (0 outside the interval iff ``p < 1 - confidence``); None when the
    interval was ``extended`` to contain the estimate (the test no longer matches it) or is missing.
    """

    estimate_rel: float | None
    low_rel: float | None
    high_rel: float | None
    method: str
    verdict: Verdict
    reason: str
    confidence: float = 0.95
    threshold_rel: float = 0.0
    p_value: float | None = None
    extended: bool = False
    n_new: int = 0
    n_old: int = 0

    @property
    def noise_known(self) -> bool:
        """An interval exists (both sides had at least 2 samples)."""
        return self.low_rel is not None and self.high_rel is not None

    @property
    def beyond_threshold(self) -> bool:
        """A real change (verdict not unchanged) at least ``threshold_rel`` large."""
        return self.verdict != "unchanged" and self.estimate_rel is not None and abs(self.estimate_rel) >= self.threshold_rel

    @property
    def regression(self) -> bool:
        """Slower, by at least ``threshold_rel``."""
        return self.verdict == "slower" and self.estimate_rel is not None and self.estimate_rel >= self.threshold_rel


def _verdict(low: float, high: float) -> tuple[Verdict, str]:
    if low > 0.0:
        return "slower", "interval above 0"
    if high < 0.0:
        return "faster", "interval below 0"
    return "unchanged", "interval contains 0"


_CHANGE_CODES = ("zero-spread", "log-welch", "ratio-of-medians")


@dataclass(frozen=True)
class _ChangeRows:
    estimate: np.ndarray  # log(median(new) / median(old))
    low: np.ndarray  # log scale
    high: np.ndarray
    code: np.ndarray  # index into _CHANGE_CODES
    extended: np.ndarray
    p_value: np.ndarray  # NaN where extended


def _change_rows(new: np.ndarray, old: np.ndarray, confidence: float) -> _ChangeRows:
    """The log-ratio interval of medians per row pair; positive samples, shapes ``(rows, n_new)`` and
    ``(rows, n_old)``, both ``n >= 2``. Everything is computed on logs, so swapping new and old negates
    every number exactly (IEEE negation and commutative sums), which mirrors the verdict.
    """
    a, b = np.log(np.sort(new, axis=1)), np.log(np.sort(old, axis=1))
    n_a, n_b = a.shape[1], b.shape[1]
    estimate = np.log(np.median(new, axis=1)) - np.log(np.median(old, axis=1))
    zero = (a[:, 0] == a[:, -1]) & (b[:, 0] == b[:, -1])
    can_order = (_order_statistic_plan(n_a, confidence) is not None
                 and _order_statistic_plan(n_b, confidence) is not None)
    if can_order:
        # Enough rounds on both sides for order statistics: each side's Hettmansperger-Sheather interval
        # of its log median, read as +-z standard errors, combined in quadrature around the log ratio of
        # medians (the construction of Price and Bonett 2002, "Distribution-free confidence intervals for
        # difference and ratio of medians", J. Stat. Comput. Simul. 72, with interpolated order
        # statistics). Always, not only when a side looks heavy-tailed: choosing the method per sample by
        # an outlier test made the false "slower" rate 2.9 % and the coverage 93.8 % on lognormal rounds
        # (n = 30), the pre-test's selection bias; see docs/statistics.md.
        z = float(scipy.stats.norm.ppf((1.0 + confidence) / 2.0))
        lo_a, hi_a = _order_statistic_rows(a, confidence)
        lo_b, hi_b = _order_statistic_rows(b, confidence)
        se = np.hypot((hi_a - lo_a) / (2.0 * z), (hi_b - lo_b) / (2.0 * z))
        low, high = estimate - z * se, estimate + z * se
        with np.errstate(invalid="ignore", divide="ignore"):
            p_value = np.where(se > 0.0, 2.0 * scipy.stats.norm.sf(np.abs(estimate) / se),
                               np.where(estimate == 0.0, 1.0, 0.0))
        code = np.full(estimate.shape, 2)
    else:
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            # Nearly identical rounds make scipy warn of precision loss, and one constant side divides 0/0
            # in a moment; zero spread is handled below and precision loss does not hurt the interval.
            warnings.simplefilter("ignore", RuntimeWarning)
            welch = scipy.stats.ttest_ind(a, b, axis=1, equal_var=False)
            ci = welch.confidence_interval(confidence_level=confidence)
        low, high = np.asarray(ci.low, dtype=float), np.asarray(ci.high, dtype=float)
        p_value = np.asarray(welch.pvalue, dtype=float)
        code = np.full(estimate.shape, 1)
    # Both sides constant: the change is exactly the ratio of the two values, with no noise around it.
    low, high = np.where(zero, estimate, low), np.where(zero, estimate, high)
    p_value = np.where(zero, np.where(estimate == 0.0, 1.0, 0.0), p_value)
    code = np.where(zero, 0, code)
    extended = (estimate < low) | (estimate > high)
    low, high = np.minimum(low, estimate), np.maximum(high, estimate)
    p_value = np.where(extended, np.nan, p_value)
    return _ChangeRows(estimate, low, high, code, extended, p_value)


def _check_threshold(threshold_rel: float) -> None:
    if isinstance(threshold_rel, bool) or not (isinstance(threshold_rel, (int, float)) and math.isfinite(threshold_rel)
                                              and threshold_rel >= 0):
        raise ConfigError("threshold_rel", threshold_rel, reason="a non-negative fraction")


_ABOVE_MINUS_ONE = math.nextafter(-1.0, 0.0)


def _expm1(x: float) -> float:
    """``exp(x) - 1`` for a log ratio: ``inf`` beyond float range, and never -1 (a ratio is positive;
    one below float resolution, from two rounds of wildly different size, is the float just above -1).
    Monotone, so the order of estimate and bounds survives."""
    try:
        return max(math.expm1(x), _ABOVE_MINUS_ONE)
    except OverflowError:
        return math.inf


def _finish(estimate_log: float, low_log: float, high_log: float, method: str, extended: bool, p: float | None,
            confidence: float, threshold_rel: float, n_new: int, n_old: int, log_scale: bool = True) -> ChangeEstimate:
    verdict, why = _verdict(low_log, high_log)
    if log_scale:
        est, low, high = _expm1(estimate_log), _expm1(low_log), _expm1(high_log)
    else:
        est, low, high = estimate_log, low_log, high_log
    if extended:
        why += " (widened to contain the estimate)"
    return ChangeEstimate(est, low, high, method, verdict, f"{method}: {why}", float(confidence), float(threshold_rel),
                          None if extended or p is None or not math.isfinite(p) else float(p), extended, n_new, n_old)


def change_interval(
    new_samples: Sequence[float] | np.ndarray,
    old_samples: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    threshold_rel: float = 0.0,
) -> ChangeEstimate:
    """The relative change of the median, its interval and the verdict, from one computation.

    Positive samples (time, energy, power), both sides with at least 2, all on the logs:

    * both sides with enough rounds for order statistics (:func:`order_statistic_min_n`, 6 at 95 %):
      ``"ratio-of-medians"``, ``log(median ratio) +- z * sqrt(se_new**2 + se_old**2)`` with each side's
      standard error read off its Hettmansperger-Sheather interval of the log median (the interval
      :func:`summarize` reports), so it is distribution-free: outliers and heavy tails on either side
      cannot bias it, and it estimates the ratio of the medians the records report;
    * fewer rounds on a side: ``"log-welch"``, Welch's t interval of ``mean(log new) - mean(log old)``
      (``scipy.stats.ttest_ind``), the log ratio of medians for lognormal rounds and for any shape that
      only scales between the two sides, widened to contain the log ratio of medians where it does not
      (``extended``);
    * both sides constant: ``"zero-spread"``, a zero-width interval at the change.

    The interval is mapped back with ``expm1``, so it lies in ``(-1, inf)`` and contains
    ``estimate_rel = median(new) / median(old) - 1``; swapping new and old negates it on the log scale
    exactly, which mirrors the verdict.

    A sample <= 0 on either side: ``"raw-welch"``, Welch's interval of the difference of means over
    ``|median(old)|``, widened to contain ``(median(new) - median(old)) / |median(old)|`` (no -100 %
    bound: such a quantity can change sign); ``"none"`` when ``median(old)`` is 0.

    Fewer than 2 samples on a side: no interval (``"none"``), verdict unchanged, noise unknown.
    The verdict rule and ``regression`` are those of :class:`ChangeEstimate`.
    """
    _check_confidence(confidence)
    _check_threshold(threshold_rel)
    new = _as_samples(new_samples, "new_samples")
    old = _as_samples(old_samples, "old_samples")
    med_new, med_old = float(np.median(new)), float(np.median(old))
    if new.size < 2 or old.size < 2:
        positive = med_new > 0 and med_old > 0
        est = med_new / med_old - 1.0 if positive else relative_change(med_new, med_old)
        return ChangeEstimate(est, None, None, "none", "unchanged", "fewer than 2 samples on a side: noise unknown",
                              float(confidence), float(threshold_rel), None, False, int(new.size), int(old.size))
    if np.all(new > 0) and np.all(old > 0):
        rows = _change_rows(new[None, :], old[None, :], float(confidence))
        return _finish(float(rows.estimate[0]), float(rows.low[0]), float(rows.high[0]),
                       _CHANGE_CODES[int(rows.code[0])], bool(rows.extended[0]), float(rows.p_value[0]),
                       confidence, threshold_rel, int(new.size), int(old.size))
    if med_old == 0.0:
        return ChangeEstimate(relative_change(med_new, med_old), None, None, "none", "unchanged",
                              "baseline median is 0: relative change undefined", float(confidence),
                              float(threshold_rel), None, False, int(new.size), int(old.size))
    scale = abs(med_old)
    est = (med_new - med_old) / scale
    if float(new.min()) == float(new.max()) and float(old.min()) == float(old.max()):
        d = (float(new[0]) - float(old[0])) / scale
        return _finish(est, min(d, est), max(d, est), "zero-spread", d != est, 1.0 if d == 0.0 else 0.0, confidence,
                       threshold_rel, int(new.size), int(old.size), log_scale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # precision loss on nearly identical rounds
        welch = scipy.stats.ttest_ind(new, old, equal_var=False)
        ci = welch.confidence_interval(confidence_level=confidence)
    low, high = float(ci.low) / scale, float(ci.high) / scale
    extended = not (low <= est <= high)
    return _finish(est, min(low, est), max(high, est), "raw-welch", extended, float(welch.pvalue), confidence,
                   threshold_rel, int(new.size), int(old.size), log_scale=False)


@dataclass(frozen=True)
class SummaryMoments:
    """One side of a comparison known only by summary statistics (no per-round samples)."""

    median: float
    mean: float
    stddev: float
    n: int


def change_interval_from_summaries(
    new: SummaryMoments,
    old: SummaryMoments,
    confidence: float = 0.95,
    threshold_rel: float = 0.0,
) -> ChangeEstimate:
    """:func:`change_interval` for sides known only by median, mean, stddev and n.

    ``"summary-log-welch"``: the log moments of each side are those of the lognormal with that mean and
    stddev (``sd_log = sqrt(log(1 + cv**2))``, ``mean_log = log(mean) - sd_log**2 / 2``), and Welch's t
    interval of their difference is widened to contain ``log(median ratio)`` where it does not
    (``extended``), so it lies above -100 % and contains the estimate. No interval (``"none"``, noise
    unknown) with fewer than 2 samples on a side or a median or mean <= 0.
    """
    _check_confidence(confidence)
    _check_threshold(threshold_rel)
    values = (new.median, new.mean, new.stddev, old.median, old.mean, old.stddev)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ConfigError("summaries", (new, old), reason="median, mean and stddev must be finite numbers")
    est_rel = new.median / old.median - 1.0 if new.median > 0 and old.median > 0 else relative_change(new.median, old.median)
    if new.n < 2 or old.n < 2:
        return ChangeEstimate(est_rel, None, None, "none", "unchanged", "fewer than 2 samples on a side: noise unknown",
                              float(confidence), float(threshold_rel), None, False, int(new.n), int(old.n))
    if min(new.median, new.mean, old.median, old.mean) <= 0 or new.stddev < 0 or old.stddev < 0:
        return ChangeEstimate(est_rel, None, None, "none", "unchanged", "non-positive summary: no interval",
                              float(confidence), float(threshold_rel), None, False, int(new.n), int(old.n))

    def log_moments(s: SummaryMoments) -> tuple[float, float]:
        sd_log = math.sqrt(math.log1p((s.stddev / s.mean) ** 2))
        return math.log(s.mean) - sd_log**2 / 2.0, sd_log

    (mu_a, sd_a), (mu_b, sd_b) = log_moments(new), log_moments(old)
    estimate = math.log(new.median) - math.log(old.median)
    diff = mu_a - mu_b
    va, vb = sd_a**2 / new.n, sd_b**2 / old.n
    if va + vb == 0.0:
        low = high = diff
        p: float | None = 1.0 if diff == 0.0 else 0.0
        method = "zero-spread"
    else:
        share = va / (va + vb)  # Welch-Satterthwaite in shares, so tiny variances cannot underflow to 0/0
        df = 1.0 / (share**2 / (new.n - 1) + (1.0 - share) ** 2 / (old.n - 1))
        half = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, df)) * math.sqrt(va + vb)
        low, high = diff - half, diff + half
        p = float(2.0 * scipy.stats.t.sf(abs(diff) / math.sqrt(va + vb), df))
        method = "summary-log-welch"
    extended = not (low <= estimate <= high)
    return _finish(estimate, min(low, estimate), max(high, estimate), method, extended, p, confidence, threshold_rel,
                   int(new.n), int(old.n))


# --- the stop rule --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StopDecision:
    """Whether to stop measuring, and why.

    ``reason`` is ``"converged"``, ``"noise_limited"``, ``"max_rounds"``, ``"max_time"`` or
    ``"continue"``. ``rounds`` is the number of rounds seen; ``rel_halfwidths`` the relative half-width
    of each available metric's interval of the median (None where undefined), for logging. For the
    limiting metric (the one projected to need the most rounds; None before ``min_rounds``):
    ``limiting_metric``, its ``rel_halfwidth``, ``spread_cv`` (the per-round relative spread the
    projection used, see :meth:`StopRule.decide`) and ``rounds_needed`` (rounds projected to reach the
    target at that spread; ``rounds`` once it is reached).
    """

    stop: bool
    reason: StopReason
    rounds: int = 0
    rel_halfwidths: Mapping[str, float | None] = field(default_factory=dict)
    rounds_needed: int | None = None
    spread_cv: float | None = None
    rel_halfwidth: float | None = None
    limiting_metric: str | None = None


#: Projections beyond this many rounds are reported as this many (the spread is effectively unbounded).
MAX_PROJECTED_ROUNDS = 1_000_000


def rounds_for_halfwidth(spread_rel: float, target_rel_halfwidth: float, confidence: float = 0.95,
                         min_n: int = 2) -> int:
    """Fewest rounds ``n >= min_n`` with ``t(n - 1) * spread_rel / sqrt(n) <= target_rel_halfwidth``.

    ``t(df)`` is Student's quantile at ``confidence``; the fixed point is iterated because ``t``
    depends on ``n``. Capped at :data:`MAX_PROJECTED_ROUNDS`.
    """
    _check_confidence(confidence)
    if not (math.isfinite(spread_rel) and spread_rel >= 0):
        raise ConfigError("spread_rel", spread_rel, reason="a non-negative finite fraction")
    if not (math.isfinite(target_rel_halfwidth) and target_rel_halfwidth > 0):
        raise ConfigError("target_rel_halfwidth", target_rel_halfwidth, reason="a positive fraction")
    q = (1.0 + confidence) / 2.0
    n = max(2, int(min_n))
    if spread_rel == 0.0:
        return n
    z = float(scipy.stats.norm.ppf(q))
    if (z * spread_rel / target_rel_halfwidth) ** 2 > MAX_PROJECTED_ROUNDS:
        return MAX_PROJECTED_ROUNDS

    def reaches(k: int) -> bool:
        return float(scipy.stats.t.ppf(q, df=k - 1)) * spread_rel / math.sqrt(k) <= target_rel_halfwidth

    # t > z, so the normal answer is a lower bound; iterating n -> (t(n - 1) * s / target)**2 from it
    # reaches an n that does (t falls with n), and the half-width falls with n, so bisect between.
    low = max(n, math.ceil((z * spread_rel / target_rel_halfwidth) ** 2))
    if reaches(low):
        return low
    high = low
    while not reaches(high):
        if high >= MAX_PROJECTED_ROUNDS:
            return MAX_PROJECTED_ROUNDS
        t = float(scipy.stats.t.ppf(q, df=high - 1))
        high = min(MAX_PROJECTED_ROUNDS, max(high + 1, math.ceil((t * spread_rel / target_rel_halfwidth) ** 2)))
    while high - low > 1:  # invariant: low does not reach, high does
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def shorth_sd(samples: Sequence[float] | np.ndarray) -> float:
    """A robust standard deviation: the length of the shortest window holding ``h = n // 2 + 1`` of the
    sorted samples (the shorth), over that window's length for a normal distribution
    (``2 * Phi^-1((1 + h / n) / 2)`` standard deviations). With up to ``n - h`` outlying rounds there is
    always a window inside the bulk, so outliers cannot blow it up, only bias it by the bulk's share
    (a third of the rounds far off reads 1.7 bulk standard deviations, where the sample sd reads
    several); for few samples it tends to underestimate, which is the optimistic side for the stop
    rule's noise limit. 0 for fewer than 2 samples.
    """
    x = np.sort(_as_samples(samples))
    n = x.size
    if n < 2:
        return 0.0
    h = n // 2 + 1
    length = float(np.min(x[h - 1:] - x[: n - h + 1]))
    return length / (2.0 * float(scipy.stats.norm.ppf((1.0 + h / n) / 2.0)))


@dataclass(frozen=True)
class _Projection:
    rel_halfwidth: float | None
    spread_rel: float | None
    rounds_needed: int | None
    rounds_needed_optimistic: int | None
    converged: bool


@dataclass(frozen=True)
class StopRule:
    """Adaptive stopping on the record's own interval of the median, within bounds.

    Rules, in order:

    1. Fewer than ``min_rounds`` rounds: continue, whatever the time. As in pytest-benchmark,
       ``min_rounds`` wins over ``max_time_s``: fewer rounds would give no usable interval.
    2. Every available metric has at least ``max(min_rounds, 2)`` samples and the relative half-width
       ``(high - low) / 2 / |median|`` of its :func:`summarize` interval (at ``confidence``; the
       interval the record reports) is within ``target_rel_halfwidth`` (a zero median converges only
       with a zero-width interval): ``"converged"``.
    3. ``max_rounds`` reached: ``"max_rounds"``.
    4. ``elapsed_s >= max_time_s``: ``"max_time"``.
    5. From :attr:`noise_check_rounds` rounds on, a metric that cannot reach the target within the
       caps: ``"noise_limited"`` (see :meth:`decide`).
    6. Otherwise ``"continue"``.
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

    @property
    def noise_check_rounds(self) -> int:
        """Rounds before the noise limit is checked: ``min_rounds``, and at least enough for the
        order-statistic interval (6 at 95 %), so that two slow rounds among the first three (which
        inflate any spread estimate) cannot stop a run whose bulk is tight."""
        return max(self.min_rounds, order_statistic_min_n(self.confidence))

    def _project(self, samples: Sequence[float]) -> _Projection:
        st = summarize(samples, confidence=self.confidence)
        hw = st.ci95_halfwidth_rel
        if hw is None:
            # Median 0 (or one sample): no relative width; only an exactly zero-width interval converges.
            return _Projection(None, None, None, None, st.ci95_halfwidth == 0.0)
        converged = hw <= self.target_rel_halfwidth
        n = st.n
        q = (1.0 + self.confidence) / 2.0
        # The per-round spread implied by the interval's own width (inverting half-width = t * s / sqrt(n)),
        # and a robust one (the shorth sd of the logs, times the median's standard-error factor) that a few
        # slow rounds early on cannot inflate: projecting with the smaller is the optimistic reading.
        implied = hw * math.sqrt(n) / float(scipy.stats.t.ppf(q, df=n - 1))
        x = np.asarray(samples, dtype=float)
        robust = MEDIAN_SE_FACTOR * shorth_sd(np.log(x) if st.log_sd is not None else x / abs(st.median))
        spread = min(implied, robust) if robust > 0.0 else implied
        needed = rounds_for_halfwidth(spread, self.target_rel_halfwidth, self.confidence, min_n=n)
        # The spread of a few rounds is itself uncertain: decide "noise limited" only when even the lower
        # confidence bound of the spread (chi-square, n - 1 degrees of freedom) cannot reach the target.
        factor = math.sqrt((n - 1) / float(scipy.stats.chi2.ppf(SPREAD_LOWER_CONFIDENCE, df=n - 1)))
        optimistic = rounds_for_halfwidth(spread * factor, self.target_rel_halfwidth, self.confidence, min_n=n)
        if not converged:
            # Not there yet: at least one more round, whatever the (approximate) projection says.
            needed, optimistic = max(needed, n + 1), max(optimistic, n + 1)
        return _Projection(hw, spread, needed if not converged else n, optimistic if not converged else n, converged)

    def decide(self, samples_by_metric: Mapping[str, Sequence[float] | None], elapsed_s: float, *,
               round_s: float | None = None) -> StopDecision:
        """Decide after a round, from all samples so far per metric and the elapsed seconds.

        Metrics whose samples are None (unavailable, e.g. no energy counter) are ignored; at least
        one metric must be available. ``round_s`` is the mean seconds per round (default
        ``elapsed_s / rounds``).

        Noise limit: for each metric not yet converged, the rounds needed are projected from its
        per-round relative spread ``s`` with :func:`rounds_for_halfwidth`. ``s`` is the smaller of the
        spread implied by the current interval (``half-width * sqrt(n) / t``) and a robust one
        (``sqrt(pi/2) * shorth_sd`` of the logs: the median's standard-error factor times
        :func:`shorth_sd`), so a few slow rounds among the first ones cannot stop a run. Checked from
        :attr:`noise_check_rounds` rounds on. The run stops with
        ``"noise_limited"`` when, even at the :data:`SPREAD_LOWER_CONFIDENCE` lower confidence bound of
        ``s``, the projected rounds exceed ``max_rounds`` or their projected time
        (rounds x ``round_s``) exceeds ``max_time_s``. ``rounds_needed`` reports the projection at
        ``s`` itself.
        """
        available = {name: s for name, s in samples_by_metric.items() if s is not None}
        if not available:
            raise ConfigError(
                "samples_by_metric", dict(samples_by_metric), reason="at least one metric must have samples"
            )
        if not math.isfinite(elapsed_s) or elapsed_s < 0:
            raise ConfigError("elapsed_s", elapsed_s, reason="non-negative seconds")
        if round_s is not None and not (math.isfinite(round_s) and round_s >= 0):
            raise ConfigError("round_s", round_s, reason="non-negative seconds or None")
        counts = {name: len(s) for name, s in available.items()}
        rounds = max(counts.values())
        if rounds < self.min_rounds:
            return StopDecision(False, "continue", rounds, {})

        rel: dict[str, float | None] = {}
        projections: dict[str, _Projection] = {}
        converged = True
        for name, s in available.items():
            if counts[name] < max(self.min_rounds, 2):
                rel[name] = None
                converged = False
                continue
            p = self._project(s)
            projections[name] = p
            rel[name] = p.rel_halfwidth
            converged = converged and p.converged
        limiting = None
        # The limiting metric needs the most rounds; among equals (e.g. all converged), the widest.
        ranked = [(p.rounds_needed, p.rel_halfwidth or 0.0, name) for name, p in projections.items()
                  if p.rounds_needed is not None]
        if ranked:
            limiting = max(ranked)[2]
        elif projections:
            limiting = next(iter(projections))
        extra: dict[str, Any] = {}
        if limiting is not None:
            lp = projections[limiting]
            extra = {"rounds_needed": lp.rounds_needed, "spread_cv": lp.spread_rel, "rel_halfwidth": lp.rel_halfwidth,
                     "limiting_metric": limiting}
        if converged:
            return StopDecision(True, "converged", rounds, rel, **extra)
        if rounds >= self.max_rounds:
            return StopDecision(True, "max_rounds", rounds, rel, **extra)
        if elapsed_s >= self.max_time_s:
            return StopDecision(True, "max_time", rounds, rel, **extra)
        per_round_s = round_s if round_s is not None else elapsed_s / rounds
        for name, p in projections.items():
            if p.converged or p.rounds_needed_optimistic is None or counts[name] < self.noise_check_rounds:
                continue
            if p.rounds_needed_optimistic > self.max_rounds or p.rounds_needed_optimistic * per_round_s > self.max_time_s:
                return StopDecision(True, "noise_limited", rounds, rel, **extra)
        return StopDecision(False, "continue", rounds, rel, **extra)


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

    ``rel_change_median`` is ``median(new) / median(old) - 1``. ``verdict`` is
    ``"faster"``/``"slower"`` only when the :func:`change_interval` interval excludes 0 on that side and
    the change is at least ``threshold_rel`` large; ``reason`` says why the verdict was reached.
    ``significant``: the interval excludes 0 (whatever the threshold). ``ci_overlap``: whether the two
    sides' own intervals of the median overlap (informational; the verdict does not use it).
    ``change`` holds the full :class:`ChangeEstimate`.
    """

    rel_change_median: float | None
    verdict: Verdict
    significant: bool
    p_value: float | None
    ci_overlap: bool | None
    reason: str
    change: ChangeEstimate | None = None


def is_significant_change(
    new_samples: Sequence[float] | np.ndarray,
    old_samples: Sequence[float] | np.ndarray,
    threshold_rel: float,
    confidence: float = 0.95,
) -> ChangeResult:
    """Is ``new`` really faster or slower than ``old`` (lower is better), by at least ``threshold_rel``?

    The same computation as :func:`change_interval` (one interval, one verdict); the verdict is further
    ``"unchanged"`` when ``|estimate| < threshold_rel``. Swapping new and old mirrors the verdict.
    """
    change = change_interval(new_samples, old_samples, confidence=confidence, threshold_rel=threshold_rel)
    new, old = _as_samples(new_samples, "new_samples"), _as_samples(old_samples, "old_samples")
    overlap: bool | None = None
    if new.size >= 2 and old.size >= 2:
        a, b = summarize(new, confidence=confidence), summarize(old, confidence=confidence)
        assert a.ci95_low is not None and a.ci95_high is not None and b.ci95_low is not None and b.ci95_high is not None
        overlap = a.ci95_low <= b.ci95_high and b.ci95_low <= a.ci95_high
    significant = change.verdict != "unchanged"
    verdict, reason = change.verdict, change.reason
    if significant and not change.beyond_threshold:
        verdict, reason = "unchanged", f"{change.reason}; change below threshold {threshold_rel:g}"
    return ChangeResult(change.estimate_rel, verdict, significant, change.p_value, overlap, reason, change)


# --- coverage study: how often the intervals hold the truth ---------------------------------------------------

#: Distributions of :func:`coverage_study`: lognormal rounds, and lognormal rounds of which a share is
#: slowed by a uniform factor (eager GPU calls with an occasional slow round).
COVERAGE_DISTRIBUTIONS: tuple[str, ...] = ("lognormal", "mixture")
MIXTURE_SLOW_SHARE = 0.10
MIXTURE_SLOW_FACTOR = (1.3, 2.0)


def _log_sd_for_cv(cv: float) -> float:
    """sd of the logs of a lognormal with coefficient of variation ``cv``."""
    return math.sqrt(math.log1p(cv * cv))


def draw_rounds(distribution: str, cv: float, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Per-round samples of a coverage distribution, median 1 for ``"lognormal"``.

    ``"mixture"``: lognormal rounds (CV ``cv``) of which :data:`MIXTURE_SLOW_SHARE` are slowed by a factor
    uniform in :data:`MIXTURE_SLOW_FACTOR`; its median is :func:`true_median`.
    """
    if distribution not in COVERAGE_DISTRIBUTIONS:
        raise ConfigError("distribution", distribution, allowed=COVERAGE_DISTRIBUTIONS)
    x = np.exp(rng.normal(0.0, _log_sd_for_cv(cv), size=size))
    if distribution == "mixture":
        slow = rng.random(size) < MIXTURE_SLOW_SHARE
        x = np.where(slow, x * rng.uniform(*MIXTURE_SLOW_FACTOR, size=size), x)
    return x


@functools.lru_cache(maxsize=64)
def true_median(distribution: str, cv: float) -> float:
    """The population median of :func:`draw_rounds`' distribution (1 for the lognormal; the mixture's
    from its CDF, ``0.9 * Phi(log q / s) + 0.1 * E_u[Phi((log q - log u) / s)]`` = 1/2, by quadrature)."""
    if distribution not in COVERAGE_DISTRIBUTIONS:
        raise ConfigError("distribution", distribution, allowed=COVERAGE_DISTRIBUTIONS)
    if distribution == "lognormal":
        return 1.0
    s = _log_sd_for_cv(cv)
    lo_f, hi_f = MIXTURE_SLOW_FACTOR

    def cdf(q: float) -> float:
        slow, _ = scipy.integrate.quad(lambda u: scipy.stats.norm.cdf((math.log(q) - math.log(u)) / s), lo_f, hi_f)
        return (1.0 - MIXTURE_SLOW_SHARE) * float(scipy.stats.norm.cdf(math.log(q) / s)) + MIXTURE_SLOW_SHARE * slow / (hi_f - lo_f)

    return float(scipy.optimize.brentq(lambda q: cdf(q) - 0.5, 0.5, 2.0 * hi_f, xtol=1e-14))


@dataclass(frozen=True)
class CoverageCell:
    """One cell of the coverage study (``trials`` independent runs of ``n`` rounds).

    ``coverage``: share of :func:`summarize` intervals that contain the true median. ``methods``: share
    of trials per interval method. ``median_rel_halfwidth``: typical relative half-width.
    ``false_slower``: share of same-distribution pairs (``n`` rounds each) that :func:`change_interval`
    calls "slower" (nominal ``(1 - confidence) / 2``); ``change_coverage``: share whose change interval
    contains the true change, 0; ``change_methods``: share per change method.
    """

    distribution: str
    cv: float
    n: int
    trials: int
    confidence: float
    coverage: float
    methods: dict[str, float]
    median_rel_halfwidth: float
    false_slower: float
    change_coverage: float
    change_methods: dict[str, float]


def coverage_study(distribution: str, cv: float, n: int, trials: int = 4000, confidence: float = 0.95,
                   seed: int = 0) -> CoverageCell:
    """Measure the coverage of :func:`summarize`'s interval of the median and the false-"slower" rate of
    :func:`change_interval`, on ``trials`` simulated runs (deterministic for ``seed``).

    Runs the same vectorised code as :func:`summarize` (``"auto"``, positive samples) and
    :func:`change_interval`, over all trials at once.
    """
    _check_confidence(confidence)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError("n", n, reason="an integer >= 2")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError("trials", trials, reason="a positive integer")
    if not (math.isfinite(cv) and cv > 0):
        raise ConfigError("cv", cv, reason="a positive fraction")
    rng = np.random.default_rng([seed, n, round(cv * 1e6), COVERAGE_DISTRIBUTIONS.index(distribution)])
    truth = true_median(distribution, cv)
    x = draw_rounds(distribution, cv, (trials, n), rng)
    rows = _median_interval_rows(x, float(confidence), log_scale=True)
    covered = (rows.low <= truth) & (truth <= rows.high)
    methods = {name: float(np.mean(rows.code == i)) for i, name in enumerate(_CODE_NAMES) if np.any(rows.code == i)}
    half = (rows.high - rows.low) / 2.0 / rows.median
    new, old = draw_rounds(distribution, cv, (trials, n), rng), draw_rounds(distribution, cv, (trials, n), rng)
    ch = _change_rows(new, old, float(confidence))
    change_methods = {name: float(np.mean(ch.code == i)) for i, name in enumerate(_CHANGE_CODES) if np.any(ch.code == i)}
    return CoverageCell(distribution, float(cv), n, trials, float(confidence), float(np.mean(covered)), methods,
                        float(np.median(half)), float(np.mean(ch.low > 0.0)),
                        float(np.mean((ch.low <= 0.0) & (ch.high >= 0.0))), change_methods)


#: What :func:`coverage_table` can show, with how it is printed.
COVERAGE_VALUES: dict[str, str] = {
    "coverage": "coverage of the true median by the interval of the median",
    "median_rel_halfwidth": "typical relative half-width of the interval of the median",
    "false_slower": 'share of same-distribution pairs called "slower" (nominal 2.5 %)',
    "change_coverage": "coverage of the true change (none) by the change interval",
}


def coverage_table(cells: Sequence[CoverageCell], value: str = "coverage") -> str:
    """One quantity of the coverage study as a markdown table: a row per distribution and CV, a column
    per n, and a first row naming the method that made the intervals at that n (what
    docs/statistics.md shows; ``value`` is a key of :data:`COVERAGE_VALUES`)."""
    if value not in COVERAGE_VALUES:
        raise ConfigError("value", value, allowed=COVERAGE_VALUES)
    ns = sorted({c.n for c in cells})
    keys = list(dict.fromkeys((c.distribution, c.cv) for c in cells))
    by = {(c.distribution, c.cv, c.n): c for c in cells}
    change = value in ("false_slower", "change_coverage")

    def method(n: int) -> str:
        names: dict[str, float] = {}
        for c in cells:
            if c.n == n:
                for k, v in (c.change_methods if change else c.methods).items():
                    names[k] = names.get(k, 0.0) + v
        return max(names, key=lambda k: names[k]) if names else "-"

    def fmt(c: CoverageCell | None) -> str:
        if c is None:
            return "-"
        x = getattr(c, value)
        return f"{100 * x:.2f}%" if value in ("median_rel_halfwidth", "false_slower") else f"{100 * x:.1f}%"

    lines = ["| distribution | CV | " + " | ".join(f"n = {n}" for n in ns) + " |",
             "|---|---|" + "---|" * len(ns),
             "| *method* | | " + " | ".join(method(n) for n in ns) + " |"]
    for dist, cv in keys:
        lines.append(f"| {dist} | {100 * cv:g}% | " + " | ".join(fmt(by.get((dist, cv, n))) for n in ns) + " |")
    return "\n".join(lines)


#: The grid of the coverage study in docs/statistics.md (and tests/unit/test_coverage.py).
COVERAGE_CVS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20)
COVERAGE_NS: tuple[int, ...] = (3, 4, 5, 6, 8, 10, 15, 20, 30)
COVERAGE_TRIALS = 10_000


def coverage_grid(trials: int = COVERAGE_TRIALS, confidence: float = 0.95, seed: int = 0) -> list[CoverageCell]:
    """:func:`coverage_study` over every distribution, CV and n of the documented grid.

    ``print(coverage_table(coverage_grid()))`` regenerates the table in docs/statistics.md (deterministic).
    """
    return [coverage_study(d, cv, n, trials=trials, confidence=confidence, seed=seed)
            for d in COVERAGE_DISTRIBUTIONS for cv in COVERAGE_CVS for n in COVERAGE_NS]
