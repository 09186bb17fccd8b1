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
    action = {"run": run_on_gpus, "shard": shard, "verify": verify}[args.workers_command]
    return int(action(args))


def run_on_gpus(args: argparse.Namespace) -> int:
    """`sdbench workers run`: one pinned worker per GPU over the plan's shards; 1 when the run is incomplete."""
    from sdbench.distribute import workers

    report = workers.run_on_gpus(args.plan, args.gpus, args.output_dir, resume=not args.no_resume,
                                 shard_base=args.shard_base, shard_count=args.shard_count, merge=not args.no_merge)
    return 0 if report.complete else 1


def shard(args: argparse.Namespace) -> int:
    """`sdbench workers shard` and `sdbench plan run`: measure shard I/N of the plan, echoing its lines."""
    from sdbench.distribute import workers
    from sdbench.distribute.plan import parse_shard

    index, count = parse_shard(args.shard)
    return workers.run_shard(args.plan, index, count, args.output_dir, device=args.device, resume=not args.no_resume,
                             echo=lambda line: print(line, flush=True))


def verify(args: argparse.Namespace) -> int:
    """`sdbench workers verify`: print the pinning check as JSON; 3 when NVML and torch see different GPUs."""
    import json

    from sdbench.case import resolve_device
    from sdbench.distribute import workers

    check = workers.verify_pinning(resolve_device(args.device))
    print(json.dumps({"device": check.device, "pinning_verified": check.verified, "gpu_uuid": check.gpu_uuid,
                      "nvml_uuid": check.nvml_uuid, "torch_uuid": check.torch_uuid, "reason": check.reason}))
    return workers.EXIT_PINNING_MISMATCH if check.mismatch else 0
