"""Output fidelity: how far a case's images and latents move from an fp32 eager reference of the same seed.

A faster dtype or optimisation profile is only a win if it still draws the same picture. For every
case this module runs the case and its *reference* (the same case in fp32, eager, SDPA attention, no
offload) once each with the same seed and compares:

- the final latents (before the VAE): relative L2 error ``||a - b|| / ||b||``, the primary signal;
- the decoded images in [0, 1]: PSNR (dB, data range 1), SSIM (Gaussian window) and max abs error.

Candidate and reference start from the same noise up to rounding (`initial_noise` draws it in fp32
from the seed and casts), and synthetic weights are drawn in fp32 then cast, so the only differences
left are rounding and whatever the optimisation really changed. ``fidelity_flag`` is raised when the
latents moved more than the dtype's rounding budget (``LATENT_REL_ERROR_BUDGET``) or went non-finite.

Known limit: stochastic samplers (ancestral, SDE) and the img2img refiner draw later noise inside the
pipeline, in its own dtype. On the CPU torch's bf16 draws differ from fp32 in the last 16 elements
when the latent's element count is not a multiple of 16 (e.g. 72 px), which then shows up as a real
difference; sides that are multiples of 16 px never hit this.

Fidelity is not image quality. With synthetic weights the images are noise-like, so every record here
carries ``weights_source`` and, for synthetic weights, a ``quality_note`` saying so; a CLIP score of
such an image gets ``clip_score_status`` = "synthetic weights: not a quality measure".

Front doors: ``fidelity(bench, case)`` (a dict of record fields), ``quality_record`` (fidelity plus an
optional CLIP score), ``benchmarks/test_quality.py`` and ``sdbench quality``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sdbench.case import Case
from sdbench.errors import ConfigError, SdbenchError

if TYPE_CHECKING:
    from sdbench.session import Bench

QUALITY_NOTE_SYNTHETIC = ("synthetic weights: fidelity to the fp32 reference is measured, but image quality is "
                          "meaningless (the images are noise-like, not content)")
CLIP_STATUS_SYNTHETIC = "synthetic weights: not a quality measure"
CLIP_STATUS_MEASURED = "measured"
CLIP_STATUS_NOT_MEASURED = ("not measured: no CLIP model folder given (sdbench quality --clip-model DIR; "
                            "SDBENCH_CLIP_MODEL for the benchmarks)")

# How far the final latents may move from the fp32 reference before the change is more than rounding.
# fp32: the reference itself differs only by kernel choice or summation order (~1e-6 relative), so
#   1e-4 already means something else changed.
# fp16 / bf16: unit roundoff 4.9e-4 / 3.9e-3 per operation, compounded over the UNet's depth, every
#   step and classifier-free guidance (which scales the difference of two predictions by 5-8). A
#   few per cent is what rounding does to a healthy pipeline; a wrong kernel, a broken fusion or an
#   overflow moves the latents by tens of per cent or to NaN. bf16 gets twice fp16's budget for its
#   8x coarser mantissa (rounding errors partly cancel across steps, so the growth is sub-linear);
#   the tiny synthetic models measure 2-5e-2 in bf16 on the CPU (tiny-sd2, v-prediction, the most).
LATENT_REL_ERROR_BUDGET: Mapping[str, float] = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 1e-1}
# fp32 with TF32 tensor cores (cuDNN convs default to it) rounds inputs to a 10-bit mantissa, as fp16.
TF32_LATENT_REL_ERROR_BUDGET = LATENT_REL_ERROR_BUDGET["fp16"]

SSIM_WINDOW_PX = 11
SSIM_SIGMA_PX = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

# Reference outputs per Bench (the reference is deterministic: same weights, seed and case), so the
# fp32 reference of a model runs once however many dtypes and profiles are compared with it.
_REFERENCE_OUTPUTS: weakref.WeakKeyDictionary[Any, OrderedDict[str, Outputs]] = weakref.WeakKeyDictionary()
_MAX_REFERENCE_OUTPUTS = 4


@dataclass(frozen=True)
class Outputs:
    """What one pipeline call produced, on the CPU in float32.

    images: [B, 3, H, W] in [0, 1] (the pipeline's own decode and postprocess).
    latents: the final latents of the denoising loop, as handed to the VAE (before 1/scaling_factor).
    """

    images: torch.Tensor
    latents: torch.Tensor

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.images).all() and torch.isfinite(self.latents).all())


# --- the reference and one captured run ------------------------------------------------------------------
def reference_case(case: Case) -> Case:
    """The case as the fidelity reference runs it: fp32, eager, SDPA attention, no offload, same seed.

    Clock and power-limit settings and tags are dropped: they change time and energy, not the output,
    so every clock point of a DVFS sweep shares one reference.
    """
    return case.with_(dtype="fp32", profile="eager", knobs="", attention="sdpa", offload="none",
                      sm_clock_mhz=None, mem_clock_mhz=None, power_limit_w=None, tags=())


def initial_noise(pipe: Any, case: Case, generator: torch.Generator) -> torch.Tensor:
    """The text-to-image starting noise of `case`, drawn in fp32 and cast to the case's dtype.

    This is the draw the pipeline itself makes (`randn_tensor` with the same shape and generator), but
    always in fp32: torch's CPU sampler gives different values to the last 16 elements in bf16 when the
    element count is not a multiple of 16 (a 72 px image), which would start candidate and reference
    from different noise. In fp32 the result is exactly the pipeline's own draw.
    """
    from diffusers.utils.torch_utils import randn_tensor

    from sdbench.pipelines.build import torch_dtype

    scale = pipe.vae_scale_factor
    shape = (case.batch_size, pipe.unet.config.in_channels, case.height // scale, case.width // scale)
    noise = randn_tensor(shape, generator=generator, device=torch.device(case.compute_device), dtype=torch.float32)
    return noise.to(torch_dtype(case.dtype))


def pipeline_outputs(pipe: Any, case: Case,
                     call_context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> Outputs:
    """Run `pipe` once for `case` (seed `case.seed`) and return its images and final latents.

    One denoising run gives both: the latents are captured by `callback_on_step_end` after every step
    (the last capture is what the VAE decodes), and the images come from the pipeline's own decode
    path, SDXL's VAE upcast and `image_processor.postprocess` included. The case's scheduler is put in
    place first, as the Runner does. Text-to-image starts from `initial_noise`; img2img (the refiner)
    noises the seeded `synthetic_init_image` with the pipeline's own draw.
    """
    from sdbench.pipelines.build import set_scheduler

    overrides = {"timestep_spacing": case.timestep_spacing} if case.timestep_spacing else None
    set_scheduler(pipe, case.scheduler, overrides)
    device = case.compute_device
    generator = torch.Generator(device=device).manual_seed(case.seed)
    from sdbench.runner import pipeline_call_kwargs

    kwargs = pipeline_call_kwargs(case, device)
    if not case.spec.img2img:
        kwargs["latents"] = initial_noise(pipe, case, generator)
    last_latents: list[torch.Tensor] = []

    def keep_latents(_pipe: Any, _step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        # A device-side copy only (no sync per step); the scheduler may reuse the tensor in place.
        last_latents[:] = [tensors["latents"].detach().clone()]
        return {}

    with torch.inference_mode(), call_context():
        out = pipe(generator=generator, callback_on_step_end=keep_latents,
                   callback_on_step_end_tensor_inputs=["latents"], **kwargs)
    if not last_latents:
        raise SdbenchError(f"{case.case_id}: no denoising step ran (steps {case.steps}, strength {case.strength})")
    images = out.images
    if not isinstance(images, torch.Tensor):  # output_type "pt" gives a tensor; anything else is a bug here
        raise SdbenchError(f"{type(pipe).__name__} returned {type(images).__name__} images for output_type 'pt'")
    return Outputs(images=images.detach().float().cpu(), latents=last_latents[0].float().cpu())


def generate_outputs(bench: Bench, case: Case) -> Outputs:
    """Images and final latents of one call of `case` on its warm pipeline from `bench`'s cache."""
    built, applied = bench.pipeline(case)
    return pipeline_outputs(built.pipe, case, applied.call_context)


def _reference_outputs(bench: Bench, ref: Case, reuse: bool) -> Outputs:
    store = _REFERENCE_OUTPUTS.setdefault(bench, OrderedDict())
    key = ref.case_hash
    if reuse and key in store:
        store.move_to_end(key)
        return store[key]
    outputs = generate_outputs(bench, ref)
    store[key] = outputs
    while len(store) > _MAX_REFERENCE_OUTPUTS:
        store.popitem(last=False)
    return outputs


# --- metrics ---------------------------------------------------------------------------------------------
def _as_images(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] float64 on the CPU (a single [C, H, W] image gets a batch axis)."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected images shaped [B, C, H, W] or [C, H, W], got {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64)


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def psnr_db(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels of the batch; `math.inf` when a equals b."""
    a, b = _as_images(a), _as_images(b)
    _check_same_shape(a, b)
    mse = float(torch.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window_1d(size_px: int = SSIM_WINDOW_PX, sigma_px: float = SSIM_SIGMA_PX) -> torch.Tensor:
    x = torch.arange(size_px, dtype=torch.float64) - (size_px - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma_px**2))
    return w / w.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Structural similarity (Wang et al. 2004), the mean over channels, pixels and images of the batch.

    11x11 Gaussian window (sigma 1.5 px), K1 = 0.01, K2 = 0.03, population (not sample) covariances,
    and only windows that lie wholly inside the image ("valid"), as the reference MATLAB code and
    scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``.
    Colour images are compared per channel (R, G, B) and the channel SSIMs averaged; no luminance
    conversion. Both sides must be at least 11 px high and wide.
    """
    a, b = _as_images(a), _as_images(b)
    _check_same_shape(a, b)
    channels, height, width = a.shape[1:]
    if height < SSIM_WINDOW_PX or width < SSIM_WINDOW_PX:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW_PX}x{SSIM_WINDOW_PX} px, got {height}x{width}")
    w = _gaussian_window_1d()
    w_rows = w.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    w_cols = w.view(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable Gaussian, per channel, valid region only
        return F.conv2d(F.conv2d(x, w_rows, groups=channels), w_cols, groups=channels)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    per_image = []
    for x, y in zip(a.split(1), b.split(1)):  # one image at a time: a 4 x 1024^2 batch in float64 is large
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov_xy = blur(x * y) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        per_image.append(ssim_map.mean())
    # Mathematically within [-1, 1]; clamp the last-bit overshoot of the variance subtractions.
    return float(torch.stack(per_image).mean().clamp(-1.0, 1.0))


def latent_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` (L2 over all elements; `b` is the reference). 0 if both are zero, inf if only b is."""
    a64, b64 = a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
    _check_same_shape(a64, b64)
    diff = float(torch.linalg.vector_norm(a64 - b64))
    ref = float(torch.linalg.vector_norm(b64))
    if ref == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / ref


def max_abs_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute difference of any element (pixels in [0, 1]: 1/255 is one 8-bit level)."""
    a64, b64 = a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
    _check_same_shape(a64, b64)
    return float((a64 - b64).abs().max()) if a64.numel() else 0.0


# --- fidelity --------------------------------------------------------------------------------------------
def _tf32_enabled() -> bool:
    """Whether fp32 convolutions or matmuls on CUDA may run in TF32 (cuDNN convs do by default)."""
    return bool(torch.backends.cudnn.allow_tf32) or torch.get_float32_matmul_precision() != "highest"


def latent_rel_error_budget(case: Case) -> tuple[float, str]:
    """The largest latent relative error that rounding in `case`'s dtype explains, and why that one."""
    if case.dtype == "fp32" and case.compute_device.startswith("cuda") and _tf32_enabled():
        return TF32_LATENT_REL_ERROR_BUDGET, "fp32 with TF32 convolutions/matmuls (10-bit mantissa, as fp16)"
    return LATENT_REL_ERROR_BUDGET[case.dtype], f"{case.dtype} rounding"


def is_synthetic(weights_source: str) -> bool:
    """Whether a BuiltPipeline's `weights` label means seeded random weights (no learned content)."""
    return weights_source == "synthetic"


def quality_labels(weights_source: str) -> dict[str, Any]:
    """`weights_source` and, for synthetic weights, the note that image quality is meaningless."""
    return {"weights_source": weights_source,
            "quality_note": QUALITY_NOTE_SYNTHETIC if is_synthetic(weights_source) else None}


def compare_outputs(candidate: Outputs, reference: Outputs, budget: float, budget_reason: str = "rounding") -> dict[str, Any]:
    """Fidelity fields of `candidate` against `reference` (no pipeline run; `fidelity` runs both).

    PSNR of identical images is infinite: recorded as None with `fidelity_images_identical` True, so
    the record stays valid JSON.
    """
    finite = candidate.finite and reference.finite
    rel = latent_rel_error(candidate.latents, reference.latents)
    psnr = psnr_db(candidate.images, reference.images)
    identical = psnr == math.inf and rel == 0.0
    fields: dict[str, Any] = {
        "fidelity_psnr_db": psnr if math.isfinite(psnr) else None,
        "fidelity_ssim": ssim(candidate.images, reference.images),
        "fidelity_latent_rel_error": rel,
        "fidelity_max_abs_error": max_abs_error(candidate.images, reference.images),
        "fidelity_images_identical": identical,
        "fidelity_latent_rel_error_budget": budget,
        "fidelity_finite": finite,
    }
    if not finite:
        flag = True
        note = "flagged: the output has NaN or inf values (with fp16, often an overflow in the UNet or VAE)"
    elif rel > budget:
        flag = True
        note = (f"flagged: latent relative error {rel:.2e} exceeds the {budget:.0e} budget of {budget_reason}; "
                "the output changed beyond what rounding explains")
    elif identical:
        flag = False
        note = "identical to the reference (PSNR infinite, recorded as null)"
    else:
        flag = False
        note = f"latent relative error {rel:.2e} is within the {budget:.0e} budget of {budget_reason}"
    fields["fidelity_flag"] = flag
    fields["fidelity_note"] = note
    return fields


def _fidelity_and_outputs(bench: Bench, case: Case, reuse_reference: bool = True) -> tuple[dict[str, Any], Outputs]:
    ref = reference_case(case)
    # Reference first, candidate second: the candidate is then the most recently used pipeline, the
    # one a following `bench.measure(case)` wants warm.
    reference = _reference_outputs(bench, ref, reuse_reference)
    built, applied = bench.pipeline(case)
    candidate = pipeline_outputs(built.pipe, case, applied.call_context)
    budget, reason = latent_rel_error_budget(case)
    fields = compare_outputs(candidate, reference, budget, reason)
    fields["fidelity_note"] = f"{case.dtype}/{case.profile} vs fp32/eager, seed {case.seed}: {fields['fidelity_note']}"
    fields["fidelity_reference"] = ref.case_id
    fields["fidelity_reference_hash"] = ref.case_hash
    fields.update(quality_labels(built.weights))
    return fields, candidate


def fidelity(bench: Bench, case: Case, *, reuse_reference: bool = True) -> dict[str, Any]:
    """Fidelity of `case` against its fp32 eager reference of the same seed, as flat record fields.

    Both pipelines come from `bench`'s cache (the reference stays warm for the next case). The
    reference's outputs are kept per Bench and reused for every case with the same reference
    (`reuse_reference=False` runs it again). Keys: fidelity_psnr_db (None when identical),
    fidelity_ssim, fidelity_latent_rel_error, fidelity_max_abs_error, fidelity_reference (its
    case_id), fidelity_flag, fidelity_note, plus weights_source and quality_note.
    """
    return _fidelity_and_outputs(bench, case, reuse_reference)[0]


# --- CLIP score ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _load_clip(model_dir: str, device: str) -> tuple[Any, Any, Any]:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    if not Path(model_dir).is_dir():
        raise ConfigError("clip_model", model_dir, "a local folder saved with CLIPModel.save_pretrained",
                          reason="folder not found")
    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    image_processor = CLIPImageProcessor.from_pretrained(model_dir, local_files_only=True)
    return model, tokenizer, image_processor


def clip_score(images: torch.Tensor, prompts: Sequence[str], model_dir: str | Path, device: str = "cpu") -> list[float]:
    """CLIP score of each image with its prompt: 100 * cosine(image, text embedding), clipped at 0.

    `images`: [B, 3, H, W] in [0, 1] (quantised to 8 bits, as a saved image would be); `model_dir`:
    a local folder with a `CLIPModel`, its tokenizer and a `CLIPImageProcessor` (nothing is downloaded).
    """
    if images.dim() != 4 or images.shape[0] != len(prompts):
        raise ValueError(f"need one prompt per image: {tuple(images.shape)} images, {len(prompts)} prompts")
    model, tokenizer, image_processor = _load_clip(str(model_dir), device)
    pixels_uint8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    pixel_values = image_processor(images=list(pixels_uint8), return_tensors="pt")["pixel_values"]
    max_tokens = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
    text = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    with torch.inference_mode():
        out = model(input_ids=text["input_ids"].to(device), attention_mask=text["attention_mask"].to(device),
                    pixel_values=pixel_values.to(device))
        # CLIPModel's image_embeds and text_embeds are already L2-normalised; normalise again to be sure.
        cosine = (F.normalize(out.image_embeds.float(), dim=-1) * F.normalize(out.text_embeds.float(), dim=-1)).sum(-1)
    return [float(s) for s in (100.0 * cosine).clamp(min=0.0).cpu()]


def clip_fields(images: torch.Tensor, prompts: Sequence[str], model_dir: str | Path | None, weights_source: str,
                device: str = "cpu") -> dict[str, Any]:
    """CLIP score record fields; never a bare number: `clip_score_status` says what the number means."""
    if model_dir is None:
        return {"clip_score_status": CLIP_STATUS_NOT_MEASURED}
    scores = clip_score(images, prompts, model_dir, device)
    return {
        "clip_score_mean": sum(scores) / len(scores),
        "clip_scores": scores,
        "clip_model": str(model_dir),
        "clip_score_status": CLIP_STATUS_SYNTHETIC if is_synthetic(weights_source) else CLIP_STATUS_MEASURED,
    }


def quality_record(bench: Bench, case: Case, clip_model_dir: str | Path | None = None) -> dict[str, Any]:
    """Fidelity fields of `case` plus its CLIP score when a local CLIP model folder is given."""
    fields, candidate = _fidelity_and_outputs(bench, case)
    clip_device = case.compute_device
    fields.update(clip_fields(candidate.images, [case.prompt] * case.batch_size, clip_model_dir,
                              fields["weights_source"], clip_device))
    return fields
