"""`sdbench compare`: saved results against a baseline, noise-aware."""

from __future__ import annotations

import argparse
from typing import Any


def confidence(text: str) -> float:
    """An argparse type: a probability strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid confidence: {text!r}; allowed: a probability between 0 and 1") from None
    if not (0.0 < value < 1.0):
        raise argparse.ArgumentTypeError(f"invalid confidence: {text}; allowed: a probability strictly between 0 and 1")
    return value


def register(sub: Any) -> None:
    """Add `sdbench compare` to the CLI's subparsers."""
    p = sub.add_parser(
        "compare",
        help="compare saved results (noise-aware; exits 1 on regression with --fail-on)",
        description="Compare pytest-benchmark JSON, results JSONL or --export-metrics files: each later file "
                    "against the first. Benchmarks are paired by name and case_hash; differences inside the "
                    "noise are reported as unchanged. Exit codes: 0 ok, 1 regression beyond --fail-on, 2 error.",
    )
    p.add_argument("baseline", metavar="BASELINE", help="the baseline results file")
    p.add_argument("candidates", nargs="+", metavar="CANDIDATE", help="one or more candidate results files")
    p.add_argument("--fail-on", default=None, metavar="SPEC",
                   help="exit 1 when a benchmark is significantly worse by more than N%% in a metric, "
                        "e.g. time:5%%,energy:5%%,power:10%%")
    p.add_argument("--metric", default=None, metavar="LIST",
                   help="metrics to compare: time,energy,power (default all; --fail-on metrics always included)")
    p.add_argument("--allow-cross-gpu", action="store_true",
                   help="compare results from different GPUs or clock/power-limit settings (prints a warning)")
    p.add_argument("--confidence", type=confidence, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the comparison as JSON")
    p.add_argument("--csv", default=None, metavar="OUT", help="also write the rows as CSV")
    p.add_argument("--markdown", default=None, metavar="OUT", help="also write a markdown report (CI summaries)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compare the files; 1 on a significant regression beyond --fail-on."""
    from sdbench.output.compare import compare_files, write_csv, write_json, write_markdown

    result = compare_files([args.baseline, *args.candidates], fail_on=args.fail_on, allow_cross_gpu=args.allow_cross_gpu,
                           metrics=args.metric, confidence=args.confidence)
    print(result.render())
    if args.json:
        print(f"json: {write_json(result, args.json)}")
    if args.csv:
        print(f"csv: {write_csv(result, args.csv)}")
    if args.markdown:
        print(f"markdown: {write_markdown(result, args.markdown)}")
    return int(result.exit_code)
