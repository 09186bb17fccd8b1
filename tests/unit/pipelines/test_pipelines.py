"""Offline pipeline building: real diffusers pipelines from the registry, and the warm-pipeline cache."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
import torch

from sdbench.errors import ConfigError
from sdbench.pipelines.build import (
    DTYPES,
    BuiltPipeline,
    PipelineCache,
    PipelineKey,
    build_pipeline,
    set_scheduler,
    torch_dtype,
)
from sdbench.spec.models import _TINY_TEXT_PROJ, _TINY_UNET_SDXL, _TINY_VAE, get_model
from sdbench.spec.schedulers import describe_scheduler


def _call(pipe: Any, **kwargs: Any) -> torch.Tensor:
    g = torch.Generator("cpu").manual_seed(0)
    args = dict(prompt="a bowl of fruit", num_inference_steps=2, output_type="pt", generator=g)
    args.update(kwargs)
    with torch.inference_mode():
        return pipe(**args).images


@pytest.mark.parametrize(("model", "cls", "n_encoders"), [
    ("tiny-sd", "StableDiffusionPipeline", 1),
    ("tiny-sd2", "StableDiffusionPipeline", 1),
    ("tiny-sdxl", "StableDiffusionXLPipeline", 2),
])
def test_tiny_pipelines_are_real_diffusers_pipelines(tiny_pipeline: Callable[..., Any], model: str, cls: str, n_encoders: int) -> None:
    built = tiny_pipeline(model)
    pipe = built.pipe
    assert isinstance(built, BuiltPipeline)
    assert (built.model, built.weights, built.dtype, built.device) == (model, "synthetic", "fp32", "cpu")
    assert built.build_s >= 0
    assert type(pipe).__name__ == cls
    spec = get_model(model)
    # a fresh build starts on the model's own scheduler, with the model's noise settings
    fresh = build_pipeline(model, weights="synthetic", dtype="fp32", device="cpu").pipe
    d = describe_scheduler(fresh.scheduler)
    assert d["scheduler"] == spec.default_scheduler and d["prediction_type"] == spec.prediction_type
    assert d["timestep_spacing"] == spec.scheduler_config.get("timestep_spacing", "leading")
    assert pipe.tokenizer.vocab_size == 49408
    assert pipe.tokenizer.pad_token == spec.text_encoders[0].pad_token
    if n_encoders == 2:
        assert pipe.tokenizer_2.pad_token == spec.text_encoders[1].pad_token
        assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, name)
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in module.parameters())
    if cls == "StableDiffusionPipeline":
        assert pipe.safety_checker is None


def test_tiny_sdxl_honours_size_and_batch(tiny_pipeline: Callable[..., Any]) -> None:
    pipe = tiny_pipeline("tiny-sdxl").pipe
    set_scheduler(pipe, "euler")
    images = _call(pipe, prompt=["a", "b"], height=64, width=128)
    assert images.shape == (2, 3, 64, 128)
    assert torch.isfinite(images).all()
    assert not torch.equal(images[0], images[1])


def test_cfg_and_negative_prompt_change_the_output(tiny_pipeline: Callable[..., Any]) -> None:
    pipe = tiny_pipeline("tiny-sd").pipe
    set_scheduler(pipe, "euler")
    base = _call(pipe, height=64, width=64, guidance_scale=7.5)
    assert torch.equal(base, _call(pipe, height=64, width=64, guidance_scale=7.5))
    assert not torch.equal(base, _call(pipe, height=64, width=64, guidance_scale=0.0))
    assert not torch.equal(base, _call(pipe, height=64, width=64, guidance_scale=7.5, negative_prompt="blurry"))


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_builds_cast_every_module(dtype: str) -> None:
    built = build_pipeline("tiny-sd", weights="synthetic", dtype=dtype, device="cpu")
    assert built.dtype == dtype
    for name in ("unet", "vae", "text_encoder"):
        assert {p.dtype for p in getattr(built.pipe, name).parameters()} == {DTYPES[dtype]}


def test_bf16_tiny_pipeline_runs_on_cpu() -> None:
    pipe = build_pipeline("tiny-sd2", weights="synthetic", dtype="bf16", device="cpu").pipe
    images = _call(pipe, height=64, width=64)
    assert torch.isfinite(images.float()).all()


def test_unknown_dtype_and_model() -> None:
    with pytest.raises(ConfigError) as exc:
        torch_dtype("fp8")
    assert exc.value.field == "dtype" and "bf16" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        build_pipeline("tiny-sd", weights="synthetic", dtype="float32")
    assert exc.value.field == "dtype"
    with pytest.raises(ConfigError) as exc:
        build_pipeline("tiny-sd3", weights="synthetic", dtype="fp32")
    assert exc.value.field == "model_variant"


def test_refiner_architecture_assembles_as_img2img() -> None:
    # The refiner's own code path (img2img pipeline, bigG encoder only, aesthetic-score conditioning)
    # at toy widths: 32 (pooled) + 5 x 8 conditioning inputs.
    refiner = get_model("sdxl-refiner")
    tiny_unet = {**_TINY_UNET_SDXL, "cross_attention_dim": 32, "projection_class_embeddings_input_dim": 32 + 5 * 8}
    spec = dataclasses.replace(refiner, key="tiny-refiner", unet=MappingProxyType(tiny_unet),
                               vae=MappingProxyType({**_TINY_VAE, "scaling_factor": 0.13025}),
                               text_encoders=(None, _TINY_TEXT_PROJ), tiny=True)
    built = build_pipeline(spec, weights="synthetic", dtype="fp32", device="cpu")
    pipe = built.pipe
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert pipe.text_encoder is None and pipe.tokenizer is None
    assert pipe.config.requires_aesthetics_score is True
    init = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    images = _call(pipe, image=init, strength=0.5, num_inference_steps=4)
    assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()


# --- PipelineCache ----------------------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str) -> Callable[[], BuiltPipeline]:
        def build() -> BuiltPipeline:
            self.calls.append(name)
            return BuiltPipeline(object(), name, "synthetic", "fp32", "cpu", 0.0)
        return build


def _key(model: str, **kw: str) -> PipelineKey:
    return PipelineKey(model=model, weights=kw.get("weights", "synthetic"), dtype=kw.get("dtype", "fp32"),
                       device="cpu", profile=kw.get("profile", "eager"))


def test_cache_returns_the_warm_pipeline() -> None:
    cache = PipelineCache(max_pipelines=2, prebuild=False)
    b = _Builder()
    first = cache.get(_key("tiny-sd"), b("tiny-sd"))
    again = cache.get(_key("tiny-sd"), b("tiny-sd"))
    assert again is first and b.calls == ["tiny-sd"]
    assert (cache.builds, cache.hits, len(cache)) == (1, 1, 1)


def test_cache_rebuilds_on_anything_in_the_key() -> None:
    cache = PipelineCache(max_pipelines=8, prebuild=False)
    b = _Builder()
    for key in (_key("tiny-sd"), _key("tiny-sd", dtype="bf16"), _key("tiny-sd", weights="hub"),
                _key("tiny-sd", profile="compile"), _key("tiny-sd2")):
        cache.get(key, b(key.model))
    assert cache.builds == 5 and cache.hits == 0


def test_cache_evicts_the_least_recently_used() -> None:
    cache = PipelineCache(max_pipelines=2, prebuild=False)
    b = _Builder()
    cache.get(_key("a"), b("a"))
    cache.get(_key("b"), b("b"))
    cache.get(_key("a"), b("a"))  # a is now the most recent
    cache.get(_key("c"), b("c"))  # evicts b
    assert len(cache) == 2
    cache.get(_key("a"), b("a"))
    assert b.calls == ["a", "b", "c"]
    cache.get(_key("b"), b("b"))
    assert b.calls == ["a", "b", "c", "b"]
    cache.clear()
    assert len(cache) == 0


def test_scheduler_is_not_part_of_the_key() -> None:
    assert "scheduler" not in {f.name for f in dataclasses.fields(PipelineKey)}
