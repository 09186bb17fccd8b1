"""Properties of sdbench.stats: intervals, stop rule, calibration and change detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.errors import ConfigError
from sdbench.stats import (
    ChangeResult,
    SampleStats,
    StopDecision,
    StopRule,
    bootstrap_ci,
    bootstrap_ci_paired,
    is_significant_change,
    iterations_per_window,
    relative_change,
    summarize,
    t_interval,
)

# Benchmark-like magnitudes: milliseconds to minutes, joules to kilojoules.
positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
samples_2_plus = st.lists(positive, min_size=2, max_size=30)

FAST = settings(deadline=None, max_examples=60)
VERY_FAST = settings(deadline=None, max_examples=25)


# --- summarize ----------------------------------------------------------------------------------------------


def test_known_t_interval() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.n == 5
    assert s.mean == 3.0
    assert s.median == 3.0
    assert s.stddev == pytest.approx(math.sqrt(2.5))
    # t_{0.975, 4} = 2.776445, sem = sqrt(2.5 / 5)
    half = 2.7764451051977987 * math.sqrt(0.5)
    assert s.ci95_low == pytest.approx(3.0 - half)
    assert s.ci95_high == pytest.approx(3.0 + half)
    assert s.ci95_halfwidth_rel == pytest.approx(half / 3.0)
    assert s.cv == pytest.approx(math.sqrt(2.5) / 3.0)
    assert s.method == "t"


@FAST
@given(samples_2_plus)
def test_t_interval_contains_mean(xs: list[float]) -> None:
    s = summarize(xs, method="t")
    assert s.ci95_low is not None and s.ci95_high is not None
    assert s.ci95_low <= s.mean <= s.ci95_high
    assert s.min <= s.median <= s.max
    assert s.min <= s.mean <= s.max
    assert s.stddev >= 0.0
    assert s.cv is not None and s.cv >= 0.0
    assert s.ci95_halfwidth_rel is not None and s.ci95_halfwidth_rel >= 0.0
    assert (s.ci95_low, s.ci95_high) == t_interval(xs)


@FAST
@given(samples_2_plus)
def test_wider_confidence_gives_wider_t_interval(xs: list[float]) -> None:
    narrow = summarize(xs, confidence=0.8)
    wide = summarize(xs, confidence=0.99)
    assert wide.ci95_low <= narrow.ci95_low <= narrow.ci95_high <= wide.ci95_high


@VERY_FAST
@given(st.lists(positive, min_size=3, max_size=20), st.integers(0, 2**16))
def test_bootstrap_interval_deterministic_and_within_range(xs: list[float], seed: int) -> None:
    a = summarize(xs, method="bootstrap", seed=seed)
    b = summarize(xs, method="bootstrap", seed=seed)
    assert a == b
    assert a.method == "bootstrap"
    assert a.ci95_low is not None and a.ci95_high is not None
    # Every resample's mean lies within [min, max], hence so does any interval built from them.
    assert a.min <= a.ci95_low <= a.ci95_high <= a.max


@FAST
@given(samples_2_plus, st.floats(min_value=1e-3, max_value=1e3))
def test_cv_and_relative_halfwidth_scale_invariant(xs: list[float], scale: float) -> None:
    a = summarize(xs)
    b = summarize([x * scale for x in xs])
    # Absolute slack: with near-identical samples the tiny stddev is all rounding noise.
    assert b.cv == pytest.approx(a.cv, rel=1e-6, abs=1e-9)
    assert b.ci95_halfwidth_rel == pytest.approx(a.ci95_halfwidth_rel, rel=1e-6, abs=1e-9)


@VERY_FAST
@given(st.lists(positive, min_size=2, max_size=20), st.integers(-20, 20))
def test_bootstrap_scale_invariant_exactly_for_powers_of_two(xs: list[float], exponent: int) -> None:
    # Scaling by 2**k is exact in floating point, so the (discrete, tie-prone) bootstrap distribution
    # of a small sample scales exactly too; other factors can flip ties between resample means.
    scale = 2.0**exponent
    a = summarize(xs, method="bootstrap")
    b = summarize([x * scale for x in xs], method="bootstrap")
    assert b.cv == pytest.approx(a.cv, rel=1e-12, abs=1e-15)
    assert b.ci95_halfwidth_rel == pytest.approx(a.ci95_halfwidth_rel, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("method", ["t", "bootstrap"])
@pytest.mark.parametrize("value", [0.1, 7.0, 123.456])
def test_identical_samples_zero_width(method: str, value: float) -> None:
    s = summarize([value] * 6, method=method)
    assert s.mean == value
    assert s.stddev == 0.0
    assert s.cv == 0.0
    assert s.ci95_low == s.ci95_high == value
    assert s.ci95_halfwidth_rel == 0.0
    assert s.method == method


def test_single_sample_has_no_interval() -> None:
    s = summarize([2.5])
    assert (s.n, s.mean, s.median, s.stddev, s.min, s.max) == (1, 2.5, 2.5, 0.0, 2.5, 2.5)
    assert s.cv == 0.0
    assert s.ci95_low is None and s.ci95_high is None and s.ci95_halfwidth_rel is None
    assert s.method == "none"


def test_zero_mean_gives_none_relatives() -> None:
    s = summarize([-1.0, 1.0])
    assert s.mean == 0.0
    assert s.cv is None
    assert s.ci95_halfwidth_rel is None
    assert s.ci95_low is not None and s.ci95_low < 0 < s.ci95_high


def test_as_dict_flat_keys() -> None:
    s = summarize([1.0, 2.0, 3.0])
    d = s.as_dict("time_s")
    assert d["time_s_median"] == 2.0
    assert d["time_s_mean"] == 2.0
    assert d["time_s_n"] == 3
    assert d["time_s_ci_method"] == "t"
    assert d["time_s_ci95_low"] == s.ci95_low
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
    with pytest.raises(ConfigError, match="confidence"):
        summarize([1.0, 2.0], confidence=1.5)


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
    assert is_significant_change(new, old, threshold_rel=0.5).verdict == "unchanged"


def test_difference_inside_noise_is_unchanged() -> None:
    rng = np.random.default_rng(4)
    old = 1.0 + rng.normal(0.0, 0.2, size=5)
    new = old * 0.97  # 3% "faster" but the noise is 20%
    r = is_significant_change(new, old, threshold_rel=0.01)
    assert r.verdict == "unchanged"
    assert not r.significant
    assert r.ci_overlap


def test_identical_samples_unchanged_and_constant_shift_detected() -> None:
    same = is_significant_change([1.0] * 5, [1.0] * 5, threshold_rel=0.0)
    assert same.verdict == "unchanged" and same.rel_change_median == 0.0
    shifted = is_significant_change([0.9] * 5, [1.0] * 5, threshold_rel=0.05)
    assert shifted.verdict == "faster"
    assert shifted.p_value == 0.0


def test_single_sample_never_a_change() -> None:
    r = is_significant_change([0.5], [1.0, 1.0, 1.0], threshold_rel=0.0)
    assert r.verdict == "unchanged"
    assert not r.significant


_MIRROR = {"faster": "slower", "slower": "faster", "unchanged": "unchanged"}


@FAST
@given(
    st.lists(positive, min_size=2, max_size=12),
    st.lists(positive, min_size=2, max_size=12),
    st.floats(min_value=0.5, max_value=0.99),
)
def test_significance_symmetric(a: list[float], b: list[float], confidence: float) -> None:
    ab = is_significant_change(a, b, threshold_rel=0.0, confidence=confidence)
    ba = is_significant_change(b, a, threshold_rel=0.0, confidence=confidence)
    assert ab.significant == ba.significant
    assert ba.verdict == _MIRROR[ab.verdict]


@FAST
@given(st.lists(positive, min_size=2, max_size=12), st.floats(min_value=0.0, max_value=1.0))
def test_no_change_against_itself(a: list[float], threshold: float) -> None:
    r = is_significant_change(a, list(a), threshold_rel=threshold)
    assert r.verdict == "unchanged"
    assert r.rel_change_median == 0.0
