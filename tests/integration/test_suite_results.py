"""Results kept and found (issue 13): the results folder of a suite run, pytest-benchmark histories its own
CLI finds, the closing table, progress lines with an ETA, and the matrix axes as pytest parameters.

Table, progress and front-door tests are in-process and measure nothing. The runs that measure are
subprocesses on the simulated GPU (power-timeline energy, tiny-sd at 2 steps, 2 rounds), a few seconds each.
No test depends on how long anything takes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testsupport import invoke

import sdbench.case  # noqa: F401
import sdbench.record.environment  # noqa: F401
import sdbench.record.io  # noqa: F401
import sdbench.runner  # noqa: F401

# Imported before any in-process pytester run (pytester restores sys.modules after each one).
import sdbench.session  # noqa: F401
import sdbench.spec.models  # noqa: F401
import sdbench.spec.schedulers  # noqa: F401
from sdbench.distribute import suite
from sdbench.files import cache_root
from sdbench.output.tables import (
    HOST_BOUND_UTIL_PCT,
    TABLE_WIDTH,
    CaseClock,
    duration,
    host_bound_util_pct,
    is_noisy,
    legend,
    next_steps_in,
    results_table,
    sig,
    status_in,
    summary_markdown,
    with_interval,
)
from sdbench.pytest_plugin import CaseProgress, storage_slug

pytest_plugins = ["pytester"]

SDBENCH_CACHE = str(cache_root())
FAST = ["-p", "no:cacheprovider", "--sd-device", "simulated", "--sd-energy", "timeline", "--sd-min-rounds", "2",
        "--sd-max-rounds", "2", "--sd-idle-seconds", "0"]
STAMPED = r"\d{8}-\d{6}"

SCHEDULERS_FILE = """
import pytest

pytestmark = pytest.mark.speed


@pytest.mark.sd_matrix(models=["tiny-sd"], steps=[2], schedulers=["euler", "ddim"], batch_sizes=[1])
def test_speed(sd_case, sd_measure):
    sd_measure(sd_case)
"""

INTERRUPTED_FILE = """
import pytest

pytestmark = pytest.mark.speed


@pytest.mark.sd_matrix(models=["tiny-sd"], steps=[2], batch_sizes=[1, 2])
def test_speed(sd_case, sd_measure):
    if sd_case.batch_size == 2:
        raise KeyboardInterrupt  # Ctrl-C during the second case
    sd_measure(sd_case)
"""

KEEP_FILE = """
import pytest

pytestmark = pytest.mark.energy_research


@pytest.mark.sd_matrix(models=["tiny-sd"], steps=[2], batch_sizes=[1])
def test_keep(sd_case, sd_keep):
    sd_keep({"record_type": "case", "case_id": sd_case.case_id, "time_per_image_s_samples": [0.5, 0.25, 1.0],
             "time_per_image_s_median": 0.5, "images_per_s": 2.0, "stop_reason": "converged"})
"""

PARAMS_FILE = """
import pytest


@pytest.mark.sd_matrix(models=["tiny-sd"], schedulers=["euler"], batch_sizes=[2])
def test_params(request, sd_case):
    params = request.node.callspec.params
    assert params["sd_case"] is sd_case
    assert (params["model"], params["scheduler"], params["resolution"], params["batch_size"]) == \\
        ("tiny-sd", "euler", "64x64", 2)
    assert (params["steps"], params["dtype"], params["profile"], params["attention"]) == (4, "fp32", "eager", "sdpa")
    assert (params["knobs"], params["sm_clock_mhz"]) == ("none", "default")
    assert request.node.callspec.id == sd_case.case_id  # the test id stays the case id
"""


def output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


def one_folder(root: Path) -> Path:
    (folder,) = [p for p in (root / "sdbench-results").iterdir() if p.is_dir()]
    return folder


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pytest_benchmark_cli() -> list[str]:
    """pytest-benchmark's own console script (beside this interpreter), as a user runs it."""
    script = Path(sys.executable).with_name("pytest-benchmark")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from pytest_benchmark.cli import main; sys.argv[0] = "
            "'pytest-benchmark'; sys.exit(main())"]


