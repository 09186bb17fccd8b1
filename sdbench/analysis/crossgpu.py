"""Cross-GPU study: the same cases measured on several GPUs, side by side (``sdbench report --across-gpus``).

Input: results from several GPUs (``--export-metrics`` documents, results JSON Lines, pytest-benchmark JSON,
sweep directories), in any mix; a file may hold records of several GPUs. Records are grouped into *runs*:
one GPU with one software stack and one setting of the card (:data:`RUN_FIELDS`, read from each record's
``env_*`` and ``simulated_*`` fields), in the order they first appear (give the files oldest GPU first for a
progression). Cases are matched across runs by workload identity (:data:`WORKLOAD_IDENTITY`: model,
scheduler, steps, resolution, batch, dtype, profile, knobs, attention, prompt length, guidance, offload),
never by clock or GPU.

Per case and run, from the run's default-clock record (the card as found: no clock or power limit set):

* s/image and images/s, J/image gross and net, images/kJ, each with the record's own interval
  (``*_ci95_low/_high``, made by :func:`sdbench.stats.summarize`; images/s and images/kJ are the reciprocals
  of the time and energy intervals, which are intervals of the reciprocal medians);
* EDP (J*s per image: median energy times median time per image; a point estimate), the fraction of the
  FLOP floor (``fraction_of_flop_floor``; None with its ``mfu_unavailable_reason``), power at load
  (``power_w``, with :func:`sdbench.stats.summarize`'s interval of the per-round powers);
* the energy-optimal clock, where the run holds a sweep's records of the case (two or more clock
  settings): :func:`sdbench.analysis.dvfs.analyze.analyze_records`'s ``energy`` optimum, with its support;
* where the run holds two or more default-clock measurements of the case (a sweep re-measures the default
  clock; a plain measurement counts too), their within-run range (``max / min - 1`` of their medians, per
  metric) and the project's drift test on them in time order (:func:`sdbench.analysis.drift.default_drift_check`:
  Welch t-test on the log per-round values, each against the first, Bonferroni, and a change above
  :data:`~sdbench.analysis.drift.DRIFT_MIN_REL`; without per-round samples a change above
  :data:`~sdbench.analysis.drift.DRIFT_UNTESTABLE_REL` counts as drift).

Relative statements ("B vs A: time per image -34.0 % [-34.5 %, -33.5 %], faster") come from
:func:`sdbench.stats.change_interval` on the per-round samples (``time_per_image_s_samples``,
``energy_per_image_j_samples``), for every pair of runs in run order (the later against the earlier), so
each carries an interval above -100 % that contains its estimate, and its verdict is read off that interval,
unless the default clock of either run drifted within that run (its drift test is significant, on time or on
energy: the card's state changed during the run, as a sweep flags every point measured after it). Then one
of its default-clock measurements is no measure of the card, whatever its own interval says: the verdict is
"not stated: the default clock drifted within ...", the estimate and interval stay in the statement, and the
comparison is flagged (``drifted``, ``drifted_runs``). Every statement shows each run's within-run range of the
metric where it has one, beside the change between the runs.
Every statement starts with ``[MEASURED]``, ``[SIMULATED]`` or ``[SIMULATED vs MEASURED]`` and names what
differs between its two runs (GPU, driver, torch, diffusers, power limit, simulated card, ...).

:func:`build_study` makes the study and :meth:`CrossGpuStudy.to_dict` is its JSON document; its tables,
markdown, HTML and plot are made by :mod:`sdbench.output.crossgpu`, whose
:func:`~sdbench.output.crossgpu.write_study` writes them all.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbench.analysis.drift import default_drift_check, remeasurement_rounds
from sdbench.analysis.dvfs.analyze import analyze_records
from sdbench.analysis.dvfs.records import is_default_record, record_is_simulated, record_settings
from sdbench.analysis.estimates import Estimate
from sdbench.errors import ConfigError, SdbenchError
from sdbench.record.io import json_safe, read_results
from sdbench.record.schema import CASE_RECORD, metric_stats
from sdbench.stats import change_interval

__all__ = [
    "METRICS",
    "RUN_FIELDS",
    "WORKLOAD_IDENTITY",
    "CaseStudy",
    "Cell",
    "Comparison",
    "CrossGpuStudy",
    "Run",
    "build_study",
    "change_pct_text",
    "load_inputs",
    "range_pct_text",
    "value_text",
]

#: What makes two records the same case on different GPUs (the prompt by its length in tokens).
WORKLOAD_IDENTITY: tuple[str, ...] = ("model", "scheduler", "steps", "width", "height", "batch_size", "dtype",
                                      "profile", "knobs", "attention", "prompt_tokens", "guidance_scale", "offload",
                                      "strength", "timestep_spacing")

#: What tells runs apart, and what every cross-GPU statement names when it differs: (label, record field).
RUN_FIELDS: tuple[tuple[str, str], ...] = (
    ("GPU", "env_gpu_name"),
    ("GPU UUID", "env_gpu_uuid"),
    ("simulated", "env_gpu_simulated"),
    ("driver", "env_gpu_driver_version"),
    ("CUDA driver", "env_gpu_cuda_driver_version"),
    ("CUDA runtime", "env_cuda_runtime"),
    ("torch", "env_torch"),
    ("diffusers", "env_diffusers"),
    ("transformers", "env_transformers"),
    ("sdbench", "env_sdbench"),
    ("python", "env_python"),
    ("power limit W", "env_gpu_power_limit_w"),
    ("host", "env_host"),
    ("simulated card", "simulated_card"),
    ("simulated noise CV", "simulated_noise_cv"),
    ("simulated power noise CV", "simulated_power_noise_cv"),
    ("simulated noise seed", "simulated_noise_seed"),
    ("simulated clock", "simulated_clock"),
    # How energy was measured is part of a record's identity: a run that changed it says so in every statement.
    ("energy source", "energy_source"),
)
#: Fields that identify the card itself rather than how it was run (a UUID always differs between cards).
_CARD_IDENTITY = ("GPU UUID",)

#: Metrics compared between runs: (key, label, record metric (its per-round samples), unit, lower-is-better words).
METRICS: tuple[tuple[str, str, str, str, tuple[str, str]], ...] = (
    ("time", "time per image", "time_per_image_s", "s/image", ("faster", "slower")),
    ("energy", "energy per image", "energy_per_image_j", "J/image", ("less energy", "more energy")),
)

SIM_BANNER = ("SIMULATED: these runs come from sdbench's simulated GPUs (a physical model of each card on a "
              "virtual clock), not from measurements on real hardware")


# --- input -------------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One input: its records and, for a sweep directory, its ``sweep.json``."""

    path: Path
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    warnings: list[str] = field(default_factory=list)  # torn lines skipped while reading (file and line)


