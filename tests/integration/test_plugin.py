"""The sdbench pytest plugin, driven through `pytester`: options, the case matrix, pytest-benchmark
integration (replayed Runner times, extra_info, machine_info), per-GPU histories, the cross-GPU refusal,
results/export sinks and the end-of-run compare.

Collection-only runs are in-process (cheap); runs that measure are subprocesses on the simulated GPU
with the power-timeline meter (short windows), tiny-sd at 2 steps and 2-5 rounds, so each takes a few
seconds. The plugin is registered through its pytest11 entry point, so it is active in every run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_benchmark.logger import PytestBenchmarkWarning

import sdbench.case
import sdbench.record.environment  # noqa: F401
import sdbench.record.io  # noqa: F401

# Imported before any in-process pytester run: pytester restores sys.modules after each in-process run,
# so every module the plugin (or a plugin of the inner run, like hypothesis) imports lazily must already
# be there, or it would be imported twice.
import sdbench.session  # noqa: F401
import sdbench.spec.models  # noqa: F401
import sdbench.spec.schedulers  # noqa: F401
from sdbench.files import cache_root
from sdbench.gpu import SimulatedGpu
from sdbench.pytest_plugin import ReplayTimer, gpu_identity, storage_slug
from sdbench.record.schema import SCHEMA_VERSION

pytest_plugins = ["pytester"]

# pytester points HOME at its own folder; share the real sdbench cache (CLIP tokenizer) with its runs.
SDBENCH_CACHE = str(cache_root())

BENCH_FILE = """
import pytest


@pytest.mark.sd_matrix(models=["tiny-sd"], steps=[2])
def test_speed(sd_case, sd_measure):
    record = sd_measure(sd_case)
    assert record["case_hash"] == sd_case.case_hash
"""

FIXTURES_FILE = """
import pytest


@pytest.mark.sd_matrix(models=["tiny-sd"], steps=[2], schedulers=["euler"])
def test_fixtures(sd_case, sd_pipeline, sd_bench, sd_device, sd_energy_meter):
    assert sd_device == "simulated"
    assert sd_pipeline is sd_bench.pipeline(sd_case)[0].pipe  # the warm pipeline of the case ...
    assert type(sd_pipeline.scheduler).__name__ == "EulerDiscreteScheduler"  # ... with the case's scheduler
    assert sd_energy_meter.name == "power_timeline"  # as --sd-energy asked
"""

KEEP_FILE = """
def test_keep(sd_keep):
    sd_keep({"record_type": "case", "case_id": "kept", "time_per_image_s_samples": [0.5, 0.25, 1.0]})
"""

COLLECT_FILE = """
import pytest


def test_default(sd_case):
    pass


@pytest.mark.sd_matrix(models=["tiny-sd2"], batch_sizes=[3])
def test_marked(sd_case):
    pass
"""

# Quick measurement: simulated GPU, power-timeline energy (10 ms resolution -> 0.2 s windows), no idle baseline.
FAST = ["-p", "no:cacheprovider", "--sd-device", "simulated", "--sd-energy", "timeline", "--sd-min-rounds", "2",
        "--sd-max-rounds", "2", "--sd-idle-seconds", "0"]
ID_B1 = "tiny-sd-pndm-64x64-b1-2st-fp32-eager"
ID_B2 = "tiny-sd-pndm-64x64-b2-2st-fp32-eager"
SIM_UUID = SimulatedGpu().info().uuid


@pytest.fixture
def bench_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("SDBENCH_CACHE_DIR", SDBENCH_CACHE)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    # One thread per run: tiny models gain nothing from two, and OpenMP spin-waits on a shared machine.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makepyfile(test_bench=BENCH_FILE, test_fixtures=FIXTURES_FILE)
    return pytester


@pytest.fixture
def collect_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_collect=COLLECT_FILE)
    return pytester


def collected_ids(result: pytest.RunResult, test: str) -> list[str]:
    """The parameter ids of `test` in a `--collect-only -q` listing."""
    prefix = f"test_collect.py::{test}["
    return sorted(line[len(prefix):-1] for line in result.outlines if line.startswith(prefix))


def output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def baseline_record(samples_s: list[float]) -> dict[str, Any]:
    """A results record for BENCH_FILE's b1 case with the given per-image times (no energy)."""
    case = sdbench.case.Case.create("tiny-sd", steps=2, batch_size=1, dtype="fp32", device="simulated")
    assert case.case_id == ID_B1
    return {"record_type": "case", "case_id": case.case_id, "case_hash": case.case_hash, "batch_size": 1,
            "time_per_image_s_samples": samples_s, "energy_status": "unavailable"}


