"""Default-clock drift: whether the default clock moved beyond its noise between its re-measurements.

The default clock is re-measured through a sweep. Each later re-measurement is compared with the first
by a Welch t-test on the log per-round values (:func:`default_drift_check`, Bonferroni over every
comparison, family-wise level :data:`DRIFT_ALPHA`), and the change must also exceed
:data:`DRIFT_MIN_REL`. The analysis (:mod:`sdbench.analysis.dvfs`) flags every point measured after the
last re-measurement that still agreed with the first, and no optimum or saving from drifted data is
stated with confidence; the sweep's own summary (``sdbench.studies.dvfs.summary``) runs the same test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from sdbench.analysis.text import interval_text
from sdbench.record.io import json_safe
from sdbench.record.schema import metric_stats

#: Family-wise level of the default-clock drift test (Bonferroni over every comparison): a missed drift
#: lets a contaminated claim through, a false alarm only withholds one, so the conventional 5 %.
DRIFT_ALPHA = 0.05
#: A default-clock change smaller than this (relative) is not called drift, however well measured:
#: sdbench does not claim savings that small from a sweep.
DRIFT_MIN_REL = 0.01
#: Without per-round samples there is no interval to judge a change by: a change above this is
#: flagged as drift anyway (it would swamp any saving), a smaller one is reported as untested.
DRIFT_UNTESTABLE_REL = 0.05


@dataclass
class DriftCheck:
    """Whether the default clock moved beyond its noise between its re-measurements.

    Each later re-measurement is compared with the first, for time and (when every re-measurement
    has it) energy per image: a Welch t-test on the log per-round values, at the family-wise level
    ``alpha`` split evenly over the comparisons (Bonferroni). A comparison is drift when the test
    rejects *and* the change of the means exceeds ``min_rel``. ``ratio_ci`` of a comparison is the
    Welch interval of the ratio of geometric means at the same per-comparison level, so it excludes
    1 exactly when the test rejects. Re-measurements without per-round samples cannot be tested:
    a change above :data:`DRIFT_UNTESTABLE_REL` is flagged anyway.

    ``onset`` is the index (time order) of the first re-measurement that drifted: every point
    measured after re-measurement ``onset - 1`` (the last that agreed) is affected.
    """

    significant: bool | None
    tested: bool
    onset: int | None = None
    metric: str | None = None
    rel_change: float | None = None
    p_value: float | None = None
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    test: str = ""
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def log_t_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """t interval of the geometric mean of positive samples (``None`` under two samples)."""
    if x.size < 2 or np.any(x <= 0) or not np.all(np.isfinite(x)):
        return None
    lx = np.log(x)
    se = float(np.std(lx, ddof=1)) / math.sqrt(x.size)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, x.size - 1)) * se
    m = float(np.mean(lx))
    return math.exp(m - half), math.exp(m + half)


def _welch_log(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, tuple[float, float]] | None:
    """Welch test of ``log b`` against ``log a``: p-value and the ``level`` interval of the ratio of
    geometric means ``b / a``. ``None`` when either has fewer than two positive samples."""
    if a.size < 2 or b.size < 2 or np.any(a <= 0) or np.any(b <= 0):
        return None
    la, lb = np.log(a), np.log(b)
    va, vb = float(np.var(la, ddof=1)) / a.size, float(np.var(lb, ddof=1)) / b.size
    diff = float(np.mean(lb) - np.mean(la))
    se = math.sqrt(va + vb)
    if se == 0.0:
        # Identical rounds within each: any difference at all is beyond the (zero) noise.
        return (0.0 if diff != 0.0 else 1.0), (math.exp(diff), math.exp(diff))
    df = (va + vb) ** 2 / ((va**2 / (a.size - 1) if va else 0.0) + (vb**2 / (b.size - 1) if vb else 0.0))
    # Welch's t (as scipy.stats.ttest_ind(equal_var=False)), from its parts: the same df gives the interval.
    p = float(2.0 * scipy_stats.t.sf(abs(diff) / se, df))
    half = float(scipy_stats.t.ppf(0.5 + level / 2.0, df)) * se
    return (1.0 if not math.isfinite(p) else p), (math.exp(diff - half), math.exp(diff + half))


def remeasurement_rounds(rec: Mapping[str, Any]) -> dict[str, np.ndarray | None] | None:
    """One default-clock record as :func:`default_drift_check` takes it: its per-round time and energy per
    image (energy None when unavailable); None when the record has no time per image."""
    t = metric_stats(rec, "time_per_image_s")
    if t is None:
        return None
    e = metric_stats(rec, "energy_per_image_j") if rec.get("energy_status") != "unavailable" else None
    return {"time_per_image_s": np.asarray(t.rounds("mean")),
            "energy_per_image_j": None if e is None else np.asarray(e.rounds("mean"))}


def default_drift_check(remeasurements: Sequence[Mapping[str, Any]], *, alpha: float = DRIFT_ALPHA,
                        min_rel: float = DRIFT_MIN_REL) -> DriftCheck:
    """Test the default clock's re-measurements (in the order taken) for drift beyond their noise.

    Each entry maps ``"time_per_image_s"`` and optionally ``"energy_per_image_j"`` to its per-round
    values (a sequence or array; one value when the record has no samples). See :class:`DriftCheck`.
    Used by the analysis and by the sweep's own summary (``sdbench.studies.dvfs.summary.default_clock_checks``).
    """
    test = (f"Welch t-test on log per-round values, each re-measurement against the first; family-wise "
            f"alpha {alpha:g} (Bonferroni), and a change above {100 * min_rel:g} %")
    if len(remeasurements) < 2:
        return DriftCheck(significant=None, tested=False, test=test,
                          verdict="not checked: the default clock was measured once")
    metrics = ["time_per_image_s"]
    if all(m.get("energy_per_image_j") is not None for m in remeasurements):
        metrics.insert(0, "energy_per_image_j")  # energy first: it is what savings are claimed on
    values = [{k: np.asarray(m[k], dtype=float) for k in metrics} for m in remeasurements]
    n_tests = (len(values) - 1) * len(metrics)
    level = 1.0 - alpha / n_tests
    comparisons: list[dict[str, Any]] = []
    tested_all = True
    for j in range(1, len(values)):
        for k in metrics:
            a, b = values[0][k], values[j][k]
            rel = float(np.mean(b) / np.mean(a) - 1.0)
            welch = _welch_log(a, b, level)
            if welch is None:
                tested_all = False
                drifted = abs(rel) > DRIFT_UNTESTABLE_REL
                comparisons.append({"remeasurement": j, "metric": _METRIC_NAMES[k], "rel_change": rel,
                                    "p_value": None, "ratio_ci": None, "tested": False, "drift": drifted})
                continue
            p_value, ratio_ci = welch
            drifted = p_value < alpha / n_tests and abs(rel) > min_rel
            comparisons.append({"remeasurement": j, "metric": _METRIC_NAMES[k], "rel_change": rel, "p_value": p_value,
                                "ratio_ci": list(ratio_ci), "level": level, "tested": True, "drift": drifted})
    drifted_rows = [c for c in comparisons if c["drift"]]
    check = DriftCheck(significant=bool(drifted_rows), tested=tested_all, comparisons=comparisons, test=test)
    if drifted_rows:
        first = drifted_rows[0]
        check.onset, check.metric = first["remeasurement"], first["metric"]
        check.rel_change, check.p_value = first["rel_change"], first["p_value"]
        check.verdict = (f"drift beyond the noise: {_drift_phrase(first)} at re-measurement {first['remeasurement'] + 1} "
                         f"of {len(values)}")
    else:
        largest = max(comparisons, key=lambda c: abs(c["rel_change"]))
        check.metric, check.rel_change, check.p_value = largest["metric"], largest["rel_change"], largest["p_value"]
        check.verdict = f"stable within the noise (largest change: {_drift_phrase(largest)})"
        if not tested_all:
            check.verdict += f"; no per-round samples for some re-measurements, so changes under " \
                             f"{100 * DRIFT_UNTESTABLE_REL:g} % could not be tested"
    return check


_METRIC_NAMES = {"energy_per_image_j": "energy", "time_per_image_s": "time"}


def _drift_phrase(c: Mapping[str, Any]) -> str:
    """``energy +7.1 % [+3.2, +11.2] (99.75 % CI; p = 0.0003, threshold 0.0025)`` for one drift comparison.

    The interval is at the family-wise level the test uses (Bonferroni over every comparison), so it excludes
    0 exactly when p is under the threshold; both are printed, or a p of 0.0076 beside "stable" reads as a
    contradiction."""
    text = f"{c['metric']} {100 * c['rel_change']:+.1f} %"
    if c.get("ratio_ci"):
        lo, hi = c["ratio_ci"]
        text += " " + interval_text(100 * (lo - 1.0), 100 * (hi - 1.0), True, bool(c["drift"]))
    if c.get("p_value") is not None and c.get("level") is not None:
        text += f" ({100 * c['level']:.4g} % CI; p = {c['p_value']:.2g}, threshold {1.0 - c['level']:.3g})"
    elif c.get("p_value") is not None:
        text += f" (p = {c['p_value']:.2g})"
    elif not c.get("tested", True):
        text += " (untested: no per-round samples)"
    return text
