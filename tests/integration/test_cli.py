"""The `sdbench` command line, in-process through `sdbench.cli.main` (and once through `python -m sdbench`).

Every flag gets a test showing its effect on what is written or recorded. Runs use tiny models at 64 px
with one or two measured rounds and no idle baseline, so each takes well under a second on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from testsupport import Result, invoke

from sdbench.cli import main
from sdbench.errors import SdbenchError
from sdbench.spec.models import MODELS, TINY_MODELS
from sdbench.spec.schedulers import SCHEDULERS

# KDPM2 (diffusers 0.42) calls NumPy on torch tensors; NumPy 2 warns from its own module.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")

FAST = ["--device", "cpu", "--max-rounds", "2", "--min-rounds", "1", "--idle-seconds", "0", "--warmup", "1", "--quiet"]
REPO = Path(__file__).resolve().parents[2]


def generate(tmp: Path, *flags: str, model: str = "tiny-sd", steps: str = "2", name: str = "out") -> tuple[Result, list[dict[str, Any]], Path]:
    """`generate` with the fast flags; returns the result, the exported records and the output folder."""
    out_dir = tmp / name
    metrics = tmp / f"{name}.json"
    argv = ["generate", "--model-variant", model, "--steps", steps, *FAST, "--output-dir", str(out_dir),
            "--export-metrics", str(metrics), *flags]
    res = invoke(argv)
    assert res.code == 0, res.err
    doc = json.loads(metrics.read_text())
    return res, doc["records"], out_dir


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png")) if folder.exists() else []


def pixels(path: Path) -> bytes:
    with Image.open(path) as im:
        return im.convert("RGB").tobytes()


def assert_one_line_error(res: Result, *words: str) -> None:
    """Exit 2, one error line naming the field (argparse adds a '(see --help)' hint line), no traceback."""
    assert res.code == 2, (res.code, res.err)
    assert "Traceback" not in res.err
    lines = [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("(see ")]
    assert len(lines) == 1, res.err
    assert "error" in lines[0] and "invalid" in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


# --- the main path ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unipc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, dict[str, Any], Path, Path]:
    tmp = tmp_path_factory.mktemp("unipc")
    out_dir, metrics = tmp / "images", tmp / "m.json"
    res = invoke(["generate", "--model-variant", "tiny-sdxl", "--scheduler", "unipc", "--steps", "2", "--device", "cpu",
                  "--output-dir", str(out_dir), "--export-metrics", str(metrics),
                  "--max-rounds", "2", "--min-rounds", "1", "--idle-seconds", "0", "--warmup", "1"])
    assert res.code == 0, res.err
    return res, json.loads(metrics.read_text()), out_dir, metrics


def test_generate_writes_image_config_and_metrics(unipc_run: tuple[Result, dict[str, Any], Path, Path]) -> None:
    res, doc, out_dir, _ = unipc_run
    images = pngs(out_dir)
    assert len(images) == 1
    with Image.open(images[0]) as im:
        assert im.size == (64, 64)
    config = json.loads(images[0].with_suffix(".json").read_text())
    assert config["model"] == "tiny-sdxl" and config["scheduler"] == "unipc" and config["steps"] == 2
    assert config["scheduler_class"] == "UniPCMultistepScheduler"
    assert config["weights_source"] == "synthetic" and config["synthetic_weights_note"]
    assert doc["schema_version"] >= 1 and doc["command"] == "generate" and doc["environment"]
    (rec,) = doc["records"]
    assert rec["scheduler"] == "unipc" and rec["scheduler_class"] == "UniPCMultistepScheduler"
    assert rec["model"] == "tiny-sdxl" and rec["steps"] == 2 and rec["unet_evaluations"] == 2
    assert rec["pipeline_class"] == "StableDiffusionXLPipeline"
    assert 1 <= rec["rounds"] <= 2
    assert rec["time_per_image_s_median"] > 0 and rec["images_per_s"] > 0
    assert rec["flop_per_image"] > 0
    assert rec["images_saved"] == [str(images[0])]
    # the summary table names what ran; progress lines go to stderr
    assert "unipc = UniPCMultistepScheduler" in res.out and str(out_dir) in res.out
    # the closing table is the suites' one: at most 120 columns, the record's numbers with their intervals
    table = res.out[:res.out.index("scheduler ran as:")].splitlines()
    assert table[0].split()[:2] == ["case", "images/s"] and "J/image [95% CI]" in table[0]
    assert rec["case_id"] in table[1] and rec["stop_reason"] in table[1]
    assert all(len(line) <= 120 for line in res.out.splitlines() if not line.startswith(("images,", "metrics:")))
    assert "warm-up" in res.err


def test_cpu_energy_is_unavailable_with_a_reason(unipc_run: tuple[Result, dict[str, Any], Path, Path]) -> None:
    (rec,) = unipc_run[1]["records"]
    assert rec["energy_status"] == "unavailable"
    assert rec["energy_per_image_j_median"] is None
    assert rec["energy_unavailable_reason"]
    assert rec["net_energy_per_image_j_median"] is None and rec["net_energy_unavailable_reason"]
    assert " n/a " in unipc_run[0].out and "n/a no energy source" in unipc_run[0].out  # the table and its legend


def test_default_model_on_the_cpu_is_tiny_sd(tmp_path: Path) -> None:
    res = invoke(["--steps", "1", *FAST, "--no-save-images", "--export-metrics", str(tmp_path / "m.json")])
    assert res.code == 0, res.err
    (rec,) = json.loads((tmp_path / "m.json").read_text())["records"]
    assert rec["model"] == "tiny-sd" and rec["dtype"] == "fp32"


def test_no_arguments_without_a_gpu_run_tiny_sd_with_the_optimized_scheduler_and_say_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)  # the default output folder lands here
    res = invoke(["--steps", "1", "--max-rounds", "1", "--min-rounds", "1", "--idle-seconds", "0", "--quiet"])
    assert res.code == 0, res.err
    (rec,) = json.loads(next((tmp_path / "sdbench-output").glob("*/metrics.json")).read_text())["records"]
    assert rec["model"] == "tiny-sd" and rec["scheduler"] == "dpm++"
    assert rec["scheduler_class"] == "DPMSolverMultistepScheduler"
    (line,) = res.err.splitlines()
    assert "no GPU is present" in line and "tiny-sd" in line and "sd-v1.4" in line


class _Stop(SdbenchError):
    """Ends a run once the case is known (nothing is built)."""


@pytest.fixture
def on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A machine with one CUDA GPU, as far as the front door sees: the cases generate would measure."""
    from sdbench.case import Case

    seen: list[Any] = []

    class FakeBench:
        def __init__(self, device: str, **_kw: Any) -> None:
            self.device = device

        def case(self, model: str, **kw: Any) -> Any:
            kw["dtype"] = kw.get("dtype") or "fp16"
            seen.append(Case.create(model, device=self.device, **kw))
            return seen[-1]

        def measure(self, case: Any, progress: Any = None) -> dict[str, Any]:
            raise _Stop("stopped before building")

        def close(self) -> None:
            pass

    monkeypatch.setattr("sdbench.case.resolve_device", lambda value: "cuda:0")
    monkeypatch.setattr("sdbench.session.Bench", FakeBench)
    return seen


