"""The regression gate: results files compared, each later one against the first (:func:`compare_files`,
:func:`compare_results`). Benchmarks are matched by name (or case_id across formats) and compared only
when their ``case_hash`` is equal; results of different GPUs or settings are refused unless allowed;
each matched pair's metrics go through :func:`sdbench.output.compare.change.compare_metric`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from sdbench.errors import ConfigError, SdbenchError
from sdbench.output.compare.change import VERDICT_NOISE_UNKNOWN, compare_metric
from sdbench.output.compare.entries import (
    Entry,
    ResultsFile,
    identity_mismatches,
    pairing_keys,
    results_file,
    software_changes,
)
from sdbench.output.compare.metrics import METRICS, normalise_fail_on, parse_metrics
from sdbench.output.compare.result import CompareResult, NotCompared
from sdbench.record.io import read_results


def compare_results(files: Sequence[ResultsFile], fail_on: str | Mapping[str, float] | None = None,
                    allow_cross_gpu: bool = False, metrics: str | Sequence[str] | None = None,
                    confidence: float = 0.95) -> CompareResult:
    """Compare already-loaded results files: each later one against the first. See :func:`compare_files`."""
    if len(files) < 2:
        raise ConfigError("paths", [str(f.path) for f in files], "a baseline and at least one candidate file")
    if not (isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0.0 < confidence < 1.0):
        raise ConfigError("confidence", confidence, "a probability strictly between 0 and 1 (e.g. 0.95)")
    thresholds = normalise_fail_on(fail_on)
    chosen = parse_metrics(metrics) if metrics is not None else tuple(METRICS)
    # A metric that gates the run is always compared, even when --metric leaves it out.
    chosen = tuple(k for k in METRICS if k in chosen or k in thresholds)
    result = CompareResult([str(f.path) for f in files], chosen, thresholds, float(confidence))
    baseline = files[0]
    for f in files:
        result.notes.extend(f.notes)
        # A file given twice (or read twice) warns once about each torn line.
        result.warnings.extend(w for w in f.warnings if w not in result.warnings)
    pairs: list[tuple[ResultsFile, list[tuple[Entry, Entry]]]] = []
    refusals: list[str] = []
    for cand in files[1:]:
        base_by, cand_by, key = pairing_keys(baseline, cand)
        if key == "case_id":
            result.notes.append(f"{cand.path.name} and {baseline.path.name} are different formats: paired by case_id")
        common = [k for k in base_by if k in cand_by]
        if not common:
            raise SdbenchError(f"no common benchmarks between {baseline.path} and {cand.path} (paired by {key}; "
                               f"{len(base_by)} in the baseline, {len(cand_by)} in the candidate)")
        mismatches: dict[str, None] = {}
        software: dict[str, None] = {}
        matched: list[tuple[Entry, Entry]] = []
        for k in common:
            b, c = base_by[k], cand_by[k]
            mismatches.update(dict.fromkeys(identity_mismatches(b, c)))
            software.update(dict.fromkeys(software_changes(b, c)))
            if b.case_hash and c.case_hash and b.case_hash != c.case_hash:
                result.not_compared.append(NotCompared(str(baseline.path), str(cand.path), c.name,
                                                       f"changed benchmark, not compared (case_hash {b.case_hash} -> {c.case_hash})"))
                continue
            matched.append((b, c))
        for k in base_by:
            if k not in cand_by:
                result.not_compared.append(NotCompared(str(baseline.path), str(cand.path), base_by[k].name,
                                                       "only in the baseline, not compared"))
        for k in cand_by:
            if k not in base_by:
                result.not_compared.append(NotCompared(str(baseline.path), str(cand.path), cand_by[k].name,
                                                       "new benchmark (no baseline), not compared"))
        if not matched:
            raise SdbenchError(f"no comparable benchmarks between {baseline.path} and {cand.path}: all {len(common)} "
                               "shared benchmarks changed what they measure (case_hash differs)")
        if mismatches:
            what = "; ".join(mismatches)
            if allow_cross_gpu:
                result.warnings.append(f"{cand.path} vs {baseline.path} compares different GPUs or settings "
                                       f"(--allow-cross-gpu): {what}")
            else:
                refusals.append(f"{cand.path} vs {baseline.path}: {what}")
        if software:
            result.notes.append(f"{cand.path.name}: software differs from the baseline: {'; '.join(software)}")
        pairs.append((cand, matched))
    if refusals:
        raise SdbenchError("refusing to compare results from different GPUs or clock/power-limit settings ("
                           + " | ".join(refusals) + "); timings are only comparable on one GPU under one setting, "
                           "pass --allow-cross-gpu to compare anyway")
    for cand, matched in pairs:
        for b, c in matched:
            for metric in chosen:
                result.rows.append(compare_metric(b, c, metric, result.confidence, thresholds, str(baseline.path),
                                                  str(cand.path)))
    unavailable = [r for r in result.rows if r.metric == "energy" and r.verdict == "energy unavailable"]
    if unavailable:
        result.notes.append(f"energy unavailable on a side for {len(unavailable)} comparison(s): not compared; "
                            "energy that could not be measured never fails the run")
    blind = [r for r in result.rows if r.verdict == VERDICT_NOISE_UNKNOWN and r.metric in thresholds]
    if blind:
        result.notes.append(f"{len(blind)} gated comparison(s) have no noise estimate (fewer than 2 rounds on a side): "
                            "they cannot be judged and do not fail the run")
    methods: dict[str, int] = {}
    for r in result.rows:
        if r.compared and r.ci_method:
            methods[r.ci_method] = methods.get(r.ci_method, 0) + 1
    if methods:
        used = ", ".join(f"{k} ({v})" for k, v in methods.items())
        extended = sum(r.ci_extended for r in result.rows)
        result.notes.append(f"change intervals: {used}" + (f"; {extended} widened to contain their estimate" if extended else "")
                            + " (see docs/statistics.md)")
    if any(r.verdict == "not compared (simulated vs measured)" for r in result.rows):
        result.notes.append("simulated and measured energy are never compared with each other")
    if any(r.verdict.endswith(" energy)") and r.verdict.startswith("not compared (") for r in result.rows):
        result.notes.append("energy measured by different methods (counter, timeline, rapl) is never compared")
    return result


def compare_files(paths: Sequence[str | os.PathLike[str]], fail_on: str | Mapping[str, float] | None = None,
                  allow_cross_gpu: bool = False, metrics: str | Sequence[str] | None = None,
                  confidence: float = 0.95) -> CompareResult:
    """Compare results files: ``paths[0]`` is the baseline, every later file a candidate against it.

    Args:
        paths: two or more pytest-benchmark JSON, results JSON Lines or ``--export-metrics`` files.
        fail_on: ``"time:5%,energy:5%"`` or ``{"time": 5.0}`` (percentages): a benchmark that is
            significantly slower (higher) by more than N percent in that metric sets ``exit_code`` 1.
        allow_cross_gpu: compare results from different GPUs / clock or power-limit settings (adds a
            warning) instead of raising :class:`SdbenchError`.
        metrics: which of ``time``, ``energy``, ``power`` to compare (default all); ``fail_on`` metrics
            are always included.
        confidence: level of the confidence intervals and of the significance test.

    Raises :class:`SdbenchError` (or its :class:`ConfigError`) for missing/unreadable files, bad
    arguments, no common benchmarks, or a refused cross-GPU comparison.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise ConfigError("paths", paths, "a list of two or more results files")
    # Validate arguments before touching the files, so a typo is reported as such.
    normalise_fail_on(fail_on)
    if metrics is not None:
        parse_metrics(metrics)
    if len(paths) < 2:
        raise ConfigError("paths", [str(p) for p in paths], "a baseline and at least one candidate file")
    return compare_results([results_file(read_results(p)) for p in paths], fail_on=fail_on,
                           allow_cross_gpu=allow_cross_gpu, metrics=metrics, confidence=confidence)
