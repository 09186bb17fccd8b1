"""Weights: deterministic synthetic fills, local folders that round-trip, and an offline HF cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sdbench.errors import ConfigError, WeightsNotFoundError
from sdbench.pipelines.build import build_pipeline, build_synthetic_components, set_scheduler
from sdbench.spec.models import get_model
from sdbench.spec.weights import (
    WeightSource,
    fill_synthetic_,
    hub_weights_present,
    resolve_auto,
    resolve_hub_snapshot,
)

MODULES = ("unet", "vae", "text_encoder", "text_encoder_2")


def _state(components: dict[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for name in MODULES:
        module = components.get(name)
        if module is not None:
            out.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    return out


def _pipe_components(pipe: Any) -> dict[str, Any]:
    return {name: getattr(pipe, name, None) for name in MODULES}


def assert_same_image(a: torch.Tensor, b: torch.Tensor) -> None:
    """Same image up to float rounding: identical weights may still round differently, because the
    CPU matmul kernels take another path for a weight tensor that safetensors maps at an address
    that is not 64-byte aligned (seen on tiny-sdxl's text projection: 1.2e-7 apart)."""
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    as_uint8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.int16)  # noqa: E731
    assert (as_uint8(a) - as_uint8(b)).abs().max() <= 1


def _generate(pipe: Any, seed: int = 0) -> torch.Tensor:
    set_scheduler(pipe, "euler")
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.inference_mode():
        return pipe(prompt="a lighthouse at dusk", num_inference_steps=2, height=64, width=64,
                    output_type="pt", generator=g).images


@pytest.fixture(scope="module")
def tiny_sdxl_fp32_seed0() -> dict[str, torch.Tensor]:
    return _state(build_synthetic_components(get_model("tiny-sdxl"), torch.float32, "cpu", seed=0))


# --- synthetic --------------------------------------------------------------------------------------


def test_same_seed_gives_identical_weights(tiny_sdxl_fp32_seed0: dict[str, torch.Tensor]) -> None:
    again = _state(build_synthetic_components(get_model("tiny-sdxl"), torch.float32, "cpu", seed=0))
    assert again.keys() == tiny_sdxl_fp32_seed0.keys()
    for k, v in tiny_sdxl_fp32_seed0.items():
        assert torch.equal(v, again[k]), k


def test_different_seed_gives_different_weights(tiny_sdxl_fp32_seed0: dict[str, torch.Tensor]) -> None:
    other = _state(build_synthetic_components(get_model("tiny-sdxl"), torch.float32, "cpu", seed=1))
    differing = [k for k, v in tiny_sdxl_fp32_seed0.items()
                 if v.is_floating_point() and v.numel() > 1 and v.std() > 0 and not torch.equal(v, other[k])]
    random_params = [k for k, v in tiny_sdxl_fp32_seed0.items() if v.is_floating_point() and v.numel() > 1 and v.std() > 0]
    assert random_params and differing == random_params


def test_synthetic_weights_are_finite_and_scaled(tiny_sdxl_fp32_seed0: dict[str, torch.Tensor]) -> None:
    for k, v in tiny_sdxl_fp32_seed0.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k
    # norms start at identity; position ids are a ramp (they hold garbage after to_empty otherwise)
    assert torch.equal(tiny_sdxl_fp32_seed0["unet.conv_norm_out.weight"], torch.ones(32))
    assert torch.equal(tiny_sdxl_fp32_seed0["unet.conv_norm_out.bias"], torch.zeros(32))
    pos = [k for k in tiny_sdxl_fp32_seed0 if k.endswith("position_ids")]
    for k in pos:
        assert torch.equal(tiny_sdxl_fp32_seed0[k].flatten(), torch.arange(77)), k


