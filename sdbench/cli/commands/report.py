"""`sdbench report`: plots, HTML and markdown report of a sweep; with `--across-gpus`, a cross-GPU study.

The cross-GPU study lives here rather than in `sdbench compare`: its product is a report (markdown, HTML, JSON
and a plot in an output folder, energy-optimal clocks from sweeps), while `compare` is a regression gate
between a baseline and candidates that exits 1 on a regression and refuses results of different GPUs on
purpose; that refusal stays as it is.
"""

from __future__ import annotations

import argparse
from typing import Any

from sdbench.cli.args import number, positive_int


def register(sub: Any) -> None:
    """Add `sdbench report` to the CLI's subparsers."""
    p = sub.add_parser(
        "report", help="plots, HTML and markdown report of a sweep (optimal clocks with confidence)",
        description="Analyse a sweep directory (results.jsonl + sweep.json) or a results JSONL file: time, energy, "
                    "power, EDP and ED2P per clock with bootstrap confidence intervals; energy, EDP, ED2P and "
                    "slowdown-capped optima with the confidence of the chosen clock; savings against the default "
                    "clock; power-model features (CSV, Parquet) and fits validated on held-out clocks.")
    p.add_argument("input", metavar="DIR", nargs="?", default=None,
                   help="sweep output directory, or a results .jsonl file (not with --across-gpus)")
    p.add_argument("--across-gpus", nargs="+", default=None, metavar="RESULTS",
                   help="a cross-GPU study instead: the same cases from several GPUs (results files or sweep "
                        "directories, oldest GPU first), side by side per case: time, throughput, energy gross and "
                        "net with intervals, images/kJ, EDP, fraction of the FLOP floor, power, the energy-optimal "
                        "clock where a sweep exists, and changes between GPUs naming what differs")
    p.add_argument("--output-dir", default=None,
                   help="where the report goes (default: DIR/report, or FILE's stem + -report; with --across-gpus: "
                        "crossgpu-report)")
    p.add_argument("--slowdown-cap", type=number("slowdown_cap", 0.0), default=5.0, metavar="PCT",
                   help="the capped optimum may be at most this many percent slower than the default clock (default 5)")
    p.add_argument("--energy-basis", choices=["gross", "net"], default="gross",
                   help="energy for the EDP, ED2P and capped optima: gross board energy or net of idle power")
    p.add_argument("--statistic", choices=["mean", "median"], default="mean", help="per-point statistic over rounds")
    p.add_argument("--confidence", type=number("confidence", 0.0), default=0.95, help="interval level (default 0.95)")
    p.add_argument("--resamples", type=positive_int("resamples"), default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--folds", type=positive_int("folds"), default=5, help="leave-clocks-out folds (default 5)")
    p.add_argument("--no-power-model", action="store_true", help="skip the power-model export and fits")
    p.add_argument("--quiet", action="store_true", help="print only the report's path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report (or, with --across-gpus, the cross-GPU study); print its findings and where it went."""
    from sdbench.errors import ConfigError

    if args.across_gpus is not None:
        if args.input is not None:
            raise ConfigError("input", args.input, "either DIR or --across-gpus RESULTS..., not both",
                              reason="--across-gpus takes every results file or sweep directory itself")
        return across_gpus(args)
    if args.input is None:
        raise ConfigError("input", None, "a sweep directory or results .jsonl file, or --across-gpus RESULTS...")
    return sweep_report(args)


def sweep_report(args: argparse.Namespace) -> int:
    """`sdbench report DIR`: write the report, print the optima and where it went."""
    import sys
    from pathlib import Path

    from sdbench.analysis.optimum import OBJECTIVES
    from sdbench.errors import ConfigError
    from sdbench.output.report import default_output_dir, generate_report

    if not 0.0 < args.confidence < 1.0:
        raise ConfigError("confidence", args.confidence, reason="a probability strictly between 0 and 1")
    if args.folds < 2:
        raise ConfigError("folds", args.folds, reason="a whole number >= 2")
    out = Path(args.output_dir) if args.output_dir else default_output_dir(args.input)
    result = generate_report(args.input, out, slowdown_cap_pct=args.slowdown_cap, energy_basis=args.energy_basis,
                             statistic=args.statistic, confidence=args.confidence, n_resamples=args.resamples,
                             seed=args.seed, power_model=not args.no_power_model, n_folds=args.folds)
    for line in result.warnings:
        print(f"sdbench: warning: {line}", file=sys.stderr)
    if not args.quiet:
        if result.simulated:
            print("SIMULATED data: energy and clocks come from the simulated GPU model")
        for line in result.headline:
            print(line)
        for a in result.analyses:
            print(f"{a.workload_label}:")
            for obj in OBJECTIVES:
                print(f"  {a.optima[obj].statement()}")
        pm = result.powermodel
        if pm is not None:
            for v in pm.validation:
                print(f"  power model {v.model} {v.target}: {v.text()}")
        for note in result.notes:
            print(f"note: {note}")
    print(f"report: {result.html}")
    return 0


def across_gpus(args: argparse.Namespace) -> int:
    """`sdbench report --across-gpus`: build and write the study, print its tables and statements."""
    from sdbench.errors import ConfigError

    if not 0.0 < args.confidence < 1.0:
        raise ConfigError("confidence", args.confidence, reason="a probability strictly between 0 and 1")
    from tabulate import tabulate

    from sdbench.analysis.crossgpu import build_study
    from sdbench.output.crossgpu import case_table, differences_table, write_study

    study = build_study(args.across_gpus, confidence=float(args.confidence), analysis_options={
        "confidence": float(args.confidence), "n_resamples": args.resamples, "seed": args.seed,
        "statistic": args.statistic, "energy_basis": args.energy_basis, "slowdown_cap_pct": args.slowdown_cap})
    files = write_study(study, args.output_dir or "crossgpu-report")
    if not args.quiet:
        for line in study.headline():
            print(line)
        header, rows = differences_table(study)
        print(tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True))
        for case in study.cases:
            print(f"\n{case.label}:")
            header, rows = case_table(study, case)
            print(tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True))
            for comparison in case.comparisons:
                print(f"  {comparison.statement}")
        for note in study.notes:
            print(f"note: {note}")
    print(f"study: {files.html} ({files.markdown.name}, {files.json.name}, {files.plot.name})")
    return 0
