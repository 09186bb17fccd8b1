"""One worker process per GPU on a node: a plan sharded across pinned workers, merged at the end.

`run_on_gpus(plan, ["0", "1"], out)` starts one `sdbench workers shard` process per GPU, each with
`CUDA_VISIBLE_DEVICES` pinned to its GPU (by UUID where NVML can name it, so CUDA's and NVML's device
orders cannot disagree) and `--device cuda:0`. Every worker appends a flushed record per finished
point to its own `results-shardIIII-of-NNNN.jsonl` (`sdbench.distribute.plan.execute`), so a worker that dies
loses at most its point in flight and the others go on; running the same command again resumes.
At the end the shard files are merged into one `results.jsonl` and each shard's done, failed and
missing points are reported.

A worker first checks its pinning (`verify_pinning`): the NVML handle it measures energy on and
the device torch computes on must be the same physical GPU, by UUID. A mismatch would attribute one
GPU's energy to another's work, so the worker refuses to measure; otherwise every record carries
`pinning_verified` and `gpu_uuid`. Devices `cpu` and `simulated` stand in for GPUs in tests
(`--gpus cpu,cpu`): same sharding, streaming, death and resume paths, nothing to pin.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sdbench.errors import ConfigError, SdbenchError
from sdbench.record.io import ensure_writable_dir, read_jsonl, repair_torn_lines

#: Stand-ins for GPUs: a worker on the CPU, or the CPU with the simulated GPU's energy model.
FAKE_DEVICES = ("cpu", "simulated")
#: Exit status of a worker whose NVML and torch devices are different GPUs.
EXIT_PINNING_MISMATCH = 3
MERGED_NAME = "results.jsonl"


class PinningError(SdbenchError):
    """A worker's NVML device and torch device are not the same physical GPU."""


# --- pinning verification ----------------------------------------------------------------------
def normalise_uuid(uuid: str) -> str:
    """NVML says `GPU-5a8b...`, torch says `5a8b...`: compare without prefix and case."""
    text = str(uuid).strip().lower()
    return text[4:] if text.startswith("gpu-") else text


@dataclass(frozen=True)
class PinningCheck:
    """What a worker found about its GPU. `verified` is None where there is nothing to pin (CPU)."""

    device: str
    verified: bool | None
    gpu_uuid: str | None
    nvml_uuid: str | None = None
    torch_uuid: str | None = None
    reason: str = ""

    @property
    def mismatch(self) -> bool:
        """Both sides named a GPU and they differ: measuring would attribute energy to the wrong GPU."""
        return (self.nvml_uuid is not None and self.torch_uuid is not None
                and normalise_uuid(self.nvml_uuid) != normalise_uuid(self.torch_uuid))

    def record_fields(self) -> dict[str, Any]:
        """The fields every record of this worker carries."""
        return {"pinning_verified": self.verified, "gpu_uuid": self.gpu_uuid, "pinning_reason": self.reason}


def _nvml_uuid(index: int) -> str:
    """UUID of the NVML device sdbench measures for CUDA index `index` (CUDA_VISIBLE_DEVICES honoured)."""
    from sdbench.gpu import open_device

    gpu = open_device("nvml", index=index)
    assert gpu is not None  # "nvml" raises rather than returning None
    try:
        return gpu.info().uuid
    finally:
        gpu.close()


def _torch_uuid(index: int) -> str:
    """UUID of the device torch runs `cuda:index` on."""
    import torch

    return str(torch.cuda.get_device_properties(index).uuid)