def test_components_differ_from_one_another(tiny_sdxl_fp32_seed0: dict[str, torch.Tensor]) -> None:
    # the two tiny text encoders share an architecture: their weights must still be independent
    a = tiny_sdxl_fp32_seed0["text_encoder.embeddings.token_embedding.weight"]
    b = tiny_sdxl_fp32_seed0["text_encoder_2.text_model.embeddings.token_embedding.weight"]
    assert a.shape == b.shape and not torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_shares_weights_with_fp32_up_to_rounding(
        tiny_sdxl_fp32_seed0: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    low = _state(build_synthetic_components(get_model("tiny-sdxl"), dtype, "cpu", seed=0))
    for k, v32 in tiny_sdxl_fp32_seed0.items():
        v = low[k]
        if v32.is_floating_point():
            assert v.dtype == dtype, k
            assert torch.equal(v, v32.to(dtype)), k  # exactly the fp32 values, rounded once
        else:
            assert torch.equal(v, v32), k


def test_fill_is_independent_of_module_order() -> None:
    a = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    b = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    # initialise b's parameters in a different state: the fill must overwrite everything
    with torch.no_grad():
        for p in b.parameters():
            p.fill_(3.0)
    fill_synthetic_(a, seed=5)
    fill_synthetic_(b, seed=5)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_unknown_buffer_is_an_error_not_silent_garbage() -> None:
    with pytest.raises(RuntimeError, match="running_mean"):
        fill_synthetic_(nn.BatchNorm1d(4))


def test_synthetic_pipeline_generates_finite_images(tiny_pipeline: Callable[..., Any]) -> None:
    for model in ("tiny-sd", "tiny-sd2", "tiny-sdxl"):
        images = _generate(tiny_pipeline(model).pipe)
        assert torch.isfinite(images).all(), model
        assert images.std() > 0, model


# --- WeightSource -----------------------------------------------------------------------------------


def test_weight_source_parse(tmp_path: Path) -> None:
    assert WeightSource.parse("synthetic") == WeightSource("synthetic")
    assert WeightSource.parse("hub") == WeightSource("hub")
    assert WeightSource.parse("auto") == WeightSource("auto")
    src = WeightSource.parse(f"local:{tmp_path}")
    assert src.kind == "local" and src.path == tmp_path and str(src) == f"local:{tmp_path}"
    assert WeightSource.parse(str(tmp_path)) == src  # a bare folder path means local


@pytest.mark.parametrize("value", ["local:{missing}", "{missing}", "./no-such-folder-xyz"])
def test_weight_source_missing_folder(tmp_path: Path, value: str) -> None:
    text = value.format(missing=tmp_path / "absent")
    with pytest.raises(ConfigError) as exc:
        WeightSource.parse(text)
    assert exc.value.field == "weights"
    assert "folder not found" in str(exc.value)


def test_weight_source_unknown_word() -> None:
    with pytest.raises(ConfigError) as exc:
        WeightSource.parse("real")
    assert exc.value.field == "weights" and "local:PATH" in str(exc.value)


def test_a_file_is_not_a_weights_folder(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(ConfigError):
        WeightSource.parse(f"local:{f}")


# --- local round trip -------------------------------------------------------------------------------


def test_save_and_load_local_is_bit_identical(tiny_pipeline: Callable[..., Any], saved_tiny_sd: Path) -> None:
    original = tiny_pipeline("tiny-sd")
    loaded = build_pipeline("tiny-sd", weights=f"local:{saved_tiny_sd}", dtype="fp32", device="cpu")
    assert loaded.weights == f"local:{saved_tiny_sd}"
    a, b = _state(_pipe_components(original.pipe)), _state(_pipe_components(loaded.pipe))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    # the tokenizer travels too
    assert loaded.pipe.tokenizer("a cat").input_ids == original.pipe.tokenizer("a cat").input_ids
    assert_same_image(_generate(original.pipe, seed=3), _generate(loaded.pipe, seed=3))


def test_local_folder_given_as_bare_path(saved_tiny_sd: Path) -> None:
    built = build_pipeline("tiny-sd", weights=str(saved_tiny_sd), dtype="fp32", device="cpu")
    assert built.weights.startswith("local:")


def test_tiny_sdxl_round_trip(tiny_pipeline: Callable[..., Any], tmp_path: Path) -> None:
    original = tiny_pipeline("tiny-sdxl")
    original.pipe.save_pretrained(tmp_path / "sdxl")
    loaded = build_pipeline("tiny-sdxl", weights=f"local:{tmp_path / 'sdxl'}", dtype="fp32", device="cpu")
    a, b = _state(_pipe_components(original.pipe)), _state(_pipe_components(loaded.pipe))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert_same_image(_generate(original.pipe), _generate(loaded.pipe))
    assert not torch.equal(_generate(original.pipe, seed=0), _generate(original.pipe, seed=1))


# --- the Hugging Face cache, offline ----------------------------------------------------------------


def test_resolve_hub_snapshot_offline_from_the_cache(
        hf_cache: Path, saved_tiny_sd: Path, lay_out_hub_entry: Callable[[Path, str, Path], Path]) -> None:
    snapshot = lay_out_hub_entry(hf_cache, "org/name", saved_tiny_sd)
    resolved = resolve_hub_snapshot("org/name")
    assert resolved.resolve() == snapshot.resolve()
    assert (resolved / "model_index.json").is_file()


def test_missing_repo_says_how_to_provide_weights(hf_cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as exc:
        resolve_hub_snapshot("org/absent")
    msg = str(exc.value)
    assert "org/absent" in msg
    assert str(hf_cache) in msg
    assert "HF_HUB_OFFLINE" in msg
    assert "huggingface-cli download org/absent" in msg
    assert "--weights local:PATH" in msg and "--weights synthetic" in msg


def test_hub_weights_load_offline_through_build_pipeline(
        hf_cache: Path, saved_tiny_sd: Path, tiny_pipeline: Callable[..., Any],
        lay_out_hub_entry: Callable[[Path, str, Path], Path]) -> None:
    # A tiny pipeline stands in for the real SD 1.5 files under SD 1.5's repository id.
    spec = get_model("sd-v1.5")
    assert spec.repo_id is not None
    assert not hub_weights_present(spec)
    assert resolve_auto(spec, WeightSource("auto")) == WeightSource("synthetic")
    lay_out_hub_entry(hf_cache, spec.repo_id, saved_tiny_sd)
    assert hub_weights_present(spec)
    assert resolve_auto(spec, WeightSource("auto")) == WeightSource("hub")
    built = build_pipeline("sd-v1.5", weights="hub", dtype="fp32", device="cpu")
    assert built.weights == f"hub:{spec.repo_id}"
    a = _state(_pipe_components(tiny_pipeline("tiny-sd").pipe))
    b = _state(_pipe_components(built.pipe))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the model's own scheduler is put in place over whatever the folder shipped
    assert type(built.pipe.scheduler).__name__ == "PNDMScheduler"


def test_auto_is_synthetic_for_tiny_models_and_when_forced(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_auto(get_model("tiny-sd"), WeightSource("auto")) == WeightSource("synthetic")
    monkeypatch.setenv("SDBENCH_FORCE_SYNTHETIC", "1")
    assert resolve_auto(get_model("sdxl"), WeightSource("auto")) == WeightSource("synthetic")
    # an explicit choice is never changed
    assert resolve_auto(get_model("sdxl"), WeightSource("hub")) == WeightSource("hub")


def test_hub_weights_for_a_model_without_a_repository() -> None:
    with pytest.raises(ConfigError) as exc:
        build_pipeline("tiny-sd", weights="hub", dtype="fp32", device="cpu")
    assert exc.value.field == "weights"


def test_hub_weights_missing_offline_fail_cleanly(hf_cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError):
        build_pipeline("sd-v1.5", weights="hub", dtype="fp32", device="cpu")