def load_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[Source]:
    """Read every input through the one reader (:func:`sdbench.record.io.read_results`): a sweep directory or
    results ``.jsonl``, an ``--export-metrics`` document, or pytest-benchmark JSON (each benchmark's
    ``extra_info`` record). A sweep directory's ``sweep.json`` is its metadata; torn lines are skipped."""
    if isinstance(paths, (str, os.PathLike)) or not paths:
        raise ConfigError("across-gpus", paths, "one or more results files or sweep directories")
    out = []
    for raw in paths:
        results = read_results(raw)
        records = [dict(r) for r in results.records(CASE_RECORD) if r]
        if not records:
            raise SdbenchError(f"no records in {', '.join(str(f) for f in results.files) or results.path}")
        out.append(Source(Path(raw), records, dict(results.meta) if results.format == "folder" else {},
                          results.warnings))
    return out


# --- the study's parts ----------------------------------------------------------------------------------------
@dataclass
class Run:
    """One GPU as run: its identity and software (:data:`RUN_FIELDS`), whether simulated, its records."""

    label: str
    fields: dict[str, Any]
    simulated: bool
    sources: list[str]
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    metas: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def gpu_name(self) -> str:
        return str(self.fields.get("GPU") or "unknown GPU")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "simulated": self.simulated, "fields": self.fields, "sources": self.sources,
                "records": len(self.records)}


