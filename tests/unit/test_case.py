"""Case validation: every bad input is a ConfigError naming its field; ids and hashes are stable."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.case import DEFAULT_PROMPT, Case, resolve_device
from sdbench.errors import ConfigError
from sdbench.spec.models import MODELS, get_model
from sdbench.spec.schedulers import SCHEDULERS

CPU = {"dtype": "fp32", "device": "cpu"}


def tiny(**kw: Any) -> Case:
    return Case.create("tiny-sd", **{**CPU, **kw})


# --- defaults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_create_fills_the_model_defaults(model: str) -> None:
    spec = get_model(model)
    case = Case.create(model, **CPU)
    assert (case.scheduler, case.steps, case.height, case.width, case.guidance_scale) == (
        spec.default_scheduler, spec.default_steps, spec.default_resolution, spec.default_resolution, spec.default_guidance)
    assert case.strength == spec.default_strength
    assert case.uses_cfg == spec.uses_cfg_by_default
    assert case.prompt == DEFAULT_PROMPT


def test_none_keeps_the_default_and_resolution_sets_both_sides() -> None:
    case = tiny(steps=None, scheduler=None, resolution=128)
    assert case.steps == 4 and case.scheduler == "pndm"
    assert (case.height, case.width) == (128, 128)
    assert tiny(resolution=128, width=64).width == 64


def test_turbo_defaults_run_without_cfg() -> None:
    case = Case.create("sd-turbo", **CPU)
    assert case.steps == 1 and case.guidance_scale == 0 and not case.uses_cfg
    assert case.features()["cfg"] is False


def test_order_two_samplers_count_two_evaluations_per_step() -> None:
    assert tiny(scheduler="heun").unet_evaluations_per_step == 2
    assert tiny(scheduler="euler").unet_evaluations_per_step == 1


# --- bad inputs -------------------------------------------------------------------------------------


BAD = [
    ("model_variant", {"model": "sd-v3"}),
    ("scheduler", {"scheduler": "eulerx"}),
    ("height", {"height": 100}),
    ("height", {"height": 60}),  # multiple of 4, not 8... and below the minimum
    ("height", {"height": 56}),  # a multiple of 8 below 64
    ("height", {"height": 4104}),
    ("height", {"height": 64.0}),
    ("height", {"height": True}),
    ("width", {"width": 65}),
    ("width", {"width": 0}),
    ("width", {"width": -64}),
    ("steps", {"steps": 0}),
    ("steps", {"steps": -3}),
    ("steps", {"steps": 1001}),
    ("steps", {"steps": 2.5}),
    ("batch_size", {"batch_size": 0}),
    ("batch_size", {"batch_size": -1}),
    ("batch_size", {"batch_size": 513}),
    ("guidance_scale", {"guidance_scale": -0.5}),
    ("guidance_scale", {"guidance_scale": 101.0}),
    ("guidance_scale", {"guidance_scale": float("nan")}),
    ("guidance_scale", {"guidance_scale": "7.5"}),
    ("dtype", {"dtype": "fp16"}),  # fp16 on the CPU
    ("dtype", {"dtype": "float32"}),
    ("dtype", {"dtype": "fp16", "device": "simulated"}),
    ("profile", {"profile": "fast"}),
    ("attention", {"attention": "flash2"}),
    ("offload", {"offload": "disk"}),
    ("strength", {"strength": 0.5}),  # text-to-image model
    ("timestep_spacing", {"timestep_spacing": "karras"}),
    ("device", {"device": "gpu"}),
    ("device", {"device": "cuda"}),  # must be resolved to cuda:N first
    ("sm_clock_mhz", {"sm_clock_mhz": 0}),
    ("mem_clock_mhz", {"mem_clock_mhz": -5}),
    ("power_limit_w", {"power_limit_w": 1.5}),
    ("seed", {"seed": -1}),
    ("case field", {"stepz": 3}),
]


@pytest.mark.parametrize(("field", "kwargs"), BAD, ids=[f"{f}-{list(k.values())[0]!r}" for f, k in BAD])
def test_bad_input_names_its_field(field: str, kwargs: dict[str, Any]) -> None:
    kw = {**CPU, **kwargs}
    model = kw.pop("model", "tiny-sd")
    with pytest.raises(ConfigError) as exc:
        Case.create(model, **kw)
    assert exc.value.field == field
    assert str(exc.value).startswith(f"invalid {field}: ")


@pytest.mark.parametrize(("model", "steps"), [("sd-turbo", 5), ("sdxl-turbo", 8), ("sdxl-lightning", 3), ("sdxl-lightning", 1)])
def test_distilled_models_refuse_other_step_counts(model: str, steps: int) -> None:
    with pytest.raises(ConfigError) as exc:
        Case.create(model, steps=steps, **CPU)
    assert exc.value.field == "steps"
    assert "distilled" in str(exc.value)


@pytest.mark.parametrize(("model", "steps"), [("sd-turbo", 4), ("sdxl-turbo", 1), ("sdxl-lightning", 8)])
def test_distilled_models_accept_their_step_counts(model: str, steps: int) -> None:
    assert Case.create(model, steps=steps, **CPU).steps == steps


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5])
def test_refiner_strength_range(strength: float) -> None:
    with pytest.raises(ConfigError) as exc:
        Case.create("sdxl-refiner", strength=strength, **CPU)
    assert exc.value.field == "strength"


def test_refiner_accepts_strength() -> None:
    assert Case.create("sdxl-refiner", strength=1.0, **CPU).strength == 1.0


def test_refiner_strength_of_the_wrong_type() -> None:
    with pytest.raises(ConfigError) as exc:
        Case.create("sdxl-refiner", strength="0.5", **CPU)
    assert exc.value.field == "strength"


@pytest.mark.parametrize("field", ["steps", "batch_size", "seed"])
def test_booleans_are_not_counts(field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        tiny(**{field: True})
    assert exc.value.field == field


@pytest.mark.parametrize("device", ["cuda:x", "cuda:"])
def test_malformed_cuda_device(device: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Case.create("tiny-sd", dtype="fp32", device=device)
    assert exc.value.field == "device"


def test_good_edge_values_are_accepted() -> None:
    assert tiny(height=64, width=4096).width == 4096
    assert tiny(steps=1000, batch_size=512, guidance_scale=100.0, seed=0).steps == 1000
    assert tiny(guidance_scale=0).guidance_scale == 0
    for key in SCHEDULERS:
        assert tiny(scheduler=key).scheduler == key
    assert Case.create("tiny-sd", dtype="fp16", device="cuda:0").device == "cuda:0"


# --- devices ----------------------------------------------------------------------------------------


def test_resolve_device_on_a_machine_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("simulated") == "simulated"
    for bad in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError) as exc:
            resolve_device(bad)
        assert exc.value.field == "device" and "no CUDA GPU" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        resolve_device("tpu")
    assert exc.value.field == "device"


def test_resolve_device_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda:0"
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError) as exc:
        resolve_device("cuda:2")
    assert exc.value.field == "device" and "cuda:1" in str(exc.value)


def test_simulated_device_computes_on_the_cpu() -> None:
    assert Case.create("tiny-sd", dtype="fp32", device="simulated").compute_device == "cpu"


# --- identity ---------------------------------------------------------------------------------------


def test_case_id_and_hash_are_stable() -> None:
    a, b = tiny(scheduler="euler", steps=2), tiny(scheduler="euler", steps=2)
    assert a == b and a.case_id == b.case_id and a.case_hash == b.case_hash
    assert len(a.case_hash) == 12 and int(a.case_hash, 16) >= 0
    assert a.case_id == "tiny-sd-euler-64x64-b1-2st-fp32-eager"
    # tags label a case; they are not what is measured
    assert a.with_(tags=("nightly",)).case_hash == a.case_hash


MEASURED_CHANGES = [
    {"scheduler": "ddim"}, {"steps": 3}, {"height": 128}, {"width": 128}, {"guidance_scale": 5.0},
    {"batch_size": 2}, {"dtype": "bf16"}, {"profile": "channels-last"}, {"attention": "math"},
    {"weights": "synthetic"}, {"seed": 1}, {"prompt": "a cat"}, {"negative_prompt": "blurry"},
    {"device": "simulated"}, {"timestep_spacing": "trailing"}, {"sm_clock_mhz": 1500},
    {"mem_clock_mhz": 2600}, {"power_limit_w": 300}, {"offload": "model"}, {"model": "tiny-sd2"},
]


@pytest.mark.parametrize("change", MEASURED_CHANGES, ids=[next(iter(c)) for c in MEASURED_CHANGES])
def test_changing_a_measured_field_changes_the_hash(change: dict[str, Any]) -> None:
    base = tiny(scheduler="euler", steps=2)
    other = base.with_(**change)
    assert other.case_hash != base.case_hash


def test_case_id_shows_what_differs() -> None:
    base = tiny(scheduler="euler", steps=2)
    ids = {base.case_id}
    for change in ({"scheduler": "ddim"}, {"steps": 3}, {"height": 128}, {"batch_size": 2}, {"dtype": "bf16"},
                   {"attention": "sliced"}, {"offload": "model"}, {"sm_clock_mhz": 1500}, {"power_limit_w": 250}):
        ids.add(base.with_(**change).case_id)
    assert len(ids) == 10


def test_with_revalidates() -> None:
    with pytest.raises(ConfigError) as exc:
        tiny().with_(steps=0)
    assert exc.value.field == "steps"


def test_features_are_flat_and_json_ready() -> None:
    import json

    case = tiny(scheduler="heun", steps=3, height=64, width=128, tags=("a", "b"))
    f = case.features()
    json.dumps(f)
    assert f["resolution"] == "128x64" and f["pixels"] == 128 * 64
    assert f["family"] == "sd1" and f["prediction_type"] == "epsilon"
    assert f["case_id"] == case.case_id and f["case_hash"] == case.case_hash
    assert f["tags"] == ["a", "b"]


# --- property: any input is a valid case or a ConfigError -----------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    model=st.sampled_from([*MODELS, "sd-v3", ""]),
    scheduler=st.one_of(st.none(), st.sampled_from([*SCHEDULERS, "junk"])),
    steps=st.one_of(st.none(), st.integers(-5, 1100)),
    side=st.one_of(st.none(), st.integers(-100, 5000)),
    batch=st.one_of(st.none(), st.integers(-2, 600)),
    guidance=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    dtype=st.sampled_from(["fp32", "bf16", "fp16", "int8"]),
    seed=st.integers(-3, 2**40),
)
def test_any_input_is_a_case_or_a_config_error(model: str, scheduler: str | None, steps: int | None,
                                               side: int | None, batch: int | None, guidance: float | None,
                                               dtype: str, seed: int) -> None:
    try:
        case = Case.create(model, scheduler=scheduler, steps=steps, resolution=side, batch_size=batch,
                           guidance_scale=guidance, dtype=dtype, seed=seed, device="cpu")
    except ConfigError as exc:
        assert exc.field and str(exc).startswith("invalid ")
        return
    assert case.height % 8 == 0 and 64 <= case.height <= 4096
    assert 1 <= case.steps <= 1000 and 1 <= case.batch_size <= 512
    assert 0 <= case.guidance_scale <= 100
    assert case.dtype in ("fp32", "bf16")
