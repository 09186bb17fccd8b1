"""Workload presets: named sets of case settings that reproduce a published benchmark's workload.

A preset fills the case fields the user did not set (explicit flags win) and tags the record
``preset:<name>``, so its numbers can sit beside the published table they copy. It sets the workload
only: the weights stay sdbench's (synthetic unless ``--weights`` names real ones), so a preset's
throughput and energy are comparable with the published ones and its images are not: no accuracy
(FID, CLIP score) claim follows from a run with synthetic weights. No torch import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sdbench.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """A published workload: the case fields it sets, where they come from, and what it does not copy."""

    name: str
    description: str
    fields: Mapping[str, Any]
    source: str
    not_copied: str
    published: tuple[str, ...] = field(default_factory=tuple)

    def tag(self) -> str:
        return f"preset:{self.name}"


# MLPerf Inference's text-to-image benchmark (closed division, from v4.0): SDXL 1.0 base, EulerDiscrete,
# 20 steps, CFG 8.0, 1024x1024, its fixed negative prompt; queries are COCO-2014 captions (CLIP pads every
# prompt to 77 tokens, so the caption's words do not change the work).
MLPERF_NEGATIVE_PROMPT = "normal quality, low quality, worst quality, low res, blurry, nsfw, nude"
MLPERF_PROMPT = "a black and white cat sitting on a wooden bench in a park"

PRESETS: Mapping[str, Preset] = MappingProxyType({
    "mlperf-sdxl": Preset(
        name="mlperf-sdxl",
        description="MLPerf Inference text-to-image (SDXL 1.0 base, 1024x1024, 20 steps Euler, guidance 8)",
        fields=MappingProxyType({"model": "sdxl", "scheduler": "euler", "steps": 20, "guidance_scale": 8.0,
                                 "height": 1024, "width": 1024, "negative_prompt": MLPERF_NEGATIVE_PROMPT,
                                 "prompt": MLPERF_PROMPT}),
        source="MLPerf Inference v4.0+ closed division, text_to_image reference settings",
        not_copied="the COCO-2014 caption set and fixed latents (one caption-like prompt instead), the accuracy "
                   "targets (FID, CLIP score: meaningless on synthetic weights), the LoadGen scenarios (sdbench "
                   "measures back-to-back batches, the offline scenario's regime; `sdbench batch` finds its batch)",
        published=("MLPerf Inference v4.1 closed, H200 (TensorRT, FP8 UNet, INT8 VAE): 2.18 images/s per GPU",),
    ),
})

PRESET_NAMES: tuple[str, ...] = tuple(sorted(PRESETS))


def get_preset(name: str) -> Preset:
    """The preset called `name`; a ConfigError naming the allowed ones otherwise."""
    if name not in PRESETS:
        raise ConfigError("preset", name, PRESET_NAMES)
    return PRESETS[name]


def preset_note(preset: Preset) -> str:
    """The line a command prints when a preset runs: what it copies, and what it does not."""
    return (f"preset {preset.name}: {preset.description}, after {preset.source}; not copied: {preset.not_copied}. "
            "With synthetic weights the images mean nothing: compare speed and energy only.")
