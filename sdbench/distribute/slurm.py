"""SLURM job arrays from a plan: render an sbatch script, submit it, watch it, collect and resubmit.

    sdbench slurm render PLAN -o study.sbatch --preset h100 --partition gpu --array-size 8
    sdbench slurm submit study.sbatch
    sdbench slurm status RESULTS_DIR
    sdbench slurm collect RESULTS_DIR [--resubmit]

Each array task measures one shard of the plan (`sdbench workers shard PLAN --shard $TASK/N`), so
its records go to its own `results-shardIIII-of-NNNN.jsonl`, appended and flushed per point:
nothing depends on a shared database, and a resubmitted task resumes where its predecessor died.
A task owning several GPUs (`--gres gpu:G`) runs one pinned worker per GPU over G shards.

No user string is ever interpolated into shell. The rendered script contains only values that
passed a strict check (identifiers, SLURM time and memory formats, integers) and paths quoted with
`shlex.quote`; prompts and every case parameter stay in the JSON plan file. `#SBATCH` lines are
not shell, but sbatch splits them on blanks and expands `%` patterns, so paths that appear there
(the results directory) must be plain.

Status never trusts a job state alone (a task can report COMPLETED and have written nothing, e.g.
under proctrack/cgroup without a freezer): a shard is done when every one of its points has a
finished record. Per-task state and exit codes come from `scontrol -o show job`, which needs no
accounting database (sacct does).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sdbench import settings
from sdbench.errors import ConfigError, SdbenchError

HEADER_TAG = "# sdbench-slurm: "
STATE_NAME = "slurm-jobs.json"
LOG_DIR_NAME = "slurm-logs"
MERGED_NAME = "results.jsonl"
DEFAULT_MAX_ARRAY_SIZE = 8

#: Per-node resources for common GPU nodes. Partition, account and QOS names are site-specific,
#: so presets never set them.
PRESETS: dict[str, dict[str, Any]] = {
    "a100": {"gres": "gpu:1", "cpus_per_task": 8, "mem": "64G", "time": "04:00:00"},
    "h100": {"gres": "gpu:1", "cpus_per_task": 16, "mem": "128G", "time": "04:00:00"},
    "v100": {"gres": "gpu:1", "cpus_per_task": 6, "mem": "48G", "time": "06:00:00"},
}

# What each value written into a job script may look like is its row of the settings table (sdbench.settings,
# scope ``slurm``): a pattern and its words.
# Paths on #SBATCH lines: sbatch splits on blanks and expands %-patterns, so only plain characters.
_SBATCH_PATH = re.compile(r"/[A-Za-z0-9_./+,=@:-]*")

_PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING_STATES = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}


def check_value(kind: str, value: str) -> str:
    """`value` if it is a valid `kind` (its row of the settings table, scope ``slurm``), else a ConfigError naming both."""
    row = settings.get(f"slurm.{kind}")
    try:
        return str(row.check(value, kind.replace("_", "-")))
    except ConfigError as exc:
        raise ConfigError(exc.field, value, exc.allowed, reason="only checked values are written into the job script") from None


def _sbatch_path(what: str, path: str | os.PathLike[str]) -> str:
    text = str(Path(path).expanduser().absolute())
    if not _SBATCH_PATH.fullmatch(text):
        raise ConfigError(what, text, "an absolute path of letters, digits and _ . / + , = @ : -",
                          reason="it appears on #SBATCH lines, which sbatch splits on blanks and %-expands")
    return text


def _positive(what: str, value: int | None) -> int | None:
    """`value` (None: unset) if it is a whole number >= 1 (the settings table's row for `what`)."""
    return settings.check(f"slurm.{what.replace('-', '_')}", value, what)  # type: ignore[no-any-return]


# --- rendering ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlurmOptions:
    """What the job script asks SLURM for and how it sets up Python. None: not set (SLURM's default)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    gres: str | None = None
    gpus_per_node: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    job_name: str | None = None
    array_size: int | None = None  # array tasks; default min(points, 8)
    max_parallel: int | None = None  # at most this many tasks at once (%K)
    venv: str | None = None
    conda: str | None = None
    modules: tuple[str, ...] = ()
    python: str | None = None  # interpreter to run (default: the venv's, else python after conda, else python3)
    results_dir: str | None = None  # default: <plan without .json>-results next to the plan
    preset: str | None = None

    def with_preset(self) -> SlurmOptions:
        """Preset values for every field the caller left unset (a GPU request only if none was given)."""
        if self.preset is None:
            return self
        if self.preset not in PRESETS:
            raise ConfigError("preset", self.preset, sorted(PRESETS))
        values = dict(PRESETS[self.preset])
        if self.gpus_per_node is not None or self.gres is not None:
            values.pop("gres")
        return replace(self, **{k: v for k, v in values.items() if getattr(self, k) is None})

    @property
    def gpus_per_task(self) -> int:
        """GPUs each array task gets (and workers it runs): from --gres gpu:N or --gpus-per-node N; else 1."""
        if self.gres:
            counts = [int(item.rsplit(":", 1)[1]) for item in self.gres.split(",") if item.split(":", 1)[0] == "gpu"]
            return max(1, sum(counts))
        if self.gpus_per_node:
            return max(1, int(self.gpus_per_node.rsplit(":", 1)[-1]))
        return 1


def validate(opts: SlurmOptions) -> SlurmOptions:
    """Apply the preset and check every value that will be written into the script."""
    opts = opts.with_preset()
    for kind in ("partition", "account", "qos", "job_name", "time", "gres", "gpus_per_node", "mem"):
        value = getattr(opts, kind)
        if value is not None:
            check_value(kind, value)
    if opts.gres and opts.gpus_per_node:
        raise ConfigError("gres", opts.gres, "either --gres or --gpus-per-node, not both")
    if opts.gres and any(int(item.rsplit(":", 1)[1]) < 1 for item in opts.gres.split(",")):
        raise ConfigError("gres", opts.gres, "counts >= 1")
    for module in opts.modules:
        check_value("module", module)
    if opts.venv and opts.conda:
        raise ConfigError("venv", opts.venv, "either --venv or --conda, not both")
    if opts.conda and not opts.conda.startswith("/"):
        check_value("conda", opts.conda)
    _positive("cpus-per-task", opts.cpus_per_task)
    _positive("array-size", opts.array_size)
    _positive("max-parallel", opts.max_parallel)
    return opts


def default_results_dir(plan_path: str | os.PathLike[str]) -> Path:
    plan = Path(plan_path).absolute()
    return plan.with_name(plan.stem + "-results")


def render_script(plan_path: str | os.PathLike[str], options: SlurmOptions | None = None) -> str:
    """The sbatch job-array script for `plan_path` (see the module docstring for the guarantees)."""
    from sdbench import __version__
    from sdbench.distribute.plan import Plan
    from sdbench.distribute.workers import check_no_gpu_settings

    opts = validate(options or SlurmOptions())
    plan_file = Path(plan_path).expanduser().absolute()
    plan = Plan.load(plan_file)
    check_no_gpu_settings(plan)  # fail at render time, not in every array task
    n_points = len(plan.points)
    if n_points == 0:
        raise ConfigError("plan", str(plan_file), "a plan with at least one point")
    gpus = opts.gpus_per_task
    array_size = opts.array_size or min(n_points, DEFAULT_MAX_ARRAY_SIZE)
    shards = array_size * gpus
    results = _sbatch_path("results-dir", opts.results_dir or default_results_dir(plan_file))
    logs = f"{results}/{LOG_DIR_NAME}"
    job_name = opts.job_name or f"sdbench-{plan.plan_hash}"
    array = f"0-{array_size - 1}" + (f"%{opts.max_parallel}" if opts.max_parallel else "")
    info = {"version": 1, "plan": str(plan_file), "plan_hash": plan.plan_hash, "points": n_points,
            "results_dir": results, "array_size": array_size, "gpus_per_task": gpus, "shards": shards,
            "max_parallel": opts.max_parallel}

    sbatch = [f"--job-name={job_name}", f"--array={array}", f"--output={logs}/%A_%a.out", f"--error={logs}/%A_%a.err",
              "--nodes=1", "--ntasks=1"]
    for flag, value in (("partition", opts.partition), ("account", opts.account), ("qos", opts.qos),
                        ("time", opts.time), ("gres", opts.gres), ("gpus-per-node", opts.gpus_per_node),
                        ("cpus-per-task", opts.cpus_per_task), ("mem", opts.mem)):
        if value is not None:
            sbatch.append(f"--{flag}={value}")

    q = shlex.quote
    lines = ["#!/bin/bash" + (" -l" if opts.modules else ""),  # a login shell defines `module` on most sites
             HEADER_TAG + json.dumps(info, sort_keys=True)]
    lines += [f"#SBATCH {s}" for s in sbatch]
    lines += [
        "#",
        f"# Written by sdbench {__version__} (`sdbench slurm render`) from a plan of {n_points} point(s), hash {plan.plan_hash}.",
        f"# Each of the {array_size} array task(s) measures {'one shard' if gpus == 1 else f'{gpus} shards (one per GPU)'}"
        f" of {shards} and appends its records to",
        "# results-shardIIII-of-NNNN.jsonl in the results directory. Prompts and parameters stay in the plan",
        "# file: below are only checked names and numbers and shell-quoted paths.",
        "#   submit: sdbench slurm submit THIS_SCRIPT     status: sdbench slurm status RESULTS_DIR",
        "#   merge:  sdbench slurm collect RESULTS_DIR    (--resubmit reruns only failed or missing shards)",
        "set -eo pipefail",
        ': "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}"',
    ]
    for module in opts.modules:
        lines.append(f"module load {module}")
    if opts.conda:
        # conda's activation scripts are not `set -u` clean, hence -u only after them.
        lines.append('source "$(conda info --base)/etc/profile.d/conda.sh"')
        lines.append(f"conda activate {q(opts.conda)}")
    lines.append("set -u")
    lines.append("export PYTHONUNBUFFERED=1")
    lines.append('export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"')
    if opts.python:
        python = q(opts.python)
    elif opts.venv:
        python = q(str(Path(opts.venv).expanduser().absolute() / "bin" / "python"))
    elif opts.conda:
        python = "python"
    else:
        python = "python3"
    plan_arg, results_arg = q(str(plan_file)), q(results)
    if gpus == 1:
        lines.append(f'exec {python} -m sdbench workers shard {plan_arg} --shard "${{SLURM_ARRAY_TASK_ID}}/{shards}" '
                     f"--output-dir {results_arg}")
    else:
        lines.append(f"exec {python} -m sdbench workers run {plan_arg} --output-dir {results_arg} --gpus all "
                     f'--shard-base "$((SLURM_ARRAY_TASK_ID * {gpus}))" --shard-count {shards} --no-merge')
    return "\n".join(lines) + "\n"


def write_script(plan_path: str | os.PathLike[str], output: str | os.PathLike[str],
                 options: SlurmOptions | None = None) -> Path:
    """Render and write the job script (atomically, executable)."""
    text = render_script(plan_path, options)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o755)
    tmp.replace(out)
    return out


def read_script_info(script: str | os.PathLike[str]) -> dict[str, Any]:
    """The study description `render_script` embedded in the script's header."""
    try:
        text = Path(script).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SdbenchError(f"job script not found: {script}") from None
    for line in text.splitlines()[:5]:
        if line.startswith(HEADER_TAG):
            info: dict[str, Any] = json.loads(line[len(HEADER_TAG):])
            info["script"] = str(Path(script).absolute())
            return info
    raise SdbenchError(f"{script} was not written by `sdbench slurm render` (no '{HEADER_TAG.strip()}' header)")


# --- running SLURM's commands --------------------------------------------------------------------------
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client command (argv, no shell). The timeout covers a dead munged (~10 s hangs)."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise SdbenchError(f"{argv[0]} not found: is this a SLURM login node (or is SLURM's bin on PATH)?") from None
    except subprocess.TimeoutExpired:
        raise SdbenchError(f"{argv[0]} did not answer within 60 s (is munged running?)") from None


# --- the state file: what was submitted -------------------------------------------------------------
def state_path(results_dir: str | os.PathLike[str]) -> Path:
    return Path(results_dir) / STATE_NAME


def load_state(results_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = state_path(results_dir)
    if not path.is_file():
        raise SdbenchError(f"no submissions recorded in {results_dir} ({STATE_NAME} is missing): "
                           "submit with `sdbench slurm submit SCRIPT` first")
    state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return state


def _save_state(results_dir: str | os.PathLike[str], state: dict[str, Any]) -> None:
    path = state_path(results_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


@dataclass(frozen=True)
class Submission:
    job_id: str
    array: str
    script: str
    results_dir: str


def submit(script: str | os.PathLike[str], *, array: str | None = None, run: Runner = _run) -> Submission:
    """`sbatch --parsable [--array=...] SCRIPT`; records the job id in RESULTS_DIR/slurm-jobs.json.

    Refuses if the plan changed since the script was rendered: shard i of N must mean the same points
    for every task of a study, resubmissions included.
    """
    from sdbench.distribute.plan import Plan

    info = read_script_info(script)
    plan = Plan.load(info["plan"])
    if plan.plan_hash != info["plan_hash"]:
        raise SdbenchError(f"the plan {info['plan']} changed since {script} was rendered "
                           f"(hash {plan.plan_hash}, script says {info['plan_hash']}): render the script again")
    results = Path(info["results_dir"])
    # sbatch does not create the directories of --output/--error; a task without them fails silently.
    (results / LOG_DIR_NAME).mkdir(parents=True, exist_ok=True)
    argv = ["sbatch", "--parsable"]
    if array is not None:
        check_value("array", array)
        if info.get("max_parallel") and "%" not in array:
            array += f"%{info['max_parallel']}"
        argv.append(f"--array={array}")
    argv.append(info["script"])
    cp = run(argv)
    job_id = cp.stdout.strip().split(";", 1)[0]
    if cp.returncode != 0 or not job_id.isdigit():
        raise SdbenchError(f"sbatch failed (exit {cp.returncode}): {(cp.stderr or cp.stdout).strip()}")
    try:
        state = load_state(results)
    except SdbenchError:
        state = {"version": 1, "submissions": []}
    state.update({k: info[k] for k in ("script", "plan", "plan_hash", "points", "results_dir", "array_size",
                                       "gpus_per_task", "shards", "max_parallel")})
    spec = array or f"0-{info['array_size'] - 1}"
    state["submissions"].append({"job_id": job_id, "array": spec,
                                 "submitted_utc": _dt.datetime.now(_dt.timezone.utc).isoformat()})
    _save_state(results, state)
    return Submission(job_id=job_id, array=spec, script=info["script"], results_dir=str(results))


# --- status ---------------------------------------------------------------------------------------------
def expand_array(spec: str) -> list[int]:
    """'0-3,7%2' -> [0, 1, 2, 3, 7] (the %-throttle is not a task id)."""
    ids: list[int] = []
    for part in spec.split("%", 1)[0].split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids


def compress_array(ids: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(set(ids)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


@dataclass(frozen=True)
class TaskState:
    """One array task as `scontrol -o show job` reports it."""

    job_id: str  # the array job's id
    task: int
    state: str  # COMPLETED, FAILED, CANCELLED, RUNNING, PENDING, ...
    exit_code: str  # "rc:signal"


_FIELD = re.compile(r"(?:^|\s)(JobId|ArrayJobId|ArrayTaskId|JobState|ExitCode)=(\S*)")


def parse_scontrol_jobs(text: str) -> list[TaskState]:
    """Per-task states from `scontrol -o show job ID` (one line per job; pending tasks may share a line)."""
    tasks: list[TaskState] = []
    for line in text.splitlines():
        fields = dict(_FIELD.findall(line))
        if "ArrayTaskId" not in fields or "JobState" not in fields:
            continue
        array_job = fields.get("ArrayJobId") or fields.get("JobId", "")
        for task in expand_array(fields["ArrayTaskId"]):
            tasks.append(TaskState(job_id=array_job, task=task, state=fields["JobState"],
                                   exit_code=fields.get("ExitCode", "")))
    return tasks


def query_tasks(job_id: str, run: Runner = _run) -> list[TaskState] | None:
    """The tasks of array job `job_id`, or None when slurmctld no longer knows it (past MinJobAge)."""
    cp = run(["scontrol", "-o", "show", "job", str(job_id)])
    if cp.returncode != 0:
        if "Invalid job id" in (cp.stderr + cp.stdout):
            return None
        raise SdbenchError(f"scontrol show job {job_id} failed (exit {cp.returncode}): {cp.stderr.strip()}")
    return parse_scontrol_jobs(cp.stdout)


@dataclass
class ShardState:
    """One shard of a SLURM study: its points by outcome and its latest task's state."""

    shard: int
    task: int
    status: str  # done | running | pending | failed | missing
    points_total: int
    points_done: int
    points_failed: int
    points_missing: int
    job_id: str | None = None
    slurm_state: str | None = None
    exit_code: str | None = None
    detail: str = ""


@dataclass
class StudyStatus:
    results_dir: str
    plan: str
    shards: list[ShardState] = field(default_factory=list)

    @property
    def points_total(self) -> int:
        return sum(s.points_total for s in self.shards)

    @property
    def points_done(self) -> int:
        return sum(s.points_done for s in self.shards)

    @property
    def complete(self) -> bool:
        return all(s.status == "done" for s in self.shards)

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("done", "running", "pending", "failed", "missing")}
        for s in self.shards:
            out[s.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"results_dir": self.results_dir, "plan": self.plan, "points_total": self.points_total,
                "points_done": self.points_done, "complete": self.complete, "counts": self.counts(),
                "shards": [asdict(s) for s in self.shards]}


def study_status(results_dir: str | os.PathLike[str], *, run: Runner = _run) -> StudyStatus:
    """Done/running/pending/failed/missing per shard, from the results files and `scontrol`."""
    from sdbench.distribute.plan import Plan
    from sdbench.distribute.workers import shard_status

    state = load_state(results_dir)
    plan = Plan.load(state["plan"])
    shards, gpus = int(state["shards"]), int(state["gpus_per_task"])
    latest: dict[int, TaskState | None] = {}
    for sub in state["submissions"]:
        tasks = query_tasks(sub["job_id"], run=run)
        by_task = {t.task: t for t in tasks or []}
        for task in expand_array(sub["array"]):
            # The latest submission of a task decides; None: slurmctld has forgotten it.
            latest[task] = by_task.get(task)
    out = StudyStatus(results_dir=str(results_dir), plan=state["plan"])
    for index in range(shards):
        task = index // gpus
        pts = shard_status(plan, index, shards, results_dir)
        ts = latest.get(task)
        st = ShardState(shard=index, task=task, status="missing", points_total=pts.points_total,
                        points_done=pts.points_done, points_failed=pts.points_failed, points_missing=pts.points_missing,
                        job_id=None if ts is None else f"{ts.job_id}_{ts.task}",
                        slurm_state=None if ts is None else ts.state, exit_code=None if ts is None else ts.exit_code)
        unfinished = pts.points_total - pts.points_done
        if unfinished == 0:
            st.status = "done"
        elif ts is not None and ts.state in _PENDING_STATES:
            st.status = "pending"
        elif ts is not None and ts.state in _RUNNING_STATES:
            st.status = "running"
        elif ts is not None:
            st.status = "failed"
            st.detail = (f"task {ts.state} (exit {ts.exit_code}) but {unfinished} point(s) have no finished record"
                         if ts.state == "COMPLETED" else f"task {ts.state}, exit {ts.exit_code}")
        else:
            st.detail = ("never submitted" if task not in latest
                         else "slurmctld no longer knows the task (past MinJobAge)") + f"; {unfinished} point(s) unfinished"
        out.shards.append(st)
    return out


def format_status(status: StudyStatus) -> list[str]:
    rows = [("shard", "task", "job", "slurm", "exit", "done", "failed", "missing", "status")]
    for s in status.shards:
        rows.append((str(s.shard), str(s.task), s.job_id or "-", s.slurm_state or "-", s.exit_code or "-",
                     str(s.points_done), str(s.points_failed), str(s.points_missing), s.status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"study {status.plan}: results in {status.results_dir}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines += [f"  shard {s.shard}: {s.detail}" for s in status.shards if s.detail]
    counts = ", ".join(f"{v} {k}" for k, v in status.counts().items() if v)
    lines.append(f"{status.points_done}/{status.points_total} point(s) done; shards: {counts}")
    return lines


# --- collect ---------------------------------------------------------------------------------------------
@dataclass
class CollectReport:
    status: StudyStatus
    merged_path: Path | None
    points_merged: int
    duplicates_dropped: int
    resubmitted: Submission | None = None


def collect(results_dir: str | os.PathLike[str], *, resubmit: bool = False, run: Runner = _run) -> CollectReport:
    """Merge every shard file into RESULTS_DIR/results.jsonl; with `resubmit`, rerun failed or missing shards.

    Only the array tasks owning failed or missing shards are resubmitted (`--array=i,j`), never those
    still pending or running; they resume from their shard files, so nothing is measured twice.
    """
    from sdbench.distribute.plan import merge_results
    from sdbench.distribute.workers import shard_files

    status = study_status(results_dir, run=run)
    files = shard_files(results_dir)
    merged: Path | None = None
    n = dropped = 0
    if files:
        merged = Path(results_dir) / MERGED_NAME
        n, dropped = merge_results(files, merged)
    report = CollectReport(status=status, merged_path=merged, points_merged=n, duplicates_dropped=dropped)
    if resubmit:
        tasks = sorted({s.task for s in status.shards if s.status in ("failed", "missing")})
        if tasks:
            state = load_state(results_dir)
            report.resubmitted = submit(state["script"], array=compress_array(tasks), run=run)
    return report
