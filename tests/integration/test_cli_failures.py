"""Clear failures at the front door: a closed pipe, a bad suite axis, out of memory, an unavailable device and
Ctrl-C each end in one line (or none) and their documented exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testsupport import Result, invoke

from sdbench.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_OUT_OF_MEMORY,
    EXIT_USAGE,
)

REPO = Path(__file__).resolve().parents[2]
FAST = ["--device", "cpu", "--max-rounds", "1", "--min-rounds", "1", "--idle-seconds", "0", "--warmup", "1", "--quiet"]


def error_lines(res: Result) -> list[str]:
    return [ln for ln in res.err.splitlines() if ln.strip()]


def assert_one_error_line(res: Result, code: int, *words: str) -> str:
    assert res.code == code, (res.code, res.err)
    assert "Traceback" not in res.err
    (line,) = error_lines(res)
    assert line.startswith("sdbench: error:"), line
    for w in words:
        assert w in line, (w, line)
    return line


# --- a closed pipe ------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["schedulers", "models"])
def test_a_closed_pipe_ends_quietly(command: str) -> None:
    # The reading end is closed before sdbench starts: every write fails, whatever the scheduling.
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        proc = subprocess.run([sys.executable, "-m", "sdbench", command], stdout=write_fd, stderr=subprocess.PIPE,
                              cwd=REPO, text=True, timeout=300, check=False)
    finally:
        os.close(write_fd)
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert proc.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit


def test_head_reads_the_first_lines_and_nothing_else_is_printed() -> None:
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m sdbench schedulers | head -3"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("key") and lines[2].startswith("dpm++")


# --- a bad suite axis: refused before pytest starts ----------------------------------------------------
@pytest.fixture
def no_pytest(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Fail if a suite run would start pytest; record the argument lists it would have had."""
    calls: list[list[str]] = []

    def run_pytest(args: list[str]) -> int:
        calls.append(args)
        return 0

    monkeypatch.setattr("sdbench.distribute.suite.run_pytest", run_pytest)
    return calls


BAD_AXES = [
    (["--models", "sd-v9"], "--models", "'sd-v9'", "sd-v1.4"),
    (["--schedulers", "euler,eulr"], "--schedulers", "'eulr'", "dpm++"),
    (["--resolutions", "100"], "--resolutions", "100", "multiple of 8"),
    (["--resolutions", "big"], "--resolutions", "'big'", "default"),
    (["--batch-sizes", "0"], "--batch-sizes", "0", "512"),
    (["--steps", "0"], "--steps", "0", "1000"),
    (["--models", "sd-turbo", "--steps", "7"], "--steps", "7", "1, 2, 3, 4"),
    (["--dtypes", "fp16"], "--dtypes", "'fp16'", "fp32"),
    (["--dtypes", "int8"], "--dtypes", "'int8'", "bf16"),
    (["--profiles", "turbo"], "--profiles", "'turbo'", "eager"),
    (["--weights", "nowhere"], "--weights", "'nowhere'", "synthetic"),
    (["--device", "tpu"], "--device", "'tpu'", "cpu"),
]


@pytest.mark.parametrize(("flags", "flag", "value", "allowed"), BAD_AXES, ids=[" ".join(f) for f, *_ in BAD_AXES])
def test_bench_refuses_a_bad_axis_in_one_line_before_pytest(no_pytest: list[list[str]], flags: list[str], flag: str,
                                                            value: str, allowed: str) -> None:
    res = invoke(["bench", "--device", "cpu", *flags] if "--device" not in flags else ["bench", *flags])
    line = assert_one_error_line(res, EXIT_USAGE, f"invalid {flag}: {value}", "allowed:", allowed)
    assert line.count("allowed:") == 1  # the allowed list once, not once per parametrisation
    assert no_pytest == []


BAD_GENERATE_AXES = [
    (["--model-variant", "sd-v9"], "--model-variant"),
    (["--scheduler", "eulr"], "--scheduler"),
    (["--model-variant", "sd-turbo", "--steps", "5"], "--steps"),
    (["--profile", "turbo"], "--profile"),
    (["--height", "100", "--width", "100"], "--height"),
    (["--weights", "nowhere"], "--weights"),
]