def record(case_id: str = "tiny-sd-pndm-64x64-b1-4st-fp32-eager", **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "record_type": "case", "case_id": case_id, "test": f"benchmarks/test_speed.py::test_speed[{case_id}]",
        "images_per_s": 6.667, "time_per_image_s_median": 0.15, "time_per_image_s_ci95_low": 0.148,
        "time_per_image_s_ci95_high": 0.152, "time_per_image_s_ci95_halfwidth_rel": 0.0133,
        "energy_status": "measured", "energy_per_image_j_median": 12.3, "energy_per_image_j_ci95_low": 12.1,
        "energy_per_image_j_ci95_high": 12.5, "energy_per_image_j_ci95_halfwidth_rel": 0.016,
        "stop_reason": "converged", "env_gpu_name": "NVIDIA H200", "env_gpu_uuid": "GPU-1234", "env_host": "h"}
    rec.update(fields)
    return rec


@pytest.fixture
def sim_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("SDBENCH_CACHE_DIR", SDBENCH_CACHE)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return pytester


# --- the closing table ------------------------------------------------------------------------------------
def test_numbers_keep_three_significant_digits() -> None:
    assert [sig(0.15), sig(12.34), sig(123.4), sig(1234.4), sig(0.000123)] == ["0.150", "12.3", "123", "1234", "1.23e-04"]
    assert sig(None) == sig(float("nan")) == sig("x") == "-"
    assert with_interval(0.15, 0.148, 0.152) == "0.150 [0.148, 0.152]"
    assert with_interval(0.15, None, None) == "0.150" and with_interval(None, 1, 2) == "-"
    assert [duration(45), duration(130), duration(120), duration(3900)] == ["45 s", "2 min 10 s", "2 min", "1 h 5 min"]


def test_a_row_shows_the_records_numbers_and_intervals() -> None:
    lines = results_table([record()], 0.02)
    header, group, row = lines
    assert header.split()[:2] == ["case", "images/s"] and "s/image [95% CI]" in header and "J/image [95% CI]" in header
    assert group == "test_speed.py::test_speed"
    assert row.split()[0] == "tiny-sd-pndm-64x64-b1-4st-fp32-eager"
    for text in ("6.67", "0.150 [0.148, 0.152]", "12.3 [12.1, 12.5]", "converged"):
        assert text in row
    assert not row.endswith("!")  # both intervals within +-2 %


@pytest.mark.parametrize(("fields", "noisy"), [
    ({}, False),
    ({"time_per_image_s_ci95_halfwidth_rel": 0.021}, True),
    ({"energy_per_image_j_ci95_halfwidth_rel": 0.05}, True),
    ({"stop_reason": "max_rounds"}, True),
    ({"stop_reason": "noise_limited"}, True),
    ({"stop_reason": "max_time"}, True),
])
def test_high_noise_is_marked(fields: dict[str, Any], noisy: bool) -> None:
    rec = record(**fields)
    assert is_noisy(rec, 0.02) is noisy
    assert results_table([rec], 0.02)[-1].endswith("!") is noisy


@pytest.mark.parametrize(("fields", "host_bound"), [
    ({}, False),  # no telemetry: nothing is claimed
    ({"telemetry_gpu_util_pct_mean": 24.8}, True),  # eager SD1.4 at 256 px, batch 1, on an H200
    ({"telemetry_gpu_util_pct_mean": 92.7}, False),  # the same at 768 px
    ({"telemetry_gpu_util_pct_mean": HOST_BOUND_UTIL_PCT}, False),
    ({"telemetry_gpu_util_pct_mean": 30.0, "energy_status": "simulated"}, False),  # modelled SM activity
    ({"telemetry_gpu_util_pct_mean": 30.0, "env_gpu_simulated": True}, False),
    ({"telemetry_gpu_util_pct_mean": 30.0, "compute_device": "cpu"}, False),
    ({"telemetry_gpu_util_pct_mean": float("nan")}, False),
    ({"telemetry_gpu_util_pct_mean": True}, False),
])
def test_a_host_bound_case_is_marked_and_the_legend_says_what_that_means(fields: dict[str, Any],
                                                                         host_bound: bool) -> None:
    rec = record(compute_device="cuda:0", **{k: v for k, v in fields.items() if k != "compute_device"})
    if "compute_device" in fields:
        rec["compute_device"] = fields["compute_device"]
    assert (host_bound_util_pct(rec) is not None) is host_bound
    row = results_table([rec], 0.02)[-1]
    assert row.endswith("h") is host_bound and not row.endswith("!")
    lines = legend(0.02, [rec])
    assert any(line.startswith("h host-bound") for line in lines) is host_bound
    assert all(len(line) <= TABLE_WIDTH for line in lines)
    noisy = results_table([{**rec, "stop_reason": "max_time"}], 0.02)[-1]
    assert noisy.endswith("!h" if host_bound else "!")


