"""Output fidelity and CLIP score (`sdbench.studies.quality`): metric properties, fidelity of tiny pipelines on the
CPU against their fp32 reference, a deliberately broken candidate, the img2img path, a tiny CLIP model
and `sdbench quality`.

Pipelines are built once per module (tiny-sd at 64 px, 2 steps); the whole file runs in well under a
minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.case import Case
from sdbench.errors import ConfigError
from sdbench.record.io import to_json
from sdbench.runner import RunnerConfig
from sdbench.session import Bench
from sdbench.studies.quality import (
    CLIP_STATUS_NOT_MEASURED,
    CLIP_STATUS_SYNTHETIC,
    LATENT_REL_ERROR_BUDGET,
    QUALITY_NOTE_SYNTHETIC,
    Outputs,
    clip_score,
    compare_outputs,
    fidelity,
    generate_outputs,
    latent_rel_error,
    max_abs_error,
    pipeline_outputs,
    psnr_db,
    quality_record,
    reference_case,
    ssim,
)

STEPS = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- metrics ---------------------------------------------------------------------------------------------
@st.composite
def image_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Two same-shaped batches in [0, 1]: random, constant, binary or one the negative of the other."""
    b, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(11, 24)), draw(st.integers(11, 24))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def one(kind: str) -> torch.Tensor:
        if kind == "constant":
            return torch.full((b, c, h, w), draw(st.floats(0, 1)))
        if kind == "binary":
            return (torch.rand(b, c, h, w, generator=g) > 0.5).float()
        return torch.rand(b, c, h, w, generator=g)

    kinds = st.sampled_from(["random", "constant", "binary"])
    a = one(draw(kinds))
    relation = draw(st.sampled_from(["independent", "negative", "noisy"]))
    if relation == "negative":
        return a, 1.0 - a
    if relation == "noisy":
        return a, (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    return a, one(draw(kinds))


@settings(max_examples=60, deadline=None)
@given(image_pairs())
def test_psnr_and_ssim_are_symmetric_and_ssim_is_bounded(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    assert psnr_db(a, b) == psnr_db(b, a)
    s = ssim(a, b)
    assert -1.0 <= s <= 1.0
    assert s == pytest.approx(ssim(b, a), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(image_pairs())
def test_identical_images_give_infinite_psnr_and_unit_ssim(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, _ = pair
    assert psnr_db(a, a.clone()) == math.inf
    assert ssim(a, a.clone()) == pytest.approx(1.0, abs=1e-12)
    assert max_abs_error(a, a) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 0.3))
def test_noise_lowers_psnr_and_ssim(seed: int, noise_std: float) -> None:
    g = torch.Generator().manual_seed(seed)
    # A smooth image (blurred noise) is where SSIM is most sensitive to added noise.
    clean = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 40, 40, generator=g), 5, stride=1, padding=2)
    noisy = (clean + noise_std * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    louder = (clean + 2 * noise_std * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    assert math.isfinite(psnr_db(clean, noisy))
    assert ssim(clean, noisy) < 1.0
    assert psnr_db(clean, louder) < psnr_db(clean, noisy)
    assert ssim(clean, louder) < ssim(clean, noisy)


def test_psnr_of_a_known_error() -> None:
    a = torch.zeros(1, 3, 16, 16)
    assert psnr_db(a, a + 0.1) == pytest.approx(20.0)  # MSE 0.01 at data range 1
    assert max_abs_error(a, a + 0.1) == pytest.approx(0.1)


def test_ssim_matches_an_independent_scipy_implementation() -> None:
    """scikit-image's recipe (Gaussian filter, truncate 3.5 -> 11 taps, crop 5 px), written with SciPy."""
    from scipy.ndimage import gaussian_filter

    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 32, 40, generator=g)
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)

    def channel_ssim(x: np.ndarray, y: np.ndarray) -> float:
        def f(z: np.ndarray) -> np.ndarray:
            return gaussian_filter(z, sigma=1.5, truncate=3.5)
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        return float(m[5:-5, 5:-5].mean())

    expected = np.mean([channel_ssim(a[i, c].double().numpy(), b[i, c].double().numpy())
                        for i in range(2) for c in range(3)])
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_latent_rel_error_is_relative_to_the_reference() -> None:
    ref = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert latent_rel_error(ref, ref) == 0.0
    assert latent_rel_error(ref * 1.03, ref) == pytest.approx(0.03, rel=1e-5)
    assert latent_rel_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert latent_rel_error(torch.ones(3), torch.zeros(3)) == math.inf


def test_metrics_refuse_mismatched_or_too_small_images() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_db(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 10, 16), torch.zeros(1, 3, 10, 16))


def test_non_finite_output_is_flagged_and_the_fields_stay_json_safe() -> None:
    good = Outputs(images=torch.rand(1, 3, 16, 16), latents=torch.randn(1, 4, 2, 2))
    bad = Outputs(images=good.images.clone(), latents=good.latents.clone())
    bad.latents[0, 0, 0, 0] = math.nan
    fields = compare_outputs(bad, good, budget=LATENT_REL_ERROR_BUDGET["fp16"])
    assert fields["fidelity_flag"] and not fields["fidelity_finite"]
    assert "NaN" in fields["fidelity_note"]
    json.loads(to_json(fields))  # NaN becomes null, not an invalid JSON token