def test_no_arguments_on_a_gpu_run_sd_v1_4_with_dpm_plus_plus(on_a_gpu: list[Any]) -> None:
    res = invoke([])
    assert "stopped before building" in res.err and "no GPU" not in res.err
    (case,) = on_a_gpu
    assert (case.model, case.scheduler, case.dtype, case.device) == ("sd-v1.4", "dpm++", "fp16", "cuda:0")


def test_a_named_model_keeps_its_own_scheduler(on_a_gpu: list[Any]) -> None:
    invoke(["--model-variant", "sdxl"])
    invoke(["--model-variant", "sd-v1.4"])
    assert [(c.model, c.scheduler) for c in on_a_gpu] == [("sdxl", "euler"), ("sd-v1.4", "pndm")]


@pytest.fixture
def pytest_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The pytest argument lists suite runs would start (none is started)."""
    calls: list[list[str]] = []
    monkeypatch.setattr("sdbench.distribute.suite.run_pytest", lambda args: calls.append(args) or 0)
    return calls


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_benchmark_without_a_type_runs_one_bounded_suite_and_says_which(pytest_runs: list[list[str]],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sdbench.case.resolve_device", lambda value: "cuda:0")
    res = invoke(["--model-variant", "sdxl", "--benchmark"])
    assert res.code == 0, res.err
    (args,) = pytest_runs
    assert _option(args, "-m") == "speed" and _option(args, "--sd-models") == "sdxl"
    assert _option(args, "--sd-schedulers") is None  # a named model keeps the suite's scheduler axis
    assert "runs the speed suite for sdxl" in res.err
    assert all(suite in res.err for suite in ("energy_research", "quality_test", "scheduler_comparison", "dvfs"))


def test_benchmark_alone_runs_the_default_model_and_scheduler(pytest_runs: list[list[str]]) -> None:
    res = invoke(["--benchmark", "--device", "cpu"])
    assert res.code == 0, res.err
    (args,) = pytest_runs
    assert (_option(args, "-m"), _option(args, "--sd-models"), _option(args, "--sd-schedulers")) == \
        ("speed", "tiny-sd", "dpm++")
    # ...except where schedulers are what the suite compares
    invoke(["--benchmark", "--benchmark-type", "scheduler_comparison", "--device", "cpu"])
    assert _option(pytest_runs[1], "--sd-schedulers") is None


def test_num_images_reaches_the_quality_suite(pytest_runs: list[list[str]]) -> None:
    res = invoke(["--benchmark", "--benchmark-type", "quality_test", "--num-images", "20", "--device", "cpu"])
    assert res.code == 0, res.err
    assert _option(pytest_runs[0], "-m") == "quality_test" and _option(pytest_runs[0], "--sd-num-images") == "20"
    res = invoke(["--benchmark", "--benchmark-type", "energy_research", "--num-images", "20", "--device", "cpu"])
    assert "--sd-num-images" not in pytest_runs[1] and "ignores it" in res.err


def test_the_quality_suite_measures_num_images_seeds() -> None:
    import argparse
    import importlib.util

    from sdbench.pytest_plugin import _images_per_case
    from sdbench.runner import RunnerConfig
    from sdbench.session import Bench

    spec = importlib.util.spec_from_file_location("quality_suite", REPO / "benchmarks" / "test_quality.py")
    suite = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(suite)  # type: ignore[union-attr]
    bench = Bench(device="cpu", runner_config=RunnerConfig.for_cpu(), gpu=None)
    try:
        case = bench.case("tiny-sd", steps=1, batch_size=2, seed=5)
        fields = suite.quality_over_seeds(bench, case, 3, None)
    finally:
        bench.close()
    assert fields["quality_seeds"] == [5, 6] and fields["quality_num_images"] == 4  # 3 images: 2 calls of 2
    assert len(fields["fidelity_latent_rel_error_per_seed"]) == 2
    assert fields["fidelity_latent_rel_error"] == max(fields["fidelity_latent_rel_error_per_seed"])
    assert fields["fidelity_note"].startswith("worst of 2 seeds")
    with pytest.raises(argparse.ArgumentTypeError, match="num_images"):
        _images_per_case("0")


def test_module_entry_point(tmp_path: Path) -> None:
    from sdbench.case import Case

    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    metrics = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sdbench", "generate", "--model-variant", "tiny-sd", "--scheduler", "euler", "--steps", "1",
         *FAST, "--no-save-images", "--export-metrics", str(metrics)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    (rec,) = json.loads(metrics.read_text())["records"]
    assert rec["scheduler_class"] == "EulerDiscreteScheduler"
    # the case hash is stable across processes
    same = Case.create("tiny-sd", scheduler="euler", steps=1, dtype="fp32", device="cpu")
    assert rec["case_hash"] == same.case_hash and rec["case_id"] == same.case_id


# --- one test per flag ------------------------------------------------------------------------------


def test_steps(tmp_path: Path) -> None:
    _, (one,), _ = generate(tmp_path, "--scheduler", "euler", "--no-save-images", steps="1", name="a")
    _, (two,), _ = generate(tmp_path, "--scheduler", "euler", "--no-save-images", steps="2", name="b")
    assert (one["steps"], two["steps"]) == (1, 2)
    assert (one["unet_evaluations"], two["unet_evaluations"]) == (1, 2)
    assert two["flop_unet_per_image"] == pytest.approx(2 * one["flop_unet_per_image"])


def test_second_order_scheduler_records_its_real_unet_evaluations(tmp_path: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--scheduler", "heun", "--no-save-images", steps="2")
    assert rec["scheduler_class"] == "HeunDiscreteScheduler" and rec["unet_evaluations"] == 3


def test_height_and_width(tmp_path: Path) -> None:
    _, (rec,), out = generate(tmp_path, "--height", "64", "--width", "128")
    (png,) = pngs(out)
    with Image.open(png) as im:
        assert im.size == (128, 64)
    assert rec["resolution"] == "128x64" and (rec["height"], rec["width"]) == (64, 128)


def test_num_images(tmp_path: Path) -> None:
    _, (rec,), out = generate(tmp_path, "--num-images", "3")
    assert len(pngs(out)) == 3 and len([p for p in out.glob("*.json") if p.name != "metrics.json"]) == 3
    assert (out / "metrics.json").is_file()  # the run's records beside its images
    assert len(rec["images_saved"]) == 3
    # image i of a one-image batch uses seed + i: the images differ
    assert len({pixels(p) for p in pngs(out)}) == 3


def test_batch_size(tmp_path: Path) -> None:
    _, (rec,), out = generate(tmp_path, "--batch-size", "2", "--num-images", "3")
    assert rec["batch_size"] == 2
    assert rec["images_measured"] == 2 * rec["rounds"] * rec["calls_per_window"]
    assert len(pngs(out)) == 3
    configs = [json.loads(p.with_suffix(".json").read_text()) for p in pngs(out)]
    assert [(c["call_seed"], c["index_in_batch"]) for c in configs] == [(0, 0), (0, 1), (1, 0)]


def test_no_save_images(tmp_path: Path) -> None:
    res, (rec,), out = generate(tmp_path, "--no-save-images", "--num-images", "2")
    assert pngs(out) == [] and not out.exists()
    assert "images_saved" not in rec
    assert rec["time_per_image_s_median"] > 0


def test_seed(tmp_path: Path) -> None:
    _, (a,), out_a = generate(tmp_path, "--seed", "0", name="a")
    _, (b,), out_b = generate(tmp_path, "--seed", "7", name="b")
    _, _, out_c = generate(tmp_path, "--seed", "7", name="c")
    assert (a["seed"], b["seed"]) == (0, 7)
    assert pixels(pngs(out_a)[0]) != pixels(pngs(out_b)[0])
    assert pixels(pngs(out_b)[0]) == pixels(pngs(out_c)[0])  # same seed, same image
    assert json.loads(pngs(out_b)[0].with_suffix(".json").read_text())["call_seed"] == 7


def test_prompt_and_negative_prompt(tmp_path: Path) -> None:
    _, (base,), out0 = generate(tmp_path, name="base")
    _, (p,), out1 = generate(tmp_path, "--prompt", "a blue teapot", name="p")
    _, (n,), out2 = generate(tmp_path, "--prompt", "a blue teapot", "--negative-prompt", "low quality", name="n")
    assert p["prompt"] == "a blue teapot" and p["negative_prompt"] is None
    assert n["negative_prompt"] == "low quality"
    images = [pixels(pngs(o)[0]) for o in (out0, out1, out2)]
    assert len(set(images)) == 3
    config = json.loads(pngs(out2)[0].with_suffix(".json").read_text())
    assert config["prompt"] == "a blue teapot" and config["negative_prompt"] == "low quality"


def test_guidance_scale_zero_disables_cfg(tmp_path: Path) -> None:
    _, (cfg,), _ = generate(tmp_path, "--no-save-images", name="cfg")
    _, (plain,), _ = generate(tmp_path, "--guidance-scale", "0", "--no-save-images", name="plain")
    assert cfg["cfg"] is True and plain["cfg"] is False and plain["guidance_scale"] == 0
    assert plain["flop_unet_per_step_per_image"] == pytest.approx(cfg["flop_unet_per_step_per_image"] / 2)


def test_dtype_bf16(tmp_path: Path) -> None:
    _, (rec,), out = generate(tmp_path, "--dtype", "bf16")
    assert rec["dtype"] == "bf16" and rec["case_id"].endswith("bf16-eager")
    assert len(pngs(out)) == 1


def test_fp16_on_the_cpu_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--model-variant", "tiny-sd", "--dtype", "fp16", *FAST, "--no-save-images"])
    err = capsys.readouterr().err
    assert code == 2 and "invalid dtype: 'fp16'" in err and "Traceback" not in err


def test_weights_synthetic(tmp_path: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--weights", "synthetic", "--no-save-images")
    assert rec["weights"] == "synthetic" and rec["weights_source"] == "synthetic"


def test_weights_local_folder(tmp_path: Path, saved_tiny_sd: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--weights", f"local:{saved_tiny_sd}", "--no-save-images")
    assert rec["weights_source"] == f"local:{saved_tiny_sd}"


@pytest.mark.parametrize(("attention", "processor"), [("math", "AttnProcessor2_0"), ("sliced", "SlicedAttnProcessor")])
def test_attention(tmp_path: Path, attention: str, processor: str) -> None:
    _, (rec,), _ = generate(tmp_path, "--attention", attention, "--no-save-images")
    assert rec["attention"] == attention and rec["attention_backend"] == attention
    assert processor in rec["attention_processor"]


def test_profile_channels_last(tmp_path: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--profile", "channels-last", "--no-save-images")
    assert rec["profile"] == "channels-last"
    assert rec["knob_channels_last"] is True and rec["knob_fuse_qkv"] is True


@pytest.mark.parametrize("flags", [["--enable-cpu-offload"], ["--offload", "model"], ["--offload", "sequential"]])
def test_cpu_offload_on_the_cpu_is_refused(capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    code = main(["generate", "--model-variant", "tiny-sd", *FAST, "--no-save-images", *flags])
    err = capsys.readouterr().err
    assert_one_line_error(Result(code, "", err), "offload", "GPU")


def test_list_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    for key in MODELS:
        assert key in out
    assert main(["models"]) == 0
    assert capsys.readouterr().out == out


def test_list_schedulers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-schedulers"]) == 0
    out = capsys.readouterr().out
    for spec in SCHEDULERS.values():
        assert spec.key in out and spec.class_name in out
    assert main(["schedulers"]) == 0
    assert capsys.readouterr().out == out


def test_multi_resolution(tmp_path: Path) -> None:
    _, recs, out = generate(tmp_path, "--multi-resolution", "--resolutions", "64,128")
    assert [r["resolution"] for r in recs] == ["64x64", "128x128"]
    sizes = set()
    for p in pngs(out):
        with Image.open(p) as im:
            sizes.add(im.size)
    assert sizes == {(64, 64), (128, 128)}
    # more pixels, more work
    assert recs[1]["flop_unet_per_image"] > recs[0]["flop_unet_per_image"]


def test_multi_resolution_with_a_bad_list(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--model-variant", "tiny-sd", *FAST, "--no-save-images", "--multi-resolution",
                 "--resolutions", "64,abc"])
    assert_one_line_error(Result(code, "", capsys.readouterr().err), "resolutions")


def test_scheduler_comparison(tmp_path: Path) -> None:
    _, recs, _ = generate(tmp_path, "--scheduler-comparison", "--schedulers", "euler,ddim", "--no-save-images")
    assert [r["scheduler"] for r in recs] == ["euler", "ddim"]
    assert [r["scheduler_class"] for r in recs] == ["EulerDiscreteScheduler", "DDIMScheduler"]
    # one warm pipeline: swapping the scheduler did not rebuild it
    assert recs[0]["pipeline_build_s"] == recs[1]["pipeline_build_s"]


def test_scheduler_comparison_defaults_to_every_scheduler(tmp_path: Path) -> None:
    _, recs, _ = generate(tmp_path, "--scheduler-comparison", "--no-save-images", "--max-rounds", "1", steps="1")
    assert [r["scheduler"] for r in recs] == list(SCHEDULERS)


@pytest.mark.parametrize(("flags", "field"), [
    (["--benchmark-type", "speed"], "benchmark_type"),
    (["--resolutions", "64,128"], "resolutions"),
    (["--schedulers", "euler"], "schedulers"),
    (["--multi-resolution", "--scheduler-comparison"], "multi_resolution"),
])
def test_study_flags_need_their_partner(capsys: pytest.CaptureFixture[str], flags: list[str], field: str) -> None:
    code = main(["generate", "--model-variant", "tiny-sd", *FAST, "--no-save-images", *flags])
    assert_one_line_error(Result(code, "", capsys.readouterr().err), field)


def test_simulated_device(tmp_path: Path) -> None:
    # the simulated counter ticks every 100 ms and a window spans 20 ticks: one round only
    _, (rec,), _ = generate(tmp_path, "--device", "simulated", "--no-save-images", "--max-rounds", "1")
    assert rec["device"] == "simulated"
    assert rec["energy_status"] == "simulated" and rec["energy_simulated"] is True
    assert rec["energy_per_image_j_median"] > 0


def test_energy_none_switches_energy_off(tmp_path: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--device", "simulated", "--energy", "none", "--no-save-images")
    assert rec["energy_status"] == "unavailable" and rec["energy_unavailable_reason"]


def test_energy_rapl_on_the_cpu_is_used(tmp_path: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--energy", "rapl", "--no-save-images")
    assert rec["energy_source"] == "rapl"


def test_idle_baseline_on_the_simulated_gpu(tmp_path: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--device", "simulated", "--energy", "timeline", "--idle-seconds", "0.05",
                            "--no-save-images")
    assert rec["energy_source"] == "timeline" and rec["energy_status"] == "simulated"
    assert rec["idle_power_w"] is not None and rec["idle_power_w"] > 0
    assert rec["net_energy_per_image_j_median"] is not None


def test_rounds_and_warmup(tmp_path: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--min-rounds", "3", "--max-rounds", "3", "--warmup", "2", "--no-save-images")
    assert rec["rounds"] == 3 and rec["warmup_calls"] == 2
    assert len(rec["time_per_image_s_samples"]) == 3


def test_max_time_caps_the_rounds(tmp_path: Path) -> None:
    _, (rec,), _ = generate(tmp_path, "--min-rounds", "1", "--max-rounds", "50", "--max-time", "0.000001",
                            "--target-ci", "0.000001", "--no-save-images")
    assert rec["rounds"] == 1 and rec["stop_reason"] == "max_time"


def test_quiet_silences_progress(tmp_path: Path) -> None:
    loud = invoke(["generate", "--model-variant", "tiny-sd", "--steps", "1", "--device", "cpu", "--max-rounds", "1",
                   "--min-rounds", "1", "--idle-seconds", "0", "--no-save-images"])
    quiet = invoke(["generate", "--model-variant", "tiny-sd", "--steps", "1", *FAST, "--no-save-images"])
    assert loud.code == quiet.code == 0
    assert "warm-up" in loud.err and quiet.err == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from sdbench import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


# --- bad input --------------------------------------------------------------------------------------


BAD_FLAGS = [
    (["--model-variant", "sd-v9"], "model_variant"),
    (["--scheduler", "eulr"], "scheduler"),
    (["--steps", "0"], "steps"),
    (["--steps", "-3"], "steps"),
    (["--steps", "two"], "steps"),
    (["--height", "100"], "height"),
    (["--width", "32"], "width"),
    (["--height", "64.5"], "height"),
    (["--batch-size", "0"], "batch_size"),
    (["--guidance-scale", "-1"], "guidance_scale"),
    (["--guidance-scale", "nan"], "guidance_scale"),
    (["--guidance-scale", "1000"], "guidance_scale"),
    (["--seed", "-1"], "seed"),
    (["--num-images", "0"], "num_images"),
    (["--device", "tpu"], "device"),
    (["--device", "cuda"], "device"),
    (["--weights", "nowhere"], "weights"),
    (["--weights", "local:/no/such/folder"], "weights"),
    (["--profile", "turbo"], "profile"),
    (["--strength", "0.5"], "strength"),
    (["--warmup", "0"], "warmup"),
    (["--min-rounds", "3", "--max-rounds", "2"], "min_rounds"),
    (["--attention", "flash"], "attention"),
    (["--attention", "efficient"], "attention"),
    (["--model-variant", "sd-turbo", "--steps", "5", "--height", "512", "--width", "512"], "steps"),
]


@pytest.mark.parametrize(("flags", "field"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_input_exits_2_naming_the_field(capsys: pytest.CaptureFixture[str], flags: list[str], field: str) -> None:
    argv = ["generate", "--model-variant", "tiny-sd", *FAST, "--no-save-images", *flags]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse-level rejections exit rather than return
        code = exc.code
    assert_one_line_error(Result(code, "", capsys.readouterr().err), field)


# --- property: any argument vector is a run or a clean exit 2 ---------------------------------------


_JUNK = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=0, max_size=8)


def _mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid four times in five, so that about a fifth of whole argument vectors run end to end."""
    return st.integers(0, 4).flatmap(lambda i: invalid if i == 0 else valid)


