"""The sdbench pytest plugin: the benchmark matrix as parametrised cases, warm-pipeline and energy
fixtures, pytest-benchmark integration, GPU-aware histories and an energy-aware end-of-run compare.

Every case is measured by the same Runner as the CLI. pytest-benchmark's time columns are the
Runner's synchronised per-image times (one per measured round, replayed through a timer that
returns them), and `extra_info` holds the rest of the record.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import platform
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sdbench.errors import ConfigError, SdbenchError

DEFAULT_STORAGE = "file://./.benchmarks"
CPU_MATRIX = {"models": ["tiny-sd", "tiny-sd2", "tiny-sdxl"], "batch_sizes": [1, 2]}
GPU_MATRIX = {"models": ["sd-v1.5", "sdxl"], "batch_sizes": [1, 4]}
MATRIX_AXES = ("models", "schedulers", "resolutions", "batch_sizes", "steps", "dtypes", "profiles", "weights",
               "prompts", "attention", "sm_clocks_mhz", "knobs")


# --- options ------------------------------------------------------------------------------------
def _add_matrix_options(group: Any) -> None:
    group.addoption("--sd-models", default=None, help="comma-separated model variants (default: tiny models on "
                    "the CPU; sd-v1.5,sdxl on a GPU)")
    group.addoption("--sd-schedulers", default=None, help="comma-separated scheduler keys, 'default' (the model's) or 'all'")
    group.addoption("--sd-resolutions", default=None, help="comma-separated square sides in px, or 'default'")
    group.addoption("--sd-batch-sizes", default=None, help="comma-separated batch sizes")
    group.addoption("--sd-steps", default=None, help="comma-separated step counts, or 'default'")
    group.addoption("--sd-dtypes", default=None, help="comma-separated dtypes: fp16, bf16, fp32 (default: fp16 on a "
                    "GPU, fp32 on the CPU)")
    group.addoption("--sd-profiles", default=None, help="comma-separated optimisation profiles (eager, channels-last, "
                    "compile, max)")
    group.addoption("--sd-attention", default=None, help="comma-separated attention backends")
    group.addoption("--sd-knobs", default=None, help="knob overrides applied to every case, e.g. "
                    "'channels_last=on;compile_unet=max-autotune' (';' separates knobs here)")
    group.addoption("--sd-weights", default=None, help="auto, synthetic, hub or local:PATH")
    group.addoption("--sd-device", default="auto", help="auto, cpu, cuda, cuda:N or simulated")
    group.addoption("--sd-shard", default=None, metavar="I/N",
                    help="run only every N-th sdbench case starting at I (one worker per GPU: `sdbench bench --gpus`)")


def _add_measurement_options(group: Any) -> None:
    group.addoption("--sd-energy", default="auto", help="energy source: auto, counter, timeline, rapl, none")
    group.addoption("--sd-min-rounds", type=int, default=None, help="fewest measured rounds per case")
    group.addoption("--sd-max-rounds", type=int, default=None, help="most measured rounds per case")
    group.addoption("--sd-max-time", type=float, default=None, help="time cap for one case's measured rounds, s")
    group.addoption("--sd-target-ci", type=float, default=None, help="stop when the 95%% CI half-width is within "
                    "this fraction of the median (time and energy); default 0.02")
    group.addoption("--sd-idle-seconds", type=float, default=None, help="idle-power baseline before each case, s")


def _add_output_options(group: Any) -> None:
    group.addoption("--sd-results", default=None, help="append every record to this JSON Lines file")
    group.addoption("--sd-export", default=None, help="write all records as one --export-metrics JSON document")
    group.addoption("--sd-compare", default=None, metavar="BASELINE",
                    help="at the end, compare this run with a saved pytest-benchmark JSON or sdbench results file")
    group.addoption("--sd-compare-fail", default=None, metavar="SPEC",
                    help="with --sd-compare: fail the run on a significant regression, e.g. time:5%%,energy:5%%")
    group.addoption("--sd-allow-cross-gpu", action="store_true",
                    help="allow comparing histories of different GPUs or clock settings")
    group.addoption("--sd-no-storage-split", action="store_true",
                    help="keep pytest-benchmark histories in --benchmark-storage as given (no per-GPU/clock folder)")


def _images_per_case(text: str) -> int:
    """--sd-num-images: a whole number >= 1 (argparse reports the message as a usage error)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid num_images: {text!r}; allowed: a whole number >= 1")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sdbench", "sdbench: Stable Diffusion benchmark matrix and measurement")
    _add_matrix_options(group)
    _add_measurement_options(group)
    _add_output_options(group)
    group.addoption("--sd-num-images", type=_images_per_case, default=1, metavar="N",
                    help="images (one seed each) the quality_test suite measures per case (default 1); "
                         "`sdbench generate --benchmark --num-images N` sets it")