# --- options and the matrix (in-process, collection only) ------------------------------------------
def test_help_shows_the_sdbench_option_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["sdbench: Stable Diffusion benchmark matrix and measurement:",
                                 "*--sd-models=SD_MODELS*", "*--sd-batch-sizes=*", "*--sd-device=*",
                                 "*--sd-compare=BASELINE*", "*--sd-compare-fail=SPEC*", "*--sd-allow-cross-gpu*"])


def test_options_parametrise_the_cases(collect_dir: pytest.Pytester) -> None:
    result = collect_dir.runpytest_inprocess("--collect-only", "-q", "--sd-device", "cpu", "--sd-models", "tiny-sd",
                                             "--sd-batch-sizes", "1,2")
    assert result.ret == 0
    expected = ["tiny-sd-pndm-64x64-b1-4st-fp32-eager", "tiny-sd-pndm-64x64-b2-4st-fp32-eager"]
    assert collected_ids(result, "test_default") == expected
    assert collected_ids(result, "test_marked") == expected  # the command line beats the marker on both axes
    result.stdout.fnmatch_lines(["4 tests collected*"])


def test_marker_overrides_the_default_matrix_and_the_command_line_beats_the_marker(collect_dir: pytest.Pytester) -> None:
    result = collect_dir.runpytest_inprocess("--collect-only", "-q", "--sd-device", "cpu")
    assert result.ret == 0
    # The CPU default matrix: the three tiny models x batch sizes 1 and 2.
    assert len(collected_ids(result, "test_default")) == 6
    assert collected_ids(result, "test_marked") == ["tiny-sd2-ddim-64x64-b3-4st-fp32-eager"]

    result = collect_dir.runpytest_inprocess("--collect-only", "-q", "--sd-device", "cpu", "--sd-batch-sizes", "4",
                                             "--sd-steps", "2")
    assert result.ret == 0
    assert collected_ids(result, "test_marked") == ["tiny-sd2-ddim-64x64-b4-2st-fp32-eager"]


BAD_MATRIX = {
    "marker axis": ("@pytest.mark.sd_matrix(modles=['tiny-sd'])", [], "invalid sd_matrix axis: 'modles'"),
    "batch size": ("", ["--sd-batch-sizes", "two"], "invalid batch_sizes: 'two'"),
    "model": ("", ["--sd-models", "tiny-nope"], "'tiny-nope'"),
}


def _bad_matrix_run(pytester: pytest.Pytester, which: str) -> tuple[pytest.RunResult, str]:
    decorator, args, message = BAD_MATRIX[which]
    pytester.makepyfile(test_bad=f"import pytest\n\n\n{decorator}\ndef test_bad(sd_case):\n    pass\n")
    return pytester.runpytest_inprocess("--collect-only", "-q", "--sd-device", "cpu", *args), message


@pytest.mark.parametrize("which", sorted(BAD_MATRIX))
def test_bad_matrix_fails_the_run_with_a_message_naming_it(pytester: pytest.Pytester, which: str) -> None:
    result, message = _bad_matrix_run(pytester, which)
    assert result.ret != 0
    assert message in output(result)


@pytest.mark.parametrize("which", sorted(BAD_MATRIX))
def test_bad_matrix_is_a_usage_error_exit_4(pytester: pytest.Pytester, which: str) -> None:
    result, _message = _bad_matrix_run(pytester, which)
    assert result.ret == pytest.ExitCode.USAGE_ERROR


STATE_FILE = """
from sdbench.pytest_plugin import sd_config
from sdbench.pytest_plugin.replay import replay_timer


def test_state(request):
    timer = replay_timer(request.config)
    assert not timer._durations and timer() == 0.0  # nothing left over from an earlier session
    timer.load([1.0, 2.0])  # left loaded on purpose
    print("device:", sd_config(request.config).device)
"""


def test_two_in_process_sessions_share_no_state(pytester: pytest.Pytester) -> None:
    """The plugin keeps its state in each session's config.stash: a second session in the same process
    starts afresh (its own device, an unloaded replay timer)."""
    pytester.makepyfile(test_state=STATE_FILE)
    for device in ("cpu", "simulated"):
        result = pytester.runpytest_inprocess("-s", "-p", "no:cacheprovider", "--sd-device", device)
        assert result.ret == 0, output(result)
        result.stdout.fnmatch_lines([f"*device: {device}*"])


