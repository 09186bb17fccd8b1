"""Estimates with bootstrap intervals, and the relative numbers (savings, changes) made from them.

Conventions (the seed reported savings against the worst clock; sdbench never does):

* ``energy_saving_pct = 100 * (1 - E_point / E_default)``: positive means the point saves energy.
* ``time_change_pct = 100 * (t_point / t_default - 1)``: positive means the point is slower.
* EDP is ``E * t`` (J s per image), ED2P is ``E * t**2`` (J s^2 per image), with ``E`` and ``t`` the
  point's estimates (mean over rounds by default) of energy and time per image.

Bootstrap: :func:`bootstrap_replicates` resamples a point's rounds with replacement (the rows of a
round table stay paired, so time and energy of one window move together). Intervals are percentile
intervals of the resampled statistic (:func:`percentile_interval`).

Relative numbers are ratios. A saving or change interval is the percentile interval of the bootstrap
*ratio* (positive over positive), mapped through ``100 (1 - r)`` or ``100 (r - 1)``
(:func:`ratio_estimate`): a time or energy change therefore always lies above -100 % and a saving
below +100 %, and every interval contains its point estimate (:class:`Estimate` refuses one that does not).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdbench.errors import ConfigError

BOOTSTRAP_METHOD = "percentile bootstrap over rounds (rounds resampled per point)"
RATIO_METHOD = "percentile bootstrap of the ratio to the default clock (rounds resampled per point)"

# Relative tolerance for "the estimate lies inside its interval" (float rounding of quantiles).
_INSIDE_RTOL = 1e-9


# --- the arithmetic (pure, tested with hypothesis) ---------------------------------------------------
def edp_js(energy_j: float, time_s: float) -> float:
    """Energy-delay product in J*s: ``energy_j * time_s``."""
    return energy_j * time_s


def ed2p_js2(energy_j: float, time_s: float) -> float:
    """Energy-delay-squared product in J*s^2: ``energy_j * time_s**2``."""
    return energy_j * time_s * time_s


def energy_saving_pct(energy_j: float, default_energy_j: float) -> float:
    """Energy saved against the default clock, in percent (positive: the point uses less energy)."""
    if default_energy_j <= 0:
        raise ConfigError("default_energy_j", default_energy_j, reason="a positive energy is needed for a saving")
    return 100.0 * (1.0 - energy_j / default_energy_j)


def time_change_pct(time_s: float, default_time_s: float) -> float:
    """Time change against the default clock, in percent (positive: the point is slower)."""
    if default_time_s <= 0:
        raise ConfigError("default_time_s", default_time_s, reason="a positive time is needed for a change")
    return 100.0 * (time_s / default_time_s - 1.0)


def saving_from_ratio(ratio: Any) -> Any:
    """Percent saved at ``ratio = E / E_default`` (decreasing in the ratio, below 100 for a positive one)."""
    return 100.0 * (1.0 - ratio)


def change_from_ratio(ratio: Any) -> Any:
    """Percent change at ``ratio = x / x_default`` (increasing, above -100 for a positive one)."""
    return 100.0 * (ratio - 1.0)


# --- estimates -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (``None`` bounds: no interval, e.g. one round).

    ``method`` says what made the interval. An interval always contains its point estimate; a
    violation raises :class:`ValueError` at construction, so no report can print one.
    """

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if self.has_ci:
            assert self.ci_low is not None and self.ci_high is not None
            tol = _INSIDE_RTOL * max(1.0, abs(self.value))
            if not (self.ci_low - tol <= self.value <= self.ci_high + tol):
                raise ValueError(f"estimate {self.value!r} outside its interval [{self.ci_low!r}, {self.ci_high!r}]")

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

    def excludes(self, x: float) -> bool:
        """Whether the interval lies wholly on one side of ``x`` (False without an interval)."""
        return self.has_ci and (self.ci_low > x or self.ci_high < x)  # type: ignore[operator]

    def text(self, fmt: str = ".4g", unit: str = "") -> str:
        """``value [low, high] unit`` for tables."""
        u = f" {unit}" if unit else ""
        if not self.has_ci:
            return f"{self.value:{fmt}}{u}"
        return f"{self.value:{fmt}} [{self.ci_low:{fmt}}, {self.ci_high:{fmt}}]{u}"