# --- configuration --------------------------------------------------------------------------------
@dataclass
class SdConfig:
    """The resolved plugin settings of one pytest session."""

    device: str
    options: dict[str, Any]

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


def _resolve_device(value: str) -> str:
    from sdbench.case import resolve_device

    return resolve_device(value)


# The suites' markers, registered by the plugin itself: an installed sdbench runs its suites without the
# checkout's pytest.ini, and under --strict-markers an unregistered marker is a collection error.
SUITE_MARKERS = {
    "speed": "the model x scheduler x resolution x batch matrix",
    "energy_research": "energy per image with CI, idle-subtracted",
    "memory_stress": "long prompts, high resolutions, growing batches",
    "quality_test": "output fidelity against an fp32 reference",
    "artistic_styles": "the seed's style prompts",
    "multi_resolution": "one case at several resolutions",
    "scheduler_comparison": "one case with every scheduler",
    "dvfs": "clock points (simulated GPU unless clocks may be changed)",
}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sd_matrix(**axes): this benchmark's default case matrix "
                            "(models, schedulers, resolutions, batch_sizes, steps, dtypes, profiles, weights, prompts)")
    for name, description in SUITE_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: sdbench benchmark suite - {description}")
    try:
        device = _resolve_device(config.getoption("--sd-device"))
    except ConfigError as exc:
        raise pytest.UsageError(f"--sd-device: {exc}") from None
    config._sdbench = SdConfig(device=device, options={})  # type: ignore[attr-defined]
    config._sdbench_matrix_errors = []  # type: ignore[attr-defined]
    # Histories are stored per GPU and clock setting, so --benchmark-compare compares like with like.
    storage = config.getoption("benchmark_storage", default=None)
    if storage == DEFAULT_STORAGE and not config.getoption("--sd-no-storage-split"):
        config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{storage_slug(device)}"


def storage_slug(device: str) -> str:
    """A folder name for this GPU and clock setting, e.g. nvidia-h100-80gb-hbm3-1a2b3c4d/default-clocks."""
    ident = gpu_identity(device)
    name = re.sub(r"[^a-z0-9]+", "-", str(ident.get("gpu_name", "cpu")).lower()).strip("-")
    uuid = str(ident.get("gpu_uuid") or "").replace("GPU-", "")[:8]
    return f"{name}-{uuid}/{ident['clock_setting']}" if uuid else f"{name}/{ident['clock_setting']}"


@functools.lru_cache(maxsize=8)
def gpu_identity(device: str) -> dict[str, Any]:
    """GPU name, UUID, driver and clock/power settings of `device` (read-only NVML; asked once per device)."""
    from sdbench.bench import open_gpu_for
    from sdbench.environment import software_versions

    ident: dict[str, Any] = {"compute_device": device, **{k: v for k, v in software_versions().items()
                                                          if k in ("torch", "diffusers", "cuda_runtime")}}
    gpu = open_gpu_for(device) if device != "cpu" else None
    if gpu is None:
        ident.update(gpu_name=f"cpu-{platform.machine()}", gpu_uuid=None, gpu_simulated=False)
    else:
        info = gpu.info()
        ident.update(gpu_name=info.name, gpu_uuid=info.uuid, gpu_simulated=info.simulated,
                     driver_version=info.driver_version, power_limit_w=info.power_limit_w)
        gpu.close()
    # sdbench never changes clocks in a plain benchmark run: the setting is what the card was found at.
    ident.update(sm_clock_mhz_setting=None, mem_clock_mhz_setting=None, power_limit_w_setting=None,
                 clock_setting="default-clocks")
    return ident


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _matrix(config: pytest.Config, marker_kwargs: dict[str, Any]) -> dict[str, list[Any]]:
    """Command line beats the benchmark's own sd_matrix marker, which beats the device's default."""
    sd: SdConfig = config._sdbench  # type: ignore[attr-defined]
    unknown = set(marker_kwargs) - set(MATRIX_AXES)
    if unknown:
        raise ConfigError("sd_matrix axis", sorted(unknown)[0], MATRIX_AXES)
    matrix: dict[str, list[Any]] = {"models": [], "schedulers": ["default"], "resolutions": ["default"],
                                    "batch_sizes": [1], "steps": ["default"], "dtypes": ["default"],
                                    "profiles": ["eager"], "weights": ["auto"], "prompts": [None], "attention": ["sdpa"],
                                    "sm_clocks_mhz": [None], "knobs": [""]}
    matrix.update(GPU_MATRIX if sd.on_gpu else CPU_MATRIX)
    for axis, value in marker_kwargs.items():
        matrix[axis] = list(value) if isinstance(value, (list, tuple)) else [value]
    cli = {"models": "--sd-models", "schedulers": "--sd-schedulers", "resolutions": "--sd-resolutions",
           "batch_sizes": "--sd-batch-sizes", "steps": "--sd-steps", "dtypes": "--sd-dtypes",
           "profiles": "--sd-profiles", "weights": "--sd-weights", "attention": "--sd-attention"}
    for axis, opt in cli.items():
        values = _csv(config.getoption(opt))
        if values is not None:
            matrix[axis] = values
    knobs = config.getoption("--sd-knobs")
    if knobs:
        matrix["knobs"] = [knobs.replace(";", ",")]
    return matrix


