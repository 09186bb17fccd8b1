"""The end of a run: the closing table (after pytest-benchmark's), ``summary.md`` in the results folder,
what to do next, and the energy-aware ``--sd-compare`` against a baseline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sdbench.pytest_plugin.histories import storage_path
from sdbench.pytest_plugin.state import SessionState, existing_session_state
from sdbench.record.folder import BENCHMARK_JSON_NAME, RECORDS_NAME, SUMMARY_NAME, shown_path


def _status(state: SessionState, exitstatus: int) -> str:
    total, done = len(state.case_ids), len(state.finished & set(state.case_ids))
    if exitstatus == int(pytest.ExitCode.INTERRUPTED):
        return f"interrupted: {done} of {total} cases"
    if done < total:
        return f"stopped early: {done} of {total} cases"
    return f"complete: {done} of {total} cases"


def _history(config: pytest.Config) -> tuple[str | None, bool]:
    """The history storage as `pytest-benchmark --storage` takes it, and whether it holds saved runs."""
    folder = storage_path(config.getoption("benchmark_storage", default=None))
    if folder is None:
        return None, False
    text = str(folder)
    text = text[2:] if text.startswith("./") else text
    return text, any((Path.cwd() / folder).glob("*/[0-9][0-9][0-9][0-9]_*.json"))


def _next_steps(config: pytest.Config, state: SessionState, folder: Path | None) -> list[str]:
    """What to do with the results: shell commands, each after a '# ...' line saying what it is for."""
    steps = []
    if folder is not None:
        here = shown_path(folder)
        data = f"{here}/{BENCHMARK_JSON_NAME}" if (folder / BENCHMARK_JSON_NAME).is_file() else f"{here}/{RECORDS_NAME}"
        steps += ["# compare a later run with this one (time, energy and power; noise-aware):",
                  f"sdbench compare {data} LATER/{Path(data).name}"]
        clocks = {r.get("sm_clock_mhz_setting") for r in state.records if r.get("dvfs_planned_sm_clocks_mhz") is not None}
        if len(clocks) >= 2:
            steps += ["# the clock points: energy, EDP and ED2P against clock, and their optima:", f"sdbench report {here}"]
    storage, saved = _history(config)
    if storage is not None and saved:
        steps += ["# this GPU and clock setting's pytest-benchmark history, with pytest-benchmark's own CLI:",
                  f"pytest-benchmark --storage {storage} list",
                  f"pytest-benchmark --storage {storage} compare --group-by=param:scheduler"]
    return steps


def commands_of(steps: list[str]) -> list[str]:
    """The commands of a 'What next' block, without their comment lines."""
    return [step for step in steps if not step.startswith("#")]


def finish_results(config: pytest.Config, state: SessionState, exitstatus: int) -> list[str]:
    """Write summary.md into the results folder; return the lines the terminal summary prints."""
    from sdbench.output.tables import duration, environments_of, legend, results_table, summary_markdown

    folder = state.folder
    folder.finish()
    target = state.target_rel_ci()
    table = results_table(state.records, target)
    legend_lines = legend(target, state.records) if table else []
    status = _status(state, exitstatus)
    took = duration(time.monotonic() - folder.started_s)
    steps = _next_steps(config, state, folder.path)
    caller_prints = bool(config.getoption("--sd-caller-prints-next"))
    lines = [*table, *legend_lines] + ([] if caller_prints else [status + f" in {took}"])
    if folder.path is not None:
        files = [(RECORDS_NAME, "every record, one JSON object a line (appended after each case)"),
                 (SUMMARY_NAME, "this summary")]
        if (folder.path / BENCHMARK_JSON_NAME).is_file():
            files.insert(1, (BENCHMARK_JSON_NAME, "pytest-benchmark's JSON (its machine_info names the GPU and clocks)"))
        envs = environments_of(state.records)
        if not envs and state._bench is not None:
            envs = [state._bench.environment]
        storage, saved = _history(config)
        status_lines = [f"{status} in {took}", f"started {folder.started.isoformat(timespec='seconds')}",
                        f"{len(state.records)} record(s)"]
        if storage is not None:
            status_lines.append(f"history: {storage}" + ("" if saved else " (nothing saved: --benchmark-autosave "
                                                                         "or --benchmark-save NAME keeps one)"))
        text = summary_markdown(title=f"sdbench results: {', '.join(state.suites) or 'sdbench'}", status=status_lines,
                                table=table, legend_lines=legend_lines, environments=envs, files=files,
                                next_steps=steps, command=" ".join(["pytest", *config.invocation_params.args]))
        (folder.path / SUMMARY_NAME).write_text(text, encoding="utf-8")
        names = ", ".join(name for name, _ in files)
        lines.append(f"results: {shown_path(folder.path)}/ ({names})")
    elif not folder.disabled:
        lines.append("results: no case was measured, no results folder written")
    if caller_prints:
        return [line for line in lines if not line.startswith("results: ")]
    return lines + [f"next: {step}" for step in commands_of(steps)]


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """sdbench's table after pytest-benchmark's (so it is not lost above a wide table), then where it all is."""
    state = existing_session_state(config)
    if state is None or not state.summary_lines:
        return
    terminalreporter.write_sep("-", "sdbench results")
    for line in state.summary_lines:
        terminalreporter.write_line(line)


def compare_at_end(config: pytest.Config, state: SessionState, baseline: str) -> int:
    import tempfile

    from sdbench.output.compare import compare_files, parse_fail_on
    from sdbench.record.io import ResultsWriter

    fail_on = parse_fail_on(config.getoption("--sd-compare-fail")) if config.getoption("--sd-compare-fail") else {}
    with tempfile.TemporaryDirectory() as tmp:
        current = Path(tmp) / "current.jsonl"
        writer = ResultsWriter(current)
        for rec in state.records:
            writer.append(rec)
        result = compare_files([baseline, str(current)], fail_on=fail_on,
                               allow_cross_gpu=config.getoption("--sd-allow-cross-gpu"))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("-", "sdbench compare (time, energy, power)")
        reporter.write_line(result.table)
    return result.exit_code
