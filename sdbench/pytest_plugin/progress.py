"""The live progress line of each sdbench case (`case k/N <id>: <state> | ETA ...`) and the hooks that
start and finish it.

The progress object of a session is kept in ``config.stash`` (:data:`CASE_PROGRESS`), made when collection is
over (:func:`sdbench.pytest_plugin.collection.pytest_collection_finish`).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import pytest


class CaseTally(Protocol):
    """What the progress lines read of the session (:class:`sdbench.pytest_plugin.state.SessionState`)."""

    case_ids: dict[str, str]  # node id -> the case's id, of every sdbench case of the run
    finished: set[str]  # node ids of the cases that ran to their end
    last_record: dict[str, dict[str, Any]]  # node id -> its last record


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

    def __init__(self, reporter: Any, capman: Any, state: CaseTally, total: int) -> None:
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
    def for_config(cls, config: pytest.Config, state: CaseTally, total: int) -> CaseProgress | None:
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


#: The session's progress lines (None: no terminal reporter, no sdbench case, or --sd-no-progress).
CASE_PROGRESS = pytest.StashKey[CaseProgress | None]()


def case_progress(config: pytest.Config) -> CaseProgress | None:
    """The session's progress lines, once collection is over (None before, or when there are none)."""
    return config.stash.get(CASE_PROGRESS, None)


class ProgressHooks:
    """The per-session hooks that start and finish each case's progress line (registered at configure, as
    pytest_runtest_logstart is given no config)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def _progress(self) -> CaseProgress | None:
        return case_progress(self.config)

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
    progress = case_progress(config)
    if (progress is None or report.when != "call" or not report.passed
            or hasattr(report, "wasxfail") or report.nodeid not in progress.shown):
        return None
    return "passed", "", "PASSED"