def verify_pinning(device: str, *, nvml_uuid: Callable[[int], str] | None = None,
                   torch_uuid: Callable[[int], str] | None = None) -> PinningCheck:
    """Check that NVML's and torch's `device` are the same physical GPU, by UUID.

    `nvml_uuid(index)` and `torch_uuid(index)` default to the real NVML and torch queries; tests pass
    fakes. Never raises for a failed query: the reason lands in the check (and in every record).
    """
    if not device.startswith("cuda"):
        return PinningCheck(device=device, verified=None, gpu_uuid=None,
                            reason=f"device {device}: no GPU to pin")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    read_nvml = nvml_uuid or _nvml_uuid
    read_torch = torch_uuid or _torch_uuid
    try:
        from_nvml: str | None = read_nvml(index)
        nvml_error = ""
    except SdbenchError as exc:
        from_nvml, nvml_error = None, f"NVML: {exc}"
    try:
        from_torch: str | None = read_torch(index)
        torch_error = ""
    except (RuntimeError, AssertionError, AttributeError) as exc:  # torch's "no CUDA" errors
        from_torch, torch_error = None, f"torch: {type(exc).__name__}: {exc}"
    if from_nvml is None or from_torch is None:
        return PinningCheck(device=device, verified=False, gpu_uuid=from_nvml or from_torch,
                            nvml_uuid=from_nvml, torch_uuid=from_torch,
                            reason="cannot verify pinning: " + "; ".join(e for e in (nvml_error, torch_error) if e))
    if normalise_uuid(from_nvml) != normalise_uuid(from_torch):
        return PinningCheck(device=device, verified=False, gpu_uuid=None, nvml_uuid=from_nvml, torch_uuid=from_torch,
                            reason=f"NVML measures {from_nvml} but torch computes on GPU-{normalise_uuid(from_torch)}")
    return PinningCheck(device=device, verified=True, gpu_uuid=from_nvml, nvml_uuid=from_nvml, torch_uuid=from_torch,
                        reason="NVML and torch name the same GPU")


# --- one worker: one shard --------------------------------------------------------------------------
GPU_SETTING_FIELDS = ("sm_clock_mhz", "mem_clock_mhz", "power_limit_w")


def check_no_gpu_settings(plan: Any) -> None:
    """Refuse plans whose points lock clocks or set power limits.

    A plain worker measures the card as it finds it; it would label such points with clocks it never
    set. DVFS plans run through `sdbench sweep`, which locks, verifies and resets the clocks.
    """
    setting = [p.point_id for p in plan.points if any(p.case.get(f) is not None for f in GPU_SETTING_FIELDS)]
    if setting:
        raise SdbenchError(f"{len(setting)} point(s) of this plan set GPU clocks or power limits (first: {setting[0]}); "
                           "workers and SLURM arrays measure GPUs as they find them: run clock sweeps with `sdbench sweep`")


