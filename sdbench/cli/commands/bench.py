"""`sdbench bench`: the pytest-benchmark suites (the main job)."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench.suite import SUITES


def register(sub: Any) -> None:
    """Add `sdbench bench` to the CLI's subparsers."""
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the matrix flags, then run pytest on the suites (its exit code is returned)."""
    from sdbench.suite import cmd_bench

    return cmd_bench(args)