def test_the_host_bound_legend_gives_the_range_of_the_cases_busy_shares() -> None:
    recs = [record(f"c{i}", compute_device="cuda:0", telemetry_gpu_util_pct_mean=u) for i, u in enumerate((24.8, 44.6, 92.7))]
    line = next(line for line in legend(0.02, recs) if line.startswith("h host-bound"))
    assert "25-45 %" in line
    assert legend(0.02) == legend(0.02, [record()])  # without a host-bound case the legend is as before


def test_energy_unavailable_simulated_and_out_of_memory_rows() -> None:
    na = results_table([record(energy_status="unavailable", energy_per_image_j_median=None)])[-1]
    sim = results_table([record(energy_status="simulated")])[-1]
    oom = results_table([{"record_type": "memory_stress_oom", "case_id": "sdxl-euler-1024x1024-b64", "oom": True}])[-1]
    assert " n/a " in na and "12.3 [12.1, 12.5] (sim)" in sim
    assert "out of memory" in oom and "oom" in oom.split()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-+"), min_size=1, max_size=160),
                          st.floats(1e-6, 1e6), st.floats(0, 0.5), st.sampled_from(["measured", "simulated", "unavailable"]),
                          st.sampled_from(["converged", "noise_limited", "max_rounds", "max_time"])),
                min_size=1, max_size=8))
def test_no_table_line_is_wider_than_120_columns(rows: list[tuple[str, float, float, str, str]]) -> None:
    records = [record(cid, time_per_image_s_median=t, time_per_image_s_ci95_low=t * (1 - rel),
                      time_per_image_s_ci95_high=t * (1 + rel), images_per_s=1 / t, energy_status=status,
                      energy_per_image_j_median=t * 300, energy_per_image_j_ci95_low=t * 290,
                      energy_per_image_j_ci95_high=t * 333, stop_reason=stop)
               for cid, t, rel, status, stop in rows]
    lines = results_table(records)
    assert len(lines) == 1 + 1 + len(records)  # header, one test group, one line per case
    assert all(len(line) <= TABLE_WIDTH for line in lines), max(lines, key=len)
    assert all(len(line) <= TABLE_WIDTH for line in legend(0.025))


def test_summary_markdown_gives_back_its_status_and_next_steps() -> None:
    text = summary_markdown(title="t", status=["interrupted: 3 of 12 cases in 1 min", "x"], table=["a"], legend_lines=[],
                            environments=[{"gpu_name": "NVIDIA H200", "gpu_uuid": "GPU-1"}], files=[("records.jsonl", "r")],
                            next_steps=["sdbench compare a b", "# a comment"])
    assert status_in(text) == "interrupted: 3 of 12 cases in 1 min"
    assert next_steps_in(text) == ["sdbench compare a b", "# a comment"]
    assert "| gpu_uuid | GPU-1 |" in text
    assert status_in("") is None and next_steps_in("no steps") == []


# --- progress -----------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_eta_comes_from_the_cases_done_and_never_counts_a_case_not_done() -> None:
    now = FakeClock()
    clock = CaseClock(4, now=now)
    assert clock.start() == 1 and clock.label() == "case 1/4" and clock.eta_text() == ""  # nothing done yet
    now.t = 10.0
    clock.finish()
    assert clock.eta_s() == pytest.approx(30.0)  # three cases of 10 s left
    clock.start()
    now.t = 14.0
    assert clock.label() == "case 2/4" and clock.eta_s() == pytest.approx(6.0 + 20.0)
    now.t = 30.0  # the running case is slower than the mean: the rest is never less than the cases after it
    assert clock.eta_s() == pytest.approx(20.0) and clock.eta_text() == "ETA 20 s"
    # Interrupted here: two cases started, one done; nothing says 4/4.
    assert clock.done == 1 and clock.position == 2
    for _ in range(3):
        clock.finish()
        clock.start() if clock.done < 4 else None
    assert clock.done == 4 and clock.eta_text() == ""


