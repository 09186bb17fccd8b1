"""The sdbench pytest plugin: the benchmark matrix as parametrised cases, warm-pipeline and energy
fixtures, pytest-benchmark integration, GPU-aware histories and an energy-aware end-of-run compare.

Every case is measured by the same Runner as the CLI. pytest-benchmark's time columns are the
Runner's synchronised per-image times (one per measured round, replayed through a timer that
returns them), and `extra_info` holds the rest of the record.

Each case's matrix axes (model, scheduler, resolution, batch_size, steps, dtype, profile, attention,
knobs, weights, prompt, sm_clock_mhz) are pytest parameters of its test next to `sd_case`, so
`--benchmark-group-by=param:scheduler` works; the test ids stay the case ids.

A run keeps its results in a folder under the current directory (`sdbench-results/<time>-<suites>/`,
`--sd-results-dir`, off with `--sd-no-results-dir`), created at the first record: `records.jsonl` (every
record, flushed after each case), `benchmark.json` (pytest-benchmark's JSON) and `summary.md` (the closing
table, the environment, what to do next). A live line per case shows its progress and the suite's ETA.
"""

from __future__ import annotations

import collections
import datetime as _dt
import functools
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sdbench import settings
from sdbench.errors import ConfigError, SdbenchError
from sdbench.matrix import build_cases, suite_matrix, unique_cases
from sdbench.record.folder import (
    BENCHMARK_JSON_NAME,
    RECORDS_NAME,
    SUMMARY_NAME,
    default_results_dir,
    shown_path,
)

if TYPE_CHECKING:
    from sdbench.session import Bench

DEFAULT_STORAGE = "file://./.benchmarks"
# pytest-benchmark's columns when a run with sdbench cases names none: sdbench's own table (printed after it)
# has images/s, the intervals, energy and the stop reason.
COMPACT_COLUMNS = ["median", "iqr", "rounds"]


# --- options (generated from the settings table: sdbench.settings) ----------------------------------------
#: The rows behind the plugin's options, by group; each option's check, default and help are its row's, and
#: the CLI's matching flags (`sdbench bench --models`, `generate --max-time`, ...) come from the same rows.
MATRIX_OPTIONS: tuple[str, ...] = ("matrix.models", "matrix.schedulers", "matrix.resolutions", "matrix.batch_sizes",
                                   "matrix.steps", "matrix.dtypes", "matrix.profiles", "matrix.attention",
                                   "matrix.knobs", "matrix.weights", "case.device", "matrix.shard")
MEASUREMENT_OPTIONS: tuple[str, ...] = settings.MEASUREMENT_KEYS
OUTPUT_OPTIONS: tuple[str, ...] = ("output.results_dir", "output.no_results_dir", "output.no_progress",
                                   "output.caller_prints_next", "output.results", "output.export", "output.compare",
                                   "output.compare_fail", "output.allow_cross_gpu", "output.no_storage_split",
                                   "output.num_images")


def _add_matrix_options(group: Any) -> None:
    settings.add_pytest_options(group.addoption, MATRIX_OPTIONS)


def _add_measurement_options(group: Any) -> None:
    settings.add_pytest_options(group.addoption, MEASUREMENT_OPTIONS)


def _add_output_options(group: Any) -> None:
    settings.add_pytest_options(group.addoption, OUTPUT_OPTIONS)


#: --sd-num-images as argparse would check it (a whole number >= 1).
_images_per_case = settings.get("output.num_images").parse


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sdbench", "sdbench: Stable Diffusion benchmark matrix and measurement")
    _add_matrix_options(group)
    _add_measurement_options(group)
    _add_output_options(group)