def shard_files(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Every shard results file in `output_dir` (any shard count)."""
    return sorted(Path(output_dir).glob("results-shard*-of-*.jsonl"))


def run_shard(plan_path: str | os.PathLike[str], index: int, count: int, output_dir: str | os.PathLike[str], *,
              device: str | None = None, resume: bool = True, pinning: PinningCheck | None = None,
              echo: Callable[[str], None] = print) -> int:
    """Measure shard `index` of `count` as a pinned worker; returns the worker's exit status.

    0: every point of the shard measured; 1: some points failed (recorded with point_status
    "error"); 3: the pinning check found two different GPUs (nothing measured). With `resume`,
    points finished in any shard file of `output_dir` are skipped, so a study resumed with a
    different number of GPUs measures nothing twice.
    """
    from sdbench.case import resolve_device
    from sdbench.distribute.plan import Plan, PlanPoint, done_point_ids, execute, shard_results_path

    plan = Plan.load(plan_path)
    check_no_gpu_settings(plan)
    if device:
        plan.device = device
    resolved = resolve_device(plan.device)
    check = pinning if pinning is not None else verify_pinning(resolved)
    echo(f"pinning: device {resolved}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}: "
         f"verified={check.verified} ({check.reason})")
    if check.mismatch:
        echo(f"refusing to measure: {check.reason}")
        return EXIT_PINNING_MISMATCH
    points = plan.shard(index, count)
    out = shard_results_path(output_dir, index, count)
    ensure_writable_dir(output_dir, "output_dir")
    if resume:
        # This worker's own file only: the other shards' files belong to workers that may be writing them.
        for line in repair_torn_lines(out).lines():
            echo(line)
    done = done_point_ids(shard_files(output_dir), notify=echo) if resume else set()
    todo = [p for p in points if p.point_id not in done]
    echo(f"shard {index}/{count}: {len(points)} point(s), {len(points) - len(todo)} already done")

    @contextlib.contextmanager
    def stamp(_point: PlanPoint, _case: Any) -> Iterator[dict[str, Any]]:
        yield check.record_fields()

    def progress(n: int, total: int, point: PlanPoint) -> None:
        echo(f"  [{n + 1}/{total}] {point.point_id}")

    records = execute(plan, todo, out, resume=resume, point_context=stamp, progress=progress, notify=echo)
    failed = [r for r in records if r.get("point_status") != "ok"]
    echo(f"shard {index}/{count}: {len(records)} point(s) measured, {len(failed)} failed -> {out}")
    return 1 if failed else 0


# --- the pool: one worker per GPU ------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerSpec:
    """How one worker is started: which GPU it owns and which shard it measures."""

    slot: int  # position in the --gpus list
    gpu: str  # as the user named it: "0", "GPU-...", "cpu", "simulated"
    pin: str  # the CUDA_VISIBLE_DEVICES value the worker gets ("" hides every GPU)
    device: str  # the device the worker measures on: cuda:0 (its only visible GPU), cpu or simulated
    shard: int
    shard_count: int

    @property
    def label(self) -> str:
        return f"w{self.slot}:{self.gpu}"


@dataclass
class ShardStatus:
    """A shard's points by outcome, read from the results files (never from an exit code alone)."""

    shard: int
    shard_count: int
    points_total: int
    points_done: int
    points_failed: int  # an error record and no finished one
    points_missing: int  # no record at all (never reached, or lost in flight)
    returncode: int | None = None
    gpu: str | None = None

    @property
    def status(self) -> str:
        """done: every point finished and the worker exited cleanly; failed otherwise."""
        clean_exit = self.returncode in (None, 0)
        return "done" if clean_exit and self.points_done == self.points_total else "failed"


@dataclass
class WorkersReport:
    """The outcome of `run_on_gpus`: one status per shard and the merged store."""

    shards: list[ShardStatus]
    points_total: int
    points_done: int
    merged_path: Path | None = None
    duplicates_dropped: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.points_done == self.points_total and all(s.status == "done" for s in self.shards)


def _visible_gpu_uuids() -> list[str]:
    """UUIDs of the GPUs this process may use, in CUDA index order (CUDA_VISIBLE_DEVICES honoured)."""
    from sdbench.gpu import nvml_device_count, nvml_unavailable_reason, parse_cuda_visible_devices

    reason = nvml_unavailable_reason()
    if reason is not None:
        raise SdbenchError(f"--gpus all: no GPU is visible ({reason}); name devices, e.g. --gpus cpu,cpu")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = len(parse_cuda_visible_devices(visible))
    else:
        count = nvml_device_count()
    if count == 0:
        raise SdbenchError(f"--gpus all: CUDA_VISIBLE_DEVICES={visible!r} leaves no GPU visible")
    return [_nvml_uuid(i) for i in range(count)]


def parse_gpus(gpus: str | Sequence[str]) -> list[str]:
    """`"0,1"`, `"all"`, `"GPU-ab..,GPU-cd.."`, `"cpu,cpu"` or a list of such entries -> entries."""
    if isinstance(gpus, str):
        if gpus.strip() == "all":
            return _visible_gpu_uuids()
        entries = [g.strip() for g in gpus.split(",") if g.strip()]
    else:
        entries = [str(g).strip() for g in gpus]
        if entries == ["all"]:
            return _visible_gpu_uuids()
    if not entries:
        raise ConfigError("--gpus", gpus, "0,1,... | all | GPU-<uuid>,... | cpu,cpu | simulated,...")
    for entry in entries:
        if not (entry.isdigit() or entry.startswith("GPU-") or entry in FAKE_DEVICES):
            raise ConfigError("--gpus", entry, "a GPU index, a GPU-<uuid>, all, cpu or simulated",
                              reason="MIG slices are refused: NVML energy is per physical GPU" if entry.startswith("MIG-") else "")
    real = [e for e in entries if e not in FAKE_DEVICES]
    if len(set(real)) != len(real):
        # Two workers on one GPU would each measure the other's energy.
        raise ConfigError("--gpus", ",".join(entries), "each GPU once", reason="a GPU is named twice")
    return entries


class GpuListError(ConfigError):
    """`--gpus` names a GPU this machine does not have: the flag, the entry, and the GPUs there are."""

    def __init__(self, entry: str, there: str) -> None:
        super().__init__("--gpus", entry, there)
        self.args = (f"invalid --gpus: {entry!r}: {there}",)

    def __str__(self) -> str:
        return str(self.args[0])


def visible_gpu_count() -> int:
    """How many CUDA GPUs this process may use (CUDA_VISIBLE_DEVICES honoured): NVML's count, else torch's.

    Touches no GPU setting; with neither NVML nor a CUDA build of torch, 0."""
    from sdbench.gpu import nvml_device_count, nvml_unavailable_reason, parse_cuda_visible_devices

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len(parse_cuda_visible_devices(visible))
    if nvml_unavailable_reason() is None:
        return nvml_device_count()
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def check_gpus_exist(entries: Sequence[str]) -> None:
    """Refuse a `--gpus` index this machine does not have, before any worker starts, naming the GPUs there are
    (``invalid --gpus: '7': this machine has GPUs 0-1``). CPU and simulated stand-ins need no GPU."""
    indices = [e for e in entries if e.isdigit()]
    if not indices:
        return
    count = visible_gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    for entry in indices:
        if int(entry) < count:
            continue
        if count == 0:
            there = f"this machine has no CUDA GPU{where}"
        elif count == 1:
            there = f"this machine has GPU 0{where}"
        else:
            there = f"this machine has GPUs 0-{count - 1}{where}"
        raise GpuListError(entry, there)


def _pin_for(entry: str) -> str:
    """The CUDA_VISIBLE_DEVICES value that gives a worker exactly GPU `entry` (as this process counts GPUs)."""
    if entry in FAKE_DEVICES:
        return ""  # nothing visible: a CPU worker never touches (or measures) a GPU
    if entry.startswith("GPU-"):
        return entry
    from sdbench.gpu import nvml_unavailable_reason, parse_cuda_visible_devices

    index = int(entry)
    if nvml_unavailable_reason() is None:
        # By UUID: an index means different GPUs to CUDA (fastest first) and NVML (PCI order).
        return _nvml_uuid(index)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        parent = parse_cuda_visible_devices(visible)
        if index >= len(parent):
            raise ConfigError("--gpus", entry, f"0 to {len(parent) - 1}", reason=f"CUDA_VISIBLE_DEVICES={visible!r}")
        return parent[index]
    return entry


def plan_workers(gpus: Sequence[str], *, shard_base: int = 0, shard_count: int | None = None) -> list[WorkerSpec]:
    """One WorkerSpec per GPU entry: worker k measures shard `shard_base + k` of `shard_count`."""
    check_gpus_exist(gpus)
    count = len(gpus) if shard_count is None else shard_count
    if shard_base < 0 or shard_base + len(gpus) > count:
        raise ConfigError("shard range", f"{shard_base}..{shard_base + len(gpus) - 1} of {count}",
                          f"shards within 0..{count - 1} (shard_base + number of GPUs <= shard_count)")
    specs = []
    for k, gpu in enumerate(gpus):
        device = gpu if gpu in FAKE_DEVICES else "cuda:0"
        specs.append(WorkerSpec(slot=k, gpu=gpu, pin=_pin_for(gpu), device=device,
                                shard=shard_base + k, shard_count=count))
    return specs


def worker_command(plan_path: str | os.PathLike[str], spec: WorkerSpec, output_dir: str | os.PathLike[str],
                   resume: bool = True) -> list[str]:
    """The worker's argv (no shell: every value is one argument)."""
    argv = [sys.executable, "-m", "sdbench", "workers", "shard", str(plan_path),
            "--shard", f"{spec.shard}/{spec.shard_count}", "--output-dir", str(output_dir), "--device", spec.device]
    if not resume:
        argv.append("--no-resume")
    return argv


def worker_env(spec: WorkerSpec, cpu_workers: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: pinned GPU, PCI device order, unbuffered output, a fair share of CPU threads."""
    env = dict(os.environ if base is None else base)
    env["CUDA_VISIBLE_DEVICES"] = spec.pin
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["PYTHONUNBUFFERED"] = "1"
    env["SDBENCH_WORKER_SLOT"] = str(spec.slot)
    env["SDBENCH_WORKER_SHARD"] = f"{spec.shard}/{spec.shard_count}"
    if spec.gpu in FAKE_DEVICES and "OMP_NUM_THREADS" not in env:
        # CPU workers share the cores; oversubscribed BLAS threads would make every one of them crawl.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, cpu_workers)))
    return env


def shard_status(plan: Any, index: int, count: int, output_dir: str | os.PathLike[str]) -> ShardStatus:
    """Done/failed/missing points of one shard, from every shard file in `output_dir`."""
    ok: set[str] = set()
    errored: set[str] = set()
    for path in shard_files(output_dir):
        for rec in read_jsonl(path).rows:
            pid = rec.get("point_id")
            if pid is None:
                continue
            (ok if rec.get("point_status") == "ok" else errored).add(str(pid))
    ids = [p.point_id for p in plan.shard(index, count)]
    done = sum(1 for i in ids if i in ok)
    failed = sum(1 for i in ids if i not in ok and i in errored)
    return ShardStatus(shard=index, shard_count=count, points_total=len(ids), points_done=done,
                       points_failed=failed, points_missing=len(ids) - done - failed)


class _Printer:
    """Serialises prefixed lines from several worker threads onto one stream."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        if self.stream is None:
            return
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


@dataclass
class Worker:
    """A started worker: its spec and process (tests and callers may signal `proc`)."""

    spec: WorkerSpec
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)


def spawn_and_wait(specs: Sequence[WorkerSpec], command_for: Callable[[WorkerSpec], list[str]], *,
                   env: Mapping[str, str] | None = None, stream: IO[str] | None = sys.stdout,
                   on_line: Callable[[Worker, str], None] | None = None,
                   describe: Callable[[WorkerSpec], str] = lambda spec: "",
                   cwd: str | os.PathLike[str] | None = None) -> list[Worker]:
    """Start one pinned process per spec (argv from `command_for`, no shell), stream their prefixed
    output, and wait for all. Interrupted, it stops every worker rather than orphan them."""
    printer = _Printer(stream)
    cpu_workers = sum(1 for s in specs if s.gpu in FAKE_DEVICES)
    workers: list[Worker] = []
    threads: list[threading.Thread] = []

    def pump(worker: Worker) -> None:
        assert worker.proc.stdout is not None
        with worker.proc.stdout:
            for raw in worker.proc.stdout:
                line = raw.rstrip("\n")
                worker.lines.append(line)
                printer(f"[{worker.spec.label}] {line}")
                if on_line is not None:
                    on_line(worker, line)

    try:
        for spec in specs:
            proc = subprocess.Popen(command_for(spec), env=worker_env(spec, cpu_workers, env), cwd=cwd,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    text=True, errors="replace", bufsize=1)
            worker = Worker(spec, proc)
            workers.append(worker)
            printer(f"[{spec.label}] started pid {proc.pid}: {describe(spec)}, "
                    f"CUDA_VISIBLE_DEVICES={spec.pin!r}, device {spec.device}")
            thread = threading.Thread(target=pump, args=(worker,), name=f"sdbench-{spec.label}", daemon=True)
            thread.start()
            threads.append(thread)
        for worker in workers:
            worker.proc.wait()
    except BaseException:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=30)
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        raise
    finally:
        for thread in threads:
            thread.join(timeout=10)
    return workers