class FakeWriter:
    def __init__(self) -> None:
        self.width_of_current_line = 30  # pytest's "benchmarks/test_speed.py " so far
        self.fullwidth = 80


class FakeReporter:
    """What CaseProgress uses of pytest's TerminalReporter, recording every write."""

    def __init__(self, tty: bool, verbosity: int = 0) -> None:
        self._tty = tty
        self.verbosity = verbosity
        self.currentfspath: Any = "benchmarks/test_speed.py"
        self._tw = FakeWriter()
        self.ops: list[tuple[str, str]] = []

    def isatty(self) -> bool:
        return self._tty

    def write(self, content: str, *, flush: bool = False, **markup: Any) -> None:
        self.ops.append(("write", content))
        if content.endswith("\n"):
            self._tw.width_of_current_line = 0

    def rewrite(self, line: str, **markup: Any) -> None:
        self.ops.append(("rewrite", line))

    def flush(self) -> None:
        pass


def progress_for(reporter: FakeReporter, total: int = 2) -> tuple[CaseProgress, Any]:
    state = SimpleNamespace(case_ids={"t::a[a]": "a", "t::b[b]": "b"}, finished=set(),
                            last_record={"t::a[a]": record("a")})
    return CaseProgress(reporter, None, state, total), state  # type: ignore[arg-type]


def report(nodeid: str, outcome: str = "passed") -> Any:
    return SimpleNamespace(nodeid=nodeid, failed=outcome == "failed", skipped=outcome == "skipped", passed=outcome == "passed")


def test_on_a_terminal_one_line_per_case_is_rewritten_in_place() -> None:
    rep = FakeReporter(tty=True)
    progress, state = progress_for(rep)
    progress.begin("t::a[a]")
    progress.update("warm-up")
    progress.update("round 2 (1 call(s) per window)")
    progress.end(report("t::a[a]"))
    assert rep.ops[0] == ("write", "\n")  # off pytest's file-name line first
    rewrites = [text for op, text in rep.ops if op == "rewrite"]
    assert rewrites[0] == "case 1/2 a: starting"
    assert rewrites[1].startswith("case 1/2 a: warm-up, 0 s") and rewrites[2].startswith("case 1/2 a: round 2")
    assert rewrites[3].startswith("case 1/2 a: done in 0 s, 0.150 [0.148, 0.152] s/image, converged | ETA 0 s")
    assert rep.ops[-1] == ("write", "\n") and rep.currentfspath == "benchmarks/test_speed.py"  # pytest's line state back
    assert state.finished == {"t::a[a]"}
    progress.begin("t::b[b]")
    assert [op for op in rep.ops[-1:]] == [("rewrite", "case 2/2 b: starting | ETA 0 s")]  # no blank line between
    progress.end(report("t::b[b]", "failed"))
    assert rep.ops[-2] == ("rewrite", "case 2/2 b: failed after 0 s")  # all done: no ETA


def test_a_progress_line_keeps_within_120_columns() -> None:
    rep = FakeReporter(tty=False)
    progress, state = progress_for(rep)
    long_id = "tiny-sdxl-kdpm2-ancestral-1024x1024-b16-50st-bf16-reduce-overhead-compile_unet-max-autotune+fuse_qkv-on"
    state.case_ids["t::a[a]"] = long_id
    state.last_record["t::a[a]"] = record(long_id)
    progress.begin("t::a[a]")
    progress.end(report("t::a[a]"))
    line = rep.ops[-2][1]
    assert len(line) <= 120 and line.startswith("case 1/2 tiny-sdxl-kdpm2") and line.endswith("converged | ETA 0 s")


def test_elsewhere_only_the_finished_line_is_printed() -> None:
    rep = FakeReporter(tty=False)
    progress, _ = progress_for(rep)
    progress.begin("t::a[a]")
    progress.update("warm-up")  # within PLAIN_EVERY_S of the start: not printed
    progress.end(report("t::a[a]"))
    assert [op for op, _ in rep.ops] == ["write", "write", "write"]
    assert rep.ops[1][1].startswith("case 1/2 a: done in 0 s, 0.150 [0.148, 0.152] s/image")
    assert rep.ops[2] == ("write", "\n")