def _int_or_default(axis: str, value: Any) -> int | None:
    if value in (None, "default"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(axis, value, "whole numbers or 'default'") from None


def _resolution(value: Any, model: str) -> int | None:
    """A side in px, 'default', or 'xF' (F times the model's default side, rounded to a multiple of 8)."""
    from sdbench.models import get_model

    if isinstance(value, str) and value.startswith("x"):
        try:
            factor = float(value[1:])
        except ValueError:
            raise ConfigError("resolutions", value, "px, 'default' or xF (e.g. x1.5)") from None
        side = int(round(get_model(model).default_resolution * factor / 8.0)) * 8
        return max(side, 64)
    return _int_or_default("resolutions", value)


def build_cases(matrix: dict[str, list[Any]], device: str) -> list[Any]:
    """Every valid combination of the matrix as Cases (model defaults fill 'default' entries)."""
    from sdbench.case import Case
    from sdbench.schedulers import SCHEDULERS

    cases = []
    for model in matrix["models"]:
        schedulers = list(SCHEDULERS) if matrix["schedulers"] == ["all"] else matrix["schedulers"]
        for sched in schedulers:
            for res in matrix["resolutions"]:
                for batch in matrix["batch_sizes"]:
                    for steps in matrix["steps"]:
                        for dtype in matrix["dtypes"]:
                            for profile in matrix["profiles"]:
                                for weights in matrix["weights"]:
                                    for prompt in matrix["prompts"]:
                                        for attention in matrix["attention"]:
                                            for clock, knobs in itertools.product(matrix["sm_clocks_mhz"], matrix["knobs"]):
                                                dt = None if dtype == "default" else dtype
                                                cases.append(Case.create(
                                                    model, scheduler=None if sched == "default" else sched,
                                                    resolution=_resolution(res, model),
                                                    batch_size=_int_or_default("batch_sizes", batch),
                                                    steps=_int_or_default("steps", steps),
                                                    dtype=dt or ("fp16" if device.startswith("cuda") else "fp32"),
                                                    profile=profile, weights=weights, prompt=prompt,
                                                    attention=attention, device=device, knobs=knobs,
                                                    sm_clock_mhz=_int_or_default("sm_clocks_mhz", clock)))
    return cases


def _unique(cases: list[Any]) -> list[Any]:
    """Drop repeats (e.g. x0.5 of a 64 px model rounds back up to 64), keeping the first."""
    seen: set[str] = set()
    out = []
    for c in cases:
        if c.case_hash not in seen:
            seen.add(c.case_hash)
            out.append(c)
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sd_case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("sd_matrix")
    kwargs = dict(marker.kwargs) if marker else {}
    sd: SdConfig = metafunc.config._sdbench  # type: ignore[attr-defined]
    try:
        cases = _unique(build_cases(_matrix(metafunc.config, kwargs), sd.device))
    except SdbenchError as exc:
        # Raised here, a UsageError would be reported as a collection error (exit 2): keep it and
        # raise it once collection is over, where pytest turns it into a usage error (exit 4).
        metafunc.config._sdbench_matrix_errors.append(f"{metafunc.definition.nodeid}: {exc}")  # type: ignore[attr-defined]
        metafunc.parametrize("sd_case", [])
        return
    metafunc.parametrize("sd_case", cases, ids=[c.case_id for c in cases])


# --- replaying the Runner's times into pytest-benchmark ---------------------------------------------
class ReplayTimer:
    """A pytest-benchmark timer that returns the Runner's measured per-image times.

    pytest-benchmark times a round as `timer()` after minus `timer()` before. This timer advances
    by the next measured duration on every second call, so each pedantic round records exactly one
    synchronised per-image time that the Runner measured.
    """

    __name__ = "sdbench_replay_timer"

    def __init__(self) -> None:
        self._durations: collections.deque[float] = collections.deque()
        self._now_s = 0.0
        self._in_round = False

    def load(self, durations_s: list[float]) -> None:
        self._durations = collections.deque(durations_s)
        self._in_round = False

    def __call__(self) -> float:
        if self._in_round and self._durations:
            self._now_s += self._durations.popleft()
        self._in_round = not self._in_round
        return self._now_s

    def __repr__(self) -> str:
        return "sdbench.pytest_plugin.REPLAY_TIMER"


REPLAY_TIMER = ReplayTimer()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    errors = getattr(config, "_sdbench_matrix_errors", [])
    if errors:
        raise pytest.UsageError("sdbench matrix: " + "; ".join(errors))
    shard = config.getoption("--sd-shard")
    if shard:
        from sdbench.plan import parse_shard

        try:
            index, count = parse_shard(shard)
        except ConfigError as exc:
            raise pytest.UsageError(f"--sd-shard: {exc}") from None
        cases = [it for it in items if "sd_case" in getattr(it, "fixturenames", ())]
        drop = {id(it) for k, it in enumerate(cases) if k % count != index}
        if drop:
            config.hook.pytest_deselected(items=[it for it in items if id(it) in drop])
            items[:] = [it for it in items if id(it) not in drop]
    for item in items:
        if {"sd_measure", "sd_keep"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.benchmark(timer=REPLAY_TIMER, group=_group_of(item)))


def _group_of(item: pytest.Item) -> str:
    for name in ("speed", "energy_research", "memory_stress", "quality_test", "artistic_styles", "multi_resolution",
                 "scheduler_comparison", "dvfs"):
        if item.get_closest_marker(name):
            return name
    return "sdbench"


# --- fixtures ------------------------------------------------------------------------------------------
class SessionState:
    """Per-session objects: the Bench (warm pipelines, Runner, device) and the records of this run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._bench: Any = None
        self.records: list[dict[str, Any]] = []
        path = config.getoption("--sd-results")
        from sdbench.records import ResultsWriter

        self.writer = ResultsWriter(path) if path else None

    @property
    def bench(self) -> Any:
        if self._bench is None:
            from sdbench.bench import Bench

            sd: SdConfig = self.config._sdbench  # type: ignore[attr-defined]
            self._bench = Bench(device=sd.device, runner_config=self.runner_config(sd.device))
        return self._bench

    def runner_config(self, device: str) -> Any:
        from sdbench.runner import RunnerConfig

        over: dict[str, Any] = {"energy": self.config.getoption("--sd-energy")}
        for opt, key in (("--sd-min-rounds", "min_rounds"), ("--sd-max-rounds", "max_rounds"),
                         ("--sd-max-time", "max_time_s"), ("--sd-target-ci", "target_rel_ci"),
                         ("--sd-idle-seconds", "idle_s")):
            value = self.config.getoption(opt)
            if value is not None:
                over[key] = value
        return RunnerConfig.for_device(device, **over)

    def keep(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.writer is not None:
            self.writer.append(record)

    def close(self) -> None:
        if self._bench is not None:
            self._bench.close()
            self._bench = None


def _state(config: pytest.Config) -> SessionState:
    state = getattr(config, "_sdbench_state", None)
    if state is None:
        state = SessionState(config)
        config._sdbench_state = state  # type: ignore[attr-defined]
    return state


@pytest.fixture(scope="session")
def sd_bench(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's Bench: a warm pipeline cache (a scheduler change is a swap), the Runner and the GPU."""
    yield _state(request.config).bench


@pytest.fixture(scope="session")
def sd_device(request: pytest.FixtureRequest) -> str:
    """The compute device of this session (cpu, cuda:N or simulated)."""
    return request.config._sdbench.device  # type: ignore[attr-defined]


@pytest.fixture
def sd_pipeline(sd_bench: Any, sd_case: Any) -> Any:
    """The warm diffusers pipeline for the current case, with the case's scheduler in place."""
    from sdbench.pipelines import set_scheduler

    built, _applied = sd_bench.pipeline(sd_case)
    set_scheduler(built.pipe, sd_case.scheduler)
    return built.pipe


@pytest.fixture
def sd_energy_meter(sd_bench: Any) -> Any:
    """The session's energy meter (NVML counter, power timeline, or a NullMeter that says why not)."""
    from sdbench.measure.energy import select_energy_meter

    return select_energy_meter(sd_bench.gpu, sd_bench.runner.config.energy)


@pytest.fixture
def sd_measure(request: pytest.FixtureRequest, benchmark: Any, sd_bench: Any) -> Callable[..., dict[str, Any]]:
    """Measure a Case through the Runner and report it to pytest-benchmark; returns the record."""
    state = _state(request.config)

    def measure(case: Any, **extra: Any) -> dict[str, Any]:
        record = sd_bench.measure(case)
        record.update(extra)
        record["test"] = request.node.nodeid
        keep_and_report(benchmark, state, record)
        return record

    return measure


@pytest.fixture
def sd_keep(request: pytest.FixtureRequest, benchmark: Any) -> Callable[[dict[str, Any]], None]:
    """Keep a record measured some other way (an out-of-memory outcome, say): results file, export, extra_info."""
    state = _state(request.config)
    return lambda record: keep_and_report(benchmark, state, record)


def keep_and_report(benchmark: Any, state: SessionState, record: dict[str, Any]) -> None:
    """Replay the record's per-round times into pytest-benchmark and attach the record as extra_info."""
    from sdbench.records import json_safe

    samples = record.get("time_per_image_s_samples") or []
    if samples:
        REPLAY_TIMER.load(samples)
        benchmark.pedantic(lambda: None, rounds=len(samples), iterations=1, warmup_rounds=0)
    # extra_info must be mutated in place (a replaced dict is silently lost).
    benchmark.extra_info.update(json_safe(record))
    state.keep(record)


# --- machine info, storage and comparisons ----------------------------------------------------------
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    sd: SdConfig | None = getattr(config, "_sdbench", None)
    if sd is None:
        return
    machine_info["sdbench"] = dict(gpu_identity(sd.device))


def pytest_benchmark_compare_machine_info(config: pytest.Config, benchmarksession: Any, machine_info: dict[str, Any],
                                          compared_benchmark: dict[str, Any]) -> None:
    mine = machine_info.get("sdbench") or {}
    theirs = (compared_benchmark.get("machine_info") or {}).get("sdbench") or {}
    keys = ("gpu_name", "gpu_uuid", "gpu_simulated", "sm_clock_mhz_setting", "mem_clock_mhz_setting", "power_limit_w_setting")
    diffs = [f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in keys if mine.get(k) != theirs.get(k)]
    if diffs and not config.getoption("--sd-allow-cross-gpu"):
        raise pytest.UsageError(
            "refusing to compare benchmarks of a different GPU or clock setting ("
            + "; ".join(diffs) + "); pass --sd-allow-cross-gpu to compare anyway")
    if diffs:
        benchmarksession.logger.warning("comparing across GPUs/clocks: " + "; ".join(diffs))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state: SessionState | None = getattr(config, "_sdbench_state", None)
    if state is None:
        return
    try:
        export = config.getoption("--sd-export")
        if export and state.records:
            from sdbench.records import export_metrics

            meta = {"command": "pytest", "environment": state.bench.environment}
            export_metrics(state.records, export, meta)
        baseline = config.getoption("--sd-compare")
        if baseline:
            code = _compare_at_end(config, state, baseline)
            if code and session.exitstatus == 0:
                session.exitstatus = code
    finally:
        state.close()


def _compare_at_end(config: pytest.Config, state: SessionState, baseline: str) -> int:
    import tempfile

    from sdbench.compare import compare_files, parse_fail_on
    from sdbench.records import ResultsWriter

    fail_on = parse_fail_on(config.getoption("--sd-compare-fail")) if config.getoption("--sd-compare-fail") else {}
    with tempfile.TemporaryDirectory() as tmp:
        current = Path(tmp) / "current.jsonl"
        writer = ResultsWriter(current)
        for rec in state.records:
            writer.append(rec)
        result = compare_files([baseline, str(current)], fail_on=fail_on,
                               allow_cross_gpu=config.getoption("--sd-allow-cross-gpu"))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("-", "sdbench compare (time, energy, power)")
        reporter.write_line(result.table)
    return result.exit_code


def pytest_report_header(config: pytest.Config) -> list[str]:
    sd: SdConfig | None = getattr(config, "_sdbench", None)
    if sd is None:
        return []
    storage = config.getoption("benchmark_storage", default=None)
    return [f"sdbench: device {sd.device}; histories in {storage}",
            f"sdbench: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}"]
