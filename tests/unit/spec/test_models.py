"""The model registry: real architectures (exact published parameter counts) and per-variant defaults."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import torch

from sdbench.errors import ConfigError
from sdbench.spec.models import MODELS, TINY_MODELS, get_model
from sdbench.spec.schedulers import SCHEDULERS

FULL_MODELS = [k for k, s in MODELS.items() if not s.tiny]

# The published checkpoints' parameter counts.
SD15_UNET = 859_520_964
SD21_UNET = 865_910_724
SDXL_UNET = 2_567_463_684
VAE = 83_653_863
CLIP_L_TEXT = 123_060_480
OPENCLIP_H_TEXT_23 = 340_387_840
OPENCLIP_BIGG_TEXT_PROJ = 694_659_840


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _key(config: Any) -> tuple:
    return tuple(sorted((k, _freeze(v)) for k, v in dict(config).items()))


@cache
def _count(kind: str, config_key: tuple, with_projection: bool = False) -> int:
    """Parameters of one component, built on the meta device (no memory, well under a second)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sdbench.pipelines.build import _text_encoder

    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config_key}
    with torch.device("meta"):
        if kind == "unet":
            module = UNet2DConditionModel.from_config(config)
        elif kind == "vae":
            module = AutoencoderKL.from_config(config)
        else:
            module = _text_encoder(config, with_projection)
    return sum(p.numel() for p in module.parameters())


def component_parameters(model: str) -> dict[str, int]:
    spec = get_model(model)
    out = {"unet": _count("unet", _key(spec.unet)), "vae": _count("vae", _key(spec.vae))}
    for slot, te in zip(("text_encoder", "text_encoder_2"), spec.text_encoders):
        if te is not None:
            out[slot] = _count("text", _key(te.config), te.with_projection)
    return out


# --- parameter counts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "component", "expected"),
    [
        ("sd-v1.5", "unet", SD15_UNET),
        ("sd-v1.4", "unet", SD15_UNET),
        ("sd-v2.1", "unet", SD21_UNET),
        ("sd-v2.1-base", "unet", SD21_UNET),
        ("sdxl", "unet", SDXL_UNET),
        ("sd-v1.5", "vae", VAE),
        ("sdxl", "vae", VAE),
        ("sd-v1.5", "text_encoder", CLIP_L_TEXT),
        ("sd-v2.1", "text_encoder", OPENCLIP_H_TEXT_23),
        ("sdxl", "text_encoder", CLIP_L_TEXT),
        ("sdxl", "text_encoder_2", OPENCLIP_BIGG_TEXT_PROJ),
    ],
)
def test_published_parameter_counts(model: str, component: str, expected: int) -> None:
    assert component_parameters(model)[component] == expected


@pytest.mark.parametrize("model", FULL_MODELS)
def test_every_published_count_in_the_registry_matches_its_architecture(model: str) -> None:
    spec = get_model(model)
    assert spec.published_parameters, f"{model} declares no published parameter counts"
    counts = component_parameters(model)
    for component, expected in spec.published_parameters.items():
        assert counts[component] == expected, (model, component)


def test_openclip_h_text_encoder_has_23_layers_as_sd2_uses_it() -> None:
    te = get_model("sd-v2.1").text_encoders[0]
    assert te.config["num_hidden_layers"] == 23
    assert te.config["hidden_size"] == 1024


# --- registry facts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sd-v1.4", "sd-v1.5"])
def test_sd1_defaults(model: str) -> None:
    s = get_model(model)
    assert (s.family, s.default_resolution, s.default_steps, s.prediction_type) == ("sd1", 512, 50, "epsilon")
    assert s.uses_cfg_by_default and s.allowed_steps is None and not s.img2img
    assert s.pipeline_class == "StableDiffusionPipeline"


@pytest.mark.parametrize("model", ["sd-v2.0", "sd-v2.1"])
def test_sd2_768_is_v_prediction(model: str) -> None:
    s = get_model(model)
    assert (s.family, s.default_resolution, s.default_steps, s.prediction_type) == ("sd2", 768, 50, "v_prediction")
    assert s.unet["sample_size"] * s.vae_scale_factor == 768


