"""`sdbench schedulers`: the schedulers sdbench can swap into any pipeline."""

from __future__ import annotations

import argparse
from typing import Any


def list_schedulers() -> str:
    """The scheduler table (key, diffusers class, settings, description)."""
    from tabulate import tabulate

    from sdbench.spec.schedulers import SCHEDULERS

    rows = [[s.key, s.class_name, ", ".join(f"{k}={v}" for k, v in s.settings.items()) or "-", s.description]
            for s in SCHEDULERS.values()]
    return tabulate(rows, headers=["key", "diffusers class", "settings", "description"])


def register(sub: Any) -> None:
    """Add `sdbench schedulers` to the CLI's subparsers."""
    p = sub.add_parser("schedulers", help="list schedulers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the scheduler table."""
    print(list_schedulers())
    return 0
