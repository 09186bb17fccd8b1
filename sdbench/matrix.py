"""Axes -> Cases: the one case matrix behind the pytest suites (``sd_matrix`` markers and ``--sd-*`` options),
``sdbench bench``'s up-front checks and ``sdbench plan make``.

An axis holds values ('default' where the model's default applies; resolutions may be ``xF``, F times the
model's default side); :func:`build_cases` makes every combination a validated :class:`~sdbench.case.Case`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from sdbench.errors import ConfigError

CPU_MATRIX = {"models": ["tiny-sd", "tiny-sd2", "tiny-sdxl"], "batch_sizes": [1, 2]}
GPU_MATRIX = {"models": ["sd-v1.5", "sdxl"], "batch_sizes": [1, 4]}
MATRIX_AXES = ("models", "schedulers", "resolutions", "batch_sizes", "steps", "dtypes", "profiles", "weights",
               "prompts", "attention", "sm_clocks_mhz", "knobs")


def base_matrix() -> dict[str, list[Any]]:
    """Every axis at its one default value (models empty: the caller names them)."""
    return {"models": [], "schedulers": ["default"], "resolutions": ["default"], "batch_sizes": [1],
            "steps": ["default"], "dtypes": ["default"], "profiles": ["eager"], "weights": ["auto"],
            "prompts": [None], "attention": ["sdpa"], "sm_clocks_mhz": [None], "knobs": [""]}


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def suite_matrix(on_gpu: bool, marker_kwargs: Mapping[str, Any], getoption: Callable[[str], Any]) -> dict[str, list[Any]]:
    """A suite's case matrix: the command line (``getoption("--sd-models")``...) beats the benchmark's own
    ``sd_matrix`` marker, which beats the device's default (:data:`GPU_MATRIX` or :data:`CPU_MATRIX`)."""
    unknown = set(marker_kwargs) - set(MATRIX_AXES)
    if unknown:
        raise ConfigError("sd_matrix axis", sorted(unknown)[0], MATRIX_AXES)
    matrix = base_matrix()
    matrix.update(GPU_MATRIX if on_gpu else CPU_MATRIX)
    for axis, value in marker_kwargs.items():
        matrix[axis] = list(value) if isinstance(value, (list, tuple)) else [value]
    cli = {"models": "--sd-models", "schedulers": "--sd-schedulers", "resolutions": "--sd-resolutions",
           "batch_sizes": "--sd-batch-sizes", "steps": "--sd-steps", "dtypes": "--sd-dtypes",
           "profiles": "--sd-profiles", "weights": "--sd-weights", "attention": "--sd-attention"}
    for axis, opt in cli.items():
        values = _csv(getoption(opt))
        if values is not None:
            matrix[axis] = values
    knobs = getoption("--sd-knobs")
    if knobs:
        matrix["knobs"] = [knobs.replace(";", ",")]
    return matrix


def _int_or_default(axis: str, value: Any) -> int | None:
    if value in (None, "default"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(axis, value, "whole numbers or 'default'") from None


def _resolution(value: Any, model: str) -> int | None:
    """A side in px, 'default', or 'xF' (F times the model's default side, rounded to a multiple of 8)."""
    from sdbench.spec.models import get_model

    if isinstance(value, str) and value.startswith("x"):
        try:
            factor = float(value[1:])
        except ValueError:
            raise ConfigError("resolutions", value, "px, 'default' or xF (e.g. x1.5)") from None
        side = int(round(get_model(model).default_resolution * factor / 8.0)) * 8
        return max(side, 64)
    return _int_or_default("resolutions", value)


def build_cases(matrix: dict[str, list[Any]], device: str) -> list[Any]:
    """Every valid combination of the matrix as Cases (model defaults fill 'default' entries)."""
    from sdbench.case import (
        Case,  # imports torch: only when cases are built, not when the pytest plugin loads
    )
    from sdbench.spec.schedulers import SCHEDULERS

    cases = []
    for model in matrix["models"]:
        schedulers = list(SCHEDULERS) if matrix["schedulers"] == ["all"] else matrix["schedulers"]
        for sched in schedulers:
            for res in matrix["resolutions"]:
                for batch in matrix["batch_sizes"]:
                    for steps in matrix["steps"]:
                        for dtype in matrix["dtypes"]:
                            for profile in matrix["profiles"]:
                                for weights in matrix["weights"]:
                                    for prompt in matrix["prompts"]:
                                        for attention in matrix["attention"]:
                                            for clock, knobs in itertools.product(matrix["sm_clocks_mhz"], matrix["knobs"]):
                                                dt = None if dtype == "default" else dtype
                                                cases.append(Case.create(
                                                    model, scheduler=None if sched == "default" else sched,
                                                    resolution=_resolution(res, model),
                                                    batch_size=_int_or_default("batch_sizes", batch),
                                                    steps=_int_or_default("steps", steps),
                                                    dtype=dt or ("fp16" if device.startswith("cuda") else "fp32"),
                                                    profile=profile, weights=weights, prompt=prompt,
                                                    attention=attention, device=device, knobs=knobs,
                                                    sm_clock_mhz=_int_or_default("sm_clocks_mhz", clock)))
    return cases


def unique_cases(cases: list[Any]) -> list[Any]:
    """Drop repeats (e.g. x0.5 of a 64 px model rounds back up to 64), keeping the first."""
    seen: set[str] = set()
    out = []
    for c in cases:
        if c.case_hash not in seen:
            seen.add(c.case_hash)
            out.append(c)
    return out
