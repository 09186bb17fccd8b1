"""`sdbench bench`: run the pytest-benchmark suites in benchmarks/ (also `sdbench generate --benchmark`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdbench import settings
from sdbench.errors import ConfigError, SdbenchError

#: The benchmark suites, in the order they run: the settings table's list (sdbench.settings.SUITES), written once.
SUITES: tuple[str, ...] = tuple(settings.SUITES)
# `generate --benchmark` without --benchmark-type: one bounded suite for the given model, not all of them.
DEFAULT_SUITE = "speed"

# The matrix axes a front door can set, each with the plugin option that carries it into pytest, and the flag
# that sets it on `sdbench bench` and on `sdbench generate --benchmark`: all from the settings table's rows.
PLUGIN_OPTIONS: dict[str, str] = {settings.get(k).name: str(settings.get(k).pytest) for k in settings.PLAN_AXES}
BENCH_FLAGS: dict[str, str] = {**{settings.get(k).name: settings.flag_of(k) for k in settings.PLAN_AXES},
                               "device": settings.flag_of("case.device")}
GENERATE_FLAGS: dict[str, str] = {**{settings.get(k).name: settings.flag_of(str(settings.get(k).element))
                                     for k in settings.PLAN_AXES}, "device": settings.flag_of("case.device")}
# Which axis a field named in a Case's or the plugin's ConfigError belongs to.
_FIELD_AXIS: dict[str, str] = {"model_variant": "models", "width": "resolutions", "device": "device",
                               **{settings.get(k).name: settings.get(k).name for k in settings.PLAN_AXES},
                               **{settings.get(str(settings.get(k).element)).name: settings.get(k).name
                                  for k in settings.PLAN_AXES}}


def benchmarks_dir() -> Path:
    """The folder of the benchmark suites: the package ``sdbench.benchmarks``, located without importing it.

    A wheel installs the checkout's top-level benchmarks/ as ``sdbench/benchmarks/`` (pyproject.toml maps
    it); an editable install resolves the same name to the checkout's benchmarks/. A checkout used without
    installing it (or an editable install made before the mapping) has no such package: then benchmarks/
    beside the sdbench package.

    Raises:
        SdbenchError: no suites in either place.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("sdbench.benchmarks")
    except (ImportError, ValueError):
        spec = None
    found = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    candidates = [*found, Path(__file__).resolve().parents[2] / "benchmarks"]
    for candidate in candidates:
        if (candidate / "test_speed.py").is_file():
            return candidate.resolve()
    raise SdbenchError("the benchmark suites were not found (looked at the package sdbench.benchmarks and "
                       f"{candidates[-1]}); reinstall sdbench (pip install sdbench, or pip install -e . in a checkout)")


def pytest_args(*, suites: list[str] | None, device: str, models: str | None = None, schedulers: str | None = None,
                resolutions: str | None = None, batch_sizes: str | None = None, steps: str | None = None,
                dtypes: str | None = None, profiles: str | None = None, weights: str | None = None,
                export: str | None = None, results: str | None = None, num_images: int | None = None,
                results_dir: str | None = None, no_results_dir: bool = False, history: bool = False,
                extra: list[str] | None = None) -> list[str]:
    """The pytest command line for the requested suites and matrix (`num_images`: the quality suite's seeds).

    `results_dir` is the run's results folder (`--sd-results-dir`; `no_results_dir` writes none). `history`
    saves the run into pytest-benchmark's history (`--benchmark-autosave`) unless `extra` already says
    what to save, or disables or skips the benchmarks.
    """
    args = [str(benchmarks_dir()), "-p", "no:cacheprovider", settings.get("case.device").pytest, device]
    if suites:
        args += ["-m", " or ".join(suites)]
    axes = {"models": models, "schedulers": schedulers, "resolutions": resolutions, "batch_sizes": batch_sizes,
            "steps": steps, "dtypes": dtypes, "profiles": profiles, "weights": weights}
    for opt, value in [*((PLUGIN_OPTIONS[axis], v) for axis, v in axes.items()),
                       (_option("output.export"), export), (_option("output.results"), results),
                       (_option("output.results_dir"), results_dir)]:
        if value:
            args += [opt, value]
    if no_results_dir:
        args.append(_option("output.no_results_dir"))
    else:
        args.append(_option("output.caller_prints_next"))  # finish_run prints the folder and next steps last
    if num_images is not None:
        args += [_option("output.num_images"), str(num_images)]
    extra = list(extra or [])
    if history and not any(a.startswith(HISTORY_OPTIONS) for a in extra):
        args.append("--benchmark-autosave")
    return args + extra


