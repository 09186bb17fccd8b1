"""`sdbench quality`: output fidelity of one case against its fp32 eager reference."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench.cli.args import add_case_arguments


def register(sub: Any) -> None:
    """Add `sdbench quality` to the CLI's subparsers."""
    p = sub.add_parser("quality", help="output fidelity of one case against its fp32 eager reference",
                       description="Run the case and its fp32/eager reference once with the same seed and print "
                                   "PSNR, SSIM, latent error and whether the change exceeds rounding.")
    add_case_arguments(p)
    o = p.add_argument_group("quality")
    o.add_argument("--clip-model", default=None, metavar="DIR",
                   help="local folder of a CLIPModel with tokenizer and image processor: adds a CLIP score")
    o.add_argument("--json", action="store_true", help="print the fields as one JSON object")
    o.add_argument("--fail-on-flag", action="store_true", help="exit 1 when the output changed beyond rounding")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the fidelity fields; 1 with --fail-on-flag when the output changed beyond rounding."""
    from sdbench.studies.quality import cmd_quality

    return int(cmd_quality(args))