def _check_options(config: pytest.Config) -> None:
    """Check every --sd-* value against its row now, at configure time, before pytest-benchmark or sdbench
    makes a folder: a bad value is one usage-error line (exit 4). Checked values replace the text pytest
    parsed, so `getoption` gives numbers where a row holds numbers."""
    keys = [k for k in (*MATRIX_OPTIONS, *MEASUREMENT_OPTIONS, *OUTPUT_OPTIONS) if k != "case.device"]
    try:
        values = settings.pytest_values(config.getoption, keys)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    for option, value in values.items():
        setattr(config.option, option.lstrip("-").replace("-", "_"), value)
    shard = values.get("--sd-shard")
    if shard:
        from sdbench.distribute.plan import parse_shard

        try:
            parse_shard(shard)
        except ConfigError as exc:
            raise pytest.UsageError(f"--sd-shard: {exc}") from None


def measurement_overrides(config: Any) -> dict[str, Any]:
    """The RunnerConfig fields the --sd-* measurement options set (unset ones are left out)."""
    over: dict[str, Any] = {}
    for key in MEASUREMENT_OPTIONS:
        row = settings.get(key)
        value = config.getoption(row.pytest)
        if value is not None:
            over[row.name] = value
    return over


def _check_runner_config(config: pytest.Config, device: str) -> None:
    """The measurement options together, as the cases will be measured (min_rounds <= max_rounds, ...)."""
    from sdbench.runner import RunnerConfig

    try:
        RunnerConfig.for_device(device, **measurement_overrides(config))
    except ConfigError as exc:
        option = next((settings.get(k).pytest for k in MEASUREMENT_OPTIONS if settings.get(k).name == exc.field),
                      "--sd-*")
        raise pytest.UsageError(f"{option}: {exc}") from None


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
# checkout's pytest.ini, and under --strict-markers an unregistered marker is a collection error. The list is
# the settings table's (sdbench.settings.SUITES), written once.
SUITE_MARKERS = settings.SUITES


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sd_matrix(**axes): this benchmark's default case matrix "
                            "(models, schedulers, resolutions, batch_sizes, steps, dtypes, profiles, weights, prompts)")
    for name, description in SUITE_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: sdbench benchmark suite - {description}")
    _check_options(config)
    try:
        device = _resolve_device(config.getoption("--sd-device"))
    except ConfigError as exc:
        raise pytest.UsageError(f"--sd-device: {exc}") from None
    _check_runner_config(config, device)
    config._sdbench = SdConfig(device=device, options={})  # type: ignore[attr-defined]
    config._sdbench_matrix_errors = []  # type: ignore[attr-defined]
    config.pluginmanager.register(ProgressHooks(config), f"sdbench-progress-{id(config)}")
    if config.getoption("--sd-results-dir") and config.getoption("--sd-no-results-dir"):
        raise pytest.UsageError("--sd-results-dir and --sd-no-results-dir: choose one")
    explicit = config.getoption("--sd-results-dir")
    if explicit and (Path(explicit) / RECORDS_NAME).exists():
        raise pytest.UsageError(f"--sd-results-dir {explicit}: it already holds the records of another run "
                                f"({RECORDS_NAME}); choose a new folder")
    from sdbench.record.io import check_output_paths

    try:  # before anything is measured: a bad output file is one line now, not lost records at the end
        check_output_paths(**{"--sd-results": config.getoption("--sd-results"),
                              "--sd-export": config.getoption("--sd-export")})
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    # Histories are stored per GPU and clock setting, so --benchmark-compare compares like with like. The
    # storage root itself is per GPU and clock (pytest-benchmark keeps <root>/<machine_id>/NNNN_name.json),
    # so `pytest-benchmark --storage <root> list` and `compare` find them.
    storage = config.getoption("benchmark_storage", default=None)
    if storage == DEFAULT_STORAGE and not config.getoption("--sd-no-storage-split"):
        storage = config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{storage_slug(device)}"
    # pytest-benchmark creates its storage folder when it starts, even for a run that saves nothing (or a
    # usage error): the folders it makes here are removed again at the end if they are still empty.
    config._sdbench_new_dirs = _missing_dirs(storage_path(storage))  # type: ignore[attr-defined]


def storage_path(storage: str | None) -> Path | None:
    """The folder of a file:// (or plain path) --benchmark-storage, as given (relative to the cwd); else None."""
    if not storage:
        return None
    if "://" in storage:
        scheme, _, rest = storage.partition("://")
        if scheme != "file":
            return None
        storage = rest
    return Path(storage)