def test_verbose_output_gets_its_result_word_on_a_line_of_its_own() -> None:
    rep = FakeReporter(tty=False, verbosity=1)
    progress, _ = progress_for(rep)
    progress.begin("t::a[a]")
    progress.end(report("t::a[a]"))
    assert rep.ops[-1][1].startswith("case 1/2 a: done") and rep.currentfspath is None  # pytest starts a new line


def test_generate_studies_count_their_cases_and_give_an_eta() -> None:
    from sdbench.cli.commands.generate import _case_progress

    said: list[str] = []
    now = FakeClock()
    clock = CaseClock(2, now=now)
    step = _case_progress(said.append, clock, "tiny-sd-euler")
    step("warm-up")
    now.t = 8.0
    clock.finish()
    step = _case_progress(said.append, clock, "tiny-sd-ddim")
    step("round 1")
    assert said == ["case 1/2 tiny-sd-euler: warm-up", "case 2/2 tiny-sd-ddim: round 1 | ETA 8 s"]
    single = CaseClock(1, now=now)
    _case_progress(said.append, single, "x")("warm-up")
    assert said[-1] == "x: warm-up"


# --- the plugin's results folder, histories and parameters ----------------------------------------------------
def test_a_run_keeps_its_results_and_pytest_benchmarks_own_cli_finds_the_history(sim_dir: pytest.Pytester) -> None:
    sim_dir.makepyfile(test_schedulers=SCHEDULERS_FILE)
    result = sim_dir.runpytest_subprocess(*FAST, "--benchmark-save", "base", "--benchmark-group-by=param:scheduler",
                                          "--benchmark-histogram")
    assert result.ret == 0, output(result)
    folder = one_folder(sim_dir.path)
    assert re.fullmatch(f"{STAMPED}-speed", folder.name)
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".svg") == ["benchmark.json", "records.jsonl", "summary.md"]
    records = read_jsonl(folder / "records.jsonl")
    assert sorted(r["scheduler"] for r in records) == ["ddim", "euler"]

    # pytest-benchmark's JSON in the folder: the axes are parameters of their own, the case saved as its id.
    doc = json.loads((folder / "benchmark.json").read_text())
    params = {b["params"]["scheduler"]: b["params"] for b in doc["benchmarks"]}
    assert sorted(params) == ["ddim", "euler"]
    assert params["euler"]["sd_case"] == next(r["case_id"] for r in records if r["scheduler"] == "euler")
    assert params["euler"]["model"] == "tiny-sd" and params["euler"]["resolution"] == "64x64"
    result.stdout.fnmatch_lines(["*benchmark 'scheduler=ddim': 1 tests*", "*benchmark 'scheduler=euler': 1 tests*"])
    assert list(folder.glob("histogram*.svg"))  # a bare --benchmark-histogram lands in the folder

    # The closing table: after pytest-benchmark's, within 120 columns, the records' own numbers.
    lines = result.outlines
    start = lines.index(next(line for line in lines if "sdbench results" in line))
    assert start > max(i for i, line in enumerate(lines) if line.startswith("Name (time in"))
    table = lines[start + 1:lines.index(next(line for line in lines[start:] if line.startswith("complete: ")))]
    assert all(len(line) <= TABLE_WIDTH for line in table)
    summary = (folder / "summary.md").read_text()
    for rec in records:
        row = next(line for line in table if rec["case_id"] in line)
        for text in (with_interval(rec["time_per_image_s_median"], rec["time_per_image_s_ci95_low"],
                                   rec["time_per_image_s_ci95_high"]), sig(rec["images_per_s"]), rec["stop_reason"],
                     with_interval(rec["energy_per_image_j_median"], rec["energy_per_image_j_ci95_low"],
                                   rec["energy_per_image_j_ci95_high"]) + " (sim)"):
            assert text in row, (text, row)
        assert row in summary
    assert status_in(summary).startswith("complete: 2 of 2 cases")
    assert f"| gpu_uuid | {records[0]['env_gpu_uuid']} |" in summary

    # Progress: one finished line per case, no dot after it.
    assert len([line for line in lines if re.match(r"case [12]/2 tiny-sd-(euler|ddim)-\S+: done in ", line)]) == 2

    # Where it all is, and the history: `pytest-benchmark --storage <root> list` (its own CLI) finds the run.
    storage = f".benchmarks/{storage_slug('simulated')}"
    result.stdout.fnmatch_lines([f"results: sdbench-results/{folder.name}/ (records.jsonl, benchmark.json, summary.md)",
                                 f"next: sdbench compare sdbench-results/{folder.name}/benchmark.json *",
                                 f"next: pytest-benchmark --storage {storage} list*"])
    listed = subprocess.run([*pytest_benchmark_cli(), "--storage", storage, "list"], cwd=sim_dir.path,
                            capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    (saved,) = [line for line in listed.stdout.splitlines() if line.strip()]
    assert saved.endswith("0001_base.json") and Path(saved).parent.parent.resolve() == (sim_dir.path / storage).resolve()
    compared = subprocess.run([*pytest_benchmark_cli(), "--storage", storage, "compare", "--group-by=param:scheduler",
                               "--columns=median"], cwd=sim_dir.path, capture_output=True, text=True, check=False)
    assert compared.returncode == 0, compared.stderr
    assert "scheduler=euler" in compared.stdout and "scheduler=ddim" in compared.stdout


def test_an_interrupted_run_keeps_what_it_measured_and_says_so(sim_dir: pytest.Pytester) -> None:
    sim_dir.makepyfile(test_interrupted=INTERRUPTED_FILE)
    result = sim_dir.runpytest_subprocess(*FAST)
    assert result.ret == pytest.ExitCode.INTERRUPTED, output(result)
    folder = one_folder(sim_dir.path)
    assert len(read_jsonl(folder / "records.jsonl")) == 1
    assert status_in((folder / "summary.md").read_text()).startswith("interrupted: 1 of 2 cases")
    assert json.loads((folder / "benchmark.json").read_text())["benchmarks"]
    result.stdout.fnmatch_lines(["interrupted: 1 of 2 cases*"])
    assert not re.search(r"case 2/2 \S+: done", output(result))  # the interrupted case is never shown done


def test_the_axes_are_pytest_parameters_of_their_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_params=PARAMS_FILE)
    result = pytester.runpytest_inprocess("--sd-device", "cpu", "-p", "no:cacheprovider")
    assert result.ret == 0, output(result)


