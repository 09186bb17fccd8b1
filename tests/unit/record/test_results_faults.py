"""Crash-safe results files, tried as a user meets the faults: each ends in a clear message, nothing lost,
a resumable state.

- a torn line (a crash mid-write) at the end or in the middle of a JSON Lines file: reported with file and
  line; ``--resume`` moves the torn bytes aside (``<file>.torn-<n>``), never appends onto them, and measures
  that point again; report and compare read the file with a warning;
- a full disk mid-sweep: one line ("no space left on device writing <file>: N records kept"), exit 3, no
  torn line, the state file written, and ``--resume`` completes the sweep once space is freed;
- an output path that cannot be written: refused before anything is measured, one line, exit 2;
- a results file of a newer schema version: refused by compare and report, never compared as if current;
- a record's identity includes how its energy was measured: compare and resume never pair a counter-measured
  record with a timeline-measured one silently.

Sweeps run on the simulated GPU (virtual clock) with tiny-sd at 64 px and 1 step; plans on the CPU.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testsupport import invoke, tiny_plan

import sdbench.case  # noqa: F401
import sdbench.record.environment  # noqa: F401
import sdbench.record.io  # noqa: F401

# Imported before any in-process pytester run (pytester restores sys.modules after each run, so every module
# the plugin imports lazily must already be here).
import sdbench.session  # noqa: F401
import sdbench.spec.models  # noqa: F401
import sdbench.spec.schedulers  # noqa: F401
from sdbench.distribute.plan import shard_results_path
from sdbench.distribute.workers import run_shard

pytest_plugins = ["pytester"]

SWEEP = ["--device", "simulated", "--model", "tiny-sd", "--steps", "1", "--height", "64", "--width", "64",
         "--clocks", "count:2", "--order-seed", "5", "--default-every", "0", "--idle-gap-s", "0",
         "--cooldown-c", "-1", "--window-periods", "2", "--min-rounds", "1", "--max-rounds", "1",
         "--warmup", "1", "--idle-seconds", "0", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread: None) -> None:
    """Tiny models on a shared 2-core machine (see conftest)."""


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 4-point sweep (default clock, two SM clocks, default clock) on the simulated GPU."""
    out = tmp_path_factory.mktemp("finished") / "sweep"
    result = invoke(["sweep", *SWEEP, "--output-dir", str(out)])
    assert result.code == 0, result.err
    return out


def copy_of(sweep: Path, tmp_path: Path) -> Path:
    out = tmp_path / "sweep"
    shutil.copytree(sweep, out)
    return out


def whole_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON Lines file, each a whole JSON object (fails on a torn line)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends in a torn line"
    return [json.loads(line) for line in data.splitlines()]


def plan_ids(sweep: Path) -> list[str]:
    return [p["point_id"] for p in json.loads((sweep / "plan.json").read_text())["points"]]