@dataclass
class Cell:
    """One case on one run, from its default-clock record. Intervals are the record's own.

    ``default_clock_measurements``: how many default-clock records of the case the run holds (the one shown
    and its re-measurements). ``default_clock_range``: per metric key (``time``, ``energy``) with two or more
    of them, ``{"n", "min", "max", "rel", "medians"}``: their medians in time order and ``rel = max / min - 1``.
    ``drift``: with two or more, :func:`sdbench.analysis.drift.default_drift_check` on them in time order
    (:class:`~sdbench.analysis.drift.DriftCheck`'s fields, plus ``measurements`` and ``metrics``: per metric
    key whether it drifted, None when not tested); None otherwise.
    """

    run: str
    simulated: bool
    case_id: str | None
    rounds: int | None
    energy_status: str | None
    time_per_image_s: Estimate | None
    images_per_s: Estimate | None
    energy_per_image_j: Estimate | None
    net_energy_per_image_j: Estimate | None
    images_per_kj: Estimate | None
    edp_js_per_image: float | None
    fraction_of_flop_floor: float | None
    fraction_of_flop_floor_unavailable_reason: str | None
    power_w: Estimate | None
    energy_optimal_clock: dict[str, Any] | None
    true_time_per_image_s: float | None = None
    true_energy_per_image_j: float | None = None
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict, repr=False)
    default_clock_measurements: int = 0
    default_clock_range: dict[str, dict[str, Any]] = field(default_factory=dict)
    drift: dict[str, Any] | None = None

    @property
    def drifted(self) -> bool:
        """The run's default clock moved beyond its noise between its measurements of this case."""
        return bool(self.drift and self.drift.get("significant"))

    def drift_text(self) -> str:
        """What the drift test found, without its prefix: ``energy +8.0 % [+1.0, +15.4] (p = 0.0061) at
        re-measurement 2 of 3`` (empty without a test)."""
        if not self.drift:
            return ""
        return str(self.drift.get("verdict") or "").removeprefix("drift beyond the noise: ")

    def range_text(self, key: str) -> str | None:
        """``45.6 % over 3 default-clock measurements`` for metric ``key``; None with fewer than two."""
        r = self.default_clock_range.get(key)
        if not r:
            return None
        return f"{range_pct_text(r['rel'])} over {r['n']} default-clock measurements"

    def to_dict(self) -> dict[str, Any]:
        def est(e: Estimate | None) -> dict[str, Any] | None:
            return None if e is None else {"value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high, "method": e.method}

        return json_safe({
            "run": self.run, "simulated": self.simulated, "case_id": self.case_id, "rounds": self.rounds,
            "energy_status": self.energy_status, "time_per_image_s": est(self.time_per_image_s),
            "images_per_s": est(self.images_per_s), "energy_per_image_j": est(self.energy_per_image_j),
            "net_energy_per_image_j": est(self.net_energy_per_image_j), "images_per_kj": est(self.images_per_kj),
            "edp_js_per_image": self.edp_js_per_image, "fraction_of_flop_floor": self.fraction_of_flop_floor,
            "fraction_of_flop_floor_unavailable_reason": self.fraction_of_flop_floor_unavailable_reason,
            "power_w": est(self.power_w), "energy_optimal_clock": self.energy_optimal_clock,
            "true_time_per_image_s": self.true_time_per_image_s,
            "true_energy_per_image_j": self.true_energy_per_image_j, "notes": self.notes,
            "default_clock_measurements": self.default_clock_measurements,
            "default_clock_range": self.default_clock_range, "default_clock_drift": self.drift,
            "default_clock_drifted": self.drifted,
        })


@dataclass
class Comparison:
    """``new`` against ``old`` for one metric of one case: :func:`sdbench.stats.change_interval` on the
    per-round samples. ``differs``: what differs between the two runs; ``mixed``: one is simulated, one not.
    ``drifted``: the default clock of one of the runs (``drifted_runs``) drifted within that run, so the
    verdict is withheld ("not stated: ..."), the estimate and interval kept. ``within_run_range``: each run's
    within-run range of the metric (``max / min - 1`` of its default-clock medians; None with one)."""

    metric: str
    new: str
    old: str
    estimate_rel: float | None
    low_rel: float | None
    high_rel: float | None
    verdict: str
    method: str
    confidence: float
    differs: list[str]
    simulated: bool
    mixed: bool
    statement: str
    drifted: bool = False
    drifted_runs: list[str] = field(default_factory=list)
    within_run_range: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dict(self.__dict__))


@dataclass
class CaseStudy:
    """One case across the runs: a cell per run that measured it, and the pairwise comparisons."""

    workload: dict[str, Any]
    label: str
    cells: list[Cell]
    missing: list[str]
    comparisons: list[Comparison]

    def order(self, metric: str) -> list[str]:
        """Run labels by the metric's median, best (lowest) first; runs without it left out."""
        get = {"time": lambda c: c.time_per_image_s, "energy": lambda c: c.energy_per_image_j}[metric]
        have = [c for c in self.cells if get(c) is not None]
        return [c.run for c in sorted(have, key=lambda c: get(c).value)]

    def cell(self, run: str) -> Cell | None:
        return next((c for c in self.cells if c.run == run), None)

    def drifted_runs(self, metric: str) -> list[str]:
        """Runs whose default clock drifted within the run, in the comparisons of ``metric`` (whose verdicts
        are therefore withheld; the medians' order is then no ranking either)."""
        out: list[str] = []
        for c in self.comparisons:
            if c.metric == metric and c.drifted:
                out += [r for r in c.drifted_runs if r not in out]
        return out

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"workload": self.workload, "label": self.label, "cells": [c.to_dict() for c in self.cells],
                          "missing": self.missing, "order_time": self.order("time"),
                          "order_energy": self.order("energy"),
                          "drifted_runs": {m: self.drifted_runs(m) for m in ("time", "energy")},
                          "comparisons": [c.to_dict() for c in self.comparisons]})