@pytest.mark.parametrize("args", [["--benchmark-only", "--benchmark-disable"], ["--sd-batch-sizes", "two"],
                                  ["--sd-device", "tpu"], ["--sd-results-dir", "x", "--sd-no-results-dir"]],
                         ids=["pytest-benchmark", "matrix", "device", "results-dir"])
def test_a_usage_error_leaves_no_folders(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile(test_keep=KEEP_FILE)
    result = pytester.runpytest_inprocess("--sd-device", "cpu", "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output(result)
    assert sorted(p.name for p in pytester.path.iterdir()) == ["test_keep.py"]


def test_the_results_folder_can_be_named_or_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_keep=KEEP_FILE)
    base = ["--sd-device", "cpu", "-p", "no:cacheprovider"]
    assert pytester.runpytest_inprocess(*base, "--sd-results-dir", "mine/run").ret == 0
    assert len(read_jsonl(pytester.path / "mine" / "run" / "records.jsonl")) == 1
    assert (pytester.path / "mine" / "run" / "benchmark.json").is_file()
    again = pytester.runpytest_inprocess(*base, "--sd-results-dir", "mine/run")
    assert again.ret == pytest.ExitCode.USAGE_ERROR and "already holds the records of another run" in output(again)
    off = pytester.runpytest_inprocess(*base, "--sd-no-results-dir", "--sd-results", "plain.jsonl")
    assert off.ret == 0 and not (pytester.path / "sdbench-results").exists()
    assert len(read_jsonl(pytester.path / "plain.jsonl")) == 1  # --sd-results keeps working
    default = pytester.runpytest_inprocess(*base)
    assert default.ret == 0 and re.fullmatch(f"{STAMPED}-energy_research", one_folder(pytester.path).name)
    # Nothing saved to the history: the folder pytest-benchmark made for it is gone again.
    assert not (pytester.path / ".benchmarks").exists()


def test_a_run_that_measures_nothing_writes_no_results_folder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_keep=KEEP_FILE)
    result = pytester.runpytest_inprocess("--sd-device", "cpu", "-p", "no:cacheprovider", "-k", "nothing")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert sorted(p.name for p in pytester.path.iterdir()) == ["test_keep.py"]