# --- fidelity on tiny pipelines --------------------------------------------------------------------------
def _bench() -> Bench:
    # No NVML device: fidelity measures no energy.
    return Bench(device="cpu", runner_config=RunnerConfig.for_cpu(idle_s=0.0), gpu=None, max_pipelines=3)


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    b = _bench()
    yield b
    b.close()


def _case(bench: Bench, **kwargs: Any) -> Case:
    return bench.case("tiny-sd", steps=STEPS, weights="synthetic", **kwargs)


def test_reference_case_changes_only_what_makes_it_the_reference(bench: Bench) -> None:
    case = _case(bench, dtype="bf16", profile="channels-last", attention="math", seed=5, batch_size=2,
                 sm_clock_mhz=1410)
    ref = reference_case(case)
    assert (ref.dtype, ref.profile, ref.attention, ref.offload) == ("fp32", "eager", "sdpa", "none")
    assert ref.sm_clock_mhz is None  # clocks change time and energy, not the output
    assert ref.with_(dtype="bf16", profile="channels-last", attention="math", sm_clock_mhz=1410) == case


def test_fp32_eager_against_itself_is_identical_and_not_flagged(bench: Bench) -> None:
    case = _case(bench, dtype="fp32")
    f = fidelity(bench, case, reuse_reference=False)
    assert f["fidelity_flag"] is False
    assert f["fidelity_images_identical"] is True
    assert f["fidelity_psnr_db"] is None  # infinite PSNR, recorded JSON-safely
    assert f["fidelity_ssim"] == pytest.approx(1.0)
    assert f["fidelity_latent_rel_error"] == 0.0 and f["fidelity_max_abs_error"] == 0.0
    assert f["fidelity_reference"] == case.case_id
    assert f["weights_source"] == "synthetic" and f["quality_note"] == QUALITY_NOTE_SYNTHETIC
    assert json.loads(to_json(f))["fidelity_psnr_db"] is None


def test_bf16_differs_by_rounding_only(bench: Bench) -> None:
    case = _case(bench, dtype="bf16")
    f = fidelity(bench, case)
    assert 0.0 < f["fidelity_latent_rel_error"] < LATENT_REL_ERROR_BUDGET["bf16"]
    assert f["fidelity_flag"] is False, f["fidelity_note"]
    assert 20.0 < f["fidelity_psnr_db"] < math.inf
    assert 0.9 < f["fidelity_ssim"] < 1.0
    assert f["fidelity_max_abs_error"] > 0.0
    assert f["fidelity_reference"] == reference_case(case).case_id
    assert "within" in f["fidelity_note"]


def test_bf16_starts_from_the_reference_noise_at_any_size(bench: Bench) -> None:
    """At 72 px the latent has 324 elements: torch's CPU sampler would draw a different bf16 tail."""
    f = fidelity(bench, _case(bench, dtype="bf16", resolution=72))
    assert f["fidelity_flag"] is False, f["fidelity_note"]


def test_fp32_outputs_are_the_pipelines_own_seeded_call(bench: Bench) -> None:
    """Drawing the starting noise ourselves changes nothing in fp32: same images as a plain seeded call."""
    from sdbench.pipelines.build import set_scheduler

    case = _case(bench, dtype="fp32", seed=11)
    out = generate_outputs(bench, case)
    pipe = bench.pipeline(case)[0].pipe
    set_scheduler(pipe, case.scheduler)
    with torch.inference_mode():
        plain = pipe(prompt=[case.prompt], num_inference_steps=case.steps, guidance_scale=case.guidance_scale,
                     height=case.height, width=case.width, output_type="pt",
                     generator=torch.Generator().manual_seed(case.seed)).images
    assert torch.equal(plain.float(), out.images)


def test_reference_is_built_through_the_bench_cache_and_stays_warm(bench: Bench) -> None:
    case = _case(bench, dtype="bf16")
    fidelity(bench, case)
    builds = bench.cache.builds
    again = fidelity(bench, case, reuse_reference=False)  # runs the reference again, on the warm pipeline
    assert bench.cache.builds == builds
    assert again["fidelity_flag"] is False


def test_images_and_latents_come_from_one_call(bench: Bench) -> None:
    case = _case(bench, dtype="fp32", batch_size=2, seed=3)
    out = generate_outputs(bench, case)
    assert out.images.shape == (2, 3, 64, 64) and out.images.dtype == torch.float32
    assert 0.0 <= float(out.images.min()) and float(out.images.max()) <= 1.0
    assert out.latents.shape == (2, 4, 8, 8) and out.latents.dtype == torch.float32
    # The captured latents are the ones the pipeline decoded: decoding them again gives the same image.
    built, _ = bench.pipeline(case)
    pipe = built.pipe
    with torch.inference_mode():
        decoded = pipe.vae.decode(out.latents / pipe.vae.config.scaling_factor).sample
    again = pipe.image_processor.postprocess(decoded, output_type="pt")
    assert torch.allclose(again.float(), out.images, atol=1e-5)


