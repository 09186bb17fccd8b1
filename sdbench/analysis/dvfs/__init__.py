"""DVFS sweep analysis: per-clock time, energy, power, EDP and ED2P with confidence intervals, the
default-clock baseline, and energy-optimal clocks with bootstrap confidence.

Input is a list of flat records (Runner records, or sweep records that add ``*_setting``,
``is_default_clock``, ``clock_verified``, ``point_role`` ...). Records are grouped by their clock
setting (SM clock, memory clock, power limit; ``None`` = as found, the default). Every number is per
image, from the per-round samples each record carries (``time_per_image_s_samples``,
``energy_per_image_j_samples``, ``net_energy_per_image_j_samples``, ``power_w_samples``); a record
without samples contributes its summary value as a single round (no interval from it alone).

Bootstrap: each point's rounds are resampled with replacement (rounds stay paired, so time and
energy of one window move together), independently per point and for the default baseline. Point
intervals are percentile intervals of the resampled statistic; savings and changes against the
default clock are ratio intervals (:mod:`sdbench.analysis.estimates`, which states the conventions).
Each objective's optimum is picked by :func:`sdbench.analysis.optimum.pick_optimum`, and
:func:`sdbench.analysis.optimum.judge_support` says whether the data can support a claim about it
(default-clock drift, from :func:`sdbench.analysis.drift.default_drift_check`, an incomplete sweep, noise).

The pieces: :mod:`~sdbench.analysis.estimates` (estimates and intervals), :mod:`~sdbench.analysis.optimum`
(the optimum picker and the support judgement), :mod:`~sdbench.analysis.drift` (the default-clock drift
(synthetic sweep records); this package groups the records, pools each point and assembles a
:class:`~sdbench.analysis.dvfs.result.SweepAnalysis`. Its modules, each importing only those before it:

- :mod:`~sdbench.analysis.dvfs.records`: what records say before any statistics (settings, default clock,
  simulation, workload, order), coverage and provenance.
- :mod:`~sdbench.analysis.dvfs.result`: the result types (``PointStats``, ``DefaultBaseline``, ``SweepAnalysis``)
  and how they are written (headline, markdown, the points and optima tables, provenance lines).
- :mod:`~sdbench.analysis.dvfs.points`: per-point round tables, bootstrap replicates and estimates, the
  default-clock baseline (package-internal).
- :mod:`~sdbench.analysis.dvfs.optima`: each objective's optimum through ``pick_optimum`` (package-internal).
- :mod:`~sdbench.analysis.dvfs.analyze`: :func:`~sdbench.analysis.dvfs.analyze.analyze_records` and
  :func:`~sdbench.analysis.dvfs.analyze.analyze_sweep`, the entry points.

Import from the submodule that holds a name; this package re-exports nothing.
"""
