"""Third-party noise is silenced where it arises, and only there; what matters to a record becomes a field.

Each test captures everything diffusers and transformers log (their levels lowered for the test) and every
warning, around a real tiny-sd / tiny-sdxl build and call, and checks that the messages are gone inside
sdbench's scopes while a control outside them shows that the same path does produce them.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sdbench.pipelines.build import build_pipeline
from sdbench.pipelines.optimize import TF32_NOTICE, apply
from sdbench.runner import RunnerConfig
from sdbench.session import Bench
from sdbench.spec.prompts import LONG_PROMPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FP32_MODULES = "should be kept in float32"
UPCAST_VAE = "`upcast_vae` is deprecated"
CLIP_TRUNCATION = "was truncated because CLIP can only handle"
TOKEN_LENGTH = "Token indices sequence length is longer"
TORCH_DTYPE = "`torch_dtype` is deprecated"
NUMPY_COPY = "__array__ implementation doesn't accept a copy keyword"
NUMPY_WRAP = "__array_wrap__ must accept context"
NOISE = (FP32_MODULES, UPCAST_VAE, CLIP_TRUNCATION, TOKEN_LENGTH, TORCH_DTYPE, "TensorFloat32", NUMPY_COPY,
         NUMPY_WRAP)


class _Keep(logging.Handler):
    def __init__(self, out: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record.getMessage())


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """Every message diffusers and transformers log, and every warning, inside the block."""
    messages: list[str] = []
    handler = _Keep(messages)
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)  # the test session sets transformers to errors only
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught)
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


def noise_in(messages: list[str]) -> set[str]:
    return {needle for needle in NOISE if any(needle in m for m in messages)}


def _sdxl_call(pipe: Any) -> None:
    with torch.inference_mode():
        pipe(prompt=LONG_PROMPT, num_inference_steps=1, height=64, width=64, output_type="pt",
             generator=torch.Generator("cpu").manual_seed(0))


@pytest.fixture(scope="module")
def sdxl_fp16_upcasting() -> tuple[Any, Any]:
    """tiny-sdxl in fp16 whose VAE must decode in fp32, as the real SDXL's does (force_upcast)."""
    built = build_pipeline("tiny-sdxl", weights="synthetic", dtype="fp16", device="cpu")
    applied = apply(built.pipe, profile="eager", attention="sdpa", offload="none", device="cpu", knobs="vae_upcast=on")
    assert built.pipe.vae.config.force_upcast is True
    return built.pipe, applied


def test_an_sdxl_call_prints_no_upcast_float32_or_truncation_noise(sdxl_fp16_upcasting: tuple[Any, Any]) -> None:
    pipe, applied = sdxl_fp16_upcasting
    with captured() as quiet:
        with applied.call_context():
            _sdxl_call(pipe)
    assert noise_in(quiet) == set(), quiet
    # Control: the same call outside sdbench's call context prints all of them, so the call above did
    # run those paths: SDXL casts its VAE to fp32 and back in every call (the float32 message twice)
    # and truncates the prompt once per text encoder.
    with captured() as loud:
        _sdxl_call(pipe)
    assert {FP32_MODULES, UPCAST_VAE, CLIP_TRUNCATION} <= noise_in(loud)
    assert sum(FP32_MODULES in m for m in loud) == 2 and sum(CLIP_TRUNCATION in m for m in loud) == 2
    assert pipe.vae.dtype == torch.float16  # cast back after decoding: every call upcasts again