def test_a_broken_candidate_is_flagged() -> None:
    bench = _bench()
    try:
        case = _case(bench, dtype="bf16")
        built, _ = bench.pipeline(case)
        # Perturb the candidate's UNet by ~10 % of each weight: a bug, not rounding.
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in built.pipe.unet.parameters():
                p.add_(0.1 * p.abs().mean() * torch.randn(p.shape, generator=g).to(p.dtype))
        f = fidelity(bench, case)
    finally:
        bench.close()
    assert f["fidelity_flag"] is True
    assert f["fidelity_latent_rel_error"] > LATENT_REL_ERROR_BUDGET["bf16"]
    assert f["fidelity_note"].startswith("bf16/eager vs fp32/eager") and "flagged" in f["fidelity_note"]


def test_img2img_refiner_path_runs_on_the_synthetic_init_image() -> None:
    """The refiner's code path (init image, strength) on an SDXL img2img pipeline of tiny-sdxl parts."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from sdbench.pipelines.build import build_synthetic_components
    from sdbench.spec.models import get_model

    parts = build_synthetic_components(get_model("tiny-sdxl"), torch.float32, "cpu")
    # tiny-sdxl's UNet takes 6 time ids (no aesthetic score), as the base model does.
    pipe = StableDiffusionXLImg2ImgPipeline(**parts, requires_aesthetics_score=False)
    pipe.set_progress_bar_config(disable=True)
    case = Case.create("sdxl-refiner", resolution=64, steps=4, strength=0.5, dtype="fp32", device="cpu",
                       weights="synthetic")
    first, second = pipeline_outputs(pipe, case), pipeline_outputs(pipe, case)
    assert first.images.shape == (1, 3, 64, 64) and first.latents.shape == (1, 4, 8, 8)
    assert first.finite
    assert torch.equal(first.images, second.images) and torch.equal(first.latents, second.latents)


# --- CLIP score ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised CLIPModel (32 px images, 8 px patches, width 32) with the real tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from sdbench.pipelines.tokenizer import build_clip_tokenizer

    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=2, num_attention_heads=4),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)
    return folder


def test_clip_score_is_a_clipped_scaled_cosine(tiny_clip_dir: Path) -> None:
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    prompts = ["a red apple", "a photograph of an astronaut riding a horse", "a red apple"]
    scores = clip_score(images, prompts, tiny_clip_dir)
    assert len(scores) == 3
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert scores == clip_score(images, prompts, tiny_clip_dir)  # deterministic
    # The definition, through the model's separate feature methods: max(100 * cosine, 0).
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pixel_values = CLIPImageProcessor.from_pretrained(tiny_clip_dir)(images=list(pixels), return_tensors="pt")
    text = AutoTokenizer.from_pretrained(tiny_clip_dir)(prompts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        image_emb = model.get_image_features(**pixel_values).pooler_output
        text_emb = model.get_text_features(**text).pooler_output
    cosine = torch.nn.functional.cosine_similarity(image_emb, text_emb, dim=-1)
    assert scores == pytest.approx([max(100.0 * float(c), 0.0) for c in cosine], abs=1e-4)
    with pytest.raises(ValueError, match="one prompt per image"):
        clip_score(images, prompts[:2], tiny_clip_dir)
    with pytest.raises(ConfigError, match="clip_model"):
        clip_score(images, prompts, tiny_clip_dir / "missing")


def test_clip_score_of_synthetic_weights_is_labelled(bench: Bench, tiny_clip_dir: Path) -> None:
    case = _case(bench, dtype="fp32", batch_size=2)
    rec = quality_record(bench, case, clip_model_dir=tiny_clip_dir)
    assert rec["clip_score_status"] == CLIP_STATUS_SYNTHETIC
    assert len(rec["clip_scores"]) == 2 and 0.0 <= rec["clip_score_mean"] <= 100.0
    assert rec["weights_source"] == "synthetic" and rec["quality_note"] == QUALITY_NOTE_SYNTHETIC
    without = quality_record(bench, case)
    assert without["clip_score_status"] == CLIP_STATUS_NOT_MEASURED and "clip_score_mean" not in without


# --- sdbench quality -------------------------------------------------------------------------------------
def test_cli_quality_prints_fidelity_as_json() -> None:
    from sdbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["quality", "--model", "tiny-sd", "--steps", str(STEPS), "--device", "cpu", "--dtype", "bf16",
                     "--weights", "synthetic", "--json", "--fail-on-flag"])
    assert code == 0, err.getvalue()
    fields = json.loads(out.getvalue())
    assert fields["case_id"].endswith("bf16-eager")
    assert fields["fidelity_flag"] is False and fields["fidelity_latent_rel_error"] > 0
    assert fields["quality_note"] == QUALITY_NOTE_SYNTHETIC
    assert fields["clip_score_status"] == CLIP_STATUS_NOT_MEASURED
