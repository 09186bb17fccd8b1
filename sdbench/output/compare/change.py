"""The statistics of one metric of one matched pair (candidate against baseline): the change, its
interval and its verdict from one computation (:mod:`sdbench.stats`), and whether it is a regression
beyond the ``--fail-on`` threshold; energy and power only between records whose energy was measured
the same way."""

from __future__ import annotations

from sdbench.output.compare.entries import Entry, entry_metric
from sdbench.output.compare.metrics import ENERGY_METRICS, METRICS
from sdbench.output.compare.result import CompareRow
from sdbench.record.schema import MetricStats
from sdbench.stats import (
    ChangeEstimate,
    SummaryMoments,
    change_interval,
    change_interval_from_summaries,
)

VERDICT_UNCHANGED = "unchanged (within noise)"
VERDICT_NOISE_UNKNOWN = "unchanged (noise unknown)"


def change_estimate(new: MetricStats, old: MetricStats, confidence: float, threshold_pct: float | None = None
                    ) -> ChangeEstimate:
    """The one computation behind a row's change, interval and verdict (:mod:`sdbench.stats`).

    Per-round samples on both sides: :func:`sdbench.stats.change_interval`. Otherwise (a side known
    only by summary statistics): :func:`sdbench.stats.change_interval_from_summaries`, which gives an
    interval above -100 % containing the estimate, or none ("noise unknown"). ``threshold_pct`` (a
    ``--fail-on`` percentage) sets ``ChangeEstimate.regression``: slower AND estimate >= threshold.
    """
    threshold_rel = 0.0 if threshold_pct is None else threshold_pct / 100.0
    if new.samples is not None and old.samples is not None:
        return change_interval(new.samples, old.samples, confidence=confidence, threshold_rel=threshold_rel)
    return change_interval_from_summaries(SummaryMoments(new.median, new.mean_value, new.stddev or 0.0, new.n),
                                          SummaryMoments(old.median, old.mean_value, old.stddev or 0.0, old.n),
                                          confidence=confidence, threshold_rel=threshold_rel)


def compare_metric(base: Entry, cand: Entry, metric: str, confidence: float, fail_on_pct: dict[str, float],
                   base_file: str, cand_file: str) -> CompareRow:
    """``metric`` of one matched pair as a :class:`CompareRow`: compared, or the reason it was not."""
    m = METRICS[metric]
    row = CompareRow(base_file, cand_file, cand.name, cand.case_id, metric, m.unit, None, None, None, None, None, None,
                     None, None, verdict="", reason="", compared=False, fail_on_pct=fail_on_pct.get(metric))
    if metric in ENERGY_METRICS:
        statuses = (base.energy_status, cand.energy_status)
        if "unavailable" in statuses:
            side = "baseline" if statuses[0] == "unavailable" else "candidate"
            if statuses == ("unavailable", "unavailable"):
                side = "both sides"
            row.verdict = f"{metric} unavailable"
            row.reason = f"energy_status 'unavailable' on {side}: not compared, never fails the run"
            return row
        if statuses[0] != statuses[1]:
            row.verdict = "not compared (simulated vs measured)"
            row.reason = f"energy is {statuses[0]} in the baseline and {statuses[1]} in the candidate"
            return row
        methods = (base.energy_method, cand.energy_method)
        if None not in methods and methods[0] != methods[1]:
            # How energy was measured is part of what a record measures: a counter's windows and a power
            # timeline's integral are different quantities, never paired as one.
            row.verdict = f"not compared ({methods[0]} vs {methods[1]} energy)"
            row.reason = f"energy measured by {methods[0]} in the baseline and by {methods[1]} in the candidate"
            return row
    try:
        old, new = entry_metric(base, metric), entry_metric(cand, metric)
    except ValueError as exc:
        row.verdict, row.reason = "not compared (invalid samples)", str(exc)
        return row
    if old is None or new is None:
        row.verdict = f"{metric} unavailable"
        row.reason = f"no {m.label} in the {'baseline' if old is None else 'candidate'}"
        return row
    threshold = fail_on_pct.get(metric)
    ch = change_estimate(new, old, confidence, threshold)
    row.baseline_median, row.candidate_median = old.median, new.median
    row.baseline_n, row.candidate_n = old.n, new.n
    # Estimate, interval, verdict and regression all come from ch, so they cannot disagree.
    row.rel_change = ch.estimate_rel
    row.change_ci_low_rel, row.change_ci_high_rel = ch.low_rel, ch.high_rel
    row.ci_method, row.ci_extended = ch.method, ch.extended
    if not ch.noise_known:
        shown = VERDICT_NOISE_UNKNOWN
    elif ch.verdict == "unchanged":
        shown = VERDICT_UNCHANGED
    else:
        # "slower"/"faster" read wrongly for joules and watts: those say higher/lower.
        shown = ch.verdict if metric == "time" else {"slower": "higher", "faster": "lower"}[ch.verdict]
    row.p_value, row.verdict, row.reason, row.compared = ch.p_value, shown, ch.reason, True
    row.source = old.source if old.source == new.source else f"{old.source} / {new.source}"
    row.regression = threshold is not None and ch.regression
    return row
