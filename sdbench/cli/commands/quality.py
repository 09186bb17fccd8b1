"""`sdbench quality`: output fidelity of one case against its fp32 eager reference."""

from __future__ import annotations

import argparse
from typing import Any

from sdbench.cli.args import add_case_arguments, case_kwargs, default_model, runner_config


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
    import json

    from tabulate import tabulate

    from sdbench.case import resolve_device
    from sdbench.record.io import to_json
    from sdbench.session import Bench
    from sdbench.studies.quality import quality_record

    device = resolve_device(args.device)
    # Fidelity needs no energy meter, so no NVML device is opened.
    bench = Bench(device=device, runner_config=runner_config(args, device), gpu=None)
    try:
        case = bench.case(args.model or default_model(device), **case_kwargs(args))
        fields = {"case_id": case.case_id, **quality_record(bench, case, args.clip_model)}
    finally:
        bench.close()
    if args.json:
        print(to_json(fields))
    else:
        print(tabulate([[k, json.dumps(v) if isinstance(v, list) else v] for k, v in fields.items()],
                       headers=["field", "value"], disable_numparse=True))
    return 1 if args.fail_on_flag and fields["fidelity_flag"] else 0