def _option(key: str) -> str:
    """The plugin option of settings row `key`."""
    return str(settings.get(key).pytest)


# pytest options after which `sdbench bench` does not add --benchmark-autosave on its own.
HISTORY_OPTIONS = ("--benchmark-save", "--benchmark-autosave", "--benchmark-disable", "--benchmark-skip")


def pytest_command(args: list[str]) -> tuple[list[str], dict[str, str] | None]:
    """The interpreter command line and environment (None: the caller's) that run pytest on the suites.

    In a checkout (the suites' parent holds pytest.ini) pytest finds the checkout's pytest.ini and root
    conftest.py itself, as `pytest benchmarks` does. Installed suites run with no configuration file
    (pytest would otherwise take the first pytest.ini/pyproject.toml above site-packages, e.g. the user's
    project around a venv), rootdir the package folder (node ids stay `benchmarks/test_*.py::...`, as in a
    checkout), no conftest.py from above the suites, the cwd kept off sys.path and no bytecode or cache
    written into site-packages.
    """
    import os

    suites = benchmarks_dir()
    cmd = [sys.executable]
    env = None
    if not (suites.parent / "pytest.ini").is_file():
        if sys.version_info >= (3, 11):
            cmd.append("-P")  # a folder in the cwd named like a dependency (clip, torch, ...) must not shadow it
        cmd += ["-m", "pytest", "-c", os.devnull, "--rootdir", str(suites.parent), "--confcutdir", str(suites),
                "-p", "no:cacheprovider"]
        # pytest's assertion rewriting would cache the suites' bytecode beside them, in site-packages.
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    else:
        cmd += ["-m", "pytest"]
    return cmd + list(args), env


def run_pytest(args: list[str]) -> int:
    """Run pytest on the suites in a child process (a fresh interpreter, so CUDA state does not leak).

    The child runs in the caller's working directory, so pytest-benchmark's histories and every relative
    output path land where the user ran sdbench, never beside the suites. In a checkout (the suites' parent
    holds pytest.ini) pytest finds the checkout's pytest.ini and root conftest.py itself, as `pytest
    benchmarks` does. Installed suites run with no configuration file (pytest would otherwise take the
    first pytest.ini/pyproject.toml above site-packages, e.g. the user's project around a venv), rootdir
    the package folder (node ids stay `benchmarks/test_*.py::...`, as in a checkout), no conftest.py from
    above the suites, the cwd kept off sys.path and no bytecode or cache written into site-packages
    (`pytest_command`).

    Ctrl-C reaches the child too (one process group): the parent waits for it to keep what it measured and
    write its summary, instead of killing it mid-write.
    """
    cmd, env = pytest_command(args)
    print("sdbench: " + " ".join(cmd), file=sys.stderr, flush=True)
    with _child_keeps_the_interrupt():
        return subprocess.call(cmd, env=env)


class _child_keeps_the_interrupt:
    """While a child runs: a SIGINT is noted, not raised (the child got it as well and ends on its own).

    A Python handler, not SIG_IGN: an ignored signal would stay ignored in the child after exec."""

    interrupted = False

    def __enter__(self) -> _child_keeps_the_interrupt:
        import signal
        import threading

        self._previous = None
        if threading.current_thread() is threading.main_thread():
            type(self).interrupted = False

            def note(_signum: int, _frame: Any) -> None:
                type(self).interrupted = True

            self._previous = signal.signal(signal.SIGINT, note)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run_bench(suites: Sequence[str] | None, *, device: str, axes: Mapping[str, str | None], export: str | None = None,
              results: str | None = None, output_dir: str | None = None, no_output_dir: bool = False,
              history: bool = True, gpus: str | None = None, extra: Sequence[str] = ()) -> int:
    """`sdbench bench`: check the suites and the matrix, then run pytest on them (its exit code is returned).

    `axes` holds the comma-separated values per matrix axis (PLUGIN_OPTIONS' names; None: the suite's
    default). The results go into `output_dir`, else a new sdbench-results/<time>-<suites>/, or none with
    `no_output_dir`; `gpus` runs one pinned pytest per GPU (see `_bench_per_gpu`).
    """
    suites = list(suites) if suites else None
    extra = list(extra)
    for s in suites or []:
        if s not in SUITES:
            raise ConfigError("suite", s, SUITES)
    check_matrix(device, {axis: axes.get(axis) for axis in PLUGIN_OPTIONS}, BENCH_FLAGS)
    from sdbench.record.io import check_output_paths

    check_output_paths(results=results, export_metrics=export)  # before pytest measures anything
    folder = results_folder(output_dir, no_output_dir, suites)
    if gpus:
        return _bench_per_gpu(gpus, suites, extra, folder, device=device, axes=axes, results=results, history=history)
    code = run_pytest(pytest_args(suites=suites, device=device, **_axis_args(axes), export=export, results=results,
                                  results_dir=str(folder) if folder else None, no_results_dir=folder is None,
                                  history=history, extra=extra))
    return finish_run(folder, code)


