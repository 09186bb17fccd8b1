"""`sdbench sweep`: a case over a grid of SM clocks, memory clocks and power limits."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sdbench import settings
from sdbench.cli.args import (
    add_case_arguments,
    case_kwargs,
    default_model,
    int_at_least,
    integer,
    number,
    positive_int,
    runner_config,
)

# sdbench.studies.dvfs.run imports torch, and the help must not: the choices are the settings table's rows (which
# SweepOptions checks against), the spec help texts copies of sdbench.studies.dvfs.grid's. tests/integration/test_cli_help.py
# checks they match ORDERS (sdbench.studies.dvfs.points), PROFILING_MODES (.options), GPU_TYPE_PRESETS, CLOCK_SPEC_HELP and
# POWER_SPEC_HELP (.grid).
ORDERS: tuple[str, ...] = tuple(settings.get("sweep.order").choice_list())
PROFILING_MODES: tuple[str, ...] = tuple(settings.get("sweep.profiling_mode").choice_list())
GPU_TYPES: tuple[str, ...] = tuple(settings.get("sweep.gpu_type").choice_list())
CLOCK_SPEC_HELP = ("all | every:N (every Nth supported clock from the top) | range:MIN-MAX[:N] (supported clocks "
                   "in [MIN, MAX], every Nth) | count:N (N clocks spread evenly over the grid) | list:A,B,... "
                   "(each a supported clock)")
POWER_SPEC_HELP = ("list:W1,W2,... | range:MIN-MAX:STEP (watts) | count:N (N limits spread evenly over the device's "
                   "min..max)")


def non_negative_int(field: str) -> Callable[[str], int]:
    """An argparse type: a whole number >= 0."""
    return int_at_least(field, 0)


def register(sub: Any) -> None:
    """Add `sdbench sweep` to the CLI's subparsers."""
    p = sub.add_parser(
        "sweep", help="DVFS / power-limit sweep: measure a case at each supported clock (verified, restored)",
        description="Measure one case over a grid of GPU settings taken from the device (SM clocks, memory clocks, "
                    "power limits), in randomised order with cooldowns, re-measuring the default clock to catch drift. "
                    "Each point's clock is locked (never application clocks), verified from telemetry, retried once "
                    "and flagged if wrong; the original settings are restored on exit, errors, SIGINT and SIGTERM. "
                    "Without clock rights use --read-only (default clock only) or --device simulated.")
    add_case_arguments(p)
    g = p.add_argument_group("grid (always taken from the device)")
    g.add_argument("--clocks", default=None, metavar="SPEC", help=f"SM clocks: {CLOCK_SPEC_HELP}")
    g.add_argument("--mem-clocks", default=None, metavar="SPEC", help="memory clocks to lock (same forms); default: none locked")
    g.add_argument("--power-limits", default=None, metavar="SPEC", help=f"power limits: {POWER_SPEC_HELP}")
    g.add_argument("--profiling-mode", choices=list(PROFILING_MODES), default=None,
                   help="baseline: default clock only; dvfs: the --gpu-type preset or every 4th clock (default); "
                        "custom: exactly --clocks/--mem-clocks/--power-limits")
    g.add_argument("--gpu-type", choices=sorted(GPU_TYPES), default=None,
                   help="the seed's grid preset (range and ~60 MHz spacing); the clocks still come from the device")
    g.add_argument("--repeats", type=positive_int("repeats"), default=None, help="passes over the grid (default 1)")
    g.add_argument("--num-runs", type=positive_int("num_runs"), default=None, help="the seed's name for --repeats")
    h = p.add_argument_group("hygiene")
    h.add_argument("--order", choices=list(ORDERS), default="random",
                   help="random (seeded; default), interleaved (high/low alternating) or descending (the predecessor's, "
                        "confounded with temperature)")
    h.add_argument("--order-seed", type=integer("order_seed"), default=None, help="seed of the random order (default: drawn, recorded)")
    h.add_argument("--default-every", type=non_negative_int("default_every"), default=5,
                   help="re-measure the default clock after every N points (0: first and last only; default 5)")
    h.add_argument("--cooldown-c", type=number("cooldown_c"), default=5.0,
                   help="before each point wait until the GPU is within this many degC of its starting idle "
                        "temperature (default 5; negative: no cooldown)")
    h.add_argument("--cooldown-timeout-s", type=number("cooldown_timeout_s", 0.0), default=120.0,
                   help="longest cooldown wait, s (then the point runs and records the time-out)")
    h.add_argument("--idle-gap-s", type=number("idle_gap_s", 0.0), default=2.0, help="idle pause between points, s (default 2)")
    h.add_argument("--retries", type=non_negative_int("retries"), default=1,
                   help="re-measurements of a point whose clock drifted or throttled before it is flagged (default 1)")
    h.add_argument("--window-periods", type=positive_int("window_periods"), default=None,
                   help="energy-counter updates per measured window (default 20; fewer = shorter points, coarser energy)")
    c = p.add_argument_group("clock control")
    c.add_argument("--read-only", action="store_true",
                   help="change nothing: query the grid, write the plan, measure the default clock with telemetry")
    c.add_argument("--clock-command", default=None, metavar="CMD",
                   help="privileged helper that applies settings (run without a shell; see sdbench.measure.clocks), "
                        "e.g. 'sudo -n /usr/local/sbin/gpu-clocks'")
    c.add_argument("--activity", choices=["auto", "simulated", "pydcgm", "dcgmi", "none"], default="auto",
                   help="activity counters (SM/tensor/DRAM/FP) from DCGM; auto: whatever is present")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", required=True, help="folder for plan.json, results.jsonl and sweep.json")
    o.add_argument("--resume", action="store_true", help="continue the sweep in --output-dir, skipping finished points")
    o.add_argument("--plan-only", action="store_true", help="write plan.json and sweep.json and stop")
    o.add_argument("--state-file", default=None, metavar="FILE",
                   help="after restoring the GPU (also on SIGTERM), write its settings here as JSON")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="run this sweep on several GPUs at once, one pinned process each (0,1,... | all | GPU-uuid,... "
                        "| simulated,simulated): each GPU sweeps the whole grid into OUTPUT_DIR/gpuK-<gpu>")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sweep; 1 when a point failed."""
    import shlex
    import sys

    from sdbench.case import resolve_device
    from sdbench.errors import ConfigError
    from sdbench.session import Bench
    from sdbench.studies.dvfs.options import SweepOptions
    from sdbench.studies.dvfs.run import run_sweep
    from sdbench.studies.dvfs.state import PLAN_FILE
    from sdbench.studies.dvfs.summary import _summary_table, summary_lines

    if args.gpus:
        return _sweep_per_gpu(args)
    device = resolve_device(args.device)
    if device == "cpu":
        raise ConfigError("device", args.device, allowed="cuda:N or simulated",
                          reason="a clock sweep needs a GPU; without one, use --device simulated")
    repeats = args.repeats
    if args.num_runs is not None:
        if repeats is not None and repeats != args.num_runs:
            raise ConfigError("num_runs", args.num_runs, reason=f"conflicts with --repeats {repeats} (they are the same thing)")
        repeats = args.num_runs
    clock_command = None
    if args.clock_command:
        # Split like a shell would, but run without one: the helper gets a plain argv.
        clock_command = shlex.split(args.clock_command)
        if not clock_command:
            raise ConfigError("clock_command", args.clock_command, allowed="a program and its arguments")
    options = SweepOptions(
        clocks=args.clocks, mem_clocks=args.mem_clocks, power_limits=args.power_limits,
        profiling_mode=args.profiling_mode or ("custom" if args.clocks else "dvfs"), gpu_type=args.gpu_type,
        repeats=repeats or 1, order=args.order, order_seed=args.order_seed, default_every=args.default_every,
        cooldown_c=None if args.cooldown_c is None or args.cooldown_c < 0 else args.cooldown_c,
        cooldown_timeout_s=args.cooldown_timeout_s, idle_gap_s=args.idle_gap_s, read_only=args.read_only,
        clock_command=clock_command, activity=args.activity, retries=args.retries)
    config = runner_config(args, device)
    if args.window_periods is not None:
        config.min_window_periods = args.window_periods
    bench = Bench(device=device, runner_config=config, gpu="open")
    try:
        base = bench.case(args.model or default_model(device), **case_kwargs(args))
        result = run_sweep(bench, base, args.output_dir, options, resume=args.resume, progress=not args.quiet,
                           state_file=args.state_file, plan_only=args.plan_only, argv=sys.argv[1:])
    finally:
        bench.close()
    meta = result.meta
    if meta.get("gpu_type_note"):
        print(f"note: {meta['gpu_type_note']}", file=sys.stderr)
    if args.plan_only:
        print(f"plan: {meta['points_planned']} point(s) ({len(meta['grid']['sm_clocks_mhz'])} SM clock(s)) -> "
              f"{result.output_dir / PLAN_FILE}")
        return 0
    if result.records:
        print(_summary_table(result.records, meta.get("default_clock_checks")))
    for line in summary_lines(meta):
        print(line)
    print(f"-> {result.output_dir}")
    failed = [r for r in result.records if r.get("point_status") != "ok"]
    return 1 if failed else 0


def _sweep_per_gpu(args: argparse.Namespace) -> int:
    """`--gpus`: the same sweep on each GPU at once, one pinned process per GPU, into DIR/gpuK-<gpu>.

    Each GPU gets the whole grid (sharding clock points across GPUs would confound clock with card);
    each process locks, verifies and restores its own GPU's clocks.
    """
    import sys
    from pathlib import Path

    from sdbench.distribute.workers import run_command_per_gpu, strip_options

    base = strip_options(args.argv, ["--gpus", "--output-dir", "--device", "--state-file"])

    def command(spec: Any) -> list[str]:
        out = Path(args.output_dir) / f"gpu{spec.slot}-{spec.gpu}"
        argv = [sys.executable, "-m", "sdbench", *base, "--output-dir", str(out), "--device", spec.device]
        if args.state_file:
            argv += ["--state-file", f"{args.state_file}.gpu{spec.slot}"]
        return argv

    return run_command_per_gpu(args.gpus, command)