@dataclass
class CrossGpuStudy:
    """Everything the study found (see the module docstring)."""

    runs: list[Run]
    cases: list[CaseStudy]
    confidence: float
    sources: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def simulated_runs(self) -> list[str]:
        return [r.label for r in self.runs if r.simulated]

    @property
    def simulated(self) -> bool:
        """Any run is simulated."""
        return bool(self.simulated_runs)

    @property
    def mixed(self) -> bool:
        """Simulated and measured runs side by side."""
        return self.simulated and len(self.simulated_runs) < len(self.runs)

    def differences(self) -> dict[str, dict[str, Any]]:
        """Each :data:`RUN_FIELDS` label whose value differs between runs: {label: {run: value}}."""
        out: dict[str, dict[str, Any]] = {}
        for name, _key in RUN_FIELDS:
            values = {r.label: r.fields.get(name) for r in self.runs}
            if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
                out[name] = values
        return out

    def same(self) -> dict[str, Any]:
        """Each :data:`RUN_FIELDS` label with one value on every run (and stated)."""
        diff = self.differences()
        return {name: self.runs[0].fields.get(name) for name, _ in RUN_FIELDS
                if name not in diff and self.runs and self.runs[0].fields.get(name) is not None}

    def headline(self) -> list[str]:
        """The lines a reader must see first: what is simulated, what differs between the runs."""
        lines = []
        if self.simulated:
            which = "all runs" if not self.mixed else f"{len(self.simulated_runs)} of {len(self.runs)} runs"
            lines.append(f"{SIM_BANNER} ({which}: {', '.join(self.simulated_runs)}).")
        if self.mixed:
            lines.append("WARNING: simulated and measured runs are side by side; every statement comparing them "
                         "says SIMULATED vs MEASURED, and such a comparison is no measurement of the difference.")
        lines += self._drift_lines()
        diff = self.differences()
        if diff:
            lines.append(f"The runs differ in: {', '.join(diff)} (table 'What differs between the runs'); every "
                         "statement below names what differs between its two runs.")
        same = self.same()
        if same:
            lines.append("Same on every run: " + ", ".join(f"{k} {value_text(v)}" for k, v in same.items()) + ".")
        return lines

    def _drift_lines(self) -> list[str]:
        """The WARNING naming each run whose default clock drifted within the run, and how many comparisons
        therefore state no verdict."""
        comparisons = [c for case in self.cases for c in case.comparisons]
        withheld = [c for c in comparisons if c.drifted]
        if not withheld:
            return []
        runs: list[str] = []
        for c in withheld:
            runs += [r for r in c.drifted_runs if r not in runs]
        return [f"WARNING: the default clock drifted within {' and within '.join(runs)} (beyond its noise, between "
                f"its measurements of the same case; sdbench.analysis.drift): {len(withheld)} of {len(comparisons)} "
                "comparison(s) state no verdict, only the estimate and interval (\"not stated\"), since one "
                "measurement from a drifting run is no measure of its card."]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return json_safe({
            "schema": "sdbench-crossgpu/1", "simulated": self.simulated, "mixed_simulated_and_measured": self.mixed,
            "simulated_runs": self.simulated_runs, "confidence": self.confidence, "sources": self.sources,
            "workload_identity": list(WORKLOAD_IDENTITY), "headline": self.headline(),
            "runs": [r.to_dict() for r in self.runs], "differences": self.differences(), "same": self.same(),
            "cases": [c.to_dict() for c in self.cases], "notes": self.notes,
        })


# --- building it ----------------------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _run_fields(rec: Mapping[str, Any]) -> dict[str, Any]:
    out = {name: rec.get(key) for name, key in RUN_FIELDS}
    if out["GPU"] is None:
        out["GPU"] = rec.get("env_torch_gpu_name")
    if out["power limit W"] is None:
        out["power limit W"] = rec.get("telemetry_power_limit_w")
    if out["simulated"] is None:
        out["simulated"] = record_is_simulated(rec) or None
    return out


def _fill_prompt_tokens(runs: list[Run]) -> list[str]:
    """Records written before sdbench recorded ``prompt_tokens`` take it from records of the same model and
    the same prompt text (the tokenizer is a function of the two); returns the note saying so, if any.
    A record whose prompt text has no counted twin keeps None, and so matches only records like it."""
    known: dict[tuple[Any, Any], Any] = {}
    for run in runs:
        for rec in run.records:
            if rec.get("prompt_tokens") is not None and rec.get("prompt") is not None:
                known.setdefault((rec.get("model"), rec.get("prompt")), rec["prompt_tokens"])
    filled = 0
    for run in runs:
        for i, rec in enumerate(run.records):
            key = (rec.get("model"), rec.get("prompt"))
            if rec.get("prompt_tokens") is None and key in known:
                run.records[i] = {**rec, "prompt_tokens": known[key]}
                filled += 1
    if not filled:
        return []
    return [f"{filled} record(s) written before sdbench counted prompt tokens took prompt_tokens from records of "
            "the same model and prompt text"]


