"""`sdbench batch`: the batch-size sweep or the largest batch that fits."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench.cli.args import (
    add_case_arguments,
    case_kwargs,
    default_model,
    number,
    positive_int,
    progress_printer,
    runner_config,
)
from sdbench.settings import MAX_BATCH

# A copy of sdbench.studies.batching.max_batch.CPU_DEFAULT_LIMIT for the help text (sdbench.studies.batching
# imports torch; tests/integration/test_cli_help.py checks they match); the largest batch is the settings table's.
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
    g.add_argument("--resume", action="store_true",
                   help="continue the --batch-sizes sweep in --output-dir: keep the batches its batch-sweep.json "
                        "holds, measure the rest, then pick the optima over all (also summarises a sweep cut "
                        "short when nothing is left to measure)")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", default=None,
                   help="where the JSON and PNG go (default sdbench-output/<time>-batch-<model>)")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sweep or the search; print the table and the optima (or where the fits search stopped)."""
    import datetime as dt
    import math
    import sys
    from pathlib import Path

    from sdbench.case import resolve_device
    from sdbench.errors import ConfigError
    from sdbench.record.io import export_metrics
    from sdbench.session import Bench
    from sdbench.studies.batching.max_batch import find_max_batch
    from sdbench.studies.batching.memory import GIB
    from sdbench.studies.batching.report import max_batch_table, plot_batch_sweep, sweep_table
    from sdbench.studies.batching.sweep import batch_sweep, parse_batch_sizes

    if args.limit is not None and not args.max_batch:
        raise ConfigError("limit", args.limit, "only together with --max-batch")
    if args.probe_steps is not None and not args.max_batch:
        raise ConfigError("probe_steps", args.probe_steps, "only together with --max-batch")
    if args.resume and (args.max_batch or args.output_dir is None):
        raise ConfigError("resume", True, "together with --batch-sizes and the --output-dir of the sweep to continue")
    sizes = parse_batch_sizes(args.batch_sizes) if args.batch_sizes is not None else None
    budget: int | None = None
    if args.memory_budget_gib is not None:
        if args.memory_budget_gib <= 0:
            raise ConfigError("memory_budget_gib", args.memory_budget_gib, "a positive number of GiB")
        budget = max(1, math.floor(args.memory_budget_gib * GIB))
    device = resolve_device(args.device)
    model = args.model or default_model(device)
    bench = Bench(device=device, runner_config=runner_config(args, device), gpu="open")
    say = progress_printer(args.quiet)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.output_dir or Path("sdbench-output") / f"{stamp}-batch-{model}")
    try:
        case = bench.case(model, **case_kwargs(args))
        meta = {"command": "batch", "argv": sys.argv[1:], "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                "environment": bench.environment}
        if args.max_batch:
            result = find_max_batch(bench, case, start=case.batch_size, limit=args.limit, memory_budget_bytes=budget,
                                    probe_steps=args.probe_steps, progress=say)
            print(max_batch_table(result))
            print(result.summary_line())
            if result.note:
                print(f"note: {result.note}")
            path = export_metrics([], out_dir / "max-batch.json", {**meta, "max_batch": result.to_dict()})
            print(f"results: {path}")
            return 0
        assert sizes is not None
        sweep_path = out_dir / "batch-sweep.json"
        earlier = None
        if args.resume:
            import json

            from sdbench.studies.batching.sweep import resume_points

            if not sweep_path.is_file():
                raise ConfigError("resume", str(sweep_path), "the --output-dir of an earlier `sdbench batch "
                                  "--batch-sizes` run (its batch-sweep.json)", reason="no such file")
            earlier = resume_points(json.loads(sweep_path.read_text()), case, sizes, bench.environment)
            say(f"resuming: batch {', '.join(map(str, sorted(earlier))) or 'none'} kept from {sweep_path}")
        elif sweep_path.exists():
            raise ConfigError("output_dir", str(out_dir), reason="it already holds a batch sweep's results; pass "
                              "--resume to continue it, or name another --output-dir")

        def keep(points: list[Any], remaining: list[int]) -> None:
            # After each batch: what is measured so far, so a sweep cut short keeps it (no optima until the end).
            export_metrics([p.record for p in points if p.record is not None], sweep_path,
                           {**meta, "complete": False, "points": [p.to_dict() for p in points],
                            "not_run_yet": remaining})

        say(f"batch sweep of {case.model} at {', '.join(map(str, sizes))}; results kept in {sweep_path} as they come")
        sweep = batch_sweep(bench, case, sizes, memory_budget_bytes=budget, progress=say, on_point=keep,
                            earlier=earlier)
        print(sweep_table(sweep))
        print(sweep.throughput.statement())
        print(sweep.energy.statement())
        if sweep.energy_simulated:
            print("note: energy from the simulated GPU (a physical model), not a measurement")
        path = export_metrics(sweep.records, sweep_path, {**meta, "complete": True, "summary": sweep.to_dict()})
        png = plot_batch_sweep(sweep, out_dir / "batch-sweep.png")
        print(f"results: {path}\nplot: {png}")
    finally:
        bench.close()
    return 0