def _missing_dirs(path: Path | None) -> list[Path]:
    """`path` and those of its ancestors that do not exist yet, deepest first (absolute)."""
    if path is None:
        return []
    path = Path.cwd() / path
    out = []
    for p in (path, *path.parents):
        if p.exists():
            break
        out.append(p)
    return out


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in getattr(config, "_sdbench_new_dirs", []):
        try:
            folder.rmdir()  # only an empty folder: anything saved in it stays
        except FileNotFoundError:
            continue
        except OSError:
            break


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def storage_slug(device: str) -> str:
    """The history root's name for this GPU and clock setting, e.g. nvidia-h100-80gb-hbm3-1a2b3c4d-default-clocks."""
    ident = gpu_identity(device)
    name = _slug(str(ident.get("gpu_name", "cpu")))
    uuid = str(ident.get("gpu_uuid") or "").replace("GPU-", "")[:8]
    return f"{name}-{uuid}-{ident['clock_setting']}" if uuid else f"{name}-{ident['clock_setting']}"


def legacy_storage_slug(device: str) -> str:
    """Where sdbench before the flat layout kept this GPU's histories (<gpu>-<uuid>/<clocks>, one level too deep
    for pytest-benchmark's own list/compare)."""
    ident = gpu_identity(device)
    name = _slug(str(ident.get("gpu_name", "cpu")))
    uuid = str(ident.get("gpu_uuid") or "").replace("GPU-", "")[:8]
    return f"{name}-{uuid}/{ident['clock_setting']}" if uuid else f"{name}/{ident['clock_setting']}"


@functools.lru_cache(maxsize=8)
def gpu_identity(device: str) -> dict[str, Any]:
    """GPU name, UUID, driver and clock/power settings of `device` (read-only NVML; asked once per device)."""
    from sdbench.record.environment import software_versions
    from sdbench.session import open_gpu_for

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


def _matrix(config: pytest.Config, marker_kwargs: dict[str, Any]) -> dict[str, list[Any]]:
    """The case matrix of one benchmark: :func:`sdbench.matrix.suite_matrix` with this session's options."""
    sd: SdConfig = config._sdbench  # type: ignore[attr-defined]
    return suite_matrix(sd.on_gpu, marker_kwargs, config.getoption)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sd_case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("sd_matrix")
    kwargs = dict(marker.kwargs) if marker else {}
    sd: SdConfig = metafunc.config._sdbench  # type: ignore[attr-defined]
    try:
        cases = unique_cases(build_cases(_matrix(metafunc.config, kwargs), sd.device))
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
        from sdbench.distribute.plan import parse_shard

        try:
            index, count = parse_shard(shard)
        except ConfigError as exc:
            raise pytest.UsageError(f"--sd-shard: {exc}") from None
        cases = [it for it in items if "sd_case" in getattr(it, "fixturenames", ())]
        drop = {id(it) for k, it in enumerate(cases) if k % count != index}
        if drop:
            config.hook.pytest_deselected(items=[it for it in items if id(it) in drop])
            items[:] = [it for it in items if id(it) not in drop]
    found = False
    for item in items:
        add_axis_params(item)
        if {"sd_measure", "sd_keep"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.benchmark(timer=REPLAY_TIMER, group=_group_of(item)))
            found = True
    bs = getattr(config, "_benchmarksession", None)
    if found and bs is not None and not config.getoption("benchmark_columns", default=None):
        # pytest-benchmark's default table is ~240 columns of time only; sdbench's own follows it.
        bs.columns = list(COMPACT_COLUMNS)


def axis_params(case: Any) -> dict[str, Any]:
    """The matrix axes of `case` as pytest parameters (what --benchmark-group-by=param:NAME reads)."""
    return {"model": case.model, "scheduler": case.scheduler, "resolution": f"{case.width}x{case.height}",
            "batch_size": case.batch_size, "steps": case.steps, "dtype": case.dtype, "profile": case.profile,
            "attention": case.attention, "knobs": case.knobs or "none", "weights": case.weights,
            "prompt": case.prompt, "sm_clock_mhz": case.sm_clock_mhz or "default"}