@st.composite
def cli_args(draw: st.DrawFn) -> tuple[list[str], bool]:
    """An argument vector, and whether it names a full-size model (never built here)."""
    model = draw(_mostly(st.sampled_from(TINY_MODELS), st.one_of(st.sampled_from(list(MODELS)), _JUNK)))
    full_size = model in MODELS and model not in TINY_MODELS
    # valid runs stay cheap: tiny models, 64-128 px, at most 2 steps and 2 images
    side = _mostly(st.sampled_from([64, 72, 128]), st.integers(-10_000, 10_000))
    if full_size:  # never build a full-size model on the CPU: make the height invalid
        side = st.one_of(st.integers(-10_000, 56), st.integers(4097, 10_000), st.integers(65, 4096).filter(lambda v: v % 8))
    height = draw(side)
    width = draw(_mostly(st.sampled_from([64, 128]), st.integers(-10_000, 10_000).filter(lambda v: v > 128 or v < 64)))
    steps = draw(_mostly(st.integers(1, 2), st.one_of(st.integers(-10**6, 0), st.integers(1001, 10**6), _JUNK)))
    batch = draw(_mostly(st.integers(1, 2), st.one_of(st.integers(-10**6, 0), st.integers(513, 10**6))))
    guidance = draw(_mostly(st.one_of(st.sampled_from([0.0, 1.0, 7.5]), st.floats(0, 100)),
                            st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from(["nan", "inf", "-inf", "x"]))))
    scheduler = draw(_mostly(st.sampled_from(list(SCHEDULERS)), _JUNK))
    argv = ["generate", f"--model-variant={model}", f"--height={height}", f"--width={width}", f"--steps={steps}",
            f"--batch-size={batch}", f"--guidance-scale={guidance}", f"--scheduler={scheduler}",
            "--device=cpu", "--no-save-images", "--max-rounds=1", "--min-rounds=1", "--idle-seconds=0", "--quiet"]
    return argv, full_size


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=cli_args())
def test_any_argument_vector_runs_or_exits_2(case: tuple[list[str], bool]) -> None:
    argv, full_size = case
    res = invoke(argv)  # an exception other than argparse's SystemExit fails the test
    event(f"exit {res.code}")
    assert res.code in (0, 2), (argv, res.code, res.err)
    if res.code == 2:
        assert "Traceback" not in res.err
        assert "invalid" in res.err or "error" in res.err, res.err
    else:
        assert not full_size
        assert "tiny-sd" in res.out  # the summary table names the case that ran


