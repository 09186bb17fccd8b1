"""`sdbench plan make|run|merge`: JSON plans of benchmark points."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench.cli.commands.workers import add_shard_command


def register(sub: Any) -> None:
    """Add `sdbench plan` and its actions to the CLI's subparsers."""
    p = sub.add_parser("plan", help="write, run (one shard) and merge JSON plans of benchmark points")
    psub = p.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    make = psub.add_parser("make", help="write a plan from a case matrix")
    for axis in ("models", "schedulers", "resolutions", "batch-sizes", "steps", "dtypes", "profiles", "weights"):
        make.add_argument(f"--{axis}", dest=axis.replace("-", "_"), default=None, help=f"comma-separated {axis}")
    make.add_argument("--prompt", default=None)
    make.add_argument("--repeats", type=int, default=1, help="repetitions of every case")
    make.add_argument("--device", default="auto")
    make.add_argument("--min-rounds", type=int, default=None, help="fewest measured rounds per point")
    make.add_argument("--max-rounds", type=int, default=None, help="most measured rounds per point")
    make.add_argument("--max-time", type=float, default=None, help="time cap for one point's rounds, s")
    make.add_argument("--idle-seconds", type=float, default=None, help="idle-power baseline per point, s")
    make.add_argument("-o", "--output", required=True, help="plan file to write")
    add_shard_command(psub, "run", "measure one shard of a plan, appending records as points finish")
    merge = psub.add_parser("merge", help="merge shard results into one file (one record per point)")
    merge.add_argument("results_dir")
    merge.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action (`plan run` is the same shard run as `workers shard`)."""
    if args.plan_command == "run":
        from sdbench.workers import cmd_workers_shard

        return int(cmd_workers_shard(args))
    from sdbench import plan

    return int({"make": plan.cmd_plan_make, "merge": plan.cmd_plan_merge}[args.plan_command](args))