def strip_options(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """`argv` without the options `names` (and their values; both `--opt V` and `--opt=V` forms)."""
    out: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word in names:
            skip = True
            continue
        if any(word.startswith(n + "=") for n in names):
            continue
        out.append(word)
    return out


def run_command_per_gpu(gpus: str | Sequence[str], command_for: Callable[[WorkerSpec], list[str]], *,
                        stream: IO[str] | None = sys.stdout, cwd: str | os.PathLike[str] | None = None) -> int:
    """Run one pinned copy of a command per GPU (`--gpus` of `sdbench sweep` and `sdbench bench`); the worst exit code."""
    specs = plan_workers(parse_gpus(gpus))
    workers = spawn_and_wait(specs, command_for, stream=stream, cwd=cwd,
                             describe=lambda spec: f"worker {spec.shard + 1} of {spec.shard_count}")
    codes = [w.proc.returncode for w in workers]
    printer = _Printer(stream)
    for w in workers:
        printer(f"[{w.spec.label}] exit {w.proc.returncode}")
    return max(codes, key=abs) if codes else 0


def run_on_gpus(plan_path: str | os.PathLike[str], gpus: str | Sequence[str], output_dir: str | os.PathLike[str],
                resume: bool = True, *, shard_base: int = 0, shard_count: int | None = None, merge: bool = True,
                env: Mapping[str, str] | None = None, stream: IO[str] | None = sys.stdout,
                on_line: Callable[[Worker, str], None] | None = None) -> WorkersReport:
    """Run one pinned worker per GPU over the plan's shards, wait for all, merge and report.

    `gpus`: "0,1", "all", UUIDs, or "cpu"/"simulated" stand-ins (see `parse_gpus`). Worker k measures
    shard `shard_base + k` of `shard_count` (default: one shard per GPU; a SLURM task owning G GPUs
    of a larger array passes its own range). Each worker's output is streamed to `stream` prefixed
    with `[wK:GPU]`; `on_line(worker, line)` sees every line too. A worker that dies is reported,
    never waited on by the others. With `merge`, all shard files in `output_dir` are merged into
    `results.jsonl` (one record per point).
    """
    from sdbench.distribute.plan import Plan, merge_results

    plan = Plan.load(plan_path)  # validate before starting anything
    check_no_gpu_settings(plan)
    entries = parse_gpus(gpus)
    specs = plan_workers(entries, shard_base=shard_base, shard_count=shard_count)
    out_dir = ensure_writable_dir(output_dir, "output_dir")  # before any worker starts
    printer = _Printer(stream)
    if resume:
        # No worker runs yet: every shard file (also of an earlier shard count) can be repaired safely.
        for path in shard_files(out_dir):
            for line in repair_torn_lines(path).lines():
                printer(line)
    workers = spawn_and_wait(specs, lambda spec: worker_command(plan_path, spec, out_dir, resume), env=env,
                             stream=stream, on_line=on_line, describe=lambda spec: f"shard {spec.shard}/{spec.shard_count}")

    statuses = []
    for worker in workers:
        st = shard_status(plan, worker.spec.shard, worker.spec.shard_count, out_dir)
        st.returncode = worker.proc.returncode
        st.gpu = worker.spec.gpu
        statuses.append(st)
    report = WorkersReport(shards=statuses, points_total=sum(s.points_total for s in statuses),
                           points_done=sum(s.points_done for s in statuses))
    if merge and shard_files(out_dir):
        report.merged_path = out_dir / MERGED_NAME
        _, report.duplicates_dropped = merge_results(shard_files(out_dir), report.merged_path, notify=printer)
    report.lines = format_report(report)
    for line in report.lines:
        printer(line)
    return report


def format_report(report: WorkersReport) -> list[str]:
    """Human-readable per-shard lines plus a summary."""
    lines = []
    for s in report.shards:
        rc = "" if s.returncode is None else f", exit {s.returncode}"
        lines.append(f"shard {s.shard}/{s.shard_count} on {s.gpu}: {s.status} ({s.points_done} done, "
                     f"{s.points_failed} failed, {s.points_missing} missing of {s.points_total}{rc})")
    verdict = "complete" if report.complete else "INCOMPLETE: run the same command again to resume"
    merged = f" -> {report.merged_path}" if report.merged_path else ""
    lines.append(f"{report.points_done}/{report.points_total} point(s) done, {verdict}{merged}")
    return lines
