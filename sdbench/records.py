"""The old import path of the results layer, kept for the modules outside it that still use it
(the suite runner, the quality command, the matmul-ceiling cache, ``sdbench generate``, the pytest plugin).

Everything here is :mod:`sdbench.record.io`; new code imports from there (and the typed schema from
:mod:`sdbench.record.schema`).
"""

from __future__ import annotations

from sdbench.record.io import (
    ResultsWriter,
    atomic_write_text,
    ensure_writable,
    export_metrics,
    iter_scalar_columns,
    json_safe,
    read_records,
    to_json,
    write_csv,
)
from sdbench.record.schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "ResultsWriter",
    "atomic_write_text",
    "ensure_writable",
    "export_metrics",
    "iter_scalar_columns",
    "json_safe",
    "read_records",
    "to_json",
    "write_csv",
]
