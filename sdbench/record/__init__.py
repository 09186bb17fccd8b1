"""Records: one flat row per case (and clock point), typed and versioned.

- :mod:`sdbench.record.schema`: the frozen dataclasses of a record's parts (case, timing, energy, telemetry,
  memory, work, environment, clock point), all built on one :class:`~sdbench.record.schema.MetricStats`, and
  the schema version every row carries;
- :mod:`sdbench.record.build`: the flat row of a Runner :class:`~sdbench.runner.Measurement`;
- :mod:`sdbench.record.io`: one reader for every results format (with step-by-step upgrades of older rows and
  torn-line detection and repair), one atomic writer, the JSON Lines appender and output-path checks.

The flat row stays the serialisation: results JSON Lines, ``--export-metrics`` documents, pytest-benchmark's
``extra_info``, CSV, reports and comparisons all hold the same keys.
"""

from __future__ import annotations

from sdbench.record.schema import SCHEMA_VERSION, MetricStats, Record, metric_stats

__all__ = ["SCHEMA_VERSION", "MetricStats", "Record", "metric_stats"]
