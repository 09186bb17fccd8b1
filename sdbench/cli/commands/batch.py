"""`sdbench batch`: the batch-size sweep or the largest batch that fits."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench.cli.args import add_case_arguments, number, positive_int
from sdbench.settings import MAX_BATCH

# A copy of sdbench.studies.batching.CPU_DEFAULT_LIMIT for the help text (sdbench.studies.batching imports torch;
# tests/test_cli_help.py checks they match); the largest batch is the settings table's.
CPU_DEFAULT_LIMIT = 8


def register(sub: Any) -> None:
    """Add `sdbench batch` to the CLI's subparsers."""
    p = sub.add_parser(
        "batch", help="batch-size sweep (throughput- and energy-optimal batch) or the largest batch that fits",
        description="With --batch-sizes, measure the case at each batch size and pick the batch with the most "
                    "images/s and the one with the fewest J/image, each with a bootstrap confidence statement. "
                    "With --max-batch, find the largest batch that fits in memory (doubling, then bisection; "
                    "out-of-memory errors are caught and recovered from).")
    add_case_arguments(p)
    g = p.add_argument_group("batching")
    mode = g.add_mutually_exclusive_group(required=True)
    mode.add_argument("--batch-sizes", default=None, metavar="LIST",
                      help="comma-separated batch sizes to sweep, e.g. 1,2,4,8 (overrides --batch-size)")
    mode.add_argument("--max-batch", action="store_true",
                      help="find the largest batch that fits, starting from --batch-size (default 1)")
    g.add_argument("--limit", type=positive_int("limit"), default=None,
                   help=f"largest batch --max-batch tries (default: {CPU_DEFAULT_LIMIT} on the CPU, {MAX_BATCH} on a GPU)")
    g.add_argument("--probe-steps", type=positive_int("probe_steps"), default=None,
                   help="denoising steps of each --max-batch probe call (default: the case's; peak memory does not "
                        "grow with steps)")
    g.add_argument("--memory-budget-gib", type=number("memory_budget_gib", 0.0), default=None,
                   help="simulate a device with this much memory: a peak above it counts as out of memory")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", default=None,
                   help="where the JSON and PNG go (default sdbench-output/<time>-batch-<model>)")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sweep or the search; print the table and the optima."""
    from sdbench.studies.batching import cmd_batch

    return int(cmd_batch(args))