@pytest.mark.parametrize("model", ["sd-v2.0-base", "sd-v2.1-base"])
def test_sd2_base_is_epsilon_at_512(model: str) -> None:
    s = get_model(model)
    assert (s.family, s.default_resolution, s.default_steps, s.prediction_type) == ("sd2", 512, 50, "epsilon")
    assert s.unet["sample_size"] * s.vae_scale_factor == 512


def test_sdxl_defaults() -> None:
    s = get_model("sdxl")
    assert (s.default_resolution, s.default_steps, s.prediction_type) == (1024, 30, "epsilon")
    assert s.pipeline_class == "StableDiffusionXLPipeline"
    assert len(s.text_encoders) == 2 and s.text_encoders[1].with_projection
    assert s.unet["projection_class_embeddings_input_dim"] == 2816


@pytest.mark.parametrize("model", ["sd-turbo", "sdxl-turbo"])
def test_turbo_defaults(model: str) -> None:
    s = get_model(model)
    assert s.default_resolution == 512
    assert s.default_guidance == 0.0 and not s.uses_cfg_by_default
    assert s.scheduler_config["timestep_spacing"] == "trailing"
    assert s.allowed_steps == (1, 2, 3, 4)
    assert s.default_steps in s.allowed_steps


def test_sdxl_lightning_defaults() -> None:
    s = get_model("sdxl-lightning")
    assert s.default_scheduler == "euler"
    assert SCHEDULERS[s.default_scheduler].class_name == "EulerDiscreteScheduler"
    assert s.scheduler_config["timestep_spacing"] == "trailing"
    assert s.default_guidance == 0.0
    assert s.allowed_steps == (2, 4, 8)
    assert s.default_steps in s.allowed_steps
    assert s.unet_file_template is not None and "{steps}" in s.unet_file_template
    assert s.base_repo_id == get_model("sdxl").repo_id


def test_refiner_is_img2img() -> None:
    s = get_model("sdxl-refiner")
    assert s.img2img and s.default_strength is not None and 0 < s.default_strength <= 1
    assert s.pipeline_class == "StableDiffusionXLImg2ImgPipeline"
    assert s.text_encoders[0] is None and s.text_encoders[1] is not None


def test_unknown_variant_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as exc:
        get_model("sd-v9")
    err = exc.value
    assert err.field == "model_variant"
    for key in MODELS:
        assert key in str(err)


@pytest.mark.parametrize("model", list(MODELS))
def test_every_variant_is_consistent(model: str) -> None:
    s = get_model(model)
    assert s.key == model
    assert s.default_scheduler in SCHEDULERS
    assert s.default_resolution % 8 == 0
    assert s.vae_scale_factor == 8
    for te in s.text_encoders:
        if te is not None:
            # the stale eos id 2 switches transformers to a legacy pooling path
            assert te.config["eos_token_id"] == 49407
            assert te.config["vocab_size"] == 49408
    expected_pad = {"sd1": ("<|endoftext|>",), "sd2": ("!",), "sdxl": ("<|endoftext|>", "!"), "sdxl-refiner": (None, "!")}
    assert tuple(te.pad_token if te else None for te in s.text_encoders) == expected_pad[s.family]
    summary = s.summary()
    assert summary["model"] == model and summary["prediction_type"] == s.prediction_type
    if not s.tiny:
        assert s.repo_id and "/" in s.repo_id
        assert s.tiny_variant in TINY_MODELS
        assert get_model(s.tiny_variant).family in (s.family, "sdxl")


def test_tiny_variants_cover_each_family() -> None:
    assert set(TINY_MODELS) == {"tiny-sd", "tiny-sd2", "tiny-sdxl"}
    assert get_model("tiny-sd2").prediction_type == "v_prediction"
    for key in TINY_MODELS:
        s = get_model(key)
        assert s.tiny and s.repo_id is None and s.default_resolution == 64
