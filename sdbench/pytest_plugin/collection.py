"""Collection: the benchmark matrix as parametrised cases, the matrix axes as pytest parameters, the
``--sd-shard`` selection and the replay timer on every measuring test.

Each case's matrix axes (model, scheduler, resolution, batch_size, steps, dtype, profile, attention, knobs,
weights, prompt, sm_clock_mhz) are pytest parameters of its test next to ``sd_case``, so
``--benchmark-group-by=param:scheduler`` works; the test ids stay the case ids.
"""

from __future__ import annotations

from typing import Any

import pytest

from sdbench.errors import ConfigError, SdbenchError
from sdbench.matrix import build_cases, suite_matrix, unique_cases
from sdbench.pytest_plugin.options import SUITE_MARKERS
from sdbench.pytest_plugin.progress import CASE_PROGRESS, CaseProgress
from sdbench.pytest_plugin.replay import replay_timer
from sdbench.pytest_plugin.state import MATRIX_ERRORS, sd_config, session_state

# pytest-benchmark's columns when a run with sdbench cases names none: sdbench's own table (printed after it)
# has images/s, the intervals, energy and the stop reason.
COMPACT_COLUMNS = ["median", "iqr", "rounds"]


def _matrix(config: pytest.Config, marker_kwargs: dict[str, Any]) -> dict[str, list[Any]]:
    """The case matrix of one benchmark: :func:`sdbench.matrix.suite_matrix` with this session's options."""
    sd = sd_config(config)
    return suite_matrix(sd.on_gpu, marker_kwargs, config.getoption)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sd_case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("sd_matrix")
    kwargs = dict(marker.kwargs) if marker else {}
    sd = sd_config(metafunc.config)
    try:
        cases = unique_cases(build_cases(_matrix(metafunc.config, kwargs), sd.device))
    except SdbenchError as exc:
        # Raised here, a UsageError would be reported as a collection error (exit 2): keep it and
        # raise it once collection is over, where pytest turns it into a usage error (exit 4).
        metafunc.config.stash[MATRIX_ERRORS].append(f"{metafunc.definition.nodeid}: {exc}")
        metafunc.parametrize("sd_case", [])
        return
    metafunc.parametrize("sd_case", cases, ids=[c.case_id for c in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    errors = config.stash.get(MATRIX_ERRORS, [])
    if errors:
        raise pytest.UsageError("sdbench matrix: " + "; ".join(errors))
    shard = config.getoption("--sd-shard")
    if shard:
        from sdbench.distribute.plan import parse_shard

        try:
            index, count = parse_shard(shard)
        except ConfigError as exc:
            raise pytest.UsageError(f"--sd-shard: {exc}") from None
        cases = [it for it in items if "sd_case" in getattr(it, "fixturenames", ())]
        drop = {id(it) for k, it in enumerate(cases) if k % count != index}
        if drop:
            config.hook.pytest_deselected(items=[it for it in items if id(it) in drop])
            items[:] = [it for it in items if id(it) not in drop]
    found = False
    timer = replay_timer(config)
    for item in items:
        add_axis_params(item)
        if {"sd_measure", "sd_keep"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.benchmark(timer=timer, group=_group_of(item)))
            found = True
    bs = getattr(config, "_benchmarksession", None)
    if found and bs is not None and not config.getoption("benchmark_columns", default=None):
        # pytest-benchmark's default table is ~240 columns of time only; sdbench's own follows it.
        bs.columns = list(COMPACT_COLUMNS)


def axis_params(case: Any) -> dict[str, Any]:
    """The matrix axes of `case` as pytest parameters (what --benchmark-group-by=param:NAME reads)."""
    return {"model": case.model, "scheduler": case.scheduler, "resolution": f"{case.width}x{case.height}",
            "batch_size": case.batch_size, "steps": case.steps, "dtype": case.dtype, "profile": case.profile,
            "attention": case.attention, "knobs": case.knobs or "none", "weights": case.weights,
            "prompt": case.prompt, "sm_clock_mhz": case.sm_clock_mhz or "default"}


def add_axis_params(item: pytest.Item) -> None:
    """Give a test parametrised by `sd_case` one parameter per matrix axis (pytest-benchmark's `params`
    come from the test's callspec). The test id stays the case id; a parameter or fixture of the test's own
    with an axis's name is left alone."""
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("sd_case") if callspec is not None else None
    if case is None or not hasattr(case, "case_hash"):
        return
    names = set(getattr(item, "fixturenames", ()))
    for name, value in axis_params(case).items():
        if name not in callspec.params and name not in names:
            callspec.params[name] = value


def pytest_collection_finish(session: pytest.Session) -> None:
    """Count the sdbench cases of this run (after every selection): the progress lines' `case k/N`."""
    cases = [it for it in session.items if {"sd_case", "sd_measure", "sd_keep"} & set(getattr(it, "fixturenames", ()))]
    state = session_state(session.config)
    state.case_ids = {it.nodeid: _param_id(it) for it in cases}
    state.suites = sorted({_group_of(it) for it in cases}, key=_suite_order)
    session.config.stash[CASE_PROGRESS] = CaseProgress.for_config(session.config, state, len(cases))


def _param_id(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    return callspec.id if callspec is not None else item.name


def _suite_order(name: str) -> int:
    names = list(SUITE_MARKERS)
    return names.index(name) if name in names else len(names)


def _group_of(item: pytest.Item) -> str:
    for name in SUITE_MARKERS:
        if item.get_closest_marker(name):
            return name
    return "sdbench"
