"""Faults at the front doors, tried as a user would: each ends in one clear line and an exit code of its
class, before anything is measured, built or written.

* a plan file with a misspelt key is refused at load, naming the close match;
* a value `plan make` used to accept and a point refused only at run time (a dtype the card cannot run,
  measurement settings out of range) is refused by `plan make`, and `plan run`, `workers run` and
  `slurm render` refuse such a plan before doing anything;
* `--gpus` naming a GPU this machine does not have names the flag and the GPUs there are;
* a weights folder with only pickle files says "safetensors required";
* a sweep without the right to lock clocks is refused before its first point (exit 3), naming what to do;
* a bad `--sd-*` value is a one-line pytest usage error (exit 4) at configure time, leaving no folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testsupport import FAST_RUNNER, Result, invoke, tiny_plan

import sdbench.pipelines.optimize  # noqa: F401
import sdbench.record.environment  # noqa: F401
import sdbench.record.io  # noqa: F401

# Imported before any in-process pytester run (pytester restores sys.modules after each run, so every module
# the plugin imports lazily must already be here).
import sdbench.session  # noqa: F401
import sdbench.spec.models  # noqa: F401
import sdbench.spec.schedulers  # noqa: F401
from sdbench.case import Case
from sdbench.distribute.plan import Plan
from sdbench.errors import ConfigError
from sdbench.gpu import SimulatedGpu

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_error_line(res: Result) -> str:
    """The run's one error line (argparse's '(see --help)' hint aside); fails on a traceback or several lines."""
    assert "Traceback" not in res.err, res.err
    lines = [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("(see ")]
    assert len(lines) == 1, res.err
    return lines[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- a plan file with a misspelt key ------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "right", "wrong"), [
    ("case", "scheduler", "schedular"),
    ("runner", "max_rounds", "max_round"),
    ("plan", "points", "ponts"),
])
def test_a_misspelt_plan_key_is_refused_at_load_naming_the_close_match(tmp_path: Path, where: str, right: str,
                                                                        wrong: str) -> None:
    path = tmp_path / "plan.json"
    tiny_plan(path, 2)
    doc = json.loads(path.read_text())
    target = {"case": doc["points"][1]["case"], "runner": doc["runner"], "plan": doc}[where]
    target[wrong] = target.pop(right)
    path.write_text(json.dumps(doc))

    with pytest.raises(ConfigError, match=f"did you mean '{right}'"):
        Plan.load(path)
    out = tmp_path / "out"
    res = invoke(["plan", "run", str(path), "--output-dir", str(out)])
    assert res.code == 2
    line = one_error_line(res)
    assert repr(wrong) in line and f"did you mean '{right}'" in line
    assert files_under(out) == []


# --- values plan make accepted and a point refused at run time -----------------------------------------------
PLAN_MAKE_REFUSED = [
    (["--device", "simulated:v100", "--dtypes", "bf16"], "dtype", 2),  # V100: no bf16 (compute capability 7.0)
    (["--device", "cpu", "--dtypes", "fp32", "--profiles", "max", "--weights", "synthetic"], None, 0),  # fine
    (["--device", "cpu", "--max-time", "-5"], "max_time", 2),
    (["--device", "cpu", "--min-rounds", "0"], "min_rounds", 2),
    (["--device", "cpu", "--min-rounds", "5", "--max-rounds", "2"], "min_rounds", 2),
    (["--device", "cpu", "--repeats", "0"], "repeats", 2),
]


@pytest.mark.parametrize(("flags", "field", "code"), PLAN_MAKE_REFUSED, ids=[" ".join(f) for f, _, _ in PLAN_MAKE_REFUSED])
def test_plan_make_refuses_what_would_only_fail_at_run_time(tmp_path: Path, flags: list[str], field: str | None,
                                                            code: int) -> None:
    path = tmp_path / "plan.json"
    res = invoke(["plan", "make", "--models", "tiny-sd", "--steps", "2", *flags, "-o", str(path)])
    assert res.code == code, res.err
    if code == 0:
        assert path.is_file()
        return
    assert field is not None and field in one_error_line(res)
    assert not path.exists()


def _plan_refused_per_point(path: Path, *, runner: dict[str, Any] | None = None, dtype: str = "bf16") -> None:
    """A plan as an edited file may hold it: tiny-sd on a simulated V100 in `dtype`, with `runner`."""
    case = Case.create("tiny-sd", device="simulated:v100", dtype=dtype, height=64, width=64, steps=2)
    Plan.from_cases([case], runner={**FAST_RUNNER, **(runner or {})}, device="simulated:v100").save(path)


@pytest.mark.parametrize("front_door", ["plan run", "workers run", "slurm render"])
@pytest.mark.parametrize(("runner", "dtype", "words"), [
    ({}, "bf16", ("dtype", "'bf16'", "compute capability 7.0")),
    ({"max_time_s": -5}, "fp32", ("max_time_s", "-5")),
], ids=["bf16-on-v100", "negative-max-time"])
def test_a_plan_that_only_fails_at_run_time_is_refused_before_anything_runs(tmp_path: Path, front_door: str,
                                                                            runner: dict[str, Any], dtype: str,
                                                                            words: tuple[str, ...]) -> None:
    path, out = tmp_path / "plan.json", tmp_path / "out"
    _plan_refused_per_point(path, runner=runner, dtype=dtype)
    argv = {"plan run": ["plan", "run", str(path), "--output-dir", str(out)],
            "workers run": ["workers", "run", str(path), "--gpus", "cpu", "--output-dir", str(out)],
            "slurm render": ["slurm", "render", str(path), "-o", str(out / "job.sbatch"),
                             "--results-dir", str(out / "results")]}[front_door]
    res = invoke(argv)
    assert res.code == 2, (res.code, res.out, res.err)
    line = one_error_line(res)
    assert all(w in line for w in words), line
    assert files_under(out) == []


# --- --gpus naming a GPU that does not exist ----------------------------------------------------------------
@pytest.mark.parametrize(("count", "gpus", "message"), [
    (2, "0,7", "invalid --gpus: '7': this machine has GPUs 0-1"),
    (1, "1", "invalid --gpus: '1': this machine has GPU 0"),
    (0, "0", "invalid --gpus: '0': this machine has no CUDA GPU"),
])
def test_gpus_naming_a_missing_gpu_names_the_flag_and_the_gpus_there_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         count: int, gpus: str, message: str) -> None:
    monkeypatch.setattr("sdbench.distribute.workers.visible_gpu_count", lambda: count, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan_path, out = tmp_path / "plan.json", tmp_path / "out"
    tiny_plan(plan_path, 2)
    res = invoke(["workers", "run", str(plan_path), "--gpus", gpus, "--output-dir", str(out)])
    assert res.code == 2, (res.code, res.out, res.err)
    assert one_error_line(res) == f"sdbench: error: {message}"
    assert files_under(out) == []  # no worker was started
    # The CPU and simulated stand-ins need no GPU.
    from sdbench.distribute.workers import plan_workers

    assert [s.device for s in plan_workers(["cpu", "simulated"])] == ["cpu", "simulated"]


# --- a weights folder with only pickle files -----------------------------------------------------------------
def test_a_pickle_only_weights_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "config.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    res = invoke(["generate", "--model-variant", "tiny-sd", "--steps", "1", "--device", "cpu", "--weights",
                  f"local:{folder}", "--max-rounds", "1", "--min-rounds", "1", "--idle-seconds", "0", "--quiet",
                  "--no-save-images"])
    assert res.code == 2, (res.code, res.err)
    assert one_error_line(res) == (f"sdbench: error: safetensors required: {folder}/unet has only "
                                   "diffusion_pytorch_model.bin (pickle)")


# --- a sweep without clock rights ------------------------------------------------------------------------------
SWEEP = ["--device", "simulated", "--model", "tiny-sd", "--steps", "1", "--height", "64", "--width", "64",
         "--clocks", "count:2", "--order-seed", "5", "--default-every", "0", "--idle-gap-s", "0",
         "--cooldown-c", "-1", "--window-periods", "2", "--min-rounds", "1", "--max-rounds", "1",
         "--warmup", "1", "--idle-seconds", "0", "--quiet"]


@pytest.mark.parametrize("fault", ["lock_fails", "no_permission"])
def test_a_sweep_without_clock_rights_is_refused_before_its_first_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       fault: str) -> None:
    gpu = SimulatedGpu(**{fault: True})
    monkeypatch.setattr("sdbench.session.open_gpu_for", lambda device: gpu)
    measured: list[Any] = []
    monkeypatch.setattr("sdbench.session.Bench.measure_with_windows",
                        lambda self, case, progress=None: measured.append(case) or pytest.fail("a point was measured"))
    out = tmp_path / "sweep"
    res = invoke(["sweep", *SWEEP, "--output-dir", str(out)])
    assert res.code == 3, (res.code, res.err)
    line = one_error_line(res)
    assert all(word in line for word in ("--read-only", "root", "--clock-command")), line
    assert measured == [] and "results.jsonl" not in files_under(out)
    assert gpu.state() == gpu.default_state


# --- a pytest usage error -----------------------------------------------------------------------------------------
CASE_FILE = "def test_case(sd_case):\n    pass\n"


@pytest.mark.parametrize(("args", "words"), [
    (["--sd-max-time", "-5"], ("--sd-max-time", "-5")),
    (["--sd-energy", "bogus"], ("--sd-energy", "'bogus'")),
    (["--sd-target-ci", "0"], ("--sd-target-ci",)),
    (["--sd-min-rounds", "5", "--sd-max-rounds", "2"], ("min_rounds", "5")),
    (["--sd-min-rounds", "two"], ("--sd-min-rounds", "'two'")),
    (["--sd-num-images", "0"], ("--sd-num-images",)),
    (["--sd-models", "sd-v9"], ("--sd-models", "'sd-v9'")),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_sd_option_is_a_one_line_usage_error_leaving_no_folders(pytester: pytest.Pytester, args: list[str],
                                                                      words: tuple[str, ...]) -> None:
    pytester.makepyfile(test_case=CASE_FILE)
    result = pytester.runpytest_inprocess("--sd-device", "cpu", "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, "\n".join(result.outlines + result.errlines)
    errors = [ln for ln in result.errlines if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR: "), result.errlines
    assert all(w in errors[0] for w in words), errors[0]
    assert sorted(p.name for p in pytester.path.iterdir()) == ["test_case.py"]  # no .benchmarks, no sdbench-results
