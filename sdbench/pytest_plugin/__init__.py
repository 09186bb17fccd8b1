"""The sdbench pytest plugin: the benchmark matrix as parametrised cases, warm-pipeline and energy
fixtures, pytest-benchmark integration, GPU-aware histories and an energy-aware end-of-run compare.

Every case is measured by the same Runner as the CLI. pytest-benchmark's time columns are the
Runner's synchronised per-image times (one per measured round, replayed through a timer that
returns them), and `extra_info` holds the rest of the record.

Each case's matrix axes (model, scheduler, resolution, batch_size, steps, dtype, profile, attention,
knobs, weights, prompt, sm_clock_mhz) are pytest parameters of its test next to `sd_case`, so
`--benchmark-group-by=param:scheduler` works; the test ids stay the case ids.

A run keeps its results in a folder under the current directory (`sdbench-results/<time>-<suites>/`,
`--sd-results-dir`, off with `--sd-no-results-dir`), created at the first record: `records.jsonl` (every
record, flushed after each case), `benchmark.json` (pytest-benchmark's JSON) and `summary.md` (the closing
table, the environment, what to do next). A live line per case shows its progress and the suite's ETA.

The modules, one responsibility each (each imports only modules above it in this list):

- :mod:`~sdbench.pytest_plugin.options`: the ``--sd-*`` options, generated from the settings table, their
  checks and the suite markers;
- :mod:`~sdbench.pytest_plugin.results`: the results folder (``records.jsonl``, ``benchmark.json``);
- :mod:`~sdbench.pytest_plugin.progress`: the live progress line of each case and the hooks that drive it;
- :mod:`~sdbench.pytest_plugin.state`: the per-session state and its ``config.stash`` keys;
- :mod:`~sdbench.pytest_plugin.replay`: the Runner's times replayed into pytest-benchmark;
- :mod:`~sdbench.pytest_plugin.histories`: per-GPU histories, the GPU identity, pytest-benchmark's
  machine-info, JSON and compare hooks, the report header;
- :mod:`~sdbench.pytest_plugin.collection`: parametrisation, axis parameters, sharding, the case count;
- :mod:`~sdbench.pytest_plugin.fixtures`: ``sd_bench``, ``sd_device``, ``sd_pipeline``, ``sd_energy_meter``,
  ``sd_measure``, ``sd_keep``;
- :mod:`~sdbench.pytest_plugin.summary`: the closing table, ``summary.md``, next steps, ``--sd-compare``;
- :mod:`~sdbench.pytest_plugin.hooks`: session start and end (configure, unconfigure, session finish).

How pytest finds the hooks and fixtures: pytest registers only this module (the ``pytest11`` entry point
``sdbench = "sdbench.pytest_plugin"``, or ``-p sdbench.pytest_plugin``) and looks for hooks and fixtures in
its namespace only. So every hook function and fixture is imported here explicitly and listed in
``__all__``: one registered plugin, as before the split, with each ``@pytest.hookimpl`` order mark kept on
its function. The submodules are not registered themselves (a hook would then run twice), and they are
imported with this module, not lazily at configure time: ``pytest_addoption`` must be known before the
command line is parsed, and pytester's in-process runs restore ``sys.modules`` after each run, so a module
first imported inside one would be imported anew (new classes, new stash keys) by the next. The one object
registered per session is :class:`~sdbench.pytest_plugin.progress.ProgressHooks` (its hooks get no config).

No state lives in module globals: each session's is in its ``config.stash`` (see
:mod:`~sdbench.pytest_plugin.state`), so two sessions in one process never see each other's.
"""

from __future__ import annotations

from sdbench.pytest_plugin.collection import (
    COMPACT_COLUMNS,
    add_axis_params,
    axis_params,
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_generate_tests,
)
from sdbench.pytest_plugin.fixtures import (
    sd_bench,
    sd_device,
    sd_energy_meter,
    sd_keep,
    sd_measure,
    sd_pipeline,
)
from sdbench.pytest_plugin.histories import (
    DEFAULT_STORAGE,
    gpu_identity,
    legacy_storage_slug,
    pytest_benchmark_compare_machine_info,
    pytest_benchmark_update_json,
    pytest_benchmark_update_machine_info,
    pytest_report_header,
    storage_path,
    storage_slug,
)
from sdbench.pytest_plugin.hooks import pytest_configure, pytest_sessionfinish, pytest_unconfigure
from sdbench.pytest_plugin.options import (
    MATRIX_OPTIONS,
    MEASUREMENT_OPTIONS,
    OUTPUT_OPTIONS,
    SUITE_MARKERS,
    _images_per_case,
    measurement_overrides,
    pytest_addoption,
)
from sdbench.pytest_plugin.progress import CaseProgress, ProgressHooks, pytest_report_teststatus
from sdbench.pytest_plugin.replay import ReplayTimer, keep_and_report
from sdbench.pytest_plugin.results import JsonTarget, ResultsFolder
from sdbench.pytest_plugin.state import SdConfig, SessionState, sd_config
from sdbench.pytest_plugin.summary import commands_of, pytest_terminal_summary

__all__ = [
    # hooks (pytest finds them here)
    "pytest_addoption",
    "pytest_benchmark_compare_machine_info",
    "pytest_benchmark_update_json",
    "pytest_benchmark_update_machine_info",
    "pytest_collection_finish",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_report_header",
    "pytest_report_teststatus",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
    # fixtures (pytest finds them here)
    "sd_bench",
    "sd_device",
    "sd_energy_meter",
    "sd_keep",
    "sd_measure",
    "sd_pipeline",
    # the plugin's API for suites and tests
    "COMPACT_COLUMNS",
    "DEFAULT_STORAGE",
    "MATRIX_OPTIONS",
    "MEASUREMENT_OPTIONS",
    "OUTPUT_OPTIONS",
    "SUITE_MARKERS",
    "CaseProgress",
    "JsonTarget",
    "ProgressHooks",
    "ReplayTimer",
    "ResultsFolder",
    "SdConfig",
    "SessionState",
    "_images_per_case",
    "add_axis_params",
    "axis_params",
    "commands_of",
    "gpu_identity",
    "keep_and_report",
    "legacy_storage_slug",
    "measurement_overrides",
    "sd_config",
    "storage_path",
    "storage_slug",
]