def _identity(rec: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, json.dumps(rec.get(k), sort_keys=True, default=str)) for k in WORKLOAD_IDENTITY)


def _label_runs(runs: list[Run]) -> None:
    """Label each run by its GPU name; runs sharing a name get the fields that tell them apart."""
    by_name: dict[str, list[Run]] = {}
    for r in runs:
        by_name.setdefault(r.gpu_name, []).append(r)
    for name, group in by_name.items():
        if len(group) == 1:
            group[0].label = name
            continue
        differing = [n for n, _ in RUN_FIELDS if n != "GPU"
                     and len({json.dumps(r.fields.get(n), default=str) for r in group}) > 1]
        shown = [n for n in differing if n not in _CARD_IDENTITY][:2] or differing[:1]
        for i, r in enumerate(group, 1):
            extra = ", ".join(f"{n} {value_text(r.fields.get(n))}" for n in shown)
            r.label = f"{name} ({extra})" if extra else f"{name} #{i}"
        if len({r.label for r in group}) < len(group):
            for i, r in enumerate(group, 1):
                r.label = f"{r.label} #{i}"


def _workload_label(w: Mapping[str, Any]) -> str:
    parts = [str(w.get("model"))]
    if w.get("width") and w.get("height"):
        parts.append(f"{w['width']}x{w['height']}")
    for key, fmt in (("scheduler", "{}"), ("steps", "{} steps"), ("batch_size", "batch {}"), ("dtype", "{}"),
                     ("profile", "{}"), ("knobs", "knobs {}"), ("attention", "{} attention"),
                     ("prompt_tokens", "{} prompt tokens"), ("guidance_scale", "CFG {}"), ("offload", "offload {}")):
        value = w.get(key)
        if value not in (None, "") and not (key == "offload" and value == "none"):
            parts.append(fmt.format(value))
    return ", ".join(parts)


def _interval(rec: Mapping[str, Any], prefix: str) -> Estimate | None:
    """The record's estimate of a metric with the interval it states (:func:`metric_stats`)."""
    m = metric_stats(rec, prefix)
    if m is None:
        return None
    if m.low is None or m.high is None:
        return Estimate(m.estimate)
    return Estimate(m.estimate, min(m.low, m.estimate), max(m.high, m.estimate), m.method)


def _reciprocal(e: Estimate | None, scale: float) -> Estimate | None:
    """``scale / x`` of a positive estimate: the interval's ends swap (1/x is decreasing)."""
    if e is None or e.value <= 0:
        return None
    if not e.has_ci or (e.ci_low or 0) <= 0:
        return Estimate(scale / e.value)
    return Estimate(scale / e.value, scale / e.ci_high, scale / e.ci_low, "reciprocal")  # type: ignore[operator]


def _power(rec: Mapping[str, Any]) -> Estimate | None:
    """Power at load: the median of the per-round powers with their interval, else the record's ``power_w``."""
    m = metric_stats(rec, "power_w")
    if m is not None and m.samples is not None and len(m.samples) >= 2 and all(v > 0 for v in m.samples):
        m = m.with_interval()
        return Estimate(m.estimate, m.low, m.high, m.method)
    value = _num(rec.get("power_w"))
    return None if value is None else Estimate(value)


def _optimum(records: list[dict[str, Any]], metas: list[dict[str, Any]], analysis_options: Mapping[str, Any]
             ) -> dict[str, Any] | None:
    """The energy-optimal clock of a run's sweep of one case; None unless two or more clock settings exist."""
    settings = {json.dumps(record_settings(r), sort_keys=True) for r in records}
    if len(settings) < 2:
        return None
    meta = metas[0] if len(metas) == 1 else None
    analyses = analyze_records(records, meta=meta, **analysis_options)
    a = analyses[0]
    opt = a.optima.get("energy")
    if opt is None:
        return None
    out = {"x_field": opt.x_field, "value": opt.x_value, "label": opt.label, "clock_ci": opt.clock_ci,
           "supported": opt.supported, "support": opt.support, "support_reasons": list(opt.support_reasons),
           "energy_per_image_j": None if opt.value is None else opt.value.value,
           "saving_pct": None if opt.saving_pct is None else opt.saving_pct.value,
           "saving_pct_ci": None if opt.saving_pct is None else [opt.saving_pct.ci_low, opt.saving_pct.ci_high],
           "statement": opt.statement(), "clock_points": opt.n_clock_points}
    return out


