"""`sdbench slurm render|submit|status|collect`: a plan as a SLURM job array."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add `sdbench slurm` and its actions to the CLI's subparsers."""
    # sdbench.distribute.slurm is a light module (no torch, no numpy): its presets are read from it directly.
    from sdbench.distribute.slurm import DEFAULT_MAX_ARRAY_SIZE, PRESETS

    p = sub.add_parser("slurm", help="run a plan as a SLURM job array: render, submit, status, collect")
    ssub = p.add_subparsers(dest="slurm_command", metavar="ACTION", required=True)
    r = ssub.add_parser("render", help="write an sbatch job-array script from a plan (one shard per task)")
    r.add_argument("plan")
    r.add_argument("-o", "--output", required=True, help="script to write")
    r.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="GPU node resources (gres, cpus, mem, time); explicit flags win")
    r.add_argument("--partition", default=None)
    r.add_argument("--account", default=None)
    r.add_argument("--qos", default=None)
    r.add_argument("--time", default=None, help="time limit per task, e.g. 04:00:00")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--gres", default=None, help="e.g. gpu:1 (one shard per GPU: gpu:G runs G pinned workers)")
    g.add_argument("--gpus-per-node", default=None, help="e.g. 4 or h100:4 (instead of --gres)")
    r.add_argument("--cpus-per-task", type=int, default=None)
    r.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    r.add_argument("--job-name", default=None, help="default: sdbench-<plan hash>")
    r.add_argument("--array-size", type=int, default=None,
                   help=f"array tasks (default: min(points, {DEFAULT_MAX_ARRAY_SIZE}))")
    r.add_argument("--max-parallel", type=int, default=None, help="at most this many tasks at once")
    e = r.add_mutually_exclusive_group()
    e.add_argument("--venv", default=None, help="virtual environment whose python runs the tasks")
    e.add_argument("--conda", default=None, help="conda environment to activate (name or prefix)")
    r.add_argument("--module", action="append", default=[], help="`module load` this first (repeatable)")
    r.add_argument("--python", default=None, help="interpreter to run (default: the venv's, else python3)")
    r.add_argument("--results-dir", default=None, help="where tasks write results (default: PLAN-results)")
    s = ssub.add_parser("submit", help="sbatch the script; records the job id next to the results")
    s.add_argument("script")
    s.add_argument("--array", default=None, help="only these task ids, e.g. 1,3")
    s.add_argument("--parsable", action="store_true", help="print only the job id")
    st = ssub.add_parser("status", help="done/running/pending/failed/missing shards and points")
    st.add_argument("results_dir")
    st.add_argument("--json", action="store_true")
    c = ssub.add_parser("collect", help="merge shard results into results.jsonl; --resubmit reruns failed/missing shards")
    c.add_argument("results_dir")
    c.add_argument("--resubmit", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action: 1 when `collect` finds the study incomplete."""
    action = {"render": render, "submit": submit, "status": status, "collect": collect}[args.slurm_command]
    return int(action(args))


def render(args: argparse.Namespace) -> int:
    """`sdbench slurm render`: the plan as an sbatch job-array script; says what it holds and how to submit it."""
    from sdbench.distribute import slurm

    opts = slurm.SlurmOptions(partition=args.partition, account=args.account, qos=args.qos, time=args.time,
                              gres=args.gres, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                              mem=args.mem, job_name=args.job_name, array_size=args.array_size,
                              max_parallel=args.max_parallel, venv=args.venv, conda=args.conda,
                              modules=tuple(args.module), python=args.python, results_dir=args.results_dir,
                              preset=args.preset)
    path = slurm.write_script(args.plan, args.output, opts)
    info = slurm.read_script_info(path)
    print(f"wrote {path}: {info['array_size']} array task(s) x {info['gpus_per_task']} GPU(s), {info['shards']} shard(s) "
          f"of {info['points']} point(s); results in {info['results_dir']}")
    print(f"submit with: sdbench slurm submit {path}")
    return 0


def submit(args: argparse.Namespace) -> int:
    """`sdbench slurm submit`: sbatch the script; prints the job id (alone with --parsable)."""
    from sdbench.distribute import slurm

    sub = slurm.submit(args.script, array=args.array)
    if args.parsable:
        print(sub.job_id)
    else:
        print(f"submitted job {sub.job_id} (array {sub.array}); state in {slurm.state_path(sub.results_dir)}")
        print(f"watch with: sdbench slurm status {sub.results_dir}")
    return 0


def status(args: argparse.Namespace) -> int:
    """`sdbench slurm status`: the shards' and points' states (as JSON with --json)."""
    import json

    from sdbench.distribute import slurm

    study = slurm.study_status(args.results_dir)
    if args.json:
        print(json.dumps(study.to_json(), indent=1))
    else:
        print("\n".join(slurm.format_status(study)))
    return 0


def collect(args: argparse.Namespace) -> int:
    """`sdbench slurm collect`: merge the shard results (and --resubmit what failed); 1 while incomplete."""
    from sdbench.distribute import slurm

    report = slurm.collect(args.results_dir, resubmit=args.resubmit)
    print("\n".join(slurm.format_status(report.status)))
    if report.merged_path is not None:
        print(f"merged {report.points_merged} point(s) ({report.duplicates_dropped} duplicate(s) dropped) -> {report.merged_path}")
    if report.resubmitted is not None:
        print(f"resubmitted array task(s) {report.resubmitted.array} as job {report.resubmitted.job_id}")
    elif not report.status.complete and not args.resubmit:
        print(f"incomplete: `sdbench slurm collect {args.results_dir} --resubmit` reruns the failed or missing shards")
    return 0 if report.status.complete else 1