def tear(path: Path, index: int) -> dict[str, Any]:
    """Cut line ``index`` in half, as a crash mid-write leaves it; returns the record it held.

    A torn last line ends without a newline; a torn line in the middle is followed by the lines written after
    it (a resume that appended onto the fragment, as sdbench before schema 2 did)."""
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[index])
    fragment = lines[index][: len(lines[index]) // 2]
    if index == len(lines) - 1 or index == -1:
        lines[index] = fragment
    else:
        lines[index] = fragment + b"\n"
    path.write_bytes(b"".join(lines))
    return record


# ---- a torn line ----------------------------------------------------------------------------------------------
def test_a_torn_last_line_is_reported_and_resume_repairs_it_and_measures_that_point_again(
        finished_sweep: Path, tmp_path: Path) -> None:
    out = copy_of(finished_sweep, tmp_path)
    results = out / "results.jsonl"
    n_lines = len(results.read_bytes().splitlines())
    torn = tear(results, -1)
    fragment = results.read_bytes().splitlines()[-1]

    seen = invoke(["compare", str(results), str(results)])
    assert seen.code == 0 and "Traceback" not in seen.err
    assert f"{results}: line {n_lines}: torn line" in seen.out + seen.err

    resumed = invoke(["sweep", *SWEEP, "--output-dir", str(out), "--resume"])
    assert resumed.code == 0, resumed.err
    assert f"line {n_lines}" in resumed.err and "torn" in resumed.err
    records = whole_lines(results)  # never appended onto the fragment
    assert sorted(r["point_id"] for r in records) == sorted(plan_ids(out))  # every point once: the torn one again
    assert records[-1]["point_id"] == torn["point_id"]
    assert (out / "results.jsonl.torn-1").read_bytes() == fragment  # the torn bytes kept aside, not lost
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["status"] == "complete" and meta["points_done"] == meta["points_to_measure"]


def test_a_torn_line_in_the_middle_is_read_with_a_warning_and_resume_measures_that_point_again(
        finished_sweep: Path, tmp_path: Path) -> None:
    out = copy_of(finished_sweep, tmp_path)
    results = out / "results.jsonl"
    torn = tear(results, 1)  # line 2 of 4

    compared = invoke(["compare", str(results), str(results)])
    assert compared.code == 0 and "Traceback" not in compared.err
    assert f"{results}: line 2: torn line" in compared.out + compared.err
    reported = invoke(["report", str(out), "--output-dir", str(tmp_path / "report"), "--no-power-model",
                       "--resamples", "50", "--quiet"])
    assert reported.code == 0 and "Traceback" not in reported.err
    assert f"{results}: line 2: torn line" in reported.err

    resumed = invoke(["sweep", *SWEEP, "--output-dir", str(out), "--resume"])
    assert resumed.code == 0, resumed.err
    records = whole_lines(results)
    assert sorted(r["point_id"] for r in records) == sorted(plan_ids(out))
    assert records[-1]["point_id"] == torn["point_id"]
    assert (out / "results.jsonl.torn-1").exists()


def test_a_plan_shard_with_a_torn_line_is_repaired_on_resume(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path / "plan.json", 3)
    out = tmp_path / "out"
    assert run_shard(tmp_path / "plan.json", 0, 1, out, echo=lambda _: None) == 0
    shard = shard_results_path(out, 0, 1)
    middle = tear(shard, 1)
    last = tear(shard, -1)
    lines: list[str] = []
    assert run_shard(tmp_path / "plan.json", 0, 1, out, echo=lines.append) == 0
    assert any("torn" in line and str(shard) in line for line in lines)
    records = whole_lines(shard)
    assert sorted(r["point_id"] for r in records) == sorted(p.point_id for p in plan.points)
    assert {r["point_id"] for r in records[-2:]} == {middle["point_id"], last["point_id"]}
    assert Path(f"{shard}.torn-1").exists()


def test_writing_never_appends_onto_a_torn_line(tmp_path: Path) -> None:
    """Without --resume (here: a shard run with resume off) a torn file is refused, not extended."""
    tiny_plan(tmp_path / "plan.json", 1)
    out = tmp_path / "out"
    assert run_shard(tmp_path / "plan.json", 0, 1, out, echo=lambda _: None) == 0
    shard = shard_results_path(out, 0, 1)
    tear(shard, -1)
    before = shard.read_bytes()
    result = invoke(["workers", "shard", str(tmp_path / "plan.json"), "--output-dir", str(out), "--no-resume"])
    assert result.code == 2 and "Traceback" not in result.err
    assert "torn" in result.err and str(shard) in result.err
    assert shard.read_bytes() == before


# ---- a full disk ----------------------------------------------------------------------------------------------
class FullDisk:
    """The results file's disk fills up once ``keep_lines`` whole lines are in it: the next write gets
    ``short_bytes`` through and every later one fails with ENOSPC, whether it goes through ``os.write`` or
    a file object from ``Path.open`` (so the fault is the same for any writer)."""

    def __init__(self, path: Path, keep_lines: int, short_bytes: int = 100) -> None:
        self.path = path
        self.keep_lines = keep_lines
        self.short_bytes = short_bytes
        self.fds: set[int] = set()
        self.full = False

    def _room(self, n_bytes: int) -> int:
        """How many of ``n_bytes`` still fit."""
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        lines = self.path.read_bytes().count(b"\n") if self.path.exists() else 0
        if lines < self.keep_lines:
            return n_bytes
        self.full = True
        return min(self.short_bytes, n_bytes - 1)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_open, real_write, real_close = os.open, os.write, os.close
        real_path_open = Path.open
        disk = self

        def fake_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            if Path(path).resolve() == disk.path.resolve():
                disk.fds.add(fd)
            return fd

        def fake_write(fd: int, data: Any) -> int:
            if fd not in disk.fds:
                return real_write(fd, data)
            room = disk._room(len(data))
            return real_write(fd, bytes(data[:room]))

        def fake_close(fd: int) -> None:
            disk.fds.discard(fd)
            real_close(fd)

        class FillingFile:
            def __init__(self, fh: Any) -> None:
                self.fh = fh

            def write(self, text: str) -> int:
                data = text.encode()
                room = disk._room(len(data))
                self.fh.write(data[:room].decode(errors="ignore"))
                self.fh.flush()
                if room < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(disk.path))
                return len(text)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.fh, name)

            def __enter__(self) -> FillingFile:
                return self

            def __exit__(self, *exc: Any) -> None:
                self.fh.close()

        def fake_path_open(self: Path, *args: Any, **kwargs: Any) -> Any:
            fh = real_path_open(self, *args, **kwargs)
            mode = args[0] if args else kwargs.get("mode", "r")
            if "r" not in mode and self.resolve() == disk.path.resolve():
                return FillingFile(fh)
            return fh

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "write", fake_write)
        monkeypatch.setattr(os, "close", fake_close)
        monkeypatch.setattr(Path, "open", fake_path_open)


