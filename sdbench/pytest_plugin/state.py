"""The plugin's per-session state, kept in ``config.stash`` (never in module globals).

Two pytest sessions in one process (pytester's in-process runs) each have their own config, so nothing here
leaks from one to the other: :data:`SD_CONFIG` (the resolved device), :data:`MATRIX_ERRORS` (case-matrix errors
held until collection is over), :data:`NEW_DIRS` (storage folders pytest-benchmark made, removed again if
still empty) and :data:`SESSION_STATE` (the :class:`SessionState`: the Bench, the records, the results folder).
The other modules keep their own keys next to what they hold: the replay timer
(:data:`sdbench.pytest_plugin.replay.SESSION_TIMER`), the progress lines
(:data:`sdbench.pytest_plugin.progress.CASE_PROGRESS`) and the GPU identities
(:data:`sdbench.pytest_plugin.histories.GPU_IDENTITIES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sdbench.pytest_plugin.options import measurement_overrides
from sdbench.pytest_plugin.results import ResultsFolder

if TYPE_CHECKING:
    from sdbench.session import Bench


@dataclass
class SdConfig:
    """The resolved plugin settings of one pytest session."""

    device: str
    options: dict[str, Any]

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


#: The resolved plugin settings, set at configure time (absent when configure stopped on a usage error).
SD_CONFIG = pytest.StashKey[SdConfig]()
#: Case-matrix errors met while parametrising, raised as one usage error once collection is over.
MATRIX_ERRORS = pytest.StashKey[list[str]]()
#: The storage folders pytest-benchmark is about to make, deepest first: removed at the end if still empty.
NEW_DIRS = pytest.StashKey[list[Path]]()


def sd_config(config: pytest.Config) -> SdConfig:
    """The session's resolved plugin settings (its compute device); a suite's own hooks read the device here."""
    return config.stash[SD_CONFIG]


class SessionState:
    """Per-session objects: the Bench (warm pipelines, Runner, device), the records of this run, its results
    folder and the cases its progress lines count."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._bench: Bench | None = None
        self.records: list[dict[str, Any]] = []
        self.results_path = config.getoption("--sd-results")
        self.writer: Any = None  # the --sd-results file, opened at the first record
        self.folder = ResultsFolder(config)
        self.case_ids: dict[str, str] = {}
        self.suites: list[str] = []
        self.finished: set[str] = set()  # node ids of the sdbench cases that ran to their end
        self.last_record: dict[str, dict[str, Any]] = {}
        self.summary_lines: list[str] = []

    @property
    def bench(self) -> Bench:
        if self._bench is None:
            from sdbench.session import Bench

            sd = sd_config(self.config)
            self._bench = Bench(device=sd.device, runner_config=self.runner_config(sd.device))
        return self._bench

    def runner_config(self, device: str) -> Any:
        from sdbench.runner import RunnerConfig

        return RunnerConfig.for_device(device, **measurement_overrides(self.config))

    def target_rel_ci(self) -> float:
        sd = sd_config(self.config)
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


#: The session's SessionState, made when first asked for (collection's end, or a fixture).
SESSION_STATE = pytest.StashKey[SessionState]()


def session_state(config: pytest.Config) -> SessionState:
    """The session's SessionState, made at the first call."""
    state = config.stash.get(SESSION_STATE, None)
    if state is None:
        state = config.stash[SESSION_STATE] = SessionState(config)
    return state


def existing_session_state(config: pytest.Config) -> SessionState | None:
    """The session's SessionState if one was made (None: nothing was collected or measured)."""
    return config.stash.get(SESSION_STATE, None)

