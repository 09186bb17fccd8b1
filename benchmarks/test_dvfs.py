"""DVFS: the case at SM clocks taken from the device's own grid, each lock verified from telemetry.

Which clocks: ``SDBENCH_DVFS_CLOCKS`` (a grid spec, as ``sdbench sweep --clocks``; default
``count:4``: four clocks spread over the supported grid) plus the default clock (nothing locked).

Clock changes happen only where they are allowed: on the simulated GPU (``--sd-device simulated``)
by default; on a real GPU only with ``SDBENCH_ALLOW_CLOCK_CHANGES=1`` (and the rights to lock clocks);
``SDBENCH_ALLOW_CLOCK_CHANGES=0`` forbids them everywhere (rehearses the read-only path on CPU).
Otherwise the suite measures the default clock only and records ``clock_verified: read-only``
with the grid it would have swept (``dvfs_planned_sm_clocks_mhz``), so shared machines and CI
runners never have their clocks touched. Settings are restored after the module (and on
SIGINT/SIGTERM). Full sweeps with randomised order and cooldowns are ``sdbench sweep``'s job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from sdbench.case import resolve_device
from sdbench.gpu.dcgm import ActivityMonitor
from sdbench.measure.clocks import VERIFY_STATUSES, ClockController
from sdbench.studies.dvfs.grid import resolve_clock_spec
from sdbench.studies.dvfs.measuring import ClockLockHook

ALLOW_ENV = "SDBENCH_ALLOW_CLOCK_CHANGES"
CLOCKS_ENV = "SDBENCH_DVFS_CLOCKS"
DEFAULT_SPEC = "count:4"

pytestmark = pytest.mark.dvfs


def clock_changes_allowed(device: str) -> bool:
    """``SDBENCH_ALLOW_CLOCK_CHANGES=1``: yes; ``=0``: no (also on the simulated GPU, to rehearse the
    read-only path on CPU); unset: only on the simulated GPU."""
    choice = os.environ.get(ALLOW_ENV)
    if choice in ("0", "1"):
        return choice == "1"
    return device == "simulated"


def planned_clocks_mhz(device: str) -> list[int]:
    """The SM clocks this suite sweeps on ``device``: the spec resolved on the device's grid (read-only)."""
    from sdbench.session import open_gpu_for

    if device == "cpu":
        return []
    gpu = open_gpu_for(device)
    if gpu is None:
        return []
    try:
        grid = ClockController(gpu, read_only=True, handle_signals=False).supported_sm_clocks_mhz()
        return resolve_clock_spec(os.environ.get(CLOCKS_ENV, DEFAULT_SPEC), grid, CLOCKS_ENV)
    finally:
        gpu.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Feed the device grid to the sd_matrix marker before the sdbench plugin parametrises sd_case.

    A module's own hook runs before the plugin's, so the marker added here is the closest one the
    plugin reads. Command-line axes (--sd-models, ...) still override it.
    """
    if "sd_case" not in metafunc.fixturenames:
        return
    device = resolve_device(metafunc.config.getoption("--sd-device"))
    clocks: list[int | None] = [None]
    if clock_changes_allowed(device):
        clocks += planned_clocks_mhz(device)
    axes: dict[str, Any] = {"batch_sizes": [1], "sm_clocks_mhz": clocks}
    if not device.startswith("cuda"):
        axes["models"] = ["tiny-sd"]
    metafunc.definition.add_marker(pytest.mark.sd_matrix(**axes))


@pytest.fixture(scope="module")
def sd_bench(sd_bench: Any, sd_device: str) -> Iterator[Any]:
    """The session Bench, measuring each case at its clock (a ClockLockHook for the module): locked, verified,
    restored after the module."""
    gpu = sd_bench.gpu
    if gpu is None:
        yield sd_bench
        return
    controller = ClockController(gpu, read_only=not clock_changes_allowed(sd_device))
    with controller, sd_bench.hooked(ClockLockHook(controller, activity=ActivityMonitor(gpu))):
        yield sd_bench


@pytest.fixture(scope="module")
def dvfs_plan(sd_device: str) -> dict[str, Any]:
    return {"dvfs_clock_changes_allowed": clock_changes_allowed(sd_device),
            "dvfs_planned_sm_clocks_mhz": planned_clocks_mhz(sd_device)}


def test_dvfs_point(sd_case: Any, sd_measure: Any, sd_bench: Any, dvfs_plan: dict[str, Any]) -> None:
    record = sd_measure(sd_case, **dvfs_plan)
    assert record["time_per_image_s_median"] > 0
    if sd_bench.gpu is None:
        assert record["energy_status"] == "unavailable"  # no GPU: no clock to lock, no invented numbers
        return
    assert record["clock_verified"] in VERIFY_STATUSES
    assert record["sm_clock_mhz_setting"] == sd_case.sm_clock_mhz
    if not dvfs_plan["dvfs_clock_changes_allowed"]:
        assert record["clock_verified"] == "read-only" and record["is_default_clock"]
    elif record["clock_verified"] != "ok":
        # A point that did not run at its clock is kept, flagged: the benchmark still reports it.
        assert record["clock_attempts"] == 2