def _axis_args(axes: Mapping[str, str | None]) -> dict[str, str | None]:
    """`pytest_args`' matrix keywords: one per axis of PLUGIN_OPTIONS (None: the suite's default)."""
    return {axis: axes.get(axis) for axis in PLUGIN_OPTIONS}


def results_folder(output_dir: str | None, no_output_dir: bool, suites: Sequence[str] | None) -> Path | None:
    """The run's results folder (not made yet): `output_dir`, else sdbench-results/<time>-<suites> in the
    current directory; None with `no_output_dir`."""
    from sdbench.record.folder import default_results_dir

    if no_output_dir:
        return None
    if output_dir:
        return Path(output_dir)
    return default_results_dir(list(suites) if suites else list(SUITES))


def finish_run(folder: Path | None, code: int) -> int:
    """The run's last lines: how it ended, where its results are and what to do next (from its summary.md).

    Returns the exit code: pytest's, or EXIT_INTERRUPTED after a Ctrl-C."""
    from sdbench.errors import EXIT_INTERRUPTED
    from sdbench.output.tables import next_steps_in, status_in

    interrupted = _child_keeps_the_interrupt.interrupted
    _child_keeps_the_interrupt.interrupted = False
    if folder is not None:
        summary = folder / "summary.md"
        shown = _shown(folder)
        if summary.is_file():
            text = summary.read_text(encoding="utf-8")
            files = ", ".join(p.name for p in sorted(folder.iterdir(), key=_file_order) if p.is_file())
            print(f"sdbench: {status_in(text) or 'finished'}", flush=True)
            print(f"sdbench: results in {shown}/ ({files})", flush=True)
            for step in next_steps_in(text):
                if not step.startswith("#"):
                    print(f"  next: {step}", flush=True)
        elif folder.is_dir():
            print(f"sdbench: the run ended before its summary; the records measured are in {shown}/", flush=True)
        else:
            print("sdbench: no case was measured; no results folder was written", flush=True)
    return EXIT_INTERRUPTED if interrupted else code


def _file_order(path: Path) -> tuple[int, str]:
    order = ("summary.md", "records.jsonl", "benchmark.json")
    return (order.index(path.name) if path.name in order else len(order), path.name)


def _shown(path: Path) -> str:
    from sdbench.record.folder import shown_path

    return shown_path(path)


