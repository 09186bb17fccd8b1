"""Quality: output fidelity of each dtype/profile against an fp32 eager reference of the same seed,
measured in the same record as the case's speed and energy.

Each case runs once more outside the timed rounds, and its reference (fp32, eager, SDPA, no offload)
once per model and seed, through the session's Bench (the reference pipeline stays warm). The record
gains `fidelity_psnr_db`, `fidelity_ssim`, `fidelity_latent_rel_error`, `fidelity_max_abs_error`,
`fidelity_flag` and `fidelity_note` (see `sdbench.quality`) next to the Runner's time and energy.

CLIP score: set `SDBENCH_CLIP_MODEL` to a local folder holding a `CLIPModel`, its tokenizer and a
`CLIPImageProcessor` (all `save_pretrained`). The sdbench plugin has no pytest option for it, and an
environment variable keeps this suite's setting out of every other suite. Without it the record says
`clip_score_status: not measured ...`.

With synthetic weights every record carries `quality_note` and `clip_score_status` saying that image
quality is not measured: fidelity is, CLIP scores of noise-like images mean nothing.

Default matrix: on the CPU the tiny models in fp32 and bf16, eager; on a GPU fp16, bf16 (where the
card has it) and fp32, eager and channels-last, batch 1. --sd-dtypes and --sd-profiles override.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from sdbench.quality import QUALITY_NOTE_SYNTHETIC, quality_record

pytestmark = pytest.mark.quality_test

CLIP_MODEL_ENV = "SDBENCH_CLIP_MODEL"


def quality_matrix(device: str) -> dict[str, list[Any]]:
    """The dtype/profile axes this suite covers on `device` (the tiny models' CPU kernels have no fp16)."""
    if device.startswith("cuda"):
        import torch

        dtypes = ["fp16", "bf16", "fp32"] if torch.cuda.is_bf16_supported() else ["fp16", "fp32"]
        return {"dtypes": dtypes, "profiles": ["eager", "channels-last"], "batch_sizes": [1]}
    return {"dtypes": ["fp32", "bf16"], "profiles": ["eager"], "batch_sizes": [1]}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """An sd_matrix marker is fixed at import; the session's device is known only now, so the marker
    is added here (a module's hook runs before the plugin's, which reads it)."""
    if "sd_case" in metafunc.fixturenames:
        device = metafunc.config._sdbench.device  # type: ignore[attr-defined]
        metafunc.definition.add_marker(pytest.mark.sd_matrix(**quality_matrix(device)))


def test_fidelity(sd_bench, sd_case, sd_measure):
    clip_model_dir = os.environ.get(CLIP_MODEL_ENV) or None
    fields = quality_record(sd_bench, sd_case, clip_model_dir=clip_model_dir)
    record = sd_measure(sd_case, **fields)
    assert record["time_per_image_s_median"] > 0
    # Measured, not judged: a flag is a finding for the report; NaN or inf output is simply broken.
    assert record["fidelity_finite"], record["fidelity_note"]
    assert record["fidelity_reference"].endswith("-fp32-eager")
    if record["weights_source"] == "synthetic":
        assert record["quality_note"] == QUALITY_NOTE_SYNTHETIC
    assert record["clip_score_status"]