def test_bad_device_is_a_usage_error(collect_dir: pytest.Pytester) -> None:
    result = collect_dir.runpytest_inprocess("--collect-only", "--sd-device", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--sd-device" in output(result) and "'tpu'" in output(result)


def test_histories_are_split_per_gpu_unless_storage_is_given(collect_dir: pytest.Pytester) -> None:
    slug = storage_slug("simulated")
    # One folder per GPU and clock setting, directly under .benchmarks: the storage root pytest-benchmark's
    # own CLI takes (`pytest-benchmark --storage .benchmarks/<slug> list`).
    assert "/" not in slug and slug.endswith(f"-{SIM_UUID.replace('GPU-', '')[:8]}-default-clocks"), slug
    base = ["--collect-only", "--sd-device", "simulated", "-k", "marked"]
    result = collect_dir.runpytest_inprocess(*base)
    result.stdout.fnmatch_lines([f"sdbench: device simulated; histories in file://./.benchmarks/{slug}"])
    result = collect_dir.runpytest_inprocess(*base, "--benchmark-storage", "file://./mine")
    result.stdout.fnmatch_lines(["sdbench: device simulated; histories in file://./mine"])
    result = collect_dir.runpytest_inprocess(*base, "--sd-no-storage-split")
    result.stdout.fnmatch_lines(["sdbench: device simulated; histories in file://./.benchmarks"])


def test_gpu_identity_and_slug_of_the_cpu() -> None:
    ident = gpu_identity("cpu")
    assert ident["gpu_uuid"] is None and ident["gpu_simulated"] is False
    assert ident["clock_setting"] == "default-clocks"
    assert storage_slug("cpu").startswith("cpu-") and storage_slug("cpu").endswith("-default-clocks")
    assert "/" not in storage_slug("cpu")
    sim = gpu_identity("simulated")
    assert sim["gpu_uuid"] == SIM_UUID and sim["gpu_simulated"] is True


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-3, 10.0, allow_nan=False), min_size=1, max_size=30))
def test_replay_timer_returns_each_duration_once_per_round(durations: list[float]) -> None:
    timer = ReplayTimer()
    timer.load(durations)
    rounds = []
    for _ in durations:
        start = timer()
        end = timer()
        rounds.append(end - start)
    assert rounds == pytest.approx(durations, rel=1e-9)
    assert timer() == timer()  # exhausted: no time passes


def test_sd_keep_alone_replays_the_records_times(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_keep=KEEP_FILE)
    result = pytester.runpytest_inprocess("--sd-device", "cpu", "--benchmark-json", "keep.json", "-p", "no:cacheprovider")
    assert result.ret == 0, output(result)
    (bench,) = json.loads((pytester.path / "keep.json").read_text())["benchmarks"]
    assert bench["extra_info"]["case_id"] == "kept"
    assert bench["stats"]["rounds"] == 3
    assert bench["stats"]["median"] == pytest.approx(0.5, rel=1e-9)


# --- measuring runs (subprocesses) ------------------------------------------------------------------
def test_benchmark_json_holds_the_runner_record(bench_dir: pytest.Pytester) -> None:
    # An equal-ish but very noisy sdbench baseline of the b1 case: no regression, exit 0.
    noisy = write_jsonl(bench_dir.path / "noisy.jsonl", [baseline_record([1e-4, 0.02, 5.0, 0.5, 1e-3])])
    result = bench_dir.runpytest_subprocess(*FAST, "--sd-batch-sizes", "1,2", "--benchmark-json", "out.json",
                                            "--sd-results", "results.jsonl", "--sd-export", "doc.json",
                                            "--benchmark-save", "base", "--sd-compare", str(noisy),
                                            "--sd-compare-fail", "time:5%")
    assert result.ret == 0, output(result)
    result.assert_outcomes(passed=4)  # test_fixtures (no benchmark) passed for b1 and b2 as well
    doc = json.loads((bench_dir.path / "out.json").read_text())
    benches = {b["name"]: b for b in doc["benchmarks"]}
    assert sorted(benches) == [f"test_speed[{ID_B1}]", f"test_speed[{ID_B2}]"]
    for bench in benches.values():
        extra, stats = bench["extra_info"], bench["stats"]
        for key in ("time_per_image_s_median", "time_per_image_s_samples", "energy_status", "case_hash",
                    "scheduler_class", "rounds", "energy_per_image_j_median", "images_per_s", "test"):
            assert key in extra, key
        assert extra["energy_status"] == "simulated"
        assert extra["scheduler_class"] == "PNDMScheduler"
        # pytest-benchmark's columns are the Runner's synchronised per-image times, replayed.
        assert stats["rounds"] == extra["rounds"] == len(extra["time_per_image_s_samples"]) == 2
        assert stats["iterations"] == 1
        assert stats["median"] == pytest.approx(extra["time_per_image_s_median"], rel=1e-9)
        assert stats["min"] == pytest.approx(min(extra["time_per_image_s_samples"]), rel=1e-9)
        assert stats["max"] == pytest.approx(max(extra["time_per_image_s_samples"]), rel=1e-9)
    assert benches[f"test_speed[{ID_B2}]"]["extra_info"]["batch_size"] == 2
    sd = doc["machine_info"]["sdbench"]
    assert sd["gpu_uuid"] == SIM_UUID and sd["gpu_simulated"] is True and sd["clock_setting"] == "default-clocks"

    # The default storage is split per GPU and clock setting: <root per GPU and clocks>/<machine_id>/NNNN_name.json.
    saved = list((bench_dir.path / ".benchmarks").glob("*/*/0001_base.json"))
    assert len(saved) == 1, saved
    assert saved[0].parent.parent.relative_to(bench_dir.path / ".benchmarks").as_posix() == storage_slug("simulated")
    assert json.loads(saved[0].read_text())["machine_info"]["sdbench"]["gpu_uuid"] == SIM_UUID

    # One results line per case, and the export document with every record.
    lines = (bench_dir.path / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["case_id"] for r in records) == [ID_B1, ID_B2]
    assert {r["case_hash"] for r in records} == {b["extra_info"]["case_hash"] for b in benches.values()}
    export = json.loads((bench_dir.path / "doc.json").read_text())
    assert (export["schema_version"], export["record_type"]) == (SCHEMA_VERSION, "export-metrics") and export["command"] == "pytest"
    assert export["environment"]["gpu_uuid"] == SIM_UUID
    assert sorted(r["case_id"] for r in export["records"]) == [ID_B1, ID_B2]

    # The end-of-run compare ran against the noisy baseline and found nothing.
    result.stdout.fnmatch_lines(["*sdbench compare*", f"{ID_B1}*time*unchanged*"])
    assert "REGRESSION" not in output(result)


