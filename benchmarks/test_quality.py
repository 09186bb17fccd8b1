"""Quality: output fidelity of each dtype/profile against an fp32 eager reference of the same seed,
measured in the same record as the case's speed and energy.

Each case runs once more outside the timed rounds, and its reference (fp32, eager, SDPA, no offload)
once per model and seed, through the session's Bench (the reference pipeline stays warm). The record
gains `fidelity_psnr_db`, `fidelity_ssim`, `fidelity_latent_rel_error`, `fidelity_max_abs_error`,
`fidelity_flag` and `fidelity_note` (see `sdbench.studies.quality`) next to the Runner's time and energy.

CLIP score: set `SDBENCH_CLIP_MODEL` to a local folder holding a `CLIPModel`, its tokenizer and a
`CLIPImageProcessor` (all `save_pretrained`). The sdbench plugin has no pytest option for it, and an
environment variable keeps this suite's setting out of every other suite. Without it the record says
`clip_score_status: not measured ...`.

With synthetic weights every record carries `quality_note` and `clip_score_status` saying that image
quality is not measured: fidelity is, CLIP scores of noise-like images mean nothing.

Default matrix: on the CPU the tiny models in fp32 and bf16, eager; on a GPU fp16, bf16 (where the
card has it), eager, batch 1. --sd-dtypes and --sd-profiles override.

Images per case: `--sd-num-images N` (`sdbench generate --benchmark --benchmark-type quality_test
--num-images N`) compares N images, one pipeline call per seed (seed, seed+1, ...; batch_size images
each), each against the reference of its own seed. The record then holds the worst case over the
images (lowest PSNR and SSIM, highest errors, flagged if any image is), the per-seed values
(`fidelity_*_per_seed`), `quality_seeds` and `quality_num_images`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest

from sdbench.pytest_plugin import sd_config
from sdbench.studies.quality import QUALITY_NOTE_SYNTHETIC, quality_record

pytestmark = pytest.mark.quality_test

CLIP_MODEL_ENV = "SDBENCH_CLIP_MODEL"


def quality_matrix(device: str) -> dict[str, list[Any]]:
    """The dtype/profile axes this suite covers on `device` (the tiny models' CPU kernels have no fp16)."""
    if device.startswith("cuda"):
        import torch

        # The reduced precisions against the fp32 reference (which every case runs anyway), eager: the
        # optimisation profiles' fidelity is `sdbench quality --profiles ...` or --sd-profiles.
        dtypes = ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]
        return {"dtypes": dtypes, "profiles": ["eager"], "batch_sizes": [1]}
    return {"dtypes": ["fp32", "bf16"], "profiles": ["eager"], "batch_sizes": [1]}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """An sd_matrix marker is fixed at import; the session's device is known only now, so the marker
    is added here (a module's hook runs before the plugin's, which reads it)."""
    if "sd_case" in metafunc.fixturenames:
        device = sd_config(metafunc.config).device
        metafunc.definition.add_marker(pytest.mark.sd_matrix(**quality_matrix(device)))


def quality_over_seeds(bench: Any, case: Any, num_images: int, clip_model_dir: str | None) -> dict[str, Any]:
    """Quality fields of `num_images` images of `case` (one call per seed), the worst image summarising them."""
    seeds = [case.seed + i for i in range(math.ceil(num_images / case.batch_size))]
    per_seed = [quality_record(bench, case.with_(seed=s), clip_model_dir=clip_model_dir) for s in seeds]
    fields = dict(per_seed[0])
    fields["quality_seeds"] = seeds
    fields["quality_num_images"] = len(seeds) * case.batch_size
    if len(per_seed) == 1:
        return fields
    for key in ("fidelity_psnr_db", "fidelity_ssim", "fidelity_latent_rel_error", "fidelity_max_abs_error"):
        fields[f"{key}_per_seed"] = [f[key] for f in per_seed]
    psnrs = [f["fidelity_psnr_db"] for f in per_seed if f["fidelity_psnr_db"] is not None]
    fields["fidelity_psnr_db"] = min(psnrs) if psnrs else None  # None only when every image is identical
    fields["fidelity_ssim"] = min(f["fidelity_ssim"] for f in per_seed)
    fields["fidelity_latent_rel_error"] = max(f["fidelity_latent_rel_error"] for f in per_seed)
    fields["fidelity_max_abs_error"] = max(f["fidelity_max_abs_error"] for f in per_seed)
    fields["fidelity_images_identical"] = all(f["fidelity_images_identical"] for f in per_seed)
    fields["fidelity_finite"] = all(f["fidelity_finite"] for f in per_seed)
    fields["fidelity_flag"] = any(f["fidelity_flag"] for f in per_seed)
    worst = max(per_seed, key=lambda f: (not f["fidelity_finite"], f["fidelity_latent_rel_error"]))
    fields["fidelity_note"] = f"worst of {len(seeds)} seeds: {worst['fidelity_note']}"
    if "clip_scores" in fields:
        scores = [score for f in per_seed for score in f["clip_scores"]]
        fields["clip_scores"] = scores
        fields["clip_score_mean"] = sum(scores) / len(scores)
    return fields


def test_fidelity(sd_bench, sd_case, sd_measure, request):
    clip_model_dir = os.environ.get(CLIP_MODEL_ENV) or None
    fields = quality_over_seeds(sd_bench, sd_case, request.config.getoption("--sd-num-images"), clip_model_dir)
    record = sd_measure(sd_case, **fields)
    assert record["time_per_image_s_median"] > 0
    # Measured, not judged: a flag is a finding for the report; NaN or inf output is simply broken.
    assert record["fidelity_finite"], record["fidelity_note"]
    assert record["fidelity_reference"].endswith("-fp32-eager")
    if record["weights_source"] == "synthetic":
        assert record["quality_note"] == QUALITY_NOTE_SYNTHETIC
    assert record["clip_score_status"]
    assert record["quality_num_images"] >= request.config.getoption("--sd-num-images")
