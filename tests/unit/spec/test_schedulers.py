"""The scheduler registry: every sampler runs on every tiny family, swaps keep models and model defaults."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
import torch

from sdbench.errors import ConfigError, SdbenchError
from sdbench.pipelines.build import set_scheduler
from sdbench.spec.models import TINY_MODELS, get_model
from sdbench.spec.schedulers import (
    SCHEDULERS,
    describe_scheduler,
    get_scheduler_spec,
    make_scheduler,
    scheduler_key_of,
)

# KDPM2 (diffusers 0.42) calls NumPy functions on torch tensors; NumPy 2 warns from its own module,
# so pytest.ini's filter scoped to diffusers.* does not catch it.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")

STEPS = 2
TINY_FAMILIES = ("tiny-sd", "tiny-sd2", "tiny-sdxl")
assert set(TINY_FAMILIES) == set(TINY_MODELS)


def _generate(pipe: Any, steps: int = STEPS, seed: int = 0) -> torch.Tensor:
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.inference_mode():
        return pipe(prompt="a red cube", num_inference_steps=steps, height=64, width=64,
                    output_type="pt", generator=g).images


def _unet_call_counter(pipe: Any) -> tuple[list[int], Any]:
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    return calls, pipe.unet.register_forward_pre_hook(hook)


@pytest.mark.parametrize("model", TINY_FAMILIES)
@pytest.mark.parametrize("key", list(SCHEDULERS))
def test_every_scheduler_runs_on_every_tiny_family(tiny_pipeline: Callable[..., Any], model: str, key: str) -> None:
    pipe = tiny_pipeline(model).pipe
    unet_before = pipe.unet
    set_scheduler(pipe, key)
    calls, handle = _unet_call_counter(pipe)
    try:
        images = _generate(pipe)
    finally:
        handle.remove()
    spec = SCHEDULERS[key]
    described = describe_scheduler(pipe.scheduler)
    assert described["scheduler"] == key
    assert described["scheduler_class"] == spec.class_name
    assert type(pipe.scheduler).__name__ == spec.class_name
    for setting, value in spec.settings.items():
        assert pipe.scheduler.config[setting] == value, setting
    # the model's own prediction type survives the swap
    assert described["prediction_type"] == get_model(model).prediction_type
    assert pipe.unet is unet_before, "a scheduler swap must not rebuild the models"
    assert images.shape == (1, 3, 64, 64)
    assert torch.isfinite(images).all()
    # The runner records len(scheduler.timesteps) as the UNet evaluations per call: it must be exact.
    assert calls[0] == len(pipe.scheduler.timesteps)
    if spec.order == 2:
        assert calls[0] == 2 * STEPS - 1
    elif key != "pndm":  # PLMS without PRK steps adds one warm-up evaluation
        assert calls[0] == STEPS


@pytest.mark.parametrize("model", TINY_FAMILIES)
def test_swapping_keeps_every_model_object(tiny_pipeline: Callable[..., Any], model: str) -> None:
    pipe = tiny_pipeline(model).pipe
    before = {name: id(getattr(pipe, name)) for name in ("unet", "vae", "text_encoder", "tokenizer")}
    for key in ("euler", "ddim", "unipc", "heun"):
        set_scheduler(pipe, key)
    assert {name: id(getattr(pipe, name)) for name in before} == before


def test_v_prediction_of_tiny_sd2_survives_swaps(tiny_pipeline: Callable[..., Any]) -> None:
    pipe = tiny_pipeline("tiny-sd2").pipe
    for key in SCHEDULERS:
        set_scheduler(pipe, key)
        assert pipe.scheduler.config["prediction_type"] == "v_prediction", key


class _StandInPipeline:
    """Swaps only read and replace `pipe.scheduler`, so no weights are needed."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler


@pytest.mark.parametrize(("model", "prediction", "spacing"), [
    ("sd-v2.1", "v_prediction", None),
    ("sd-v2.0", "v_prediction", None),
    ("sd-turbo", "epsilon", "trailing"),
    ("sdxl-turbo", "epsilon", "trailing"),
    ("sdxl-lightning", "epsilon", "trailing"),
])
def test_full_model_defaults_survive_every_swap(model: str, prediction: str, spacing: str | None) -> None:
    # A stand-in pipeline: swaps only read and replace `pipe.scheduler`, so no weights are needed.
    spec = get_model(model)
    pipe = _StandInPipeline(scheduler=make_scheduler(spec.default_scheduler, spec.scheduler_config))
    for key in SCHEDULERS:
        set_scheduler(pipe, key)
        d = describe_scheduler(pipe.scheduler)
        assert d["scheduler"] == key
        assert d["prediction_type"] == prediction, key
        if spacing is not None:
            assert d["timestep_spacing"] == spacing, key


def test_trailing_spacing_changes_the_timesteps_that_run() -> None:
    turbo = make_scheduler("euler", get_model("sd-turbo").scheduler_config)
    leading = make_scheduler("euler", get_model("sd-v2.1-base").scheduler_config)
    turbo.set_timesteps(1)
    leading.set_timesteps(1)
    assert int(turbo.timesteps[0]) == 999  # trailing: the single step starts from pure noise
    assert int(leading.timesteps[0]) != 999


@pytest.mark.parametrize("spacing", ["leading", "linspace"])
def test_user_override_of_timestep_spacing_wins(spacing: str) -> None:
    spec = get_model("sdxl-lightning")
    pipe = _StandInPipeline(scheduler=make_scheduler(spec.default_scheduler, spec.scheduler_config))
    set_scheduler(pipe, "euler", {"timestep_spacing": spacing})
    assert describe_scheduler(pipe.scheduler)["timestep_spacing"] == spacing
    assert pipe.scheduler.config["prediction_type"] == "epsilon"


def test_user_override_on_a_real_pipeline(tiny_pipeline: Callable[..., Any]) -> None:
    spec = get_model("tiny-sdxl")
    pipe = tiny_pipeline("tiny-sdxl").pipe
    try:
        set_scheduler(pipe, "euler", {"timestep_spacing": "trailing"})
        pipe.scheduler.set_timesteps(2)
        assert describe_scheduler(pipe.scheduler)["timestep_spacing"] == "trailing"
        assert int(pipe.scheduler.timesteps[0]) == 999
    finally:
        pipe.scheduler = make_scheduler(spec.default_scheduler, spec.scheduler_config)


def test_an_override_does_not_leak_into_the_next_swap(tiny_pipeline: Callable[..., Any]) -> None:
    # Bench keeps pipelines warm and Runner.run swaps per case with overrides only when the case
    # sets timestep_spacing: a case without an override must get the model's own spacing back.
    spec = get_model("tiny-sdxl")
    pipe = tiny_pipeline("tiny-sdxl").pipe
    try:
        set_scheduler(pipe, "euler", {"timestep_spacing": "trailing"})
        set_scheduler(pipe, "euler")
        assert pipe.scheduler.config["timestep_spacing"] == spec.scheduler_config["timestep_spacing"]
    finally:
        pipe.scheduler = make_scheduler(spec.default_scheduler, spec.scheduler_config)


def test_dpm_sde_without_torchsde_gives_a_clear_error(tiny_pipeline: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "torchsde" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    pipe = tiny_pipeline("tiny-sd").pipe
    set_scheduler(pipe, "euler")
    before = pipe.scheduler
    with pytest.raises(SdbenchError) as exc:
        set_scheduler(pipe, "dpm-sde")
    msg = str(exc.value)
    assert "torchsde" in msg and "dpm-sde" in msg and "pip install torchsde" in msg
    assert pipe.scheduler is before, "a failed swap must leave the running scheduler in place"


def test_unknown_scheduler_is_a_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError) as exc:
        get_scheduler_spec("euler-x")
    assert exc.value.field == "scheduler"
    for key in SCHEDULERS:
        assert key in str(exc.value)
    with pytest.raises(ConfigError):
        make_scheduler("nope", get_model("tiny-sd").scheduler_config)


def test_scheduler_keys_are_told_apart_by_their_settings() -> None:
    config = get_model("sd-v1.5").scheduler_config
    for key in SCHEDULERS:
        assert scheduler_key_of(make_scheduler(key, config)) == key


def test_a_scheduler_outside_the_registry_is_reported_as_custom() -> None:
    from diffusers import LCMScheduler

    assert scheduler_key_of(LCMScheduler()) == "custom:LCMScheduler"
