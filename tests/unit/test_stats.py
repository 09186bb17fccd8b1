"""Properties of sdbench.stats: intervals, stop rule, calibration and change detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.errors import ConfigError
from sdbench.stats import (
    CHANGE_METHODS,
    INTERVAL_METHODS,
    ChangeEstimate,
    ChangeResult,
    SampleStats,
    StopDecision,
    StopRule,
    SummaryMoments,
    bootstrap_ci,
    bootstrap_ci_paired,
    change_interval,
    change_interval_from_summaries,
    is_significant_change,
    iterations_per_window,
    order_statistic_min_n,
    relative_change,
    rounds_for_halfwidth,
    shorth_sd,
    summarize,
    t_interval,
)

# Benchmark-like magnitudes: milliseconds to minutes, joules to kilojoules.
positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
samples_2_plus = st.lists(positive, min_size=2, max_size=30)

FAST = settings(deadline=None, max_examples=60)
VERY_FAST = settings(deadline=None, max_examples=25)


# --- summarize: intervals of the median ---------------------------------------------------------------------


def test_known_log_t_interval_for_few_rounds() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]  # 5 < 6 rounds: no order-statistic interval reaches 95 %
    s = summarize(xs)
    logs = np.log(xs)
    half = 2.7764451051977987 * float(np.std(logs, ddof=1)) / math.sqrt(5)  # t_{0.975, 4}
    assert s.method == "log-t"
    assert s.ci95_low == pytest.approx(math.exp(logs.mean() - half))
    assert s.ci95_high == pytest.approx(math.exp(logs.mean() + half))
    assert (s.n, s.mean, s.median) == (5, 3.0, 3.0)
    assert s.stddev == pytest.approx(math.sqrt(2.5))
    assert s.cv == pytest.approx(math.sqrt(2.5) / 3.0)
    assert s.ci95_halfwidth_rel == pytest.approx((s.ci95_high - s.ci95_low) / 2.0 / 3.0)  # relative to the median
    assert s.log_sd == pytest.approx(float(np.std(logs, ddof=1)))
    assert not s.extended


def test_known_order_statistic_interval() -> None:
    xs = np.array([3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0, 5.5, 3.5])
    s = summarize(xs)
    assert s.method == "median-order-statistic"
    # Hettmansperger-Sheather by hand: k = 2 (coverage 97.9 %), interpolated towards k = 3 (89.1 %).
    n, k = 10, 2
    g_k, g_next = (1 - 2 * scipy.stats.binom.cdf(k - 1, n, 0.5), 1 - 2 * scipy.stats.binom.cdf(k, n, 0.5))
    share = (g_k - 0.95) / (g_k - g_next)
    lam = (n - k) * share / (k + (n - 2 * k) * share)
    ys = np.log(np.sort(xs))
    assert s.ci95_low == pytest.approx(math.exp(lam * ys[k] + (1 - lam) * ys[k - 1]))
    assert s.ci95_high == pytest.approx(math.exp(lam * ys[n - k - 1] + (1 - lam) * ys[n - k]))
    # Inside scipy's exact (conservative, not interpolated) binomial interval of the median.
    exact = scipy.stats.quantile_test(xs, q=float(np.median(xs)), p=0.5).confidence_interval(0.95)
    assert exact.low <= s.ci95_low <= s.median <= s.ci95_high <= exact.high


def test_order_statistic_min_n() -> None:
    assert order_statistic_min_n(0.95) == 6  # [x(1), x(6)] covers 1 - 2/64 = 96.9 %
    assert order_statistic_min_n(0.99) == 8
    assert summarize([1.0, 1.1, 1.2, 1.3, 1.4]).method == "log-t"
    assert summarize([1.0, 1.1, 1.2, 1.3, 1.4, 1.5]).method == "median-order-statistic"
    assert summarize([1.0, 1.1, 1.2, 1.3, 1.4, 1.5], confidence=0.99).method == "log-t"


@FAST
@given(samples_2_plus, st.sampled_from(["auto", "log-t", "median-order-statistic", "bootstrap-percentile"]))
def test_positive_interval_is_positive_and_holds_the_median(xs: list[float], method: str) -> None:
    s = summarize(xs, method=method, n_resamples=200)
    assert s.ci95_low is not None and s.ci95_high is not None
    assert 0.0 < s.ci95_low <= s.median <= s.ci95_high
    assert s.method in INTERVAL_METHODS
    assert s.min <= s.median <= s.max
    assert s.min <= s.mean <= s.max
    assert s.stddev >= 0.0
    assert s.cv is not None and s.cv >= 0.0
    assert s.ci95_halfwidth_rel is not None and s.ci95_halfwidth_rel >= 0.0
    assert s.log_sd is not None and s.log_sd >= 0.0


@FAST
@given(st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=30))
def test_any_sign_interval_holds_the_median(xs: list[float]) -> None:
    s = summarize(xs)
    assert s.ci95_low is not None and s.ci95_high is not None
    assert s.ci95_low <= s.median <= s.ci95_high
    if min(xs) <= 0:
        assert s.method in ("t", "median-order-statistic", "zero-spread")
        assert s.log_sd is None


def test_positive_flag() -> None:
    with pytest.raises(ConfigError, match="positive"):
        summarize([1.0, -1.0, 2.0], positive=True)
    raw = summarize([1.0, 2.0, 3.0], positive=False)
    assert raw.method == "t" and raw.log_sd is None
    assert raw.ci95_low < 0 < raw.ci95_high  # the raw-scale t interval may cross 0; log-t never does
    assert summarize([1.0, 2.0, 3.0]).ci95_low > 0
    # A forced log-t on samples that are not all positive falls back to the raw scale.
    assert summarize([-1.0, 1.0, 2.0], method="log-t").method == "t"


def test_heavy_tail_does_not_drag_the_interval() -> None:
    # Tight eager-call rounds with two slow ones: the interval of the median stays near the bulk.
    xs = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.01, 1.00, 1.60, 1.00, 0.99, 1.01, 1.90, 1.00, 1.00]
    s = summarize(xs)
    assert s.method == "median-order-statistic"
    assert s.outliers == 2
    assert 0.99 <= s.ci95_low <= s.median <= s.ci95_high <= 1.01


def test_log_t_widened_to_hold_the_median() -> None:
    # Forced: with 20 rounds "auto" would use order statistics. The mean of the logs sits well above
    # the median, 1, and the t interval around it excludes 1: widened down to it.
    s = summarize([1.0] * 15 + [2.0] * 5, method="log-t")
    assert s.method == "log-t"
    assert s.extended
    assert s.ci95_low == 1.0 == s.median < s.ci95_high


@FAST
@given(samples_2_plus)
def test_wider_confidence_gives_wider_interval(xs: list[float]) -> None:
    for method in ("log-t", "auto"):
        if method == "auto" and len(xs) < order_statistic_min_n(0.99):
            continue  # the method changes between the two levels: no nesting to expect
        narrow = summarize(xs, method=method, confidence=0.8)
        wide = summarize(xs, method=method, confidence=0.99)
        assert narrow.method == wide.method
        assert wide.ci95_low <= narrow.ci95_low <= narrow.ci95_high <= wide.ci95_high


@VERY_FAST
@given(st.lists(positive, min_size=3, max_size=20), st.integers(0, 2**16))
def test_bootstrap_interval_deterministic_and_within_range(xs: list[float], seed: int) -> None:
    a = summarize(xs, method="bootstrap-percentile", seed=seed, n_resamples=500)
    b = summarize(xs, method="bootstrap-percentile", seed=seed, n_resamples=500)
    assert a == b
    assert a.method in ("bootstrap-percentile", "zero-spread")
    assert a.ci95_low is not None and a.ci95_high is not None
    # Every resample's median lies within [min, max], hence so does the percentile interval.
    assert a.min <= a.ci95_low <= a.median <= a.ci95_high <= a.max


@FAST
@given(samples_2_plus, st.floats(min_value=1e-3, max_value=1e3))
def test_cv_and_relative_halfwidth_scale_invariant(xs: list[float], scale: float) -> None:
    a = summarize(xs)
    b = summarize([x * scale for x in xs])
    assert a.method == b.method
    # Absolute slack: with near-identical samples the tiny stddev is all rounding noise.
    assert b.cv == pytest.approx(a.cv, rel=1e-6, abs=1e-9)
    assert b.ci95_halfwidth_rel == pytest.approx(a.ci95_halfwidth_rel, rel=1e-6, abs=1e-9)


@VERY_FAST
@given(st.lists(positive, min_size=2, max_size=20), st.integers(-20, 20))
def test_bootstrap_scale_invariant_exactly_for_powers_of_two(xs: list[float], exponent: int) -> None:
    # Scaling by 2**k is exact in floating point, so the (discrete, tie-prone) bootstrap distribution
    # of a small sample scales exactly too; other factors can flip ties between resample medians.
    scale = 2.0**exponent
    a = summarize(xs, method="bootstrap-percentile", n_resamples=500)
    b = summarize([x * scale for x in xs], method="bootstrap-percentile", n_resamples=500)
    assert b.cv == pytest.approx(a.cv, rel=1e-12, abs=1e-15)
    assert b.ci95_halfwidth_rel == pytest.approx(a.ci95_halfwidth_rel, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("method", ["auto", "log-t", "median-order-statistic", "bootstrap-percentile"])
@pytest.mark.parametrize("value", [0.1, 7.0, 123.456])
def test_identical_samples_zero_width(method: str, value: float) -> None:
    s = summarize([value] * 6, method=method)
    assert s.mean == value
    assert s.stddev == 0.0
    assert s.cv == 0.0
    assert s.ci95_low == s.ci95_high == value
    assert s.ci95_halfwidth_rel == 0.0
    assert s.method == "zero-spread"


def test_single_sample_has_no_interval() -> None:
    s = summarize([2.5])
    assert (s.n, s.mean, s.median, s.stddev, s.min, s.max) == (1, 2.5, 2.5, 0.0, 2.5, 2.5)
    assert s.cv == 0.0
    assert s.ci95_low is None and s.ci95_high is None and s.ci95_halfwidth_rel is None
    assert s.method == "none"


def test_zero_median_gives_none_relatives() -> None:
    s = summarize([-1.0, 1.0])
    assert s.mean == 0.0 and s.median == 0.0
    assert s.cv is None
    assert s.ci95_halfwidth_rel is None
    assert s.method == "t"
    assert s.ci95_low is not None and s.ci95_low < 0 < s.ci95_high


def test_as_dict_flat_keys() -> None:
    s = summarize([1.0, 2.0, 3.0])
    d = s.as_dict("time_s")
    assert d["time_s_median"] == 2.0
    assert d["time_s_mean"] == 2.0
    assert d["time_s_n"] == 3
    assert d["time_s_ci_method"] == "log-t"
    assert d["time_s_ci95_low"] == s.ci95_low
    assert d["time_s_ci_confidence"] == 0.95
    assert d["time_s_ci_extended"] is False and d["time_s_outliers"] == 0 and d["time_s_log_sd"] == s.log_sd
    assert all(k.startswith("time_s_") for k in d)
    assert isinstance(s, SampleStats)
    with pytest.raises(AttributeError):
        s.mean = 5.0  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, float("inf")], [[1.0, 2.0]], ["a"]])
def test_bad_samples_rejected(bad: list) -> None:
    with pytest.raises(ConfigError):
        summarize(bad)


def test_bad_method_and_confidence() -> None:
    with pytest.raises(ConfigError, match="method"):
        summarize([1.0, 2.0], method="z")
    with pytest.raises(ConfigError, match="method"):
        summarize([1.0, 2.0], method="t")  # the interval of the mean is no longer a summary method
    with pytest.raises(ConfigError, match="confidence"):
        summarize([1.0, 2.0], confidence=1.5)


@FAST
@given(samples_2_plus)
def test_t_interval_contains_mean(xs: list[float]) -> None:
    low, high = t_interval(xs)
    mean = math.fsum(xs) / len(xs)
    assert low <= mean * (1 + 1e-12) and mean * (1 - 1e-12) <= high


# --- bootstrap helpers --------------------------------------------------------------------------------------


def test_bootstrap_ci_median() -> None:
    rng = np.random.default_rng(1)
    xs = rng.normal(10.0, 1.0, size=40)
    low, high = bootstrap_ci(xs)
    assert low <= float(np.median(xs)) <= high
    assert (low, high) == bootstrap_ci(xs)  # deterministic default seed
    assert bootstrap_ci(xs, seed=5) != (low, high)


def test_bootstrap_ci_identical_samples() -> None:
    assert bootstrap_ci([3.0] * 5) == (3.0, 3.0)


def test_bootstrap_ci_median_degenerate_bca_falls_back() -> None:
    # Median of a mostly-constant sample: BCa's acceleration is 0/0; percentile still answers.
    low, high = bootstrap_ci([1.0] * 9 + [2.0])
    assert math.isfinite(low) and math.isfinite(high)
    assert 1.0 <= low <= high <= 2.0


def test_bootstrap_ci_paired_ratio() -> None:
    rng = np.random.default_rng(2)
    time_s = rng.normal(2.0, 0.05, size=30)
    energy_j = time_s * 300.0 + rng.normal(0.0, 2.0, size=30)

    def power_w(t: np.ndarray, e: np.ndarray) -> float:
        return float(np.mean(e) / np.mean(t))

    low, high = bootstrap_ci_paired(time_s, energy_j, power_w)
    assert low <= power_w(time_s, energy_j) <= high
    assert 290.0 < low < high < 310.0
    assert (low, high) == bootstrap_ci_paired(time_s, energy_j, power_w)


def test_bootstrap_ci_paired_length_mismatch() -> None:
    with pytest.raises(ConfigError, match="ys"):
        bootstrap_ci_paired([1.0, 2.0], [1.0, 2.0, 3.0], lambda x, y: float(np.mean(x)))


# --- stop rule ----------------------------------------------------------------------------------------------


rules = st.builds(
    StopRule,
    target_rel_halfwidth=st.floats(min_value=1e-4, max_value=0.5),
    min_rounds=st.integers(2, 6),
    max_rounds=st.integers(6, 15),
    max_time_s=st.floats(min_value=1.0, max_value=100.0),
)


@FAST
@given(rules, st.lists(positive, min_size=0, max_size=15), st.floats(min_value=0.0, max_value=1e4))
def test_stop_rule_never_stops_before_min_rounds(rule: StopRule, xs: list[float], elapsed_s: float) -> None:
    xs = xs[: rule.min_rounds - 1]
    d = rule.decide({"time_s": xs, "energy_j": None}, elapsed_s)
    assert not d.stop
    assert d.reason == "continue"


@FAST
@given(rules, st.lists(positive, min_size=15, max_size=15), st.floats(min_value=0.0, max_value=1e4))
def test_stop_rule_always_stops_at_max_rounds(rule: StopRule, xs: list[float], elapsed_s: float) -> None:
    d = rule.decide({"time_s": xs[: rule.max_rounds]}, elapsed_s)
    assert d.stop
    assert d.reason in ("converged", "max_rounds")


@FAST
@given(rules, st.lists(positive, min_size=6, max_size=15), st.floats(min_value=0.0, max_value=1e3))
def test_stop_rule_always_stops_at_max_time(rule: StopRule, xs: list[float], extra_s: float) -> None:
    d = rule.decide({"time_s": xs}, rule.max_time_s + extra_s)
    assert d.stop
    assert d.reason in ("converged", "max_rounds", "max_time")


@FAST
@given(rules, st.lists(positive, min_size=2, max_size=15), st.floats(min_value=0.0, max_value=0.999))
def test_stop_rule_decision_consistent(rule: StopRule, xs: list[float], time_frac: float) -> None:
    d = rule.decide({"time_s": xs}, rule.max_time_s * time_frac)
    assert d.stop == (d.reason != "continue")
    assert d.rounds == len(xs)
    if d.reason == "converged":
        assert len(xs) >= rule.min_rounds
        assert summarize(xs).ci95_halfwidth_rel <= rule.target_rel_halfwidth
    if d.reason == "continue":
        assert len(xs) < rule.max_rounds
    assert d.reason != "max_time"  # time is below the budget


@pytest.mark.parametrize("value", [0.5, 2.0, 1e3])
def test_identical_samples_converge_at_min_rounds(value: float) -> None:
    rule = StopRule(min_rounds=3)
    assert rule.decide({"time_s": [value] * 2}, 0.0) == StopDecision(False, "continue", 2, {})
    d = rule.decide({"time_s": [value] * 3, "energy_j": [value * 10] * 3}, 0.0)
    assert (d.stop, d.reason) == (True, "converged")
    assert d.rel_halfwidths == {"time_s": 0.0, "energy_j": 0.0}


def test_stop_rule_all_metrics_must_converge() -> None:
    rule = StopRule(target_rel_halfwidth=0.02, min_rounds=3, max_rounds=50)
    tight = [1.0, 1.001, 0.999, 1.0]
    loose = [1.0, 2.0, 0.5, 1.5]
    assert rule.decide({"time_s": tight}, 1.0).reason == "converged"
    assert rule.decide({"time_s": tight, "energy_j": loose}, 1.0).reason == "continue"
    # An unavailable metric does not hold convergence back.
    assert rule.decide({"time_s": tight, "energy_j": None}, 1.0).reason == "converged"


def test_stop_rule_min_rounds_wins_over_max_time() -> None:
    rule = StopRule(min_rounds=3, max_time_s=10.0)
    assert rule.decide({"time_s": [1.0, 2.0]}, 100.0).reason == "continue"
    assert rule.decide({"time_s": [1.0, 2.0, 5.0]}, 100.0).reason == "max_time"


def test_stop_rule_needs_a_metric() -> None:
    with pytest.raises(ConfigError, match="samples_by_metric"):
        StopRule().decide({"energy_j": None}, 0.0)
    with pytest.raises(ConfigError):
        StopRule().decide({}, 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_rel_halfwidth": 0.0},
        {"min_rounds": 0},
        {"min_rounds": 5, "max_rounds": 4},
        {"max_time_s": 0.0},
        {"confidence": 1.0},
    ],
)
def test_stop_rule_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        StopRule(**kwargs)


@FAST
@given(rules, st.lists(positive, min_size=2, max_size=15), st.floats(min_value=0.0, max_value=0.999))
def test_noise_limited_only_when_allowed(rule: StopRule, xs: list[float], time_frac: float) -> None:
    d = rule.decide({"time_s": xs}, rule.max_time_s * time_frac)
    if d.reason == "noise_limited":
        assert d.stop
        assert rule.noise_check_rounds <= len(xs) < rule.max_rounds
        assert d.rounds_needed is not None and d.rounds_needed > len(xs)
        assert d.rel_halfwidth is not None and d.rel_halfwidth > rule.target_rel_halfwidth
        assert d.limiting_metric == "time_s"
    if len(xs) >= rule.min_rounds:
        assert d.rel_halfwidth == d.rel_halfwidths["time_s"] == summarize(xs).ci95_halfwidth_rel
        assert d.spread_cv is not None and d.spread_cv >= 0.0


def test_noisy_rounds_stop_early_as_noise_limited() -> None:
    # CV ~20 % per round, target +-2 %: about 400 rounds would be needed, the cap is 50.
    rng = np.random.default_rng(5)
    xs = list(np.exp(rng.normal(0.0, 0.2, size=6)))
    rule = StopRule(target_rel_halfwidth=0.02, min_rounds=3, max_rounds=50, max_time_s=1e6)
    d = rule.decide({"time": xs}, elapsed_s=6.0)
    assert (d.stop, d.reason, d.rounds) == (True, "noise_limited", 6)
    assert d.rounds_needed is not None and d.rounds_needed > 50
    assert d.spread_cv == pytest.approx(0.2, rel=0.6)
    assert d.rel_halfwidth == summarize(xs).ci95_halfwidth_rel
    # Before noise_check_rounds (6 at 95 %) the same spread only continues.
    assert rule.decide({"time": xs[:5]}, elapsed_s=5.0).reason == "continue"


def test_noise_limit_from_the_time_budget() -> None:
    # ~3 % spread needs a few dozen rounds: within max_rounds, but not within the time left.
    rng = np.random.default_rng(6)
    xs = list(np.exp(rng.normal(0.0, 0.03, size=8)))
    rule = StopRule(target_rel_halfwidth=0.005, min_rounds=3, max_rounds=1000, max_time_s=100.0)
    fast = rule.decide({"time": xs}, elapsed_s=8.0, round_s=1.0)
    slow = rule.decide({"time": xs}, elapsed_s=80.0, round_s=10.0)
    assert fast.reason == "continue"
    assert slow.reason == "noise_limited"
    assert fast.rounds_needed == slow.rounds_needed and 8 < slow.rounds_needed * 10.0
    # round_s defaults to elapsed_s / rounds.
    assert rule.decide({"time": xs}, elapsed_s=80.0).reason == "noise_limited"


def test_slow_rounds_among_the_first_do_not_stop_a_tight_run() -> None:
    # Eager GPU calls: a tight bulk and two slow rounds in the first six. The bulk reaches the target.
    xs = [1.000, 1.62, 1.003, 0.998, 1.85, 1.001]
    rule = StopRule(target_rel_halfwidth=0.02, min_rounds=3, max_rounds=30, max_time_s=1e6)
    d = rule.decide({"time": xs}, elapsed_s=6.0)
    assert d.reason == "continue"
    more = xs + [1.002, 0.999, 1.001, 1.000, 1.003, 0.997, 1.002, 1.001]
    assert rule.decide({"time": more}, elapsed_s=14.0).reason == "converged"


def test_converged_reports_the_limiting_metric() -> None:
    rule = StopRule(target_rel_halfwidth=0.02, min_rounds=3)
    d = rule.decide({"time": [1.0, 1.001, 0.999, 1.0], "energy": [10.0, 10.05, 9.98, 10.01]}, 1.0)
    assert d.reason == "converged"
    assert d.limiting_metric in ("time", "energy")
    assert d.rounds_needed == 4
    assert d.rel_halfwidth == max(v for v in d.rel_halfwidths.values() if v is not None)


@settings(deadline=None, max_examples=100)
@given(st.floats(min_value=1e-4, max_value=1.0), st.floats(min_value=1e-3, max_value=0.2), st.integers(2, 20))
def test_rounds_for_halfwidth_is_the_fewest(spread: float, target: float, min_n: int) -> None:
    n = rounds_for_halfwidth(spread, target, 0.95, min_n=min_n)
    assert n >= min_n

    def halfwidth(k: int) -> float:
        return float(scipy.stats.t.ppf(0.975, k - 1)) * spread / math.sqrt(k)

    if n < 1_000_000:
        assert halfwidth(n) <= target * (1 + 1e-9)
        if n > min_n:
            assert halfwidth(n - 1) > target * (1 - 1e-9)


def test_shorth_sd_is_robust() -> None:
    rng = np.random.default_rng(7)
    bulk = rng.normal(0.0, 1.0, size=4000)
    assert shorth_sd(bulk) == pytest.approx(1.0, rel=0.1)
    slow = np.concatenate([bulk, 10.0 + rng.random(2000)])  # a third of the rounds far off, one side
    assert shorth_sd(slow) < 2.0 < 4.0 < float(np.std(slow))  # biased by the bulk's share, never blown up
    assert shorth_sd([1.0]) == 0.0



# --- calibration --------------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=300)
@given(
    st.floats(min_value=1e-9, max_value=10.0),
    st.floats(min_value=1e-9, max_value=1.0),
    st.integers(1, 100),
    st.integers(1, 10_000),
)
def test_iterations_minimal(call_s: float, resolution_s: float, min_periods: int, max_iterations: int) -> None:
    n = iterations_per_window(call_s, resolution_s, min_periods, max_iterations)
    window_s = min_periods * resolution_s
    assert 1 <= n <= max_iterations
    if n < max_iterations:
        assert n * call_s >= window_s  # long enough
    if n > 1:
        assert (n - 1) * call_s < window_s  # and n - 1 would be too short


def test_iterations_examples() -> None:
    assert iterations_per_window(1.0, 1e-6) == 1  # a slow call needs no repetition
    assert iterations_per_window(1e-3, 1e-3, min_periods=20) == 20
    assert iterations_per_window(1e-6, 1e-3, min_periods=20) == 1000  # capped
    assert iterations_per_window(1e-3, None) == 1
    assert iterations_per_window(0.0, 1e-6, max_iterations=50) == 50


def test_iterations_bad_input() -> None:
    with pytest.raises(ConfigError):
        iterations_per_window(-1.0, 1e-6)
    with pytest.raises(ConfigError):
        iterations_per_window(float("nan"), 1e-6)
    with pytest.raises(ConfigError):
        iterations_per_window(1.0, 1e-6, max_iterations=0)


# --- change detection ---------------------------------------------------------------------------------------


def test_relative_change() -> None:
    assert relative_change(90.0, 100.0) == pytest.approx(-0.1)
    assert relative_change(110.0, 100.0) == pytest.approx(0.1)
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(1.0, 0.0) is None


def _check_change(ch: ChangeEstimate) -> None:
    """The invariants every change interval keeps."""
    assert ch.method in CHANGE_METHODS
    if ch.low_rel is None:
        assert ch.high_rel is None and ch.verdict == "unchanged" and not ch.noise_known
        return
    assert ch.estimate_rel is not None and ch.high_rel is not None
    assert ch.low_rel <= ch.estimate_rel <= ch.high_rel
    assert ch.verdict == ("slower" if ch.low_rel > 0 else "faster" if ch.high_rel < 0 else "unchanged")
    assert ch.regression == (ch.verdict == "slower" and ch.estimate_rel >= ch.threshold_rel)
    if ch.p_value is not None and not ch.extended and ch.method != "zero-spread":
        # The p-value belongs to the test dual to the interval.
        assert (ch.verdict != "unchanged") == (ch.p_value < 1 - ch.confidence) or abs(ch.p_value - (1 - ch.confidence)) < 1e-9


def test_known_log_welch_change() -> None:
    new, old = [1.10, 1.12, 1.09, 1.11, 1.10], [1.00, 1.01, 0.99, 1.00, 1.02]
    ch = change_interval(new, old)
    assert ch.method == "log-welch"  # 5 rounds a side: too few for order statistics
    welch = scipy.stats.ttest_ind(np.log(new), np.log(old), equal_var=False).confidence_interval(0.95)
    assert ch.low_rel == pytest.approx(math.expm1(welch.low))
    assert ch.high_rel == pytest.approx(math.expm1(welch.high))
    assert ch.estimate_rel == pytest.approx(1.10 / 1.00 - 1)
    assert ch.verdict == "slower" and ch.regression
    _check_change(ch)


def test_ratio_of_medians_ignores_slow_rounds() -> None:
    # Both sides tight with a few slow rounds; the new side's bulk is 3 % slower.
    # 15 rounds a side: the interval of the median uses x(4)..x(12), so up to 3 slow rounds cannot reach it.
    old = [1.00, 1.01, 0.99, 1.00, 1.60, 1.00, 1.01, 0.99, 1.00, 1.90, 1.00, 1.01, 0.99, 1.00, 1.00]
    new = [1.03, 1.04, 1.02, 1.03, 1.03, 2.00, 1.04, 1.02, 1.03, 1.03, 1.03, 1.04, 1.02, 1.70, 1.03]
    ch = change_interval(new, old)
    assert ch.method == "ratio-of-medians"
    assert ch.verdict == "slower"
    assert 0.0 < ch.low_rel < 0.03 < ch.high_rel < 0.06
    _check_change(ch)


def test_readme_contradictions_cannot_happen() -> None:
    # The examples: an interval below -100 %, an estimate outside its interval, and
    # "unchanged" beside an interval excluding 0. A 94 % fall in time with wild noise:
    ch = change_interval([0.05, 0.06, 0.9, 0.04], [1.0, 0.3, 1.5, 0.9])
    assert -1.0 < ch.low_rel <= ch.estimate_rel <= ch.high_rel
    # Median and mean pulling apart (the +259 % row): the interval still holds the median ratio.
    ch = change_interval([1.0, 1.0, 1.0, 9.0, 9.5], [1.0, 1.0, 1.0, 1.1, 1.0])
    assert ch.low_rel <= ch.estimate_rel <= ch.high_rel
    _check_change(ch)


@FAST
@given(
    st.lists(positive, min_size=2, max_size=12),
    st.lists(positive, min_size=2, max_size=12),
    st.floats(min_value=0.5, max_value=0.99),
    st.floats(min_value=0.0, max_value=0.5),
)
def test_change_interval_invariants(a: list[float], b: list[float], confidence: float, threshold: float) -> None:
    ch = change_interval(a, b, confidence=confidence, threshold_rel=threshold)
    _check_change(ch)
    assert ch.low_rel > -1.0  # a positive quantity cannot fall by 100 %
    assert ch.estimate_rel == pytest.approx(float(np.median(a)) / float(np.median(b)) - 1, rel=1e-9, abs=1e-12)
    assert (ch.n_new, ch.n_old) == (len(a), len(b))


_MIRROR = {"faster": "slower", "slower": "faster", "unchanged": "unchanged"}


@FAST
@given(
    st.lists(positive, min_size=2, max_size=12),
    st.lists(positive, min_size=2, max_size=12),
    st.floats(min_value=0.5, max_value=0.99),
)
def test_swapping_mirrors_the_change(a: list[float], b: list[float], confidence: float) -> None:
    ab = change_interval(a, b, confidence=confidence)
    ba = change_interval(b, a, confidence=confidence)
    assert ab.method == ba.method
    assert ba.verdict == _MIRROR[ab.verdict]
    # On the ratio scale the swapped interval is the reciprocal one: exactly so on the log scale inside;
    # a relative change near -100 % keeps only absolute precision in 1 + rel, hence the tolerances.
    assert ab.low_rel == pytest.approx(1 / (1 + ba.high_rel) - 1, rel=1e-6, abs=1e-12)
    assert ba.low_rel == pytest.approx(1 / (1 + ab.high_rel) - 1, rel=1e-6, abs=1e-12)
    sig_ab = is_significant_change(a, b, threshold_rel=0.0, confidence=confidence)
    sig_ba = is_significant_change(b, a, threshold_rel=0.0, confidence=confidence)
    assert sig_ab.significant == sig_ba.significant
    assert sig_ba.verdict == _MIRROR[sig_ab.verdict]


@FAST
@given(st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=10),
       st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=10))
def test_any_sign_change_holds_its_estimate(a: list[float], b: list[float]) -> None:
    ch = change_interval(a, b)
    _check_change(ch)
    if min(a + b) <= 0:
        assert ch.method in ("raw-welch", "zero-spread", "none")


def test_no_interval_with_one_sample() -> None:
    ch = change_interval([0.5], [1.0, 1.0, 1.0])
    assert ch.method == "none" and not ch.noise_known and ch.verdict == "unchanged"
    assert ch.estimate_rel == pytest.approx(-0.5)
    assert "noise unknown" in ch.reason


summaries = st.builds(
    SummaryMoments,
    median=positive,
    mean=positive,
    stddev=st.floats(min_value=0.0, max_value=1e3),
    n=st.integers(1, 50),
)


@FAST
@given(summaries, summaries, st.floats(min_value=0.5, max_value=0.99))
def test_summary_change_invariants(new: SummaryMoments, old: SummaryMoments, confidence: float) -> None:
    ch = change_interval_from_summaries(new, old, confidence=confidence)
    _check_change(ch)
    if ch.noise_known:
        assert ch.low_rel > -1.0
        assert ch.method in ("summary-log-welch", "zero-spread")
    else:
        assert min(new.n, old.n) < 2


def test_summary_change_widens_to_its_estimate() -> None:
    # Equal medians, but the new mean is 50 % higher (a few very slow rounds): the log-moment interval
    # says "slower", the medians say nothing changed. The interval is widened to the estimate, 0.
    ch = change_interval_from_summaries(SummaryMoments(1.0, 1.5, 0.01, 10), SummaryMoments(1.0, 1.0, 0.01, 10))
    assert ch.extended and ch.estimate_rel == 0.0
    assert ch.low_rel == 0.0 < ch.high_rel
    assert ch.verdict == "unchanged" and ch.p_value is None


def test_clear_speedup_and_slowdown() -> None:
    rng = np.random.default_rng(3)
    old = 1.0 + rng.normal(0.0, 0.01, size=20)
    new = 0.8 + rng.normal(0.0, 0.01, size=20)
    faster = is_significant_change(new, old, threshold_rel=0.05)
    assert isinstance(faster, ChangeResult)
    assert faster.verdict == "faster"
    assert faster.significant
    assert faster.rel_change_median == pytest.approx(-0.2, abs=0.02)
    slower = is_significant_change(old, new, threshold_rel=0.05)
    assert slower.verdict == "slower"
    # Significant but smaller than the threshold is not reported as a change.
    small = is_significant_change(new, old, threshold_rel=0.5)
    assert small.verdict == "unchanged" and small.significant and "below threshold" in small.reason


def test_difference_inside_noise_is_unchanged() -> None:
    rng = np.random.default_rng(4)
    old = 1.0 + rng.normal(0.0, 0.2, size=5)
    new = old * 0.97  # 3% "faster" but the noise is 20%
    r = is_significant_change(new, old, threshold_rel=0.01)
    assert r.verdict == "unchanged"
    assert not r.significant
    assert r.ci_overlap
    assert r.change is not None and r.change.low_rel < 0 < r.change.high_rel


def test_identical_samples_unchanged_and_constant_shift_detected() -> None:
    same = is_significant_change([1.0] * 5, [1.0] * 5, threshold_rel=0.0)
    assert same.verdict == "unchanged" and same.rel_change_median == 0.0
    shifted = is_significant_change([0.9] * 5, [1.0] * 5, threshold_rel=0.05)
    assert shifted.verdict == "faster"
    assert shifted.p_value == 0.0
    assert shifted.change is not None and shifted.change.method == "zero-spread"
    assert shifted.change.low_rel == shifted.change.high_rel == shifted.change.estimate_rel


def test_single_sample_never_a_change() -> None:
    r = is_significant_change([0.5], [1.0, 1.0, 1.0], threshold_rel=0.0)
    assert r.verdict == "unchanged"
    assert not r.significant


@FAST
@given(st.lists(positive, min_size=2, max_size=12), st.floats(min_value=0.0, max_value=1.0))
def test_no_change_against_itself(a: list[float], threshold: float) -> None:
    r = is_significant_change(a, list(a), threshold_rel=threshold)
    assert r.verdict == "unchanged"
    assert r.rel_change_median == 0.0


def test_bad_threshold() -> None:
    with pytest.raises(ConfigError, match="threshold_rel"):
        change_interval([1.0, 2.0], [1.0, 2.0], threshold_rel=-0.1)


def test_bound_below_float_resolution_stays_above_minus_100_percent() -> None:
    # Two wildly different baseline rounds: the lower log bound is about -37, exp(-37) - 1 rounds to -1.
    ch = change_interval([1.0, 1.0], [1.0, 236.0])
    assert -1.0 < ch.low_rel <= ch.estimate_rel <= ch.high_rel
