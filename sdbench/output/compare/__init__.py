"""`sdbench compare`: noise-aware comparison of saved benchmark results, with a non-zero exit on regression.

Reads pytest-benchmark saved JSON (``--benchmark-save`` / ``--benchmark-json``), sdbench results JSON
Lines and ``sdbench generate --export-metrics`` documents through :func:`sdbench.record.io.read_results` (the
format is detected; older rows are upgraded, newer ones refused; a torn line is skipped with a warning). Benchmarks are
paired by name (pytest-benchmark's ``fullname``, a record's ``case_id``) and compared only when their
``case_hash`` -- a hash of what is measured -- is equal; a changed benchmark is reported, never
compared with old results (asv's rule). How energy was measured is part of that identity: energy and power
of a counter-measured record are never compared with a timeline-measured one's (the row says why).

Per pair, three lower-is-better metrics are compared: time (s/image), energy (J/image) and power (W).
Each row's change ``median(candidate) / median(baseline) - 1``, its interval and its verdict come from
one computation (:func:`sdbench.stats.change_interval` on the per-round samples, or
:func:`sdbench.stats.change_interval_from_summaries` when a side saved only summary statistics): the
interval lies above -100 % and contains the change, "slower"/"higher" iff it lies above 0,
"faster"/"lower" iff below, otherwise "unchanged (within noise)" (or "noise unknown" without an
interval). A ``fail_on`` threshold of N percent makes a row a regression, and the exit code 1, iff its
verdict is slower/higher AND its change is at least N percent. Each row records the method that made
its interval (``ci_method``) in the JSON and CSV outputs.

Results from different GPUs, or from one GPU under different clock / power-limit settings, are refused
unless explicitly allowed: timings between two cards of the same model differ by tens of percent.

Library entry points (the pytest plugin's ``--sd-compare-fail`` calls these)::

    result = compare_files(["base.json", "new.json"], fail_on="time:5%,energy:5%")
    print(result.render())
    raise SystemExit(result.exit_code)

This package exports those entry points (``__all__``); the rest lives in its modules, each importing
only those before it: ``metrics`` (the compared metrics, ``--fail-on`` and ``--metric``), ``entries`` (a
results file's benchmarks, keyed and matched between files), ``result`` (the rows, the result and its
text, markdown, JSON and CSV renderings), ``change`` (the statistics of one metric of one matched pair)
and ``gate`` (whole files compared: :func:`compare_files`, :func:`compare_results`).
"""

from __future__ import annotations

from sdbench.output.compare.gate import compare_files, compare_results
from sdbench.output.compare.metrics import format_fail_on, parse_fail_on
from sdbench.output.compare.result import CompareResult, write_csv, write_json, write_markdown

__all__ = [
    "CompareResult",
    "compare_files",
    "compare_results",
    "format_fail_on",
    "parse_fail_on",
    "write_csv",
    "write_json",
    "write_markdown",
]
