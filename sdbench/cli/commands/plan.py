"""`sdbench plan make|run|merge`: JSON plans of benchmark points."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench import settings
from sdbench.cli.commands.workers import add_shard_command, shard


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
    action = {"make": make, "run": shard, "merge": merge}[args.plan_command]
    return int(action(args))


def make(args: argparse.Namespace) -> int:
    """`sdbench plan make`: the matrix's cases as a plan, checked whole (as `plan run` will check it) before it
    is written: a value that would fail at run time is refused now."""
    from sdbench.distribute import plan

    repeats = settings.check("plan.repeats", args.repeats)
    cases = plan.matrix_cases(args.device, {settings.get(key).name: getattr(args, settings.get(key).attr)
                                            for key in settings.PLAN_AXES}, prompt=args.prompt)
    runner: dict[str, Any] = {}
    for key in settings.MEASUREMENT_KEYS:
        row = settings.get(key)
        value = getattr(args, row.attr, None)
        if value is not None and not (row.name == "energy" and value == row.default):
            runner[row.name] = value
    made = plan.matrix_plan(cases, repeats=repeats, device=args.device, runner=runner)
    path = made.save(args.output)
    print(f"plan: {len(made.points)} points ({len(cases)} cases x {repeats} repeats) -> {path}")
    return 0


def merge(args: argparse.Namespace) -> int:
    """`sdbench plan merge`: the shard results of a folder, one record per point, into one file."""
    from sdbench.distribute import plan

    files, n, dropped = plan.merge_shards(args.results_dir, args.output)
    print(f"merged {files} shard file(s): {n} point(s), {dropped} duplicate(s) dropped -> {args.output}")
    return 0