def _in_time_order(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in the order they were measured: by ``started_utc``, then ``sweep_order_index``, then as read."""
    def key(item: tuple[int, dict[str, Any]]) -> tuple[str, float, int]:
        i, rec = item
        index = _num(rec.get("sweep_order_index"))
        return str(rec.get("started_utc") or ""), 0.0 if index is None else index, i

    return [rec for _, rec in sorted(enumerate(records), key=key)]


def _has_energy(rec: Mapping[str, Any]) -> bool:
    return rec.get("energy_status") != "unavailable" and metric_stats(rec, "energy_per_image_j") is not None


def _default_clock(defaults: Sequence[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """The within-run range of a run's default-clock measurements of one case (per metric key, two or more
    medians) and :func:`sdbench.analysis.drift.default_drift_check` on them in time order (None under two),
    with the per-round values as the sweep's own summary passes them (``sdbench.studies.dvfs.summary``)."""
    ordered = _in_time_order(defaults)
    ranges: dict[str, dict[str, Any]] = {}
    for key, _label, name, _unit, _words in METRICS:
        medians = []
        for rec in ordered:
            m = metric_stats(rec, name) if key == "time" or _has_energy(rec) else None
            if m is not None and m.estimate > 0:
                medians.append(float(m.estimate))
        if len(medians) >= 2:
            ranges[key] = {"n": len(medians), "min": min(medians), "max": max(medians),
                           "rel": max(medians) / min(medians) - 1.0, "medians": medians}
    series = [entry for entry in map(remeasurement_rounds, ordered) if entry is not None]
    if len(series) < 2:
        return ranges, None
    check = default_drift_check(series)
    drift = check.to_dict()
    drift["measurements"] = len(series)
    drift["metrics"] = {}
    for key, *_ in METRICS:
        rows = [c for c in check.comparisons if c["metric"] == key]
        drift["metrics"][key] = any(c["drift"] for c in rows) if rows else None
    return ranges, drift


def _cell(run: Run, records: list[dict[str, Any]], analysis_options: Mapping[str, Any]) -> Cell | None:
    ok = [r for r in records if r.get("point_status") in (None, "ok")]
    defaults = [r for r in ok if is_default_record(r)]
    notes = []
    optimum = None
    try:
        optimum = _optimum(ok, run.metas, analysis_options)
    except ConfigError as exc:
        notes.append(f"no energy-optimal clock: {exc}")
    if not defaults:
        if optimum is None:
            return None
        notes.append("no default-clock record: only the sweep's optimum is shown")
        rec: dict[str, Any] = {}
    else:
        # A plain measurement of the case wins over a sweep's default-clock points (those are re-measurements
        # for the sweep's drift check); among equals the last, as sdbench compare takes the newest.
        plain = [r for r in defaults if r.get("point_role") is None]
        rec = (plain or defaults)[-1]
        if len(defaults) > 1:
            which = "a plain measurement" if plain else "the last sweep re-measurement"
            notes.append(f"{len(defaults)} default-clock records; {which} is shown (a sweep's re-measurements are "
                         "pooled in its energy-optimal clock)")
    ranges, drift = _default_clock(defaults)
    if drift is not None:
        spread = ", ".join(f"{key} {range_pct_text(r['rel'])}" for key, r in ranges.items())
        state = "DRIFTED" if drift.get("significant") else "drift test"
        notes.append(f"default clock within the run, over its {drift['measurements']} measurements in time order: "
                     f"{state}: {drift.get('verdict')}" + (f"; within-run range (max/min - 1 of their medians): "
                                                           f"{spread}" if spread else ""))
    t = _interval(rec, "time_per_image_s")
    e = _interval(rec, "energy_per_image_j") if rec.get("energy_status") != "unavailable" else None
    en = _interval(rec, "net_energy_per_image_j") if e is not None else None
    edp = e.value * t.value if (e is not None and t is not None) else None
    floor = _num(rec.get("fraction_of_flop_floor"))
    reason = None if floor is not None else (rec.get("mfu_unavailable_reason") or rec.get("flop_floor_unavailable_reason"))
    if e is None and rec:
        notes.append(f"energy unavailable: {rec.get('energy_unavailable_reason') or rec.get('energy_status')}")
    return Cell(run=run.label, simulated=run.simulated, case_id=rec.get("case_id"), rounds=rec.get("rounds"),
                energy_status=rec.get("energy_status"), time_per_image_s=t, images_per_s=_reciprocal(t, 1.0),
                energy_per_image_j=e, net_energy_per_image_j=en, images_per_kj=_reciprocal(e, 1000.0),
                edp_js_per_image=edp, fraction_of_flop_floor=floor, fraction_of_flop_floor_unavailable_reason=reason,
                power_w=_power(rec) if e is not None else None, energy_optimal_clock=optimum,
                true_time_per_image_s=_num(rec.get("simulated_true_time_per_image_s")),
                true_energy_per_image_j=_num(rec.get("simulated_true_energy_per_image_j")), notes=notes, record=rec,
                default_clock_measurements=len(defaults), default_clock_range=ranges, drift=drift)


