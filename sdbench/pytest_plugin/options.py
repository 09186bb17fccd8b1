"""The plugin's command-line options and markers, generated from the settings table (:mod:`sdbench.settings`).

Each ``--sd-*`` option is a row of the table: its check, default and help are the row's, and the CLI's
matching flags (``sdbench bench --models``, ``generate --max-time``, ...) come from the same rows. The values are
checked at configure time (:func:`check_options`, :func:`check_runner_config`), so a bad one is one usage-error
line (exit 4) before anything is measured or any folder made.
"""

from __future__ import annotations

from typing import Any

import pytest

from sdbench import settings
from sdbench.errors import ConfigError

#: The rows behind the plugin's options, by group; each option's check, default and help are its row's, and
#: the CLI's matching flags (`sdbench bench --models`, `generate --max-time`, ...) come from the same rows.
MATRIX_OPTIONS: tuple[str, ...] = ("matrix.models", "matrix.schedulers", "matrix.resolutions", "matrix.batch_sizes",
                                   "matrix.steps", "matrix.dtypes", "matrix.profiles", "matrix.attention",
                                   "matrix.knobs", "matrix.weights", "case.device", "matrix.shard")
MEASUREMENT_OPTIONS: tuple[str, ...] = settings.MEASUREMENT_KEYS
OUTPUT_OPTIONS: tuple[str, ...] = ("output.results_dir", "output.no_results_dir", "output.no_progress",
                                   "output.caller_prints_next", "output.results", "output.export", "output.compare",
                                   "output.compare_fail", "output.allow_cross_gpu", "output.no_storage_split",
                                   "output.num_images")


def _add_matrix_options(group: Any) -> None:
    settings.add_pytest_options(group.addoption, MATRIX_OPTIONS)


def _add_measurement_options(group: Any) -> None:
    settings.add_pytest_options(group.addoption, MEASUREMENT_OPTIONS)


def _add_output_options(group: Any) -> None:
    settings.add_pytest_options(group.addoption, OUTPUT_OPTIONS)


#: --sd-num-images as argparse would check it (a whole number >= 1).
_images_per_case = settings.get("output.num_images").parse


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sdbench", "sdbench: Stable Diffusion benchmark matrix and measurement")
    _add_matrix_options(group)
    _add_measurement_options(group)
    _add_output_options(group)


def check_options(config: pytest.Config) -> None:
    """Check every --sd-* value against its row now, at configure time, before pytest-benchmark or sdbench
    makes a folder: a bad value is one usage-error line (exit 4). Checked values replace the text pytest
    parsed, so `getoption` gives numbers where a row holds numbers."""
    keys = [k for k in (*MATRIX_OPTIONS, *MEASUREMENT_OPTIONS, *OUTPUT_OPTIONS) if k != "case.device"]
    try:
        values = settings.pytest_values(config.getoption, keys)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    for option, value in values.items():
        setattr(config.option, option.lstrip("-").replace("-", "_"), value)
    shard = values.get("--sd-shard")
    if shard:
        from sdbench.distribute.plan import parse_shard

        try:
            parse_shard(shard)
        except ConfigError as exc:
            raise pytest.UsageError(f"--sd-shard: {exc}") from None


def measurement_overrides(config: Any) -> dict[str, Any]:
    """The RunnerConfig fields the --sd-* measurement options set (unset ones are left out)."""
    over: dict[str, Any] = {}
    for key in MEASUREMENT_OPTIONS:
        row = settings.get(key)
        value = config.getoption(row.pytest)
        if value is not None:
            over[row.name] = value
    return over


def check_runner_config(config: pytest.Config, device: str) -> None:
    """The measurement options together, as the cases will be measured (min_rounds <= max_rounds, ...)."""
    from sdbench.runner import RunnerConfig

    try:
        RunnerConfig.for_device(device, **measurement_overrides(config))
    except ConfigError as exc:
        option = next((settings.get(k).pytest for k in MEASUREMENT_OPTIONS if settings.get(k).name == exc.field),
                      "--sd-*")
        raise pytest.UsageError(f"{option}: {exc}") from None


def resolved_device(value: str) -> str:
    """The compute device ``--sd-device`` names (``auto`` resolved); a ConfigError if there is none."""
    from sdbench.case import resolve_device

    return resolve_device(value)


# The suites' markers, registered by the plugin itself: an installed sdbench runs its suites without the
# checkout's pytest.ini, and under --strict-markers an unregistered marker is a collection error. The list is
# the settings table's (sdbench.settings.SUITES), written once.
SUITE_MARKERS = settings.SUITES