def add_axis_params(item: pytest.Item) -> None:
    """Give a test parametrised by `sd_case` one parameter per matrix axis (pytest-benchmark's `params`
    come from the test's callspec). The test id stays the case id; a parameter or fixture of the test's own
    with an axis's name is left alone."""
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("sd_case") if callspec is not None else None
    if case is None or not hasattr(case, "case_hash"):
        return
    names = set(getattr(item, "fixturenames", ()))
    for name, value in axis_params(case).items():
        if name not in callspec.params and name not in names:
            callspec.params[name] = value


def pytest_collection_finish(session: pytest.Session) -> None:
    """Count the sdbench cases of this run (after every selection): the progress lines' `case k/N`."""
    cases = [it for it in session.items if {"sd_case", "sd_measure", "sd_keep"} & set(getattr(it, "fixturenames", ()))]
    state = _state(session.config)
    state.case_ids = {it.nodeid: _param_id(it) for it in cases}
    state.suites = sorted({_group_of(it) for it in cases}, key=_suite_order)
    state.progress = CaseProgress.for_config(session.config, state, len(cases))


def _param_id(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    return callspec.id if callspec is not None else item.name


def _suite_order(name: str) -> int:
    names = list(SUITE_MARKERS)
    return names.index(name) if name in names else len(names)


def _group_of(item: pytest.Item) -> str:
    for name in SUITE_MARKERS:
        if item.get_closest_marker(name):
            return name
    return "sdbench"


# --- fixtures ------------------------------------------------------------------------------------------
class SessionState:
    """Per-session objects: the Bench (warm pipelines, Runner, device), the records of this run, its results
    folder and its progress lines."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._bench: Bench | None = None
        self.records: list[dict[str, Any]] = []
        self.results_path = config.getoption("--sd-results")
        self.writer: Any = None  # the --sd-results file, opened at the first record
        self.folder = ResultsFolder(config)
        self.case_ids: dict[str, str] = {}
        self.suites: list[str] = []
        self.progress: CaseProgress | None = None
        self.finished: set[str] = set()  # node ids of the sdbench cases that ran to their end
        self.last_record: dict[str, dict[str, Any]] = {}
        self.summary_lines: list[str] = []

    @property
    def bench(self) -> Bench:
        if self._bench is None:
            from sdbench.session import Bench

            sd: SdConfig = self.config._sdbench  # type: ignore[attr-defined]
            self._bench = Bench(device=sd.device, runner_config=self.runner_config(sd.device))
        return self._bench

    def runner_config(self, device: str) -> Any:
        from sdbench.runner import RunnerConfig

        return RunnerConfig.for_device(device, **measurement_overrides(self.config))

    def target_rel_ci(self) -> float:
        sd: SdConfig = self.config._sdbench  # type: ignore[attr-defined]
        return float(self.runner_config(sd.device).target_rel_ci)

    def keep(self, record: dict[str, Any]) -> None:
        from sdbench.record.io import ResultsWriter

        self.records.append(record)
        if record.get("test"):
            self.last_record[str(record["test"])] = record
        if self.results_path:
            if self.writer is None:
                self.writer = ResultsWriter(self.results_path)
            self.writer.append(record)
        self.folder.append(record, self.suites)

    def close(self) -> None:
        if self._bench is not None:
            self._bench.close()
            self._bench = None


class ResultsFolder:
    """The run's results folder, made at its first record (a run that measures nothing leaves no folder)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.disabled = bool(config.getoption("--sd-no-results-dir"))
        explicit = config.getoption("--sd-results-dir")
        self.explicit = Path(explicit) if explicit else None
        self.started = _dt.datetime.now()
        self.started_s = time.monotonic()
        self.path: Path | None = None
        self.writer: Any = None
        self.user_json = config.getoption("benchmark_json", default=None)
        self.json_path: Path | None = None

    def ensure(self, suites: list[str]) -> Path | None:
        if self.disabled:
            return None
        if self.path is None:
            from sdbench.record.io import ResultsWriter

            path = Path.cwd() / (self.explicit or default_results_dir(suites, self.started))
            path.mkdir(parents=True, exist_ok=True)
            self.path = path
            self.writer = ResultsWriter(path / RECORDS_NAME)
            bs = getattr(self.config, "_benchmarksession", None)
            if bs is not None and not bs.disabled:
                if bs.json is None:
                    self.json_path = path / BENCHMARK_JSON_NAME
                    bs.json = JsonTarget(self.json_path)
                if isinstance(bs.histogram, str) and re.fullmatch(r"benchmark_\d{8}_\d{6}", bs.histogram):
                    bs.histogram = str(path / "histogram")  # a bare --benchmark-histogram: into the folder too
        return self.path

    def append(self, record: dict[str, Any], suites: list[str]) -> None:
        if self.ensure(suites) is not None:
            self.writer.append(record)

    def finish(self) -> None:
        """Copy a --benchmark-json the user named into the folder (pytest-benchmark has written it by now)."""
        if self.path is None or self.json_path is not None or not self.user_json:
            return
        src = Path(getattr(self.user_json, "name", self.user_json))  # a path, or (older pytest-benchmark) a file
        if src.is_file():
            shutil.copyfile(src, self.path / BENCHMARK_JSON_NAME)
            self.json_path = self.path / BENCHMARK_JSON_NAME


class JsonTarget(os.PathLike):  # type: ignore[type-arg]
    """Where pytest-benchmark writes its JSON, in the form each version expects: 5.3 opens a path
    (``open(json, "wb")``), earlier versions write to the open file ``--benchmark-json`` gave
    (``with json as fh``). This is both."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._fh: Any = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __enter__(self) -> Any:
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__
        return self._fh

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __str__(self) -> str:
        return str(self.path)


class CaseProgress:
    """One live line per sdbench case on the terminal reporter: `case k/N <id>: <state> | ETA ...`.

    On a terminal the line is rewritten in place (pytest's `rewrite`) and stays, finished, once the case is
    done; elsewhere (a pipe, CI logs) only the finished line is printed, plus a line at most every
    `PLAIN_EVERY_S` while a case runs long. The counts are of cases started and finished: an interrupted run
    never shows all of them done. Writes happen with pytest's capture suspended and keep the reporter's idea
    of the current line, so pytest's own progress stays where it belongs.
    """

    PLAIN_EVERY_S = 15.0
    LINE_WIDTH = 120

    def __init__(self, reporter: Any, capman: Any, state: SessionState, total: int) -> None:
        from sdbench.output.tables import CaseClock

        self.reporter = reporter
        self.capman = capman
        self.state = state
        self.clock = CaseClock(total)
        self.live = bool(reporter.isatty())
        self.verbose = reporter.verbosity > 0
        self.nodeid: str | None = None
        self.shown: set[str] = set()
        self._saved_fspath: Any = None
        self._last_plain_s = 0.0
        self._open = False  # a line of ours is on the screen without its newline

    @classmethod
    def for_config(cls, config: pytest.Config, state: SessionState, total: int) -> CaseProgress | None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or total == 0 or config.getoption("--sd-no-progress"):
            return None
        return cls(reporter, config.pluginmanager.get_plugin("capturemanager"), state, total)

    def _write(self, text: str) -> None:
        def write() -> None:
            if self.live:
                # Within the terminal's width: a wrapped line cannot be rewritten in place.
                tw = getattr(self.reporter, "_tw", None)
                width = getattr(tw, "fullwidth", 120) or 120
                self.reporter.rewrite(text[:max(20, width - 1)], erase=True)
            else:
                self.reporter.write(("\n" if self._open else "") + text)
            self._open = True
            self.reporter.flush()

        if self.capman is not None:
            with self.capman.global_and_fixture_disabled():
                write()
        else:
            write()

    def _line(self, state: str) -> str:
        """`case k/N <id>: <state> | ETA ...`, the id shortened to keep the line within LINE_WIDTH."""
        from sdbench.output.tables import shorten

        assert self.nodeid is not None
        eta = self.clock.eta_text()
        label = self.state.case_ids.get(self.nodeid, self.nodeid)
        rest = f": {state}" + (f" | {eta}" if eta else "")
        head = f"{self.clock.label()} "
        return head + shorten(label, max(24, self.LINE_WIDTH - len(head) - len(rest))) + rest

    def begin(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.clock.start()
        self.shown.add(nodeid)
        self._saved_fspath = self.reporter.currentfspath
        self._last_plain_s = time.monotonic()
        tw = getattr(self.reporter, "_tw", None)
        if getattr(tw, "width_of_current_line", 1) != 0:
            self.reporter.write("\n", flush=True)  # off pytest's line (file name and letters so far)
        if self.live:
            self._write(self._line("starting"))

    def update(self, message: str) -> None:
        if self.nodeid is None:
            return
        elapsed = self.clock.elapsed_s()
        if not self.live:
            now = time.monotonic()
            if now - self._last_plain_s < self.PLAIN_EVERY_S:
                return
            self._last_plain_s = now
        from sdbench.output.tables import duration

        self._write(self._line(f"{message}, {duration(elapsed)}"))

    def end(self, report: Any) -> None:
        """The case's last line: done with its numbers, or how it ended."""
        if self.nodeid != report.nodeid:
            return
        from sdbench.output.tables import duration, with_interval

        took = duration(self.clock.finish())
        self.state.finished.add(report.nodeid)
        rec = self.state.last_record.get(report.nodeid)
        if report.failed:
            what = f"failed after {took}"
        elif report.skipped:
            what = f"skipped after {took}"
        elif rec is None:
            what = f"done in {took}"
        elif rec.get("oom"):
            what = f"done in {took}: out of memory (a recorded result)"
        else:
            t = with_interval(rec.get("time_per_image_s_median"), rec.get("time_per_image_s_ci95_low"),
                              rec.get("time_per_image_s_ci95_high"))
            what = f"done in {took}, {t} s/image, {rec.get('stop_reason') or '-'}"
        self._write(self._line(what))
        if not self.verbose:
            self.reporter.write("\n")
        self._open = False
        # pytest's next write goes where it expects: on to the same file's letters (default), or a new
        # line for the verbose result word.
        self.reporter.currentfspath = None if self.verbose else self._saved_fspath
        self.nodeid = None


def _state(config: pytest.Config) -> SessionState:
    state = getattr(config, "_sdbench_state", None)
    if state is None:
        state = SessionState(config)
        config._sdbench_state = state  # type: ignore[attr-defined]
    return state


@pytest.fixture(scope="session")
def sd_bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    """The session's Bench: a warm pipeline cache (a scheduler change is a swap), the Runner and the GPU. A suite
    that measures its cases another way installs hooks on it for a while (``sd_bench.hooked(...)``, as the DVFS
    suite's clock lock does)."""
    yield _state(request.config).bench


@pytest.fixture(scope="session")
def sd_device(request: pytest.FixtureRequest) -> str:
    """The compute device of this session (cpu, cuda:N or simulated)."""
    return request.config._sdbench.device  # type: ignore[attr-defined]


@pytest.fixture
def sd_pipeline(sd_bench: Any, sd_case: Any) -> Any:
    """The warm diffusers pipeline for the current case, with the case's scheduler in place."""
    from sdbench.pipelines.build import set_scheduler

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
        progress = state.progress
        say = progress.update if progress is not None and progress.nodeid == request.node.nodeid else None
        if say is not None:
            say("building the pipeline (or taking the warm one)")
        record = sd_bench.measure(case, progress=say)
        record.update(extra)
        record["test"] = request.node.nodeid
        keep_and_report(benchmark, state, record)
        return record

    return measure


@pytest.fixture
def sd_keep(request: pytest.FixtureRequest, benchmark: Any) -> Callable[[dict[str, Any]], None]:
    """Keep a record measured some other way (an out-of-memory outcome, say): results file, export, extra_info."""
    state = _state(request.config)

    def keep(record: dict[str, Any]) -> None:
        record.setdefault("test", request.node.nodeid)
        keep_and_report(benchmark, state, record)

    return keep


# --- progress lines ----------------------------------------------------------------------------------
class ProgressHooks:
    """The per-session hooks that start and finish each case's progress line (registered at configure, as
    pytest_runtest_logstart is given no config)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def _progress(self) -> CaseProgress | None:
        state: SessionState | None = getattr(self.config, "_sdbench_state", None)
        return state.progress if state is not None else None

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        progress = self._progress()
        if progress is not None and nodeid in progress.state.case_ids:
            progress.begin(nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The case's line is finished before pytest writes its letter (the call's, or a failed/skipped setup's)."""
        progress = self._progress()
        if progress is None or progress.nodeid != report.nodeid:
            return
        if report.when == "call" or (report.when == "setup" and not report.passed):
            progress.end(report)


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """A passed case's dot is left out: its progress line says it is done (failures keep their letter)."""
    state: SessionState | None = getattr(config, "_sdbench_state", None)
    if (state is None or state.progress is None or report.when != "call" or not report.passed
            or hasattr(report, "wasxfail") or report.nodeid not in state.progress.shown):
        return None
    return "passed", "", "PASSED"


def keep_and_report(benchmark: Any, state: SessionState, record: dict[str, Any]) -> None:
    """Replay the record's per-round times into pytest-benchmark and attach the record as extra_info."""
    from sdbench.record.io import json_safe

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


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """A case parameter is saved as its case id (JSON has no Case), next to the axis parameters."""
    for bench in output_json.get("benchmarks", []):
        params = bench.get("params")
        if isinstance(params, dict) and any(hasattr(v, "case_hash") for v in params.values()):
            bench["params"] = {k: v.case_id if hasattr(v, "case_hash") else v for k, v in params.items()}


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
            from sdbench.record.io import export_metrics

            meta = {"command": "pytest", "environment": state.bench.environment}
            export_metrics(state.records, export, meta)
        baseline = config.getoption("--sd-compare")
        if baseline:
            code = _compare_at_end(config, state, baseline)
            if code and session.exitstatus == 0:
                session.exitstatus = code
        if (state.case_ids or state.records) and not config.option.collectonly:
            state.summary_lines = _finish_results(config, state, int(exitstatus))
    finally:
        state.close()


def _status(state: SessionState, exitstatus: int) -> str:
    total, done = len(state.case_ids), len(state.finished & set(state.case_ids))
    if exitstatus == int(pytest.ExitCode.INTERRUPTED):
        return f"interrupted: {done} of {total} cases"
    if done < total:
        return f"stopped early: {done} of {total} cases"
    return f"complete: {done} of {total} cases"


def _history(config: pytest.Config) -> tuple[str | None, bool]:
    """The history storage as `pytest-benchmark --storage` takes it, and whether it holds saved runs."""
    folder = storage_path(config.getoption("benchmark_storage", default=None))
    if folder is None:
        return None, False
    text = str(folder)
    text = text[2:] if text.startswith("./") else text
    return text, any((Path.cwd() / folder).glob("*/[0-9][0-9][0-9][0-9]_*.json"))


def _next_steps(config: pytest.Config, state: SessionState, folder: Path | None) -> list[str]:
    """What to do with the results: shell commands, each after a '# ...' line saying what it is for."""
    steps = []
    if folder is not None:
        here = shown_path(folder)
        data = f"{here}/{BENCHMARK_JSON_NAME}" if (folder / BENCHMARK_JSON_NAME).is_file() else f"{here}/{RECORDS_NAME}"
        steps += ["# compare a later run with this one (time, energy and power; noise-aware):",
                  f"sdbench compare {data} LATER/{Path(data).name}"]
        clocks = {r.get("sm_clock_mhz_setting") for r in state.records if r.get("dvfs_planned_sm_clocks_mhz") is not None}
        if len(clocks) >= 2:
            steps += ["# the clock points: energy, EDP and ED2P against clock, and their optima:", f"sdbench report {here}"]
    storage, saved = _history(config)
    if storage is not None and saved:
        steps += ["# this GPU and clock setting's pytest-benchmark history, with pytest-benchmark's own CLI:",
                  f"pytest-benchmark --storage {storage} list",
                  f"pytest-benchmark --storage {storage} compare --group-by=param:scheduler"]
    return steps


def commands_of(steps: list[str]) -> list[str]:
    """The commands of a 'What next' block, without their comment lines."""
    return [step for step in steps if not step.startswith("#")]


def _finish_results(config: pytest.Config, state: SessionState, exitstatus: int) -> list[str]:
    """Write summary.md into the results folder; return the lines the terminal summary prints."""
    from sdbench.output.tables import duration, environments_of, legend, results_table, summary_markdown

    folder = state.folder
    folder.finish()
    target = state.target_rel_ci()
    table = results_table(state.records, target)
    legend_lines = legend(target) if table else []
    status = _status(state, exitstatus)
    took = duration(time.monotonic() - folder.started_s)
    steps = _next_steps(config, state, folder.path)
    caller_prints = bool(config.getoption("--sd-caller-prints-next"))
    lines = [*table, *legend_lines] + ([] if caller_prints else [status + f" in {took}"])
    if folder.path is not None:
        files = [(RECORDS_NAME, "every record, one JSON object a line (appended after each case)"),
                 (SUMMARY_NAME, "this summary")]
        if (folder.path / BENCHMARK_JSON_NAME).is_file():
            files.insert(1, (BENCHMARK_JSON_NAME, "pytest-benchmark's JSON (its machine_info names the GPU and clocks)"))
        envs = environments_of(state.records)
        if not envs and state._bench is not None:
            envs = [state._bench.environment]
        storage, saved = _history(config)
        status_lines = [f"{status} in {took}", f"started {folder.started.isoformat(timespec='seconds')}",
                        f"{len(state.records)} record(s)"]
        if storage is not None:
            status_lines.append(f"history: {storage}" + ("" if saved else " (nothing saved: --benchmark-autosave "
                                                                         "or --benchmark-save NAME keeps one)"))
        text = summary_markdown(title=f"sdbench results: {', '.join(state.suites) or 'sdbench'}", status=status_lines,
                                table=table, legend_lines=legend_lines, environments=envs, files=files,
                                next_steps=steps, command=" ".join(["pytest", *config.invocation_params.args]))
        (folder.path / SUMMARY_NAME).write_text(text, encoding="utf-8")
        names = ", ".join(name for name, _ in files)
        lines.append(f"results: {shown_path(folder.path)}/ ({names})")
    elif not folder.disabled:
        lines.append("results: no case was measured, no results folder written")
    if caller_prints:
        return [line for line in lines if not line.startswith("results: ")]
    return lines + [f"next: {step}" for step in commands_of(steps)]


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """sdbench's table after pytest-benchmark's (so it is not lost above a wide table), then where it all is."""
    state: SessionState | None = getattr(config, "_sdbench_state", None)
    if state is None or not state.summary_lines:
        return
    terminalreporter.write_sep("-", "sdbench results")
    for line in state.summary_lines:
        terminalreporter.write_line(line)


def _compare_at_end(config: pytest.Config, state: SessionState, baseline: str) -> int:
    import tempfile

    from sdbench.output.compare import compare_files, parse_fail_on
    from sdbench.record.io import ResultsWriter

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
    lines = [f"sdbench: device {sd.device}; histories in {storage}",
             f"sdbench: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}"]
    folder = storage_path(storage)
    if folder is not None and storage == f"{DEFAULT_STORAGE}/{storage_slug(sd.device)}":
        legacy = Path(".benchmarks") / legacy_storage_slug(sd.device)
        if any(legacy.glob("*/*.json")):
            lines.append(f"sdbench: histories of this GPU from an older sdbench are in {legacy}/ (too deep for "
                         f"pytest-benchmark's list/compare): move its machine folders into {folder}/ to keep comparing")
    return lines