def _differs(new: Run, old: Run) -> list[str]:
    """``field old -> new`` for each :data:`RUN_FIELDS` value that differs (a card's UUID only when both runs
    name the same GPU model: two different models are two different cards)."""
    out = []
    other_model = old.fields.get("GPU") != new.fields.get("GPU")
    for name, _ in RUN_FIELDS:
        a, b = old.fields.get(name), new.fields.get(name)
        if name in _CARD_IDENTITY and other_model:
            continue
        if json.dumps(a, default=str) != json.dumps(b, default=str):
            out.append(f"{name} {value_text(a)} -> {value_text(b)}")
    return out


def _samples(cell: Cell, metric: str) -> list[float] | None:
    """The cell's per-round samples of ``metric`` (``time_per_image_s``, ...); None without usable ones."""
    m = metric_stats(cell.record, metric)
    return None if m is None or m.samples is None else list(m.samples)


def _compare(metric: tuple[str, str, str, str, tuple[str, str]], new: Run, old: Run, cn: Cell,
             co: Cell, confidence: float) -> Comparison | None:
    key, label, name, _unit, (better, worse) = metric
    if key == "energy" and (cn.energy_per_image_j is None or co.energy_per_image_j is None):
        return None
    s_new, s_old = _samples(cn, name), _samples(co, name)
    differs = _differs(new, old)
    mixed = new.simulated != old.simulated
    simulated = new.simulated and old.simulated
    # Every statement says whether its numbers are measured, simulated, or one of each.
    tag = "[SIMULATED vs MEASURED] " if mixed else "[SIMULATED] " if simulated else "[MEASURED] "
    what = f"differs: {'; '.join(differs)}" if differs else "no difference recorded between the runs"
    # A run whose default clock drifted within itself (old first): its one measurement is no measure of its card.
    drifted = [c for c in (co, cn) if c.drifted]
    flags = {"drifted": bool(drifted), "drifted_runs": [c.run for c in drifted],
             "within_run_range": {c.run: (c.default_clock_range.get(key) or {}).get("rel") for c in (co, cn)}}
    ranges = [f"{c.run} {c.range_text(key)}" for c in (co, cn) if c.range_text(key)]
    within = f"within-run range of {label}: {'; '.join(ranges)}; " if ranges else ""
    withheld = ("not stated: the default clock drifted within "
                + " and within ".join(f"{c.run} ({c.drift_text()})" for c in drifted)
                + (", beyond its noise, so one measurement from that run is no measure of its card" if len(drifted) == 1
                   else ", beyond their noise, so one measurement from either run is no measure of its card")
                ) if drifted else ""
    if s_new is None or s_old is None:
        note = f"; {withheld}" if drifted else ""
        return Comparison(key, new.label, old.label, None, None, None, "not compared", "none", confidence, differs,
                          simulated, mixed, f"{tag}{new.label} vs {old.label}: {label}: not compared (no per-round "
                          f"samples on {'both sides' if s_new is None and s_old is None else 'one side'}){note}; "
                          f"{within}{what}", **flags)
    ch = change_interval(s_new, s_old, confidence=confidence)
    if drifted:
        verdict = withheld
    elif not ch.noise_known:
        verdict = "noise unknown (fewer than 2 rounds on a side)"
    else:
        verdict = {"faster": better, "slower": worse}.get(ch.verdict, "indistinguishable (the interval contains 0)")
    interval = "" if ch.low_rel is None or ch.high_rel is None else (
        f" [{change_pct_text(ch.low_rel)}, {change_pct_text(ch.high_rel)}]")
    statement = (f"{tag}{new.label} vs {old.label}: {label} {change_pct_text(ch.estimate_rel)}{interval} "
                 f"({100 * confidence:g} % CI, {ch.method}): {verdict}; {within}{what}")
    return Comparison(key, new.label, old.label, ch.estimate_rel, ch.low_rel, ch.high_rel, verdict, ch.method,
                      confidence, differs, simulated, mixed, statement, **flags)


