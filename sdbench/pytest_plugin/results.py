"""The run's results folder (``sdbench-results/<time>-<suites>/``, ``--sd-results-dir``, off with
``--sd-no-results-dir``): made at the first record, it holds ``records.jsonl`` (every record, flushed after
each case), ``benchmark.json`` (pytest-benchmark's JSON) and ``summary.md`` (written by
:mod:`sdbench.pytest_plugin.summary`).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from sdbench.record.folder import BENCHMARK_JSON_NAME, RECORDS_NAME, default_results_dir


class ResultsFolder:
    """The run's results folder, made at its first record (a run that measures nothing leaves no folder)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.disabled = bool(config.getoption("--sd-no-results-dir"))
        explicit = config.getoption("--sd-results-dir")
        self.explicit = Path(explicit) if explicit else None
        self.started = _dt.datetime.now()
        self.started_s = time.monotonic()
        self.path: Path | None = None
        self.writer: Any = None
        self.user_json = config.getoption("benchmark_json", default=None)
        self.json_path: Path | None = None

    def ensure(self, suites: list[str]) -> Path | None:
        if self.disabled:
            return None
        if self.path is None:
            from sdbench.record.io import ResultsWriter

            path = Path.cwd() / (self.explicit or default_results_dir(suites, self.started))
            path.mkdir(parents=True, exist_ok=True)
            self.path = path
            self.writer = ResultsWriter(path / RECORDS_NAME)
            bs = getattr(self.config, "_benchmarksession", None)
            if bs is not None and not bs.disabled:
                if bs.json is None:
                    self.json_path = path / BENCHMARK_JSON_NAME
                    bs.json = JsonTarget(self.json_path)
                if isinstance(bs.histogram, str) and re.fullmatch(r"benchmark_\d{8}_\d{6}", bs.histogram):
                    bs.histogram = str(path / "histogram")  # a bare --benchmark-histogram: into the folder too
        return self.path

    def append(self, record: dict[str, Any], suites: list[str]) -> None:
        if self.ensure(suites) is not None:
            self.writer.append(record)

    def finish(self) -> None:
        """Copy a --benchmark-json the user named into the folder (pytest-benchmark has written it by now)."""
        if self.path is None or self.json_path is not None or not self.user_json:
            return
        src = Path(getattr(self.user_json, "name", self.user_json))  # a path, or (older pytest-benchmark) a file
        if src.is_file():
            shutil.copyfile(src, self.path / BENCHMARK_JSON_NAME)
            self.json_path = self.path / BENCHMARK_JSON_NAME


class JsonTarget(os.PathLike):  # type: ignore[type-arg]
    """Where pytest-benchmark writes its JSON, in the form each version expects: 5.3 opens a path
    (``open(json, "wb")``), earlier versions write to the open file ``--benchmark-json`` gave
    (``with json as fh``). This is both."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._fh: Any = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __enter__(self) -> Any:
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__
        return self._fh

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __str__(self) -> str:
        return str(self.path)