def _bench_per_gpu(gpus: str, suites: list[str] | None, extra: list[str], folder: Path | None, *, device: str,
                   axes: Mapping[str, str | None], results: str | None, history: bool) -> int:
    """`--gpus`: the suite's cases dealt round-robin to one pinned pytest per GPU, each started as `run_pytest`
    starts one (same command, the caller's cwd). Each worker writes its own results folder under the run's
    (`shards/shardI-of-N/`); their records are merged into the run's records.jsonl (and `results`)."""
    from sdbench.distribute.workers import parse_gpus, run_command_per_gpu
    from sdbench.record.io import ResultsWriter, read_records

    count = len(parse_gpus(gpus))
    results_path = Path(results).resolve() if results else None
    if results_path is None and folder is None:
        results_path = Path("sdbench-bench-results.jsonl").resolve()

    def shard_results(i: int) -> Path | None:
        if results_path is None:
            return None
        return results_path.with_name(f"{results_path.stem}-shard{i}-of-{count}.jsonl")

    def shard_folder(i: int) -> Path | None:
        return folder / "shards" / f"shard{i}-of-{count}" if folder is not None else None

    def command(spec: Any) -> list[str]:
        mine, theirs = shard_results(spec.shard), shard_folder(spec.shard)
        argv = pytest_args(suites=suites, device=spec.device, **_axis_args(axes),
                           results=str(mine) if mine else None, results_dir=str(theirs) if theirs else None,
                           no_results_dir=theirs is None, history=history,
                           extra=[*extra, _option("matrix.shard"), f"{spec.shard}/{count}"])
        cmd, env = pytest_command(argv)
        if env is not None:
            cmd.insert(1, "-B")  # the workers get the caller's environment: no bytecode beside installed suites
        return cmd

    with _child_keeps_the_interrupt():
        code = run_command_per_gpu(gpus, command)
    merged: list[dict[str, Any]] = []
    for i in range(count):
        source = shard_folder(i)
        path = source / "records.jsonl" if source is not None else shard_results(i)
        if path is not None and path.is_file():
            merged += read_records(path)
    if results_path is not None:
        writer = ResultsWriter(results_path)
        for rec in merged:
            writer.append(rec)
        print(f"sdbench: {len(merged)} record(s) from {count} worker(s) -> {results_path}", file=sys.stderr)
    if folder is not None and merged:
        _write_merged_folder(folder, merged, count, extra, device)
    return finish_run(folder, code)


def _write_merged_folder(folder: Path, records: list[dict[str, Any]], count: int, extra: list[str], device: str) -> None:
    """The run's records.jsonl and summary.md from its workers' folders."""
    import re

    from sdbench.output.tables import (
        environments_of,
        legend,
        next_steps_in,
        results_table,
        status_in,
        summary_markdown,
    )
    from sdbench.record.io import ResultsWriter

    writer = ResultsWriter(folder / "records.jsonl")
    for rec in records:
        writer.append(rec)
    target = _target_rel_ci(extra, device)
    table = results_table(records, target)
    done = total = 0
    words: set[str] = set()
    steps = ["# compare a later run with this one (time, energy and power; noise-aware):",
             f"sdbench compare {_shown(folder)}/records.jsonl LATER/records.jsonl"]
    for i in range(count):
        summary = folder / "shards" / f"shard{i}-of-{count}" / "summary.md"
        text = summary.read_text(encoding="utf-8") if summary.is_file() else ""
        m = re.match(r"(\w[\w ]*): (\d+) of (\d+) cases", status_in(text) or "")
        if m:
            words.add(m.group(1))
            done, total = done + int(m.group(2)), total + int(m.group(3))
        else:
            words.add("stopped early")
        history = [s for s in next_steps_in(text) if s.startswith("pytest-benchmark") and s not in steps]
        if history:
            steps += [f"# worker {i}'s pytest-benchmark history (its GPU and clock setting):", *history]
    word = "interrupted" if "interrupted" in words else "complete" if words == {"complete"} else "stopped early"
    status = f"{word}: {done} of {total} cases on {count} worker(s)"
    files = [("records.jsonl", "every worker's records, merged"),
             ("shards/", "each worker's own results folder (records.jsonl, benchmark.json, summary.md)"),
             ("summary.md", "this summary")]
    text = summary_markdown(title="sdbench results", status=[status, f"{len(records)} record(s)"], table=table,
                            legend_lines=legend(target, records), environments=environments_of(records), files=files,
                            next_steps=steps)
    (folder / "summary.md").write_text(text, encoding="utf-8")


def _target_rel_ci(extra: list[str], device: str) -> float:
    """The stop rule's target (relative CI half-width) the workers ran with: --sd-target-ci, else the default."""
    option = _option("runner.target_rel_ci")
    for i, arg in enumerate(extra):
        value = arg.split("=", 1)[1] if arg.startswith(f"{option}=") else (
            extra[i + 1] if arg == option and i + 1 < len(extra) else None)
        if value is not None:
            try:
                return float(value)
            except ValueError:
                break
    from sdbench.case import resolve_device
    from sdbench.runner import RunnerConfig

    return float(RunnerConfig.for_device(resolve_device(device)).target_rel_ci)


