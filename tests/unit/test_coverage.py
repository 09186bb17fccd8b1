"""The coverage study: do the 95 % intervals hold the truth as often as they claim?

Samples are drawn from known distributions (lognormal rounds with CV 1-20 %, and the same with 10 % of
the rounds 1.3-2x slower, like eager GPU calls), n from 3 to 30, 10,000 trials per cell with fixed seeds.
The study runs the same vectorised code as ``summarize`` and ``change_interval``
(:func:`sdbench.stats.coverage_study`), so the table in docs/statistics.md is what these tests check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.stats import (
    COVERAGE_CVS,
    COVERAGE_DISTRIBUTIONS,
    COVERAGE_NS,
    COVERAGE_TRIALS,
    COVERAGE_VALUES,
    CoverageCell,
    _change_rows,
    _median_interval_rows,
    change_interval,
    coverage_grid,
    coverage_study,
    coverage_table,
    draw_rounds,
    summarize,
    true_median,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "statistics.md"


@pytest.fixture(scope="module")
def grid() -> list[CoverageCell]:
    return coverage_grid()


def test_grid_is_the_documented_one(grid: list[CoverageCell]) -> None:
    assert len(grid) == len(COVERAGE_DISTRIBUTIONS) * len(COVERAGE_CVS) * len(COVERAGE_NS)
    assert all(c.trials == COVERAGE_TRIALS >= 2000 for c in grid)
    assert {c.n for c in grid} == set(COVERAGE_NS) and min(COVERAGE_NS) == 3 and max(COVERAGE_NS) == 30
    assert min(COVERAGE_CVS) == 0.01 and max(COVERAGE_CVS) == 0.20


def test_intervals_cover_the_true_median_93_to_97_percent(grid: list[CoverageCell]) -> None:
    bad = [(c.distribution, c.cv, c.n, c.coverage) for c in grid if not 0.93 <= c.coverage <= 0.97]
    assert not bad, bad


def test_same_distribution_is_called_slower_at_most_at_the_nominal_rate(grid: list[CoverageCell]) -> None:
    # One-sided nominal rate 2.5 %; slack: the 99.9 % binomial quantile of that rate over the trials.
    limit = scipy.stats.binom.ppf(0.999, COVERAGE_TRIALS, 0.025) / COVERAGE_TRIALS
    bad = [(c.distribution, c.cv, c.n, c.false_slower) for c in grid if c.false_slower > limit]
    assert not bad, (limit, bad)
    # And the change intervals hold the true change (none) at least at the nominal level, less noise.
    assert min(c.change_coverage for c in grid) >= 0.93


def test_the_docs_table_is_this_study(grid: list[CoverageCell]) -> None:
    # Deterministic seeds: the table in docs/statistics.md must be exactly what the study gives now.
    doc = DOC.read_text(encoding="utf-8")
    for value in COVERAGE_VALUES:
        assert coverage_table(grid, value) in doc, value


@pytest.mark.parametrize("cv", COVERAGE_CVS)
def test_true_median_of_the_mixture(cv: float) -> None:
    x = draw_rounds("mixture", cv, (1_000_000,), np.random.default_rng(11))
    # The sample median of a million rounds lies within a few 1e-4 (relative) of the population median.
    assert float(np.median(x)) == pytest.approx(true_median("mixture", cv), rel=4 * cv / 1000 + 1e-5)
    assert true_median("mixture", cv) > 1.0 == true_median("lognormal", cv)


def test_coverage_study_is_deterministic() -> None:
    a = coverage_study("mixture", 0.05, 8, trials=500, seed=3)
    assert a == coverage_study("mixture", 0.05, 8, trials=500, seed=3)
    assert a != coverage_study("mixture", 0.05, 8, trials=500, seed=4)


@settings(deadline=None, max_examples=20)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(0, 2**16))
def test_vectorised_rows_are_the_scalar_functions(n_new: int, n_old: int, seed: int) -> None:
    # The study's batch code gives, row by row, exactly what summarize and change_interval give.
    rng = np.random.default_rng(seed)
    new, old = draw_rounds("mixture", 0.05, (8, n_new), rng), draw_rounds("lognormal", 0.05, (8, n_old), rng)
    rows = _median_interval_rows(new, 0.95, log_scale=True)
    change = _change_rows(new, old, 0.95)
    for i in range(8):
        s = summarize(new[i])
        assert (s.ci95_low, s.ci95_high) == (float(rows.low[i]), float(rows.high[i]))
        ch = change_interval(new[i], old[i])
        assert (np.log1p(ch.low_rel), np.log1p(ch.high_rel)) == pytest.approx((change.low[i], change.high[i]), rel=1e-12,
                                                                              abs=1e-15)
        assert (ch.verdict == "slower") == bool(change.low[i] > 0)
