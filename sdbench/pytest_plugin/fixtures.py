"""The plugin's fixtures: ``sd_bench`` (the session's Bench), ``sd_device``, ``sd_pipeline``,
``sd_energy_meter``, ``sd_measure`` (measure a case through the Runner and report it to pytest-benchmark) and
``sd_keep`` (keep a record measured some other way)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from sdbench.pytest_plugin.progress import case_progress
from sdbench.pytest_plugin.replay import keep_and_report
from sdbench.pytest_plugin.state import sd_config, session_state

if TYPE_CHECKING:
    from sdbench.session import Bench


@pytest.fixture(scope="session")
def sd_bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The session's Bench: a warm pipeline cache (a scheduler change is a swap), the Runner and the GPU. A suite
    that measures its cases another way installs hooks on it for a while (``sd_bench.hooked(...)``, as the DVFS
    suite's clock lock does)."""
    yield session_state(request.config).bench


@pytest.fixture(scope="session")
def sd_device(request: pytest.FixtureRequest) -> str:
    """The compute device of this session (cpu, cuda:N or simulated)."""
    return sd_config(request.config).device


@pytest.fixture
def sd_pipeline(sd_bench: Any, sd_case: Any) -> Any:
    """The warm diffusers pipeline for the current case, with the case's scheduler in place."""
    from sdbench.pipelines.build import set_scheduler

    built, _applied = sd_bench.pipeline(sd_case)
    set_scheduler(built.pipe, sd_case.scheduler)
    return built.pipe


@pytest.fixture
def sd_energy_meter(sd_bench: Any) -> Any:
    """The session's energy meter (NVML counter, power timeline, or a NullMeter that says why not)."""
    from sdbench.measure.energy import select_energy_meter

    return select_energy_meter(sd_bench.gpu, sd_bench.runner.config.energy)


@pytest.fixture
def sd_measure(request: pytest.FixtureRequest, benchmark: Any, sd_bench: Any) -> Callable[..., dict[str, Any]]:
    """Measure a Case through the Runner and report it to pytest-benchmark; returns the record."""
    state = session_state(request.config)

    def measure(case: Any, **extra: Any) -> dict[str, Any]:
        progress = case_progress(request.config)
        say = progress.update if progress is not None and progress.nodeid == request.node.nodeid else None
        if say is not None:
            say("building the pipeline (or taking the warm one)")
        record = sd_bench.measure(case, progress=say)
        record.update(extra)
        record["test"] = request.node.nodeid
        keep_and_report(benchmark, state, record)
        return record

    return measure


@pytest.fixture
def sd_keep(request: pytest.FixtureRequest, benchmark: Any) -> Callable[[dict[str, Any]], None]:
    """Keep a record measured some other way (an out-of-memory outcome, say): results file, export, extra_info."""
    state = session_state(request.config)

    def keep(record: dict[str, Any]) -> None:
        record.setdefault("test", request.node.nodeid)
        keep_and_report(benchmark, state, record)

    return keep
