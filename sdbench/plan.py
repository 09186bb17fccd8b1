"""Plans: a benchmark matrix or a sweep written down as JSON, executed point by point, shard by shard.

A plan is the only thing that travels to workers (other GPUs, SLURM array tasks): prompts and
parameters live in the JSON file, never in a shell command line. Executing a shard appends one record
per finished point to that shard's results file (flushed after each point), so a crash loses at most
the point in flight, and a re-run with `resume` skips the points already there.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdbench.case import Case
from sdbench.errors import ConfigError, SdbenchError
from sdbench.records import ResultsWriter, read_records

PLAN_VERSION = 1


@dataclass(frozen=True)
class PlanPoint:
    """One measurement: a case (all its fields, clock and power settings included) and its repeat index."""

    point_id: str
    case: dict[str, Any]
    repeat: int = 0
    role: str = "point"  # point | default-clock (re-measured during a sweep to catch drift)

    def to_case(self) -> Case:
        fields = dict(self.case)
        fields["tags"] = tuple(fields.get("tags") or ())
        return Case(**fields)


@dataclass
class Plan:
    """An ordered list of points plus how to measure them."""

    points: list[PlanPoint]
    runner: dict[str, Any] = field(default_factory=dict)  # RunnerConfig fields
    device: str = "auto"
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = PLAN_VERSION

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def from_cases(cls, cases: Iterable[Case], *, repeats: int = 1, runner: dict[str, Any] | None = None,
                   device: str = "auto", meta: dict[str, Any] | None = None) -> Plan:
        """One point per case and repeat, ids derived from the case hash (stable across re-renders)."""
        points = []
        for case in cases:
            d = asdict(case)
            d["tags"] = list(case.tags)
            for r in range(repeats):
                points.append(PlanPoint(point_id=f"{case.case_hash}-r{r}", case=d, repeat=r))
        ids = [p.point_id for p in points]
        if len(set(ids)) != len(ids):
            raise ConfigError("plan", "duplicate cases", "each case once (use repeats for repetitions)")
        return cls(points=points, runner=dict(runner or {}), device=device, meta=dict(meta or {}))

    # --- persistence ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "device": self.device, "runner": self.runner, "meta": self.meta,
                "points": [asdict(p) for p in self.points]}

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SdbenchError(f"plan file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise SdbenchError(f"plan file {path} is not valid JSON: {exc}") from None
        if doc.get("version") != PLAN_VERSION:
            raise ConfigError("plan version", doc.get("version"), [PLAN_VERSION])
        points = [PlanPoint(**p) for p in doc["points"]]
        for p in points:
            p.to_case()  # validate every case up front: a bad plan fails before any GPU time is spent
        return cls(points=points, runner=doc.get("runner", {}), device=doc.get("device", "auto"), meta=doc.get("meta", {}))

    @property
    def plan_hash(self) -> str:
        blob = json.dumps([asdict(p) for p in self.points], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    # --- sharding ---------------------------------------------------------------------------------
    def shard(self, index: int, count: int) -> list[PlanPoint]:
        """Points of shard `index` of `count` (round-robin, so every shard gets a mix of cases)."""
        if count < 1:
            raise ConfigError("shard count", count, "a whole number >= 1")
        if not 0 <= index < count:
            raise ConfigError("shard index", index, f"0 to {count - 1}")
        return [p for i, p in enumerate(self.points) if i % count == index]


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0-based) -> (I, N)."""
    try:
        i_text, n_text = text.split("/")
        index, count = int(i_text), int(n_text)
    except ValueError:
        raise ConfigError("shard", text, "I/N with 0 <= I < N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError("shard", text, "I/N with 0 <= I < N, e.g. 0/4")
    return index, count


def shard_results_path(out_dir: str | os.PathLike[str], index: int, count: int) -> Path:
    return Path(out_dir) / f"results-shard{index:04d}-of-{count:04d}.jsonl"


def done_point_ids(paths: Iterable[str | os.PathLike[str]]) -> set[str]:
    """Point ids with a finished record in any of these results files."""
    done: set[str] = set()
    for path in paths:
        if Path(path).is_file():
            done.update(str(r["point_id"]) for r in read_records(path) if r.get("point_id") and r.get("point_status") == "ok")
    return done


PointHook = Callable[[PlanPoint, Case], contextlib.AbstractContextManager[Any]]


def execute(plan: Plan, points: list[PlanPoint], results_path: str | os.PathLike[str], *, resume: bool = True,
            bench: Any = None, point_context: PointHook | None = None,
            progress: Callable[[int, int, PlanPoint], None] | None = None) -> list[dict[str, Any]]:
    """Measure `points` in order, appending each record to `results_path` as soon as it is finished.

    `point_context(point, case)` wraps each measurement (the sweep uses it to lock and verify clocks);
    a failing point is recorded with point_status "error" and its message, and the rest go on.
    """
    from sdbench.bench import Bench
    from sdbench.runner import RunnerConfig

    writer = ResultsWriter(results_path)
    done = done_point_ids([results_path]) if resume else set()
    own_bench = bench is None
    if bench is None:
        from sdbench.case import resolve_device

        device = resolve_device(plan.device)
        # The plan's runner settings override the device's defaults (GPU or CPU), not replace them.
        cfg = RunnerConfig(**plan.runner) if device.startswith("cuda") else RunnerConfig.for_cpu(**plan.runner)
        bench = Bench(device=device, runner_config=cfg)
    out: list[dict[str, Any]] = []
    try:
        todo = [p for p in points if p.point_id not in done]
        for n, point in enumerate(todo):
            if progress is not None:
                progress(n, len(todo), point)
            case = point.to_case()
            if case.device != bench.device:
                case = case.with_(device=bench.device)
            ctx = point_context(point, case) if point_context else contextlib.nullcontext()
            started = _dt.datetime.now(_dt.timezone.utc).isoformat()
            try:
                with ctx as extra:
                    record = bench.measure(case)
                    if isinstance(extra, dict):
                        record.update(extra)
                record.update(point_status="ok")
            except (SdbenchError, RuntimeError) as exc:
                record = {**case.features(), "point_status": "error", "point_error": f"{type(exc).__name__}: {exc}"}
            record.update(point_id=point.point_id, repeat=point.repeat, point_role=point.role,
                          plan_hash=plan.plan_hash, started_utc=started,
                          worker_host=os.uname().nodename, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                          slurm_job_id=os.environ.get("SLURM_JOB_ID"), slurm_array_task_id=os.environ.get("SLURM_ARRAY_TASK_ID"))
            writer.append(record)
            out.append(record)
    finally:
        if own_bench:
            bench.close()
    return out


def merge_results(paths: Iterable[str | os.PathLike[str]], out_path: str | os.PathLike[str]) -> tuple[int, int]:
    """Merge shard results into one file: one record per point id (the last finished one wins).

    Returns (records written, duplicates dropped).
    """
    by_id: dict[str, dict[str, Any]] = {}
    dropped = 0
    for path in paths:
        for rec in read_records(path):
            pid = rec.get("point_id")
            if pid is None or rec.get("point_status") != "ok":
                continue
            if pid in by_id:
                dropped += 1
            by_id[pid] = rec
    tmp = Path(out_path).with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    writer = ResultsWriter(tmp)
    for rec in by_id.values():
        writer.append(rec)
    tmp.replace(out_path)
    return len(by_id), dropped


@contextlib.contextmanager
def no_settings(_point: PlanPoint, _case: Case) -> Iterator[None]:
    """The point context of plans that change no GPU settings."""
    yield


# --- command line ---------------------------------------------------------------------------------
def _matrix_cases(args: Any) -> list[Case]:
    from sdbench.case import resolve_device
    from sdbench.pytest_plugin import build_cases

    # A plan is often written on a login node without a GPU: "cuda"/"cuda:N" are taken at their word
    # (the worker that runs the plan checks its device); only "auto" looks at this machine.
    device = "cuda:0" if args.device == "cuda" else args.device
    if not re.fullmatch(r"cpu|simulated|cuda:\d+", device):
        device = resolve_device(args.device)
    matrix: dict[str, list[Any]] = {"models": ["tiny-sd" if not device.startswith("cuda") else "sdxl"],
                                    "schedulers": ["default"], "resolutions": ["default"], "batch_sizes": [1],
                                    "steps": ["default"], "dtypes": ["default"], "profiles": ["eager"],
                                    "weights": ["auto"], "prompts": [None], "attention": ["sdpa"],
                                    "sm_clocks_mhz": [None], "knobs": [""]}
    for axis in ("models", "schedulers", "resolutions", "batch_sizes", "steps", "dtypes", "profiles", "weights"):
        value = getattr(args, axis)
        if value:
            matrix[axis] = [v.strip() for v in value.split(",") if v.strip()]
    if args.prompt:
        matrix["prompts"] = [args.prompt]
    return build_cases(matrix, device)


def cmd_plan_make(args: Any) -> int:
    cases = _matrix_cases(args)
    runner: dict[str, Any] = {}
    for attr, key in (("min_rounds", "min_rounds"), ("max_rounds", "max_rounds"), ("max_time", "max_time_s"),
                      ("idle_seconds", "idle_s")):
        value = getattr(args, attr)
        if value is not None:
            runner[key] = value
    plan = Plan.from_cases(cases, repeats=args.repeats, device=args.device, runner=runner,
                           meta={"created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(), "kind": "matrix"})
    path = plan.save(args.output)
    print(f"plan: {len(plan.points)} points ({len(cases)} cases x {args.repeats} repeats) -> {path}")
    return 0


def cmd_plan_merge(args: Any) -> int:
    paths = sorted(Path(args.results_dir).glob("results-shard*.jsonl"))
    if not paths:
        raise SdbenchError(f"no shard results (results-shard*.jsonl) in {args.results_dir}")
    n, dropped = merge_results(paths, args.output)
    print(f"merged {len(paths)} shard file(s): {n} point(s), {dropped} duplicate(s) dropped -> {args.output}")
    return 0


def build_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="write, run (one shard) and merge JSON plans of benchmark points")
    psub = p.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    make = psub.add_parser("make", help="write a plan from a case matrix")
    for axis in ("models", "schedulers", "resolutions", "batch-sizes", "steps", "dtypes", "profiles", "weights"):
        make.add_argument(f"--{axis}", dest=axis.replace("-", "_"), default=None, help=f"comma-separated {axis}")
    make.add_argument("--prompt", default=None)
    make.add_argument("--repeats", type=int, default=1, help="repetitions of every case")
    make.add_argument("--device", default="auto")
    make.add_argument("--min-rounds", type=int, default=None, help="fewest measured rounds per point")
    make.add_argument("--max-rounds", type=int, default=None, help="most measured rounds per point")
    make.add_argument("--max-time", type=float, default=None, help="time cap for one point's rounds, s")
    make.add_argument("--idle-seconds", type=float, default=None, help="idle-power baseline per point, s")
    make.add_argument("-o", "--output", required=True, help="plan file to write")
    make.set_defaults(func=cmd_plan_make)
    from sdbench.workers import add_shard_command

    add_shard_command(psub, "run", "measure one shard of a plan, appending records as points finish")
    merge = psub.add_parser("merge", help="merge shard results into one file (one record per point)")
    merge.add_argument("results_dir")
    merge.add_argument("-o", "--output", required=True)
    merge.set_defaults(func=cmd_plan_merge)
