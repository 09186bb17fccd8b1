"""`sdbench report`: plots, HTML and markdown report of a sweep."""

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
    p.add_argument("input", metavar="DIR", help="sweep output directory, or a results .jsonl file")
    p.add_argument("--output-dir", default=None, help="where the report goes (default: DIR/report, or FILE's stem + -report)")
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
    """Write the report; print the optima and where it went."""
    from sdbench.report import cmd_report

    return int(cmd_report(args))