@pytest.mark.parametrize(("key", "notice"), [
    ("euler-ancestral", NUMPY_COPY),  # np.array(tensor) in the sigma tables
    ("kdpm2", NUMPY_WRAP),  # np.log(np.maximum(tensor, ...)): 6,006 per case in a GPU quality suite
    ("kdpm2-ancestral", NUMPY_WRAP),
])
def test_the_schedulers_numpy_notices_are_silenced_where_they_are_built_and_in_calls(
        sdxl_fp16_upcasting: tuple[Any, Any], key: str, notice: str) -> None:
    """NumPy 2 warns each time a diffusers scheduler hands its sigma table to NumPy as a tensor (thousands of
    times in a suite on a GPU host): not in sdbench's scheduler builds and pipeline calls; still elsewhere."""
    from sdbench.spec.models import MODELS
    from sdbench.spec.schedulers import make_scheduler

    _, applied = sdxl_fp16_upcasting
    with captured() as inside:
        scheduler = make_scheduler(key, MODELS["sd-v1.5"].scheduler_config)
        with applied.call_context():
            scheduler.set_timesteps(10)
    with captured() as outside:
        scheduler.set_timesteps(10)
    assert noise_in(inside) == set(), inside
    assert notice in noise_in(outside)  # control: the same path does warn outside sdbench's scopes


def test_the_inductor_tf32_notice_is_silenced_in_calls_only(sdxl_fp16_upcasting: tuple[Any, Any]) -> None:
    _, applied = sdxl_fp16_upcasting
    notice = TF32_NOTICE + ". Consider setting `torch.set_float32_matmul_precision('high')` for better performance."
    with captured() as inside:
        with applied.call_context():
            warnings.warn(notice, UserWarning, stacklevel=1)  # where inductor warns: at the first compile, in a call
    with captured() as outside:
        warnings.warn(notice, UserWarning, stacklevel=1)
    assert inside == [] and outside == [notice]
    assert torch.get_float32_matmul_precision() == "highest"  # fp32 cases stay fp32 (no TF32 behind the record)


def test_a_build_drops_only_the_float32_modules_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import sdbench.pipelines.build as pipelines

    assemble = pipelines.assemble_pipeline

    def assemble_then_cast(spec: Any, components: dict[str, Any]) -> Any:
        pipe = assemble(spec, components)
        pipe.vae.to(torch.float32)  # a ModelMixin cast, as loading weights with a dtype does
        return pipe

    monkeypatch.setattr(pipelines, "assemble_pipeline", assemble_then_cast)
    with captured() as during_build:
        built = build_pipeline("tiny-sd", weights="synthetic", dtype="fp32", device="cpu")
    assert FP32_MODULES not in " ".join(during_build)
    with captured() as after_build:
        built.pipe.unet.to(torch.float32)
    assert FP32_MODULES in " ".join(after_build)  # outside a build the message is diffusers' as before


def test_loading_saved_weights_warns_about_no_deprecated_argument(saved_tiny_sd: Path) -> None:
    with captured() as messages:
        built = build_pipeline("tiny-sd", weights=f"local:{saved_tiny_sd}", dtype="bf16", device="cpu")
    assert built.pipe.unet.dtype == torch.bfloat16  # `dtype=` did what `torch_dtype=` did
    assert noise_in(messages) == set(), messages


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    config = RunnerConfig.for_cpu(warmup_min_s=0.0, min_rounds=1, max_rounds=1, idle_s=0.0, count_flops=False)
    b = Bench(device="cpu", runner_config=config, gpu=None)
    yield b
    b.close()


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_a_long_prompt_is_recorded_as_truncated_and_not_printed(bench: Bench, model: str) -> None:
    case = bench.case(model, steps=1, prompt=LONG_PROMPT)
    with captured() as messages:
        rec = bench.measure(case)
    assert noise_in(messages) == set(), messages
    built, _ = bench.pipeline(case)
    tokens = len(built.pipe.tokenizer(LONG_PROMPT, truncation=False).input_ids)
    assert tokens > 77
    assert rec["prompt_tokens"] == tokens and rec["prompt_truncated"] is True and rec["prompt_max_tokens"] == 77
    assert rec["prompt_tokens_dropped"] == tokens - 77
    short = bench.measure(bench.case(model, steps=1))
    assert short["prompt_truncated"] is False and short["prompt_tokens"] < 77
