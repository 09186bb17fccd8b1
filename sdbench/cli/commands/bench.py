"""`sdbench bench`: the pytest-benchmark suites (the main job)."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench import settings
from sdbench.settings import SUITES


def register(sub: Any) -> None:
    """Add `sdbench bench` to the CLI's subparsers."""
    p = sub.add_parser("bench", help="run the pytest-benchmark suites (the main job)",
                       description="Run the benchmark suites in benchmarks/ through pytest-benchmark. With no GPU the "
                                   "embedded default runs (tiny models at 64x64 on the CPU). The results go into a folder "
                                   "under the current directory (sdbench-results/<time>-<suites>/); the last lines say where "
                                   "and what to do next. Arguments after -- go to pytest "
                                   "(e.g. -- --benchmark-compare --benchmark-group-by=param:scheduler).")
    p.add_argument("--suite", action="append", choices=list(SUITES), help="a suite to run (repeatable; default: all)")
    # The device, the matrix axes and where results go: the rows of the plugin's --sd-* options (sdbench.settings).
    settings.add_arguments(p, ("case.device", *settings.PLAN_AXES))
    o = p.add_argument_group("where results go")
    settings.add_arguments(o, ("output.results_dir", "output.no_results_dir"))
    o.add_argument("--no-history", action="store_true",
                   help="do not save the run into pytest-benchmark's history (.benchmarks/<gpu>-<clocks>/; saved by "
                        "default, so a later run can -- --benchmark-compare against it)")
    settings.add_arguments(o, ("output.export", "output.results"))
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="one pinned pytest per GPU (0,1,... | all | GPU-uuid,... | cpu,cpu), cases dealt round-robin; "
                        "each worker's folder under the run's shards/, their records merged into its records.jsonl "
                        "(and --results)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: arguments for pytest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the matrix flags, then run pytest on the suites (its exit code is returned)."""
    from sdbench.distribute.suite import PLUGIN_OPTIONS, run_bench
    from sdbench.errors import ConfigError

    extra = list(args.pytest_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    if args.output_dir and args.no_output_dir:
        raise ConfigError("output_dir", args.output_dir, "a folder, or --no-output-dir alone",
                          reason="--no-output-dir was also given")
    return run_bench(args.suite or None, device=args.device, axes={axis: getattr(args, axis) for axis in PLUGIN_OPTIONS},
                     export=args.export_metrics, results=args.results, output_dir=args.output_dir,
                     no_output_dir=args.no_output_dir, history=not args.no_history, gpus=args.gpus, extra=extra)
