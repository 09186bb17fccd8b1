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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdbench import settings
from sdbench.case import Case
from sdbench.errors import ConfigError, SdbenchError
from sdbench.record.io import ResultsWriter, read_jsonl, repair_torn_lines, write_json, write_lines
from sdbench.record.schema import CASE_RECORD, energy_method

if TYPE_CHECKING:
    from sdbench.session import Bench

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
        """Write the plan file atomically (sdbench.record.io's one writer): a crash or a full disk leaves the
        old plan whole, never half of it."""
        return write_json(path, self.to_json(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read a plan file and check it whole (:meth:`validate`): a bad plan fails here, before any pipeline is
        built or GPU touched, with one error naming the key or field (and its close match when misspelt)."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SdbenchError(f"plan file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise SdbenchError(f"plan file {path} is not valid JSON: {exc}") from None
        check_document(doc, path)
        points = [PlanPoint(**p) for p in doc["points"]]
        plan = cls(points=points, runner=doc.get("runner", {}), device=doc.get("device", "auto"), meta=doc.get("meta", {}))
        plan.validate()
        return plan

    def validate(self) -> None:
        """Every check that needs no device, through the settings table: the runner settings (each in its
        range, and together), every point's case, and the capability rules of the card each case names
        (a simulated card's figures; CPU-only limits; offload with CUDA graphs). A CUDA device's own
        figures are read on the machine that runs the plan, which checks again before building."""
        check_device_text(self.device)
        check_runner_settings(self.runner, self.device)
        check_cases_offline(p.to_case() for p in self.points)

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


#: The keys of a plan file, of each of its points and of a point's case (the Case fields: the settings table's
#: ``case`` rows; tests/unit/test_settings.py checks they are the Case's fields).
PLAN_KEYS: tuple[str, ...] = ("version", "device", "runner", "meta", "points")
POINT_KEYS: tuple[str, ...] = ("point_id", "case", "repeat", "role")
CASE_KEYS: tuple[str, ...] = tuple(s.name for s in settings.in_scope("case"))
RUNNER_KEYS: tuple[str, ...] = tuple(s.name for s in settings.in_scope("runner"))


def check_document(doc: Any, path: str | os.PathLike[str] = "plan") -> None:
    """The shape of a plan file: its version, and no key anywhere that sdbench does not know (a misspelt key
    names its close match: ``invalid plan key: 'schedular' (points[0].case; did you mean 'scheduler'?)``)."""
    if not isinstance(doc, dict):
        raise ConfigError("plan", str(path), reason="not a JSON object with version, device, runner, meta and points")
    if doc.get("version") != PLAN_VERSION:
        raise ConfigError("plan version", doc.get("version"), [PLAN_VERSION])
    settings.check_keys("plan key", doc, PLAN_KEYS)
    if not isinstance(doc.get("points"), list):
        raise ConfigError("plan", str(path), reason="it has no list of points")
    runner = doc.get("runner", {})
    if not isinstance(runner, dict):
        raise ConfigError("plan runner", runner, "an object of RunnerConfig fields")
    settings.check_keys("plan key", runner, RUNNER_KEYS, where="runner")
    for i, point in enumerate(doc["points"]):
        if not isinstance(point, dict) or not isinstance(point.get("case"), dict) or "point_id" not in point:
            raise ConfigError("plan point", i, reason="each point is an object with point_id and case")
        settings.check_keys("plan key", point, POINT_KEYS, where=f"points[{i}]")
        settings.check_keys("plan key", point["case"], CASE_KEYS, where=f"points[{i}].case")


_DEVICE_TEXT = re.compile(r"auto|cpu|cuda(:\d+)?|simulated(:.*)?")


def check_device_text(device: Any) -> None:
    """A plan's device as written (resolved on the machine that runs it): auto, cpu, cuda[:N] or simulated[...]."""
    if not isinstance(device, str) or not _DEVICE_TEXT.fullmatch(device):
        raise ConfigError("plan device", device, settings.DEVICES_HELP)
    if device.startswith("simulated"):
        from sdbench.gpu.simulated import parse_simulated_device

        parse_simulated_device(device)


def check_runner_settings(runner: dict[str, Any], device: str = "auto") -> None:
    """The plan's runner settings, each in its range and the round limits together, over the defaults they will
    meet: a GPU's for cuda, the CPU's for the CPU and the simulated GPU (as `execute` builds the RunnerConfig).
    With `auto` the machine that runs the plan decides, so only the settings given are checked. ConfigError
    names the field."""
    from sdbench.runner import RunnerConfig

    settings.check_runner(dict(runner))
    if device.startswith("cuda"):
        RunnerConfig(**runner)
    elif device != "auto":
        RunnerConfig.for_cpu(**runner)


def offline_capability(device: str) -> Any:
    """What is known of `device` without touching it: the CPU, a simulated card's published figures, or a
    CUDA device with unknown figures (its rules that need them are checked where it runs)."""
    from sdbench.pipelines.capability import CPU, DeviceCapability, device_capability

    if device.startswith("cuda"):
        return DeviceCapability(device, f"{device} (its figures are read where the plan runs)", None, None, False,
                                "cuda", "plan")
    return CPU if device == "cpu" else device_capability(device)


def check_cases_offline(cases: Iterable[Case]) -> None:
    """The capability rules (sdbench.pipelines.capability.check_case) of every case against its device as known without
    it: bf16 or fp8 on a card without them, flash attention or offload on the CPU, offload with CUDA graphs,
    memory that certainly does not fit a simulated card (WillNotFit, exit 4)."""
    from sdbench.pipelines.capability import check_case

    seen: set[str] = set()
    for case in cases:
        # The rules read neither seed, prompt nor clock settings: one check per distinct remainder.
        key = json.dumps({k: v for k, v in asdict(case).items()
                          if k not in ("seed", "prompt", "negative_prompt", "tags", "sm_clock_mhz", "mem_clock_mhz",
                                       "power_limit_w")}, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        check_case(case, offline_capability(case.device))


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


def done_point_ids(paths: Iterable[str | os.PathLike[str]], notify: Callable[[str], None] | None = None) -> set[str]:
    """Point ids with a finished record in any of these results files (torn lines skipped, each told to
    ``notify``: the point it held is not done)."""
    done: set[str] = set()
    for path in paths:
        read = read_jsonl(path)
        if notify is not None:
            for line in read.warnings:
                notify(line)
        done.update(str(r["point_id"]) for r in read.rows if r.get("point_id") and r.get("point_status") == "ok")
    return done


def _finished_energy_methods(path: Path) -> dict[str, int]:
    """How the finished records of a results file measured energy: method -> how many records."""
    methods: dict[str, int] = {}
    for r in read_jsonl(path).rows:
        method = energy_method(r)
        if r.get("point_status") == "ok" and method is not None:
            methods[method] = methods.get(method, 0) + 1
    return methods


def _check_same_energy_method(record: dict[str, Any], methods: dict[str, int], results_path: Path) -> None:
    """Refuse to add a record whose energy was measured another way than the file's finished records: one
    results file (a sweep, a plan's shard) must hold one quantity, or its points cannot be compared."""
    method = energy_method(record)
    if method is None or not methods or method in methods:
        return
    theirs = ", ".join(f"{m} ({n} point{'s' if n != 1 else ''})" for m, n in methods.items())
    raise ConfigError("resume", str(results_path),
                      reason=f"its finished points measured energy with {theirs}; this run measures {method}, and one "
                             "results file must hold one kind of energy measurement: resume with the same --energy "
                             "setting, or write to a new output folder")


#: What `execute` runs each point inside: ``point_context(point, case)`` yields the extra record fields.
PointContext = Callable[[PlanPoint, Case], contextlib.AbstractContextManager[Any]]


def execute(plan: Plan, points: list[PlanPoint], results_path: str | os.PathLike[str], *, resume: bool = True,
            bench: Bench | None = None, point_context: PointContext | None = None,
            progress: Callable[[int, int, PlanPoint], None] | None = None,
            notify: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure `points` in order, appending each record to `results_path` as soon as it is finished.

    `bench` measures each point (its hooks run around it: the sweep's lock and verify clocks); without one, a
    Bench for the plan's device is opened and closed at the end. `point_context(point, case)` wraps each
    measurement and yields extra record fields (the sweep uses it to let the GPU settle first);
    a failing point is recorded with point_status "error" and its message, and the rest go on.
    With `resume`, points finished in `results_path` are skipped, and a torn line there (a crash mid-write) is
    first moved aside (`<file>.torn-<n>`, told to `notify`) so its point is measured again; without it, a file
    ending in a torn line is refused before anything is measured. A record whose energy was measured another
    way than the file's finished records is refused (ConfigError), never appended. A results file that cannot
    be written stops the run (`ResultsWriteError`; the records before it are intact).
    """
    from sdbench.runner import RunnerConfig
    from sdbench.session import Bench

    results_path = Path(results_path)
    writer = ResultsWriter(results_path)
    if resume:
        for line in repair_torn_lines(results_path).lines():
            if notify is not None:
                notify(line)
    writer.check()
    done = done_point_ids([results_path]) if resume else set()
    methods = _finished_energy_methods(results_path)
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
                record = {"record_type": CASE_RECORD, **case.features(), "point_status": "error",
                          "point_error": f"{type(exc).__name__}: {exc}"}
            record.update(point_id=point.point_id, repeat=point.repeat, point_role=point.role,
                          plan_hash=plan.plan_hash, started_utc=started,
                          worker_host=os.uname().nodename, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                          slurm_job_id=os.environ.get("SLURM_JOB_ID"), slurm_array_task_id=os.environ.get("SLURM_ARRAY_TASK_ID"))
            if record.get("point_status") == "ok":
                _check_same_energy_method(record, methods, results_path)
            writer.append(record)
            method = energy_method(record)
            if record.get("point_status") == "ok" and method is not None:
                methods[method] = methods.get(method, 0) + 1
            out.append(record)
    finally:
        if own_bench:
            bench.close()
    return out


def merge_results(paths: Iterable[str | os.PathLike[str]], out_path: str | os.PathLike[str],
                  notify: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Merge shard results into one file, written atomically: one record per point id (the last finished one
    wins; torn lines are skipped and told to ``notify``).

    Returns (records written, duplicates dropped).
    """
    by_id: dict[str, dict[str, Any]] = {}
    dropped = 0
    for path in paths:
        read = read_jsonl(path)
        for line in read.warnings:
            if notify is not None:
                notify(line)
        for rec in read.rows:
            pid = rec.get("point_id")
            if pid is None or rec.get("point_status") != "ok":
                continue
            if pid in by_id:
                dropped += 1
            by_id[pid] = rec
    write_lines(out_path, by_id.values())
    return len(by_id), dropped


@contextlib.contextmanager
def no_settings(_point: PlanPoint, _case: Case) -> Iterator[None]:
    """The point context of plans that change no GPU settings."""
    yield


# --- plans of a case matrix, and their shards merged ---------------------------------------------
def matrix_cases(device: str, axes: Mapping[str, str | None], prompt: str | None = None) -> list[Case]:
    """The cases of a matrix: `axes` holds each plan axis's comma-separated values by name (settings.PLAN_AXES;
    None or absent: the default), `prompt` the one prompt (None: the default)."""
    from sdbench.case import resolve_device
    from sdbench.matrix import base_matrix, build_cases

    # A plan is often written on a login node without a GPU: "cuda"/"cuda:N" are taken at their word
    # (the worker that runs the plan checks its device); only "auto" looks at this machine.
    resolved = "cuda:0" if device == "cuda" else device
    if not re.fullmatch(r"cpu|simulated(:.*)?|cuda:\d+", resolved):
        resolved = resolve_device(device)
    matrix = {**base_matrix(), "models": ["tiny-sd" if not resolved.startswith("cuda") else "sdxl"]}
    for key in settings.PLAN_AXES:
        row = settings.get(key)
        values = settings.check_axis(row.name, axes.get(row.name), field_name=row.name)
        if values:
            matrix[row.name] = values
    if prompt:
        matrix["prompts"] = [prompt]
    return build_cases(matrix, resolved)


def matrix_plan(cases: Sequence[Case], *, repeats: int, device: str, runner: Mapping[str, Any]) -> Plan:
    """The cases as a plan (`runner`: the RunnerConfig fields set), checked whole as `plan run` will check it:
    a value that would fail at run time is refused now."""
    plan = Plan.from_cases(list(cases), repeats=repeats, device=device, runner=dict(runner),
                           meta={"created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(), "kind": "matrix"})
    plan.validate()
    return plan


def merge_shards(results_dir: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Merge the shard results (results-shard*.jsonl) in `results_dir` into `out_path`, one record per point.

    Returns (shard files, points, duplicates dropped); no shard file is an error."""
    paths = sorted(Path(results_dir).glob("results-shard*.jsonl"))
    if not paths:
        raise SdbenchError(f"no shard results (results-shard*.jsonl) in {results_dir}")
    n, dropped = merge_results(paths, out_path)
    return len(paths), n, dropped
