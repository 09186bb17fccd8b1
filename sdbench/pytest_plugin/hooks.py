"""The session's start and end: configure (markers, option checks, the device, the storage root, the progress
hooks), unconfigure (empty storage folders removed) and session finish (export, compare, the results summary).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sdbench.errors import ConfigError
from sdbench.pytest_plugin.histories import (
    DEFAULT_STORAGE,
    missing_dirs,
    session_gpu_identity,
    storage_path,
    storage_slug,
)
from sdbench.pytest_plugin.options import SUITE_MARKERS, check_options, check_runner_config, resolved_device
from sdbench.pytest_plugin.progress import ProgressHooks
from sdbench.pytest_plugin.state import MATRIX_ERRORS, NEW_DIRS, SD_CONFIG, SdConfig, existing_session_state
from sdbench.pytest_plugin.summary import compare_at_end, finish_results
from sdbench.record.folder import RECORDS_NAME


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sd_matrix(**axes): this benchmark's default case matrix "
                            "(models, schedulers, resolutions, batch_sizes, steps, dtypes, profiles, weights, prompts)")
    for name, description in SUITE_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: sdbench benchmark suite - {description}")
    check_options(config)
    try:
        device = resolved_device(config.getoption("--sd-device"))
    except ConfigError as exc:
        raise pytest.UsageError(f"--sd-device: {exc}") from None
    check_runner_config(config, device)
    config.stash[SD_CONFIG] = SdConfig(device=device, options={})
    config.stash[MATRIX_ERRORS] = []
    config.pluginmanager.register(ProgressHooks(config), f"sdbench-progress-{id(config)}")
    if config.getoption("--sd-results-dir") and config.getoption("--sd-no-results-dir"):
        raise pytest.UsageError("--sd-results-dir and --sd-no-results-dir: choose one")
    explicit = config.getoption("--sd-results-dir")
    if explicit and (Path(explicit) / RECORDS_NAME).exists():
        raise pytest.UsageError(f"--sd-results-dir {explicit}: it already holds the records of another run "
                                f"({RECORDS_NAME}); choose a new folder")
    from sdbench.record.io import check_output_paths

    try:  # before anything is measured: a bad output file is one line now, not lost records at the end
        check_output_paths(**{"--sd-results": config.getoption("--sd-results"),
                              "--sd-export": config.getoption("--sd-export")})
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    # Histories are stored per GPU and clock setting, so --benchmark-compare compares like with like. The
    # storage root itself is per GPU and clock (pytest-benchmark keeps <root>/<machine_id>/NNNN_name.json),
    # so `pytest-benchmark --storage <root> list` and `compare` find them.
    storage = config.getoption("benchmark_storage", default=None)
    if storage == DEFAULT_STORAGE and not config.getoption("--sd-no-storage-split"):
        slug = storage_slug(device, session_gpu_identity(config, device))
        storage = config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{slug}"
    # pytest-benchmark creates its storage folder when it starts, even for a run that saves nothing (or a
    # usage error): the folders it makes here are removed again at the end if they are still empty.
    config.stash[NEW_DIRS] = missing_dirs(storage_path(storage))


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in config.stash.get(NEW_DIRS, []):
        try:
            folder.rmdir()  # only an empty folder: anything saved in it stays
        except FileNotFoundError:
            continue
        except OSError:
            break


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = existing_session_state(config)
    if state is None:
        return
    try:
        export = config.getoption("--sd-export")
        if export and state.records:
            from sdbench.record.io import export_metrics

            meta = {"command": "pytest", "environment": state.bench.environment}
            export_metrics(state.records, export, meta)
        baseline = config.getoption("--sd-compare")
        if baseline:
            code = compare_at_end(config, state, baseline)
            if code and session.exitstatus == 0:
                session.exitstatus = code
        if (state.case_ids or state.records) and not config.option.collectonly:
            state.summary_lines = finish_results(config, state, int(exitstatus))
    finally:
        state.close()