def test_a_full_disk_mid_sweep_is_one_clear_error_and_resume_completes_after_space_is_freed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, state = tmp_path / "sweep", tmp_path / "state.json"
    results = out / "results.jsonl"
    with monkeypatch.context() as patch:
        FullDisk(results, keep_lines=2).install(patch)
        failed = invoke(["sweep", *SWEEP, "--output-dir", str(out), "--state-file", str(state)])
    assert failed.code == 3, failed.err  # an environment error
    assert "Traceback" not in failed.err
    assert f"no space left on device writing {results}: 2 records kept" in failed.err
    assert len(whole_lines(results)) == 2  # the earlier results intact, no torn line
    assert json.loads(state.read_text())["all_restored"] is True  # the state file still written
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["status"] != "complete" and meta["points_done"] == 2

    resumed = invoke(["sweep", *SWEEP, "--output-dir", str(out), "--resume", "--state-file", str(state)])
    assert resumed.code == 0, resumed.err
    assert sorted(r["point_id"] for r in whole_lines(results)) == sorted(plan_ids(out))
    assert json.loads((out / "sweep.json").read_text())["status"] == "complete"


# ---- an output path that cannot be written ----------------------------------------------------------------------
@pytest.fixture
def measuring_forbidden(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything is measured or a pipeline built: the check must come first."""
    import sdbench.session

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("measured before the output path was checked")

    monkeypatch.setattr(sdbench.session.Bench, "pipeline", refuse)
    monkeypatch.setattr(sdbench.session.Bench, "measure_with_windows", refuse)
    yield


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A plain file: any path under it cannot be written (this holds for root too, unlike a read-only mode)."""
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def test_sweep_output_dir_that_cannot_be_written_is_refused_before_measuring(a_file: Path,
                                                                            measuring_forbidden: None) -> None:
    result = invoke(["sweep", *SWEEP, "--output-dir", str(a_file / "sweep")])
    assert result.code == 2 and "Traceback" not in result.err
    (line,) = result.err.strip().splitlines()
    assert "output_dir" in line and str(a_file / "sweep") in line


def test_sweep_state_file_that_cannot_be_written_is_refused_before_measuring(a_file: Path, tmp_path: Path,
                                                                            measuring_forbidden: None) -> None:
    result = invoke(["sweep", *SWEEP, "--output-dir", str(tmp_path / "sweep"), "--state-file",
                     str(a_file / "state.json")])
    assert result.code == 2 and "state_file" in result.err and "Traceback" not in result.err


def test_bench_results_file_that_cannot_be_written_is_refused_before_pytest_starts(a_file: Path) -> None:
    result = invoke(["bench", "--suite", "speed", "--device", "cpu", "--models", "tiny-sd", "--no-output-dir",
                     "--results", str(a_file / "records.jsonl")])
    assert result.code == 2 and "Traceback" not in result.err
    assert "results" in result.err and str(a_file / "records.jsonl") in result.err


def test_workers_output_dir_that_cannot_be_written_is_refused_before_any_worker_starts(a_file: Path,
                                                                                      tmp_path: Path) -> None:
    tiny_plan(tmp_path / "plan.json", 1)
    result = invoke(["workers", "run", str(tmp_path / "plan.json"), "--gpus", "cpu", "--output-dir",
                     str(a_file / "out")])
    assert result.code == 2 and "Traceback" not in result.err
    assert "output_dir" in result.err and "started pid" not in result.out


KEEP_FILE = """
def test_keep(sd_keep):
    sd_keep({"record_type": "case", "case_id": "kept", "time_per_image_s_samples": [0.5, 0.25, 1.0]})
"""


@pytest.mark.parametrize("option", ["--sd-results", "--sd-export"])
def test_plugin_output_files_that_cannot_be_written_are_a_usage_error_before_any_test(
        pytester: pytest.Pytester, option: str) -> None:
    pytester.makepyfile(test_keep=KEEP_FILE)
    pytester.makefile(".txt", **{"a-file": "not a folder"})
    result = pytester.runpytest_inprocess("--sd-device", "cpu", "-p", "no:cacheprovider", "--sd-no-results-dir",
                                          option, "a-file.txt/out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option}*a-file.txt/out.json*"])
    assert "test_keep" not in result.stdout.str()