def test_generate_help_lists_every_profile_and_knob() -> None:
    from dataclasses import fields

    from sdbench.spec.profiles import PROFILES, Knobs

    res = invoke(["generate", "--help"])
    text = " ".join(res.out.split())
    assert all(p in text for p in PROFILES) and all(f.name in text for f in fields(Knobs))


# --- --preset: a published workload's settings -------------------------------------------------------------
def test_the_mlperf_preset_sets_mlperfs_workload_and_says_what_it_does_not_copy(on_a_gpu: list[Any]) -> None:
    from sdbench.spec.presets import MLPERF_NEGATIVE_PROMPT

    res = invoke(["--preset", "mlperf-sdxl"])
    (case,) = on_a_gpu
    assert (case.model, case.scheduler, case.steps, case.guidance_scale, case.width, case.height) == (
        "sdxl", "euler", 20, 8.0, 1024, 1024)
    assert case.negative_prompt == MLPERF_NEGATIVE_PROMPT and case.tags == ("preset:mlperf-sdxl",)
    assert "preset mlperf-sdxl: MLPerf Inference" in res.err
    assert "not copied:" in res.err and "compare speed and energy only" in res.err


def test_flags_given_beside_a_preset_win(on_a_gpu: list[Any]) -> None:
    invoke(["--preset", "mlperf-sdxl", "--steps", "30", "--batch-size", "4", "--scheduler", "dpm++"])
    (case,) = on_a_gpu
    assert (case.model, case.steps, case.batch_size, case.scheduler, case.guidance_scale) == ("sdxl", 30, 4, "dpm++", 8.0)


def test_a_bad_preset_or_a_preset_with_a_suite_is_one_exit_2_line(pytest_runs: list[list[str]]) -> None:
    res = invoke(["--preset", "mlperf"])
    assert res.code == 2 and "invalid preset: 'mlperf'" in res.err and "mlperf-sdxl" in res.err
    res = invoke(["--preset", "mlperf-sdxl", "--benchmark"])
    assert res.code == 2 and not pytest_runs
    (line,) = res.err.strip().splitlines()
    assert line.startswith("sdbench: error: invalid preset: 'mlperf-sdxl' (a pytest suite runs its own matrix")