@pytest.mark.parametrize(("flags", "flag"), BAD_GENERATE_AXES, ids=[" ".join(f) for f, _ in BAD_GENERATE_AXES])
def test_generate_benchmark_refuses_a_bad_axis_in_one_line(no_pytest: list[list[str]], flags: list[str], flag: str) -> None:
    res = invoke(["--benchmark", "--device", "cpu", *flags])
    assert_one_error_line(res, EXIT_USAGE, f"invalid {flag}:", "allowed:")
    assert no_pytest == []


def test_a_good_matrix_reaches_pytest(no_pytest: list[list[str]]) -> None:
    res = invoke(["bench", "--device", "cpu", "--models", "tiny-sd", "--schedulers", "euler", "--steps", "2"])
    assert res.code == 0, res.err
    (args,) = no_pytest
    assert args[args.index("--sd-models") + 1] == "tiny-sd" and args[args.index("--sd-steps") + 1] == "2"


# --- out of memory ------------------------------------------------------------------------------------
def test_out_of_memory_while_measuring_is_one_line_naming_case_batch_and_memory(monkeypatch: pytest.MonkeyPatch,
                                                                                tmp_path: Path) -> None:
    from sdbench.studies.batching.memory import SimulatedOutOfMemoryError

    def measure(self: Any, case: Any, progress: Any = None) -> dict[str, Any]:
        raise SimulatedOutOfMemoryError("simulated out of memory: batch 2 peaked at 3 GiB", peak_bytes=3 * 2**30)

    monkeypatch.setattr("sdbench.session.Bench.measure", measure)
    res = invoke(["generate", "--model-variant", "tiny-sd", "--batch-size", "2", *FAST, "--output-dir", str(tmp_path)])
    line = assert_one_error_line(res, EXIT_OUT_OF_MEMORY, "out of memory", "tiny-sd-pndm-64x64-b2", "batch size 2",
                                 "--batch-size", "--offload model", "--vae-slicing")
    assert "GiB" in line and "free of" in line  # the device's memory at the time


def test_torch_out_of_memory_while_saving_images_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    def save_images(*args: Any, **kwargs: Any) -> list[Path]:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("sdbench.cli.commands.generate.save_images", save_images)
    res = invoke(["generate", "--model-variant", "tiny-sd", "--steps", "1", *FAST, "--output-dir", str(tmp_path)])
    assert_one_error_line(res, EXIT_OUT_OF_MEMORY, "out of memory: case tiny-sd-pndm-64x64-b1-1st", "batch size 1")


def test_out_of_memory_in_another_command_is_still_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def pipeline(self: Any, case: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr("sdbench.session.Bench.pipeline", pipeline)
    res = invoke(["quality", "--model-variant", "tiny-sd", "--steps", "1", "--device", "cpu"])
    assert_one_error_line(res, EXIT_OUT_OF_MEMORY, "out of memory", "Tried to allocate 8.00 GiB", "--batch-size")


# --- environment, interruption ---------------------------------------------------------------------------
def test_an_unavailable_device_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdbench.gpu import GpuUnavailable

    def open_gpu_for(device: str) -> Any:
        raise GpuUnavailable("NVML is not available: libnvidia-ml.so.1 not found")

    monkeypatch.setattr("sdbench.session.open_gpu_for", open_gpu_for)
    res = invoke(["generate", "--model-variant", "tiny-sd", *FAST, "--no-save-images"])
    assert_one_error_line(res, EXIT_ENVIRONMENT, "NVML is not available")


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(self: Any, case: Any, progress: Any = None) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr("sdbench.session.Bench.measure", measure)
    res = invoke(["generate", "--model-variant", "tiny-sd", *FAST, "--no-save-images"])
    assert res.code == EXIT_INTERRUPTED and "Traceback" not in res.err
    assert error_lines(res) == ["sdbench: interrupted"]
