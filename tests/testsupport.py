"""Helpers shared by several test modules (pytest puts this folder on sys.path, as for conftest)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import NamedTuple

from sdbench.case import Case
from sdbench.cli import main
from sdbench.distribute.plan import Plan
from sdbench.gpu import SimulatedGpu

FAST_PERIOD_S = 0.01
# The fastest Runner settings that still measure: one to two rounds, no idle baseline, no FLOP count.
FAST_RUNNER = {"warmup_min_s": 0.0, "min_rounds": 1, "max_rounds": 2, "idle_s": 0.0, "count_flops": False}


def fast_gpu(**kwargs: object) -> SimulatedGpu:
    """A simulated H100 whose energy counter updates every 10 ms (keeps tests short)."""
    kwargs.setdefault("energy_update_period_s", FAST_PERIOD_S)
    return SimulatedGpu(**kwargs)  # type: ignore[arg-type]


def tiny_plan(path: Path, n_points: int) -> Plan:
    """`n_points` tiny-sd cases at 64 px, 2 steps, on the CPU, measured with the fastest runner settings."""
    cases = [Case.create("tiny-sd", device="cpu", dtype="fp32", height=64, width=64, steps=2, seed=s)
             for s in range(n_points)]
    plan = Plan.from_cases(cases, runner=FAST_RUNNER, device="cpu")
    plan.save(path)
    return plan


class Result(NamedTuple):
    code: int
    out: str
    err: str


def invoke(argv: list[str]) -> Result:
    """Run `sdbench` in-process and capture its output; argparse's own SystemExit counts as an exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse rejects a value by exiting (code 2)
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())