# --- `sdbench bench`: the front door ---------------------------------------------------------------------------
def fake_summary(folder: Path, status: str = "complete: 3 of 3 cases in 5 s") -> None:
    folder.mkdir(parents=True)
    (folder / "records.jsonl").write_text(json.dumps(record()) + "\n")
    (folder / "summary.md").write_text(summary_markdown(
        title="t", status=[status], table=[], legend_lines=[], environments=[], files=[],
        next_steps=[f"sdbench compare {folder}/records.jsonl LATER/records.jsonl",
                    "pytest-benchmark --storage .benchmarks/cpu-x86-64-default-clocks list"]))


@pytest.fixture
def front_door(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """`sdbench bench` in tmp_path with pytest replaced: each run writes a results folder's summary."""
    monkeypatch.chdir(tmp_path)
    calls: list[list[str]] = []

    def run_pytest(args: list[str]) -> int:
        calls.append(args)
        if "--sd-results-dir" in args:
            fake_summary(Path(args[args.index("--sd-results-dir") + 1]))
        return 0

    monkeypatch.setattr("sdbench.distribute.suite.run_pytest", run_pytest)
    return calls


def test_bench_keeps_results_in_the_current_folder_and_ends_with_where_and_what_next(front_door: list[list[str]]) -> None:
    res = invoke(["bench", "--device", "cpu"])
    assert res.code == 0, res.err
    (args,) = front_door
    folder = args[args.index("--sd-results-dir") + 1]
    assert re.fullmatch(f"sdbench-results/{STAMPED}-all", folder)  # relative: under the current directory
    assert "--benchmark-autosave" in args and "--sd-caller-prints-next" in args
    assert res.out.splitlines()[-4:] == [
        "sdbench: complete: 3 of 3 cases in 5 s", f"sdbench: results in {folder}/ (summary.md, records.jsonl)",
        f"  next: sdbench compare {folder}/records.jsonl LATER/records.jsonl",
        "  next: pytest-benchmark --storage .benchmarks/cpu-x86-64-default-clocks list"]


def test_generate_benchmark_keeps_its_results_too(front_door: list[list[str]]) -> None:
    res = invoke(["--benchmark", "--device", "cpu"])
    assert res.code == 0, res.err
    (args,) = front_door
    folder = args[args.index("--sd-results-dir") + 1]
    assert re.fullmatch(f"sdbench-results/{STAMPED}-speed", folder) and "--benchmark-autosave" not in args
    assert res.out.splitlines()[-4:-2] == ["sdbench: complete: 3 of 3 cases in 5 s",
                                           f"sdbench: results in {folder}/ (summary.md, records.jsonl)"]


def test_bench_results_and_history_options(front_door: list[list[str]]) -> None:
    assert invoke(["bench", "--device", "cpu", "--suite", "speed", "--output-dir", "mine"]).code == 0
    assert front_door[-1][front_door[-1].index("--sd-results-dir") + 1] == "mine"
    assert invoke(["bench", "--device", "cpu", "--suite", "speed", "--no-history"]).code == 0
    assert "--benchmark-autosave" not in front_door[-1]
    assert re.fullmatch(f"sdbench-results/{STAMPED}-speed", front_door[-1][front_door[-1].index("--sd-results-dir") + 1])
    for extra in (["--benchmark-save=mine"], ["--benchmark-disable"]):
        assert invoke(["bench", "--device", "cpu", "--suite", "speed", "--", *extra]).code == 0
        assert "--benchmark-autosave" not in front_door[-1] and front_door[-1][-1] == extra[0]
    res = invoke(["bench", "--device", "cpu", "--no-output-dir"])
    assert res.code == 0 and "--sd-no-results-dir" in front_door[-1] and "--sd-caller-prints-next" not in front_door[-1]
    assert res.out == ""  # the plugin says what there is to say; no folder to point at
    res = invoke(["bench", "--device", "cpu", "--no-output-dir", "--output-dir", "x"])
    assert res.code == 2 and "--no-output-dir" in res.err


def test_bench_says_when_nothing_was_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sdbench.distribute.suite.run_pytest", lambda args: 5)
    res = invoke(["bench", "--device", "cpu"])
    assert res.code == 5 and res.out.splitlines()[-1] == "sdbench: no case was measured; no results folder was written"
    assert not (tmp_path / "sdbench-results").exists()


def test_ctrl_c_lets_the_child_finish_and_the_run_ends_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    before = signal.getsignal(signal.SIGINT)
    folder = tmp_path / "run"

    def child(cmd: list[str], **kwargs: Any) -> int:
        os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C reaches the parent too ...
        fake_summary(folder, "interrupted: 1 of 3 cases in 2 s")  # ... which waits while the child writes
        return 2

    monkeypatch.setattr(subprocess, "call", child)
    assert suite.run_pytest(["benchmarks"]) == 2  # no KeyboardInterrupt in the parent
    assert signal.getsignal(signal.SIGINT) is before
    assert suite.finish_run(folder, 2) == 130  # sdbench's exit code for an interrupted run
    assert "sdbench: interrupted: 1 of 3 cases in 2 s\nsdbench: results in" in capsys.readouterr().out


@pytest.mark.parametrize("installed", [False, True], ids=["checkout", "installed"])
def test_bench_on_several_gpus_starts_its_workers_as_run_pytest_does_and_merges_one_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    import sdbench.distribute.workers

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if installed:  # suites in a site-packages folder: no pytest.ini beside them
        suites = tmp_path / "site-packages" / "sdbench" / "benchmarks"
        suites.mkdir(parents=True)
        (suites / "test_speed.py").write_text("")
        monkeypatch.setattr(suite, "benchmarks_dir", lambda: suites)
    seen: list[tuple[list[str], dict[str, Any]]] = []

    def run_command_per_gpu(gpus: str, command_for: Any, **kwargs: Any) -> int:
        for spec in sdbench.distribute.workers.plan_workers(sdbench.distribute.workers.parse_gpus(gpus)):
            cmd = command_for(spec)
            seen.append((cmd, kwargs))
            shard = Path(cmd[cmd.index("--sd-results-dir") + 1])
            fake_summary(shard, "complete: 1 of 1 cases in 1 s")
        return 0

    monkeypatch.setattr(sdbench.distribute.workers, "run_command_per_gpu", run_command_per_gpu)
    res = invoke(["bench", "--suite", "speed", "--gpus", "cpu,cpu", "--device", "cpu", "--models", "tiny-sd"])
    assert res.code == 0, res.err
    expected, _env = suite.pytest_command(["x"])
    for i, (cmd, kwargs) in enumerate(seen):
        assert kwargs.get("cwd") is None  # the caller's folder, as run_pytest
        assert cmd[:1] == expected[:1] and cmd[cmd.index("pytest") - 1:cmd.index("pytest") + 1] == ["-m", "pytest"]
        assert ("-B" in cmd) is installed and (("-c" in cmd) is installed)  # same rules as run_pytest
        assert cmd[cmd.index("--sd-shard") + 1] == f"{i}/2"
    folder = Path(seen[0][0][seen[0][0].index("--sd-results-dir") + 1]).parents[1]
    assert folder.parent == work / "sdbench-results" or folder.parent == Path("sdbench-results")
    folder = work / folder if not folder.is_absolute() else folder
    assert len(read_jsonl(folder / "records.jsonl")) == 2  # both workers' records, merged
    assert status_in((folder / "summary.md").read_text()) == "complete: 2 of 2 cases on 2 worker(s)"
    assert "results in sdbench-results/" in res.out and not (work / "sdbench-bench-results.jsonl").exists()


def test_the_json_target_suits_both_pytest_benchmark_writers(tmp_path: Path) -> None:
    """pytest-benchmark 5.3 opens the path it is given; 5.2 writes into the file object it holds."""
    from sdbench.pytest_plugin import JsonTarget

    target = JsonTarget(tmp_path / "a.json")
    with open(target, mode="wb") as fh:  # 5.3's save_json
        fh.write(b'{"new": 1}')
    assert (tmp_path / "a.json").read_bytes() == b'{"new": 1}'
    with target as fh:  # 5.2's save_json
        fh.write(b'{"old": 1}')
    assert (tmp_path / "a.json").read_bytes() == b'{"old": 1}'
    assert str(target) == str(tmp_path / "a.json") == target.name