def test_history_compare_and_sd_compare_fail(bench_dir: pytest.Pytester) -> None:
    # An explicit --benchmark-storage is used as given (no per-GPU folder).
    one = ["test_bench.py", *FAST, "--sd-batch-sizes", "1", "--benchmark-storage", "file://./explicit"]
    first = bench_dir.runpytest_subprocess(*one, "--benchmark-save", "base")
    assert first.ret == 0, output(first)
    (saved,) = (bench_dir.path / "explicit").glob("*/0001_base.json")
    assert not (bench_dir.path / ".benchmarks").exists()

    # Same GPU: pytest-benchmark compares with the saved run. An sdbench baseline 100x faster than any
    # tiny-sd call, with tight noise, makes this run a significant regression: exit 1.
    fast = write_jsonl(bench_dir.path / "fast.jsonl", [baseline_record([1e-4 * (1 + 0.001 * i) for i in range(5)])])
    # Five rounds (0.2 s each): enough for a noise estimate that a preempted round cannot blow up.
    second = bench_dir.runpytest_subprocess(*one, "--sd-min-rounds", "5", "--sd-max-rounds", "5",
                                            "--benchmark-compare=0001", "--sd-compare", str(fast),
                                            "--sd-compare-fail", "time:5%")
    assert second.ret == 1, output(second)
    second.assert_outcomes(passed=1)  # the tests passed; the compare failed the run
    for run in ("0001_base", "NOW"):  # rows sorted by speed: either may come first
        second.stdout.fnmatch_lines([f"test_speed[[]{ID_B1}[]] ({run})*"])
    second.stdout.fnmatch_lines(["*sdbench compare*", f"{ID_B1}*time*slower*REGRESSION (> 5%)*"])

    # A history of another GPU is refused before anything runs, unless explicitly allowed.
    other = json.loads(saved.read_text())
    other["machine_info"]["sdbench"]["gpu_uuid"] = "GPU-00000000-other"
    (saved.parent / "0002_other.json").write_text(json.dumps(other))
    refused = bench_dir.runpytest_inprocess(*one, "--collect-only", "--benchmark-compare=0002")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert "refusing to compare" in output(refused) and "GPU-00000000-other" in output(refused)
    with pytest.warns(PytestBenchmarkWarning, match="comparing across GPUs/clocks: gpu_uuid"):
        allowed = bench_dir.runpytest_inprocess(*one, "--collect-only", "--benchmark-compare=0002",
                                                "--sd-allow-cross-gpu")
    assert allowed.ret == 0, output(allowed)
    allowed.stderr.fnmatch_lines(["Comparing against benchmarks from: *0002_other.json"])


def test_only_tests_marked_gpu_are_skipped_without_a_gpu(pytester: pytest.Pytester) -> None:
    """The root conftest skips GPU tests by their marker: a test in a folder named gpu/ (tests/unit/gpu/)
    is no GPU test. (It once matched the folder name and skipped 167 CPU tests.)"""
    import torch

    pytester.makeconftest((Path(__file__).resolve().parents[2] / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n")
    pkg = pytester.mkpydir("gpu")
    (pkg / "test_in_gpu_folder.py").write_text(
        "import pytest\n\ndef test_plain():\n    pass\n\n@pytest.mark.gpu\ndef test_marked():\n    pass\n")
    res = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:sdbench")
    if torch.cuda.is_available():
        res.assert_outcomes(passed=2)
    else:
        res.assert_outcomes(passed=1, skipped=1)
