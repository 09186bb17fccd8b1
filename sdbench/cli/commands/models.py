"""`sdbench models`: the model variants and their defaults."""

from __future__ import annotations

import argparse
from typing import Any


def list_models() -> str:
    """The model table (key, family, default resolution, steps, CFG, scheduler, prediction, spacing, hub repo)."""
    from tabulate import tabulate

    from sdbench.spec.models import MODELS

    rows = [[s.key, s.family, f"{s.default_resolution}", s.default_steps if not s.allowed_steps else f"{s.default_steps} ({'/'.join(map(str, s.allowed_steps))})",
             s.default_guidance, s.default_scheduler, s.prediction_type, s.scheduler_config.get("timestep_spacing", "leading"),
             s.repo_id or "-"] for s in MODELS.values()]
    return tabulate(rows, headers=["model", "family", "res", "steps", "cfg", "scheduler", "prediction", "spacing", "hub repo"])


def register(sub: Any) -> None:
    """Add `sdbench models` to the CLI's subparsers."""
    p = sub.add_parser("models", help="list model variants and their defaults")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the model table."""
    print(list_models())
    return 0