def _flag_error(exc: ConfigError, flag: str) -> ConfigError:
    return ConfigError(flag, exc.value, exc.allowed, exc.reason)


def check_matrix(device: str, axes: dict[str, str | None], flags: dict[str, str]) -> str:
    """Refuse a bad suite axis before pytest starts: one ConfigError naming the flag, the value and what is allowed.

    `axes` holds the comma-separated values per matrix axis (None: the suite's default); `flags` names the
    flag that set each axis. The cases are built exactly as the plugin will build them (its matrix, the
    command line over the device's default), so a value pytest would refuse in every parametrisation is
    refused here once. Returns the resolved device.
    """
    from sdbench.case import resolve_device
    from sdbench.matrix import build_cases, suite_matrix

    try:
        resolved = resolve_device(device)
    except ConfigError as exc:
        raise _flag_error(exc, flags["device"]) from None
    options = {PLUGIN_OPTIONS[axis]: value for axis, value in axes.items() if value}
    try:
        build_cases(suite_matrix(resolved.startswith("cuda"), {}, options.get), resolved)
    except ConfigError as exc:
        axis = _FIELD_AXIS.get(exc.field)
        if axis is None or axis not in flags:
            raise
        raise _flag_error(exc, flags[axis]) from None
    return resolved


#: Measured-round seconds per case of the bounded suite `generate --benchmark` runs (unless --max-time): the
#: seed's benchmark examples finish in minutes, each record saying the precision it reached.
GENERATE_SUITE_MAX_TIME_S = 15.0


def measurement_flags(values: Mapping[str, Any]) -> list[str]:
    """generate's measurement settings as the suite's pytest options (every seed flag has an effect there too).

    `values` maps rows of settings.MEASUREMENT_KEYS (e.g. "runner.max_time_s") to the value given (None or
    absent: unset); each row names its option."""
    out: list[str] = []
    for key in settings.MEASUREMENT_KEYS:
        row = settings.get(key)
        value = values.get(key)
        if value is None or value == row.flag_default:  # unset (or --energy auto): the suite's own default
            continue
        out += [str(row.pytest), f"{value:g}" if isinstance(value, float) else str(value)]
    if values.get("runner.max_time_s") is None:
        out += [_option("runner.max_time_s"), f"{GENERATE_SUITE_MAX_TIME_S:g}"]
    return out


def run_suite_from_generate(benchmark_type: str | None, *, model: str, device: str, axes: Mapping[str, str | None],
                            num_images: int = 1, output_dir: str | None = None, export: str | None = None,
                            measurement: Mapping[str, Any] | None = None, notes: Sequence[str] = ()) -> int:
    """`sdbench generate --benchmark [--benchmark-type X]`: one suite for `model`, the generate flags as its matrix.

    `axes` is the suite's matrix (PLUGIN_OPTIONS' names; None: the suite's default), `measurement` the
    measurement settings (see `measurement_flags`). Without `benchmark_type` the bounded DEFAULT_SUITE runs
    (and says so); `sdbench bench` runs every suite. `num_images` is the quality suite's number of images
    (seeds) per case. `notes` are printed once the matrix is found valid.
    """
    suite = benchmark_type or DEFAULT_SUITE
    check_matrix(device, dict(axes), GENERATE_FLAGS)
    for note in notes:
        print(note, file=sys.stderr, flush=True)
    if not benchmark_type:
        others = ", ".join(s for s in SUITES if s != suite)
        print(f"sdbench: --benchmark without --benchmark-type runs the {suite} suite for {model}; the other suites "
              f"are {others} (choose one with --benchmark-type NAME, or run them all with `sdbench bench`)",
              file=sys.stderr, flush=True)
    if num_images != 1 and suite != "quality_test":
        print(f"sdbench: --num-images sets the images per case of the quality_test suite; the {suite} suite ignores it",
              file=sys.stderr, flush=True)
    from sdbench.record.folder import default_results_dir

    folder = Path(output_dir) if output_dir else default_results_dir([suite])
    code = run_pytest(pytest_args(suites=[suite], device=device, export=export,
                                  num_images=num_images if suite == "quality_test" and num_images != 1 else None,
                                  results_dir=str(folder), extra=measurement_flags(measurement or {}), **axes))
    return finish_run(folder, code)