# --- the bootstrap ---------------------------------------------------------------------------------
def bootstrap_replicates(samples: np.ndarray, n_resamples: int, rng: np.random.Generator,
                         statistic: Callable[..., Any] = np.median) -> np.ndarray:
    """``statistic`` of each of ``n_resamples`` resamples (with replacement) of the rows of ``samples``.

    One-dimensional samples give ``(n_resamples,)`` replicates; a round table (rows = rounds) gives
    one row of column statistics per resample, its rows resampled together. Columns of NaN stay NaN.
    """
    n = samples.shape[0]
    idx = rng.integers(0, n, size=(n_resamples, n))
    return statistic(samples[idx], axis=1)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of ``values`` (bootstrap replicates)."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def interval_estimate(value: float, interval: tuple[float, float] | None,
                      method: str = BOOTSTRAP_METHOD) -> Estimate:
    """``value`` with ``interval`` widened to contain it (no interval when ``None`` or ``value`` is not finite).

    A percentile interval of a skewed statistic can, rarely, miss the point estimate (it is the
    statistic of the sample, not the resamples' median): widen to contain it, never print one outside.
    """
    if interval is None or not math.isfinite(float(value)):
        return Estimate(float(value))
    lo, hi = interval
    return Estimate(float(value), min(lo, float(value)), max(hi, float(value)), method)


def bootstrap_estimate(value: float, boot: np.ndarray | None, confidence: float,
                       method: str = BOOTSTRAP_METHOD) -> Estimate:
    """``value`` with the percentile interval of its replicates ``boot`` (none without finite replicates)."""
    if boot is None or not np.all(np.isfinite(boot)) or not math.isfinite(float(value)):
        return Estimate(float(value))
    return interval_estimate(value, percentile_interval(boot, confidence), method)


def ratio_estimate(num_value: float, num_reps: np.ndarray, den_value: float, den_reps: np.ndarray,
                   confidence: float, fn: Any, any_spread: bool) -> Estimate:
    """A saving or change from the ratio ``num / den``, its interval from the bootstrap ratio.

    ``fn`` maps a ratio to percent (:func:`saving_from_ratio` or :func:`change_from_ratio`, both
    monotone). The interval is the percentile interval of the replicate ratios, mapped through
    ``fn``; it is given only when every replicate of both is positive and finite, so the ratio
    interval lies in ``(0, inf)``: a change stays above -100 %, a saving below +100 %. A non-positive
    estimate (a net energy at or below idle) gives the value with no interval.

    Duplicates in spirit the ratio interval that sdbench.stats is getting (a log-ratio interval);
    here the ratio is of two bootstrapped statistics, so it stays a bootstrap interval.
    """
    ratio = num_value / den_value if den_value else math.nan
    value = float(fn(ratio))
    if not any_spread or not (num_value > 0 and den_value > 0):
        return Estimate(value)
    num_reps, den_reps = np.asarray(num_reps, dtype=float), np.asarray(den_reps, dtype=float)
    ok = np.all(np.isfinite(num_reps)) and np.all(np.isfinite(den_reps)) and np.all(num_reps > 0) \
        and np.all(den_reps > 0)
    if not ok:
        return Estimate(value)
    lo_r, hi_r = percentile_interval(num_reps / den_reps, confidence)
    lo_r, hi_r = min(lo_r, ratio), max(hi_r, ratio)  # contain the estimate (see interval_estimate)
    bounds = sorted((float(fn(lo_r)), float(fn(hi_r))))
    return Estimate(value, min(bounds[0], value), max(bounds[1], value), RATIO_METHOD)
