"""`sdbench bench`: the pytest-benchmark suites (the main job)."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench.suite import SUITES


def register(sub: Any) -> None:
    """Add `sdbench bench` to the CLI's subparsers."""
    p = sub.add_parser("bench", help="run the pytest-benchmark suites (the main job)",
                       description="Run the benchmark suites in benchmarks/ through pytest-benchmark. With no GPU the "
                                   "embedded default runs (tiny models at 64x64 on the CPU). The results go into a folder "
                                   "under the current directory (sdbench-results/<time>-<suites>/); the last lines say where "
                                   "and what to do next. Arguments after -- go to pytest "
                                   "(e.g. -- --benchmark-compare --benchmark-group-by=param:scheduler).")
    p.add_argument("--suite", action="append", choices=list(SUITES), help="a suite to run (repeatable; default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, simulated")
    for name in ("models", "schedulers", "resolutions", "batch-sizes", "steps", "dtypes", "profiles", "weights"):
        p.add_argument(f"--{name}", default=None, help=f"comma-separated {name.replace('-', ' ')} (the suite's default if unset)")
    o = p.add_argument_group("where results go")
    o.add_argument("--output-dir", default=None, metavar="DIR",
                   help="the run's results folder: records.jsonl, benchmark.json (pytest-benchmark's JSON), summary.md "
                        "(default: sdbench-results/<time>-<suites> in the current directory)")
    o.add_argument("--no-output-dir", action="store_true", help="write no results folder")
    o.add_argument("--no-history", action="store_true",
                   help="do not save the run into pytest-benchmark's history (.benchmarks/<gpu>-<clocks>/; saved by "
                        "default, so a later run can -- --benchmark-compare against it)")
    o.add_argument("--export-metrics", default=None, metavar="FILE", help="also write every record as one JSON document")
    o.add_argument("--results", default=None, metavar="FILE", help="also append every record to this JSON Lines file")
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="one pinned pytest per GPU (0,1,... | all | GPU-uuid,... | cpu,cpu), cases dealt round-robin; "
                        "each worker's folder under the run's shards/, their records merged into its records.jsonl "
                        "(and --results)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: arguments for pytest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the matrix flags, then run pytest on the suites (its exit code is returned)."""
    from sdbench.suite import cmd_bench

    return cmd_bench(args)
