"""`sdbench bench`: run the pytest-benchmark suites in benchmarks/ (also `sdbench generate --benchmark`)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from sdbench.errors import SdbenchError

SUITES = ("speed", "energy_research", "memory_stress", "quality_test", "artistic_styles", "multi_resolution",
          "scheduler_comparison", "dvfs")


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
                export: str | None = None, results: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The pytest command line for the requested suites and matrix."""
    args = [str(benchmarks_dir()), "-p", "no:cacheprovider", "--sd-device", device]
    if suites:
        args += ["-m", " or ".join(suites)]
    for opt, value in (("--sd-models", models), ("--sd-schedulers", schedulers), ("--sd-resolutions", resolutions),
                       ("--sd-batch-sizes", batch_sizes), ("--sd-steps", steps), ("--sd-dtypes", dtypes),
                       ("--sd-profiles", profiles), ("--sd-weights", weights), ("--sd-export", export),
                       ("--sd-results", results)):
        if value:
            args += [opt, value]
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
            from sdbench.errors import ConfigError

            raise ConfigError("suite", s, SUITES)
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


def run_suite_from_generate(args: argparse.Namespace) -> int:
    """`sdbench generate --benchmark [--benchmark-type X]`: the suite, with the generate flags as the matrix."""
    suites = [args.benchmark_type] if args.benchmark_type else None
    res = None
    if args.height or args.width:
        if args.height != args.width:
            from sdbench.errors import ConfigError

            raise ConfigError("height", args.height, f"equal to --width ({args.width}) with --benchmark",
                              reason="the suite's resolution axis is square")
        res = str(args.height)
    return run_pytest(pytest_args(suites=suites, device=args.device, models=args.model, schedulers=args.scheduler,
                                  resolutions=res, batch_sizes=str(args.batch_size) if args.batch_size != 1 else None,
                                  steps=str(args.steps) if args.steps else None, dtypes=args.dtype,
                                  profiles=args.profile if args.profile != "eager" else None,
                                  weights=args.weights if args.weights != "auto" else None,
                                  export=args.export_metrics))


def build_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="run the pytest-benchmark suites (the main job)",
                       description="Run the benchmark suites in benchmarks/ through pytest-benchmark. With no GPU the "
                                   "embedded default runs (tiny models at 64x64 on the CPU). Arguments after -- go to pytest "
                                   "(e.g. -- --benchmark-save=baseline --benchmark-compare).")
    p.add_argument("--suite", action="append", choices=list(SUITES), help="a suite to run (repeatable; default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, simulated")
    for name in ("models", "schedulers", "resolutions", "batch-sizes", "steps", "dtypes", "profiles", "weights"):
        p.add_argument(f"--{name}", default=None, help=f"comma-separated {name.replace('-', ' ')} (the suite's default if unset)")
    p.add_argument("--export-metrics", default=None, metavar="FILE", help="write every record as one JSON document")
    p.add_argument("--results", default=None, metavar="FILE", help="append every record to this JSON Lines file")
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="one pinned pytest per GPU (0,1,... | all | GPU-uuid,... | cpu,cpu), cases dealt round-robin; "
                        "records merged into --results (default sdbench-bench-results.jsonl)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: arguments for pytest")
    p.set_defaults(func=cmd_bench)
