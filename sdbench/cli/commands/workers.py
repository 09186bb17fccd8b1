"""`sdbench workers run|shard|verify`: a plan on every GPU of this node, one pinned worker per GPU."""

from __future__ import annotations

import argparse
from typing import Any


def add_shard_command(sub: Any, name: str, help_text: str) -> None:
    """`sdbench workers shard` and `sdbench plan run`: one shard of a plan, as a pinned worker runs it."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("plan")
    p.add_argument("--shard", default="0/1", help="I/N (0-based): this worker's shard (default 0/1, the whole plan)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--device", default=None, help="override the plan's device (e.g. cuda:0 inside a pinned worker)")
    p.add_argument("--no-resume", action="store_true", help="re-measure points already in the results file")


def register(sub: Any) -> None:
    """Add `sdbench workers` and its actions to the CLI's subparsers."""
    p = sub.add_parser("workers", help="run a plan on every GPU of this node: one pinned worker process per GPU")
    wsub = p.add_subparsers(dest="workers_command", metavar="ACTION", required=True)
    run_p = wsub.add_parser("run", help="shard a plan over GPUs, one worker each; merge and report at the end")
    run_p.add_argument("plan")
    run_p.add_argument("--output-dir", required=True, help="shard results, and the merged results.jsonl")
    run_p.add_argument("--gpus", required=True,
                       help="0,1,... | all | GPU-<uuid>,... | cpu,cpu (CPU stand-ins) | simulated,... (one worker each)")
    run_p.add_argument("--no-resume", action="store_true", help="re-measure points already in the results files")
    run_p.add_argument("--shard-base", type=int, default=0, help="first shard index (SLURM tasks owning several GPUs)")
    run_p.add_argument("--shard-count", type=int, default=None, help="total shards (default: one per GPU)")
    run_p.add_argument("--no-merge", action="store_true", help="leave the shard files unmerged (another process merges)")
    add_shard_command(wsub, "shard", "one pinned worker: verify pinning, then measure shard I/N")
    verify = wsub.add_parser("verify", help="check that NVML and torch see the same GPU (by UUID); exit 3 if not")
    verify.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action: 1 when a run is incomplete, 3 when pinning does not match."""
    from sdbench.distribute import workers

    action = {"run": workers.cmd_workers_run, "shard": workers.cmd_workers_shard,
              "verify": workers.cmd_workers_verify}[args.workers_command]
    return int(action(args))