def build_study(inputs: Sequence[str | os.PathLike[str]] | Sequence[Source], *, confidence: float = 0.95,
                analysis_options: Mapping[str, Any] | None = None) -> CrossGpuStudy:
    """The study over ``inputs`` (paths, or already loaded :class:`Source` objects).

    ``confidence``: level of the change intervals. ``analysis_options`` go to
    :func:`sdbench.analysis.dvfs.analyze.analyze_records` for the energy-optimal clocks (``n_resamples``, ``seed``,
    ``statistic``, ``energy_basis``, ``slowdown_cap_pct``, ``confidence``). Raises :class:`ConfigError` when
    fewer than two runs (GPUs) are found, or no case was measured on two of them.
    """
    if isinstance(confidence, bool) or not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ConfigError("confidence", confidence, "a probability strictly between 0 and 1")
    confidence = float(confidence)
    analysis_options = dict(analysis_options or {})
    if inputs and all(isinstance(s, Source) for s in inputs):
        loaded: list[Source] = list(inputs)  # type: ignore[arg-type]
    else:
        loaded = load_inputs(inputs)  # type: ignore[arg-type]
    runs: dict[str, Run] = {}
    read_warnings = [w for src in loaded for w in src.warnings]
    for src in loaded:
        for rec in src.records:
            fields = _run_fields(rec)
            key = json.dumps(fields, sort_keys=True, default=str)
            run = runs.get(key)
            if run is None:
                run = runs[key] = Run("", fields, bool(record_is_simulated(rec)), [])
            run.records.append(rec)
            if str(src.path) not in run.sources:
                run.sources.append(str(src.path))
                if src.meta:
                    run.metas.append(src.meta)
    run_list = list(runs.values())
    if len(run_list) < 2:
        names = ", ".join(r.gpu_name for r in run_list) or "none"
        raise ConfigError("across-gpus", [str(s.path) for s in loaded], "results from two or more GPUs",
                          reason=f"found {len(run_list)} GPU run(s): {names}")
    _label_runs(run_list)
    read_warnings += _fill_prompt_tokens(run_list)
    workloads: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for run in run_list:
        for rec in run.records:
            workloads.setdefault(_identity(rec), {k: rec.get(k) for k in WORKLOAD_IDENTITY})
    cases = []
    notes = list(read_warnings)
    for ident, workload in workloads.items():
        label = _workload_label(workload)
        cells = []
        for run in run_list:
            recs = [r for r in run.records if _identity(r) == ident]
            c = _cell(run, recs, analysis_options) if recs else None
            if c is not None:
                cells.append(c)
        if len(cells) < 2:
            notes.append(f"{label}: measured on {len(cells)} GPU run(s) only ({', '.join(c.run for c in cells)}): "
                         "not in the study")
            continue
        comparisons = []
        for i, old in enumerate(run_list):
            for new in run_list[i + 1:]:
                co, cn = next((c for c in cells if c.run == old.label), None), next((c for c in cells if c.run == new.label), None)
                if co is None or cn is None:
                    continue
                for metric in METRICS:
                    cmp = _compare(metric, new, old, cn, co, confidence)
                    if cmp is not None:
                        comparisons.append(cmp)
        missing = [r.label for r in run_list if all(c.run != r.label for c in cells)]
        cases.append(CaseStudy(workload, label, cells, missing, comparisons))
    if not cases:
        raise ConfigError("across-gpus", [str(s.path) for s in loaded], "results of the same case from two or more GPUs",
                          reason="no case (model, scheduler, steps, resolution, batch, dtype, profile, knobs, attention, "
                                 "prompt length) was measured on two of the GPUs found")
    return CrossGpuStudy(run_list, cases, confidence, [str(s.path) for s in loaded], notes)


# --- text helpers ---------------------------------------------------------------------------------------------
def value_text(value: Any) -> str:
    """A run field's value as the study prints it ("not recorded" for None, "yes"/"no" for a bool)."""
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _pct_text(rel: float | None, sign: str) -> str:
    """``rel`` in percent to one decimal (``sign`` "+" to show it), ``-`` when unknown; a nonzero value never
    prints as 0.0, so a bound never lands on the other side of 0 than it is."""
    if rel is None:
        return "-"
    text = f"{100.0 * rel:{sign}.1f}"
    if rel != 0.0 and float(text) == 0.0:
        text = f"{100.0 * rel:{sign}.2g}"
    return f"{text} %"


def change_pct_text(rel: float | None) -> str:
    """A relative change as ``+12.3 %`` (``-`` when unknown)."""
    return _pct_text(rel, "+")


def range_pct_text(rel: float | None) -> str:
    """A within-run range (``max / min - 1``, never negative) as ``44.6 %``."""
    return _pct_text(rel, "")
