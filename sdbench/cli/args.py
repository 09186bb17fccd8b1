"""Argument helpers shared by the commands: argparse types that name the field, the case flags, and the
translation of parsed flags into a Case's keyword arguments and a RunnerConfig.

Imported by `sdbench --help`: nothing here imports torch, diffusers, numpy or scipy at module level.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sdbench import settings
from sdbench.errors import ConfigError

# The one definition of these is the settings table (sdbench.settings, which imports nothing heavy).
from sdbench.settings import (  # noqa: E402
    ATTENTION_BACKENDS,
    DEFAULT_CPU_MODEL,
    DEFAULT_GPU_MODEL,
    DEFAULT_SCHEDULER,
    OFFLOAD_MODES,
)

__all__ = ["ATTENTION_BACKENDS", "CASE_FLAGS", "DEFAULT_CPU_MODEL", "DEFAULT_GPU_MODEL", "DEFAULT_SCHEDULER",
           "MEASUREMENT_FLAGS", "OFFLOAD_MODES", "Parser", "add_case_arguments", "add_measurement_arguments",
           "apply_preset", "case_kwargs", "default_model", "default_scheduler", "int_at_least", "integer", "knobs", "number",
           "positive_int", "progress_printer", "runner_config"]

#: The rows of the settings table behind the flags that describe what runs, in --help order.
CASE_FLAGS: tuple[str, ...] = (
    "cli.preset", "case.model", "case.scheduler", "case.steps", "case.prompt", "case.negative_prompt", "case.guidance_scale",
    "case.seed", "case.batch_size", "case.height", "case.width", "case.dtype", "case.profile", "cli.knob",
    "cli.compile_mode", "cli.channels_last", "cli.vae_slicing", "cli.vae_tiling", "case.attention", "case.offload",
    "cli.enable_cpu_offload", "case.weights", "case.strength")
#: The rows behind the flags that say how a case is measured (also the suites' --sd-* measurement options).
MEASUREMENT_FLAGS: tuple[str, ...] = settings.MEASUREMENT_KEYS


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line (no usage dump for a bad value)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def int_at_least(field: str, minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `minimum`, or one clear error naming the field."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {field}: {text!r}; allowed: a whole number >= {minimum}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"invalid {field}: {value}; allowed: a whole number >= {minimum}")
        return value
    return parse


def positive_int(field: str) -> Callable[[str], int]:
    """An argparse type: a whole number >= 1."""
    return int_at_least(field, 1)


def number(field: str, minimum: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number (>= `minimum` when given)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {field}: {text!r}; allowed: a number") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise argparse.ArgumentTypeError(f"invalid {field}: {text}; allowed: a finite number >= {minimum}")
        return value
    return parse


def integer(field: str) -> Callable[[str], int]:
    """An argparse type: any whole number."""
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {field}: {text!r}; allowed: a whole number") from None
    return parse


def add_case_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that describe what runs and how it is measured (shared by generate, quality, sweep and batch),
    generated from the settings table: each flag's check, default and help are its row's."""
    settings.add_arguments(p.add_argument_group("what runs"), CASE_FLAGS)
    d = p.add_argument_group("where and how it is measured")
    settings.add_arguments(d, ("case.device",))
    add_measurement_arguments(d)


def add_measurement_arguments(group: Any, keys: Sequence[str] = MEASUREMENT_FLAGS) -> None:
    """The measurement flags (`--max-time`, ...): RunnerConfig fields, unset meaning the device's default."""
    settings.add_arguments(group, keys)


def runner_config(args: argparse.Namespace, device: str) -> Any:
    """The RunnerConfig the measurement flags ask for on `device` (GPU defaults on CUDA, CPU defaults elsewhere).

    Each flag's value was checked by its row when parsed; the RunnerConfig checks the fields together
    (min_rounds <= max_rounds) and raises ConfigError naming the field."""
    from sdbench.runner import RunnerConfig

    return RunnerConfig.for_device(device, **runner_overrides(args))


def runner_overrides(args: Any, keys: Sequence[str] = MEASUREMENT_FLAGS) -> dict[str, Any]:
    """The RunnerConfig fields the measurement flags in `args` set (unset flags are left out)."""
    over: dict[str, Any] = {}
    for key in keys:
        row = settings.get(key)
        value = getattr(args, row.attr, None)
        if value is not None:
            over[row.name] = value
    return over


def default_model(device: str) -> str:
    """The model run when no --model-variant is given: the seed's SD v1.4 on a GPU, tiny-sd elsewhere."""
    return DEFAULT_GPU_MODEL if device.startswith("cuda") else DEFAULT_CPU_MODEL


def default_scheduler(args: argparse.Namespace) -> str | None:
    """--scheduler, else the seed's optimized scheduler when no model was named either, else None (the model's own)."""
    if args.scheduler is not None:
        return str(args.scheduler)
    return DEFAULT_SCHEDULER if getattr(args, "model", None) is None else None


def apply_preset(args: argparse.Namespace) -> str | None:
    """Fill the case flags left unset from ``--preset`` (explicit flags win); returns the note to print, or None.

    Called once after parsing, before any command reads its case flags; a preset's tag is carried in
    ``args.preset_tags`` for :func:`case_kwargs`."""
    name = getattr(args, "preset", None)
    args.preset_tags = ()
    if not name:
        return None
    from sdbench.spec.presets import get_preset, preset_note

    preset = get_preset(name)
    if getattr(args, "benchmark", False):
        raise ConfigError("preset", name, "generate without --benchmark, batch, sweep, quality",
                          reason="a pytest suite runs its own matrix of prompts and guidance, which a preset would not reach")
    for attr, value in preset.fields.items():  # a preset's fields are the Case's names, as the flags' attributes
        if getattr(args, attr, None) is None:
            setattr(args, attr, value)
    args.preset_tags = (preset.tag(),)
    return preset_note(preset)


def case_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The Case keyword arguments of the case flags (None keeps the model's default).

    With neither --model-variant nor --scheduler the seed's default runs: the default model with
    DEFAULT_SCHEDULER. A named model without --scheduler keeps the scheduler it ships with.
    """
    offload = "model" if args.enable_cpu_offload and args.offload == "none" else args.offload
    return dict(
        scheduler=default_scheduler(args), steps=args.steps, prompt=args.prompt, negative_prompt=args.negative_prompt,
        guidance_scale=args.guidance_scale, seed=args.seed, batch_size=args.batch_size, height=args.height,
        width=args.width, dtype=args.dtype, profile=args.profile, knobs=knobs(args), attention=args.attention, offload=offload,
        weights=args.weights, strength=args.strength, **_preset_tags(args),
    )


def _preset_tags(args: argparse.Namespace) -> dict[str, Any]:
    tags = tuple(getattr(args, "preset_tags", ()) or ())
    return {"tags": tags} if tags else {}


def knobs(args: argparse.Namespace) -> str:
    """--knob NAME=VALUE and the convenience flags, as one knob string."""
    items = list(args.knob)
    if args.compile_mode:
        items.append(f"compile_unet={args.compile_mode}")
    for flag, name in ((args.channels_last, "channels_last"), (args.vae_slicing, "vae_slicing"), (args.vae_tiling, "vae_tiling")):
        if flag:
            items.append(f"{name}=on")
    return ",".join(items)


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """A progress callback: `  .. message` lines on stderr, or nothing when `quiet`."""
    def say(msg: str) -> None:
        if not quiet:
            print(f"  .. {msg}", file=sys.stderr, flush=True)
    return say
