"""`sdbench plan make|run|merge`: JSON plans of benchmark points."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench import settings
from sdbench.cli.commands.workers import add_shard_command


def register(sub: Any) -> None:
    """Add `sdbench plan` and its actions to the CLI's subparsers."""
    p = sub.add_parser("plan", help="write, run (one shard) and merge JSON plans of benchmark points")
    psub = p.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    make = psub.add_parser("make", help="write a plan from a case matrix",
                           description="Write the cases of a matrix as a JSON plan, checked whole as `plan run` "
                                       "will check it: a value that would fail at run time (a dtype the card cannot "
                                       "run, a measurement setting out of range) is refused now.")
    settings.add_arguments(make, settings.PLAN_AXES)
    settings.add_arguments(make, ("case.prompt", "plan.repeats", "case.device"))
    settings.add_arguments(make.add_argument_group("how each point is measured (default: the device's)"),
                           settings.MEASUREMENT_KEYS)
    make.add_argument("-o", "--output", required=True, help="plan file to write")
    add_shard_command(psub, "run", "measure one shard of a plan, appending records as points finish")
    merge = psub.add_parser("merge", help="merge shard results into one file (one record per point)")
    merge.add_argument("results_dir")
    merge.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action (`plan run` is the same shard run as `workers shard`)."""
    if args.plan_command == "run":
        from sdbench.distribute.workers import cmd_workers_shard

        return int(cmd_workers_shard(args))
    from sdbench.distribute import plan

    return int({"make": plan.cmd_plan_make, "merge": plan.cmd_plan_merge}[args.plan_command](args))
