"""`sdbench bench`: run the pytest-benchmark suites in benchmarks/ (also `sdbench generate --benchmark`)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from sdbench.errors import ConfigError, SdbenchError

SUITES = ("speed", "energy_research", "memory_stress", "quality_test", "artistic_styles", "multi_resolution",
          "scheduler_comparison", "dvfs")
# `generate --benchmark` without --benchmark-type: one bounded suite for the given model, not all of them.
DEFAULT_SUITE = "speed"

# The matrix axes a front door can set, each with the plugin option that carries it into pytest.
PLUGIN_OPTIONS: dict[str, str] = {"models": "--sd-models", "schedulers": "--sd-schedulers",
                                  "resolutions": "--sd-resolutions", "batch_sizes": "--sd-batch-sizes",
                                  "steps": "--sd-steps", "dtypes": "--sd-dtypes", "profiles": "--sd-profiles",
                                  "weights": "--sd-weights"}
# The flag that sets each axis (and the device) on `sdbench bench` and on `sdbench generate --benchmark`.
BENCH_FLAGS: dict[str, str] = {"models": "--models", "schedulers": "--schedulers", "resolutions": "--resolutions",
                               "batch_sizes": "--batch-sizes", "steps": "--steps", "dtypes": "--dtypes",
                               "profiles": "--profiles", "weights": "--weights", "device": "--device"}
GENERATE_FLAGS: dict[str, str] = {"models": "--model-variant", "schedulers": "--scheduler", "resolutions": "--height",
                                  "batch_sizes": "--batch-size", "steps": "--steps", "dtypes": "--dtype",
                                  "profiles": "--profile", "weights": "--weights", "device": "--device"}
# Which axis a field named in a Case's or the plugin's ConfigError belongs to.
_FIELD_AXIS: dict[str, str] = {"model_variant": "models", "scheduler": "schedulers", "height": "resolutions",
                               "width": "resolutions", "resolutions": "resolutions", "batch_size": "batch_sizes",
                               "batch_sizes": "batch_sizes", "steps": "steps", "dtype": "dtypes", "profile": "profiles",
                               "weights": "weights", "device": "device"}


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
    candidates = [*found, Path(__file__).resolve().parent.parent / "benchmarks"]
    for candidate in candidates:
        if (candidate / "test_speed.py").is_file():
            return candidate.resolve()
    raise SdbenchError("the benchmark suites were not found (looked at the package sdbench.benchmarks and "
                       f"{candidates[-1]}); reinstall sdbench (pip install sdbench, or pip install -e . in a checkout)")


def pytest_args(*, suites: list[str] | None, device: str, models: str | None = None, schedulers: str | None = None,
                resolutions: str | None = None, batch_sizes: str | None = None, steps: str | None = None,
                dtypes: str | None = None, profiles: str | None = None, weights: str | None = None,
                export: str | None = None, results: str | None = None, num_images: int | None = None,
                extra: list[str] | None = None) -> list[str]:
    """The pytest command line for the requested suites and matrix (`num_images`: the quality suite's seeds)."""
    args = [str(benchmarks_dir()), "-p", "no:cacheprovider", "--sd-device", device]
    if suites:
        args += ["-m", " or ".join(suites)]
    for opt, value in (("--sd-models", models), ("--sd-schedulers", schedulers), ("--sd-resolutions", resolutions),
                       ("--sd-batch-sizes", batch_sizes), ("--sd-steps", steps), ("--sd-dtypes", dtypes),
                       ("--sd-profiles", profiles), ("--sd-weights", weights), ("--sd-export", export),
                       ("--sd-results", results)):
        if value:
            args += [opt, value]
    if num_images is not None:
        args += ["--sd-num-images", str(num_images)]
    return args + list(extra or [])


def run_pytest(args: list[str]) -> int:
    """Run pytest on the suites in a child process (a fresh interpreter, so CUDA state does not leak).

    The child runs in the caller's working directory, so pytest-benchmark's histories and every relative
    output path land where the user ran sdbench, never beside the suites. In a checkout (the suites' parent
    holds pytest.ini) pytest finds the checkout's pytest.ini and root conftest.py itself, as `pytest
    benchmarks` does. Installed suites run with no configuration file (pytest would otherwise take the
    first pytest.ini/pyproject.toml above site-packages, e.g. the user's project around a venv), rootdir
    the package folder (node ids stay `benchmarks/test_*.py::...`, as in a checkout), no conftest.py from
    above the suites, the cwd kept off sys.path and no bytecode or cache written into site-packages.
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
    cmd += args
    print("sdbench: " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd, env=env)


def cmd_bench(args: argparse.Namespace) -> int:
    suites = args.suite or None
    extra = list(args.pytest_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    for s in suites or []:
        if s not in SUITES:
            raise ConfigError("suite", s, SUITES)
    check_matrix(args.device, {axis: getattr(args, axis) for axis in PLUGIN_OPTIONS}, BENCH_FLAGS)
    if args.gpus:
        return _bench_per_gpu(args, suites, extra)
    return run_pytest(pytest_args(suites=suites, device=args.device, models=args.models, schedulers=args.schedulers,
                                  resolutions=args.resolutions, batch_sizes=args.batch_sizes, steps=args.steps,
                                  dtypes=args.dtypes, profiles=args.profiles, weights=args.weights,
                                  export=args.export_metrics, results=args.results, extra=extra))


def _bench_per_gpu(args: argparse.Namespace, suites: list[str] | None, extra: list[str]) -> int:
    """`--gpus`: the suite's cases dealt round-robin to one pinned pytest per GPU; their records merged."""
    from sdbench.records import ResultsWriter, read_records
    from sdbench.workers import parse_gpus, run_command_per_gpu

    count = len(parse_gpus(args.gpus))
    results = Path(args.results or "sdbench-bench-results.jsonl").resolve()

    def shard_results(i: int) -> Path:
        return results.with_name(f"{results.stem}-shard{i}-of-{count}.jsonl")

    def command(spec: Any) -> list[str]:
        argv = pytest_args(suites=suites, device=spec.device, models=args.models, schedulers=args.schedulers,
                           resolutions=args.resolutions, batch_sizes=args.batch_sizes, steps=args.steps,
                           dtypes=args.dtypes, profiles=args.profiles, weights=args.weights,
                           results=str(shard_results(spec.shard)), extra=extra)
        return [sys.executable, "-m", "pytest", *argv, "--sd-shard", f"{spec.shard}/{count}"]

    code = run_command_per_gpu(args.gpus, command, cwd=str(benchmarks_dir().parent))
    writer = ResultsWriter(results)
    merged = 0
    for i in range(count):
        if shard_results(i).is_file():
            for rec in read_records(shard_results(i)):
                writer.append(rec)
                merged += 1
    print(f"sdbench: {merged} record(s) from {count} worker(s) -> {results}", file=sys.stderr)
    return code


class _OptionsOnly:
    """Just enough of a pytest config for the plugin's matrix: the session's device and the sd options."""

    def __init__(self, device: str, options: dict[str, str | None]) -> None:
        from sdbench.pytest_plugin import SdConfig

        self._sdbench = SdConfig(device, {})
        self._options = options

    def getoption(self, name: str, default: Any = None) -> Any:
        return self._options.get(name, default)


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
    from sdbench.pytest_plugin import _matrix, build_cases

    try:
        resolved = resolve_device(device)
    except ConfigError as exc:
        raise _flag_error(exc, flags["device"]) from None
    options = {PLUGIN_OPTIONS[axis]: value for axis, value in axes.items() if value}
    try:
        build_cases(_matrix(_OptionsOnly(resolved, options), {}), resolved)  # type: ignore[arg-type]
    except ConfigError as exc:
        axis = _FIELD_AXIS.get(exc.field)
        if axis is None or axis not in flags:
            raise
        raise _flag_error(exc, flags[axis]) from None
    return resolved


def run_suite_from_generate(args: argparse.Namespace, *, model: str, scheduler: str | None,
                            notes: tuple[str, ...] = ()) -> int:
    """`sdbench generate --benchmark [--benchmark-type X]`: one suite for `model`, the generate flags as its matrix.

    Without --benchmark-type the bounded DEFAULT_SUITE runs (and says so); `sdbench bench` runs every
    suite. `scheduler` None keeps each suite's own scheduler axis. --num-images is the quality suite's
    number of images (seeds) per case. `notes` are printed once the flags are found valid.
    """
    suite = args.benchmark_type or DEFAULT_SUITE
    res = None
    if args.height or args.width:
        if args.height != args.width:
            raise ConfigError("height", args.height, f"equal to --width ({args.width}) with --benchmark",
                              reason="the suite's resolution axis is square")
        res = str(args.height)
    axes = {"models": model, "schedulers": scheduler, "resolutions": res,
            "batch_sizes": str(args.batch_size) if args.batch_size != 1 else None,
            "steps": str(args.steps) if args.steps else None, "dtypes": args.dtype,
            "profiles": args.profile if args.profile != "eager" else None,
            "weights": args.weights if args.weights != "auto" else None}
    check_matrix(args.device, axes, GENERATE_FLAGS)
    for note in notes:
        print(note, file=sys.stderr, flush=True)
    if not args.benchmark_type:
        others = ", ".join(s for s in SUITES if s != suite)
        print(f"sdbench: --benchmark without --benchmark-type runs the {suite} suite for {model}; the other suites "
              f"are {others} (choose one with --benchmark-type NAME, or run them all with `sdbench bench`)",
              file=sys.stderr, flush=True)
    if args.num_images != 1 and suite != "quality_test":
        print(f"sdbench: --num-images sets the images per case of the quality_test suite; the {suite} suite ignores it",
              file=sys.stderr, flush=True)
    return run_pytest(pytest_args(suites=[suite], device=args.device, export=args.export_metrics,
                                  num_images=args.num_images if suite == "quality_test" and args.num_images != 1 else None,
                                  **axes))
