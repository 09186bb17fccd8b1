"""Workload presets: each one's fields make a valid case, and a bad name is one clear error."""

from __future__ import annotations

import pytest

from sdbench.case import Case
from sdbench.errors import ConfigError
from sdbench.spec.presets import PRESETS, get_preset, preset_note


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_case(name: str) -> None:
    preset = get_preset(name)
    fields = dict(preset.fields)
    case = Case.create(fields.pop("model"), device="cpu", dtype="fp32", tags=(preset.tag(),), **fields)
    assert case.tags == (f"preset:{name}",)
    note = preset_note(preset)
    assert "not copied:" in note and "speed and energy only" in note


def test_mlperf_sdxl_is_mlperfs_workload() -> None:
    f = get_preset("mlperf-sdxl").fields
    assert (f["model"], f["scheduler"], f["steps"], f["guidance_scale"], f["width"], f["height"]) == (
        "sdxl", "euler", 20, 8.0, 1024, 1024)


def test_an_unknown_preset_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"invalid preset: 'mlperf'; allowed: mlperf-sdxl"):
        get_preset("mlperf")