# ---- a results file of a newer schema --------------------------------------------------------------------------
def newer(src: Path, dst: Path, version: int = 99) -> Path:
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    dst.write_text("".join(json.dumps({**r, "schema_version": version}) + "\n" for r in rows))
    return dst


def test_a_results_file_of_a_newer_schema_is_refused_by_compare_and_report(finished_sweep: Path,
                                                                           tmp_path: Path) -> None:
    current = finished_sweep / "results.jsonl"
    future = newer(current, tmp_path / "future.jsonl")
    for argv in (["compare", str(current), str(future)],
                 ["report", str(future), "--output-dir", str(tmp_path / "report"), "--quiet"]):
        result = invoke(argv)
        assert result.code == 2 and "Traceback" not in result.err, argv
        (line,) = result.err.strip().splitlines()
        assert str(future) in line and "schema version 99" in line and "reads" in line
    doc = tmp_path / "future.json"
    doc.write_text(json.dumps({"schema_version": 99, "command": "generate", "records": []}))
    result = invoke(["compare", str(current), str(doc)])
    assert result.code == 2 and "schema version 99" in result.err


# ---- how energy was measured is part of a record's identity ----------------------------------------------------
def test_compare_never_pairs_counter_energy_with_timeline_energy(finished_sweep: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (finished_sweep / "results.jsonl").read_text().splitlines()]
    base = tmp_path / "counter.jsonl"
    base.write_text(json.dumps(rows[0]) + "\n")
    other = tmp_path / "timeline.jsonl"
    other.write_text(json.dumps({**rows[0], "energy_source": "timeline", "energy_meter": "power_timeline"}) + "\n")
    result = invoke(["compare", str(base), str(other), "--fail-on", "energy:1%"])
    assert result.code == 0, result.err
    energy_row = next(line for line in result.out.splitlines() if " energy " in line)
    assert "not compared" in energy_row and "counter" in energy_row and "timeline" in energy_row


def test_resume_refuses_to_mix_energy_methods_in_one_sweep(finished_sweep: Path, tmp_path: Path) -> None:
    out = copy_of(finished_sweep, tmp_path)
    results = out / "results.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:-1]))  # the last point was never measured
    kept = results.read_bytes()
    result = invoke(["sweep", *SWEEP, "--output-dir", str(out), "--resume", "--energy", "timeline"])
    assert result.code == 2 and "Traceback" not in result.err
    assert "counter" in result.err and "timeline" in result.err
    assert results.read_bytes() == kept  # nothing of the other method was added


def test_plan_points_measured_with_the_same_runner_still_resume(tmp_path: Path) -> None:
    """The identity check does not get in the way of an ordinary resume (CPU: no energy on either side)."""
    plan = tiny_plan(tmp_path / "plan.json", 2)
    out = tmp_path / "out"
    assert run_shard(tmp_path / "plan.json", 0, 1, out, echo=lambda _: None) == 0
    shard = shard_results_path(out, 0, 1)
    shard.write_bytes(b"".join(shard.read_bytes().splitlines(keepends=True)[:1]))
    assert run_shard(tmp_path / "plan.json", 0, 1, out, echo=lambda _: None) == 0
    assert sorted(r["point_id"] for r in whole_lines(shard)) == sorted(p.point_id for p in plan.points)
