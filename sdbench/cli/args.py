"""Argument helpers shared by the commands: argparse types that name the field, the case flags, and the
translation of parsed flags into a Case's keyword arguments and a RunnerConfig.

Imported by `sdbench --help`: nothing here imports torch, diffusers, numpy or scipy at module level.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from sdbench.errors import ConfigError

# Copies of sdbench.case.ATTENTION_BACKENDS and OFFLOAD_MODES: sdbench.case imports torch (through
# sdbench.pipelines and sdbench.weights), and the help must not. tests/test_cli_help.py checks they match.
ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "flash", "efficient", "math", "cudnn", "sliced", "xformers")
OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "sequential")

DEFAULT_GPU_MODEL = "sd-v1.4"  # the seed's default: "Default SD v1.4 with optimized scheduler"
DEFAULT_CPU_MODEL = "tiny-sd"  # the embedded default: the tiny SD 1.x family, seconds on a CPU
# The seed's "optimized scheduler": DPM-Solver++ multistep (2nd order), which reaches the quality of
# the shipped PNDM/DDIM at 20-25 steps instead of 50. Used when neither a model nor a scheduler is given.
DEFAULT_SCHEDULER = "dpm++"


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
    """The flags that describe what runs (shared by generate, quality, sweep and batch)."""
    g = p.add_argument_group("what runs")
    g.add_argument("--model-variant", "--model", dest="model", default=None, metavar="NAME",
                   help=f"model variant (see --list-models); default: {DEFAULT_GPU_MODEL} on a GPU, "
                        f"{DEFAULT_CPU_MODEL} (the tiny SD 1.x model) without one")
    g.add_argument("--scheduler", default=None, metavar="KEY",
                   help="sampler (see --list-schedulers); default: the model's own, or "
                        f"{DEFAULT_SCHEDULER} (DPM++ multistep, the seed's 'optimized' scheduler) when no "
                        "--model-variant is given either")
    g.add_argument("--steps", type=positive_int("steps"), default=None, help="denoising steps (default: the model's)")
    g.add_argument("--prompt", default=None, help="text prompt")
    g.add_argument("--negative-prompt", default=None, help="negative prompt (only with CFG)")
    g.add_argument("--guidance-scale", type=number("guidance_scale", 0.0), default=None,
                   help="CFG scale; 0 or 1 disables CFG (default: the model's, 0 for turbo/lightning)")
    g.add_argument("--seed", type=integer("seed"), default=0, help="random seed (default 0)")
    g.add_argument("--batch-size", type=positive_int("batch_size"), default=1, help="images per pipeline call")
    g.add_argument("--height", type=integer("height"), default=None, help="image height in pixels, multiple of 8")
    g.add_argument("--width", type=integer("width"), default=None, help="image width in pixels, multiple of 8")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None,
                   help="weights and activations (default: fp16 on a GPU, fp32 on the CPU)")
    g.add_argument("--profile", default="eager",
                   help="optimisation profile: eager, channels-last, compile, reduce-overhead, max, fp8 (see docs/optimisation.md)")
    g.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                   help="override one knob of the profile (repeatable): channels_last, fuse_qkv, compile_unet, compile_vae, "
                        "compile_text, fullgraph, vae_upcast, vae_slicing, vae_tiling, inductor_tuning, cudnn_benchmark, fp8_unet, fp8_rowwise")
    g.add_argument("--compile-mode", default=None, metavar="MODE",
                   help="torch.compile the UNet in this mode (default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs, none)")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format for UNet and VAE")
    g.add_argument("--vae-slicing", action="store_true", help="decode the batch one image at a time")
    g.add_argument("--vae-tiling", action="store_true", help="decode in tiles (large images in less memory)")
    g.add_argument("--attention", choices=list(ATTENTION_BACKENDS), default="sdpa", help="attention backend")
    g.add_argument("--offload", choices=list(OFFLOAD_MODES), default="none", help="CPU offload of model weights")
    g.add_argument("--enable-cpu-offload", action="store_true", help="same as --offload model")
    g.add_argument("--weights", default="auto",
                   help="auto (real weights from the HF cache if present, else synthetic), synthetic, hub, local:PATH")
    g.add_argument("--strength", type=number("strength", 0.0), default=None, help="img2img strength (sdxl-refiner)")
    d = p.add_argument_group("where and how it is measured")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or simulated (CPU compute, simulated GPU energy)")
    d.add_argument("--energy", choices=["auto", "counter", "timeline", "rapl", "none"], default="auto",
                   help="energy source (auto: NVML counter, else power timeline, else none)")
    d.add_argument("--warmup", type=integer("warmup"), default=None, help="warm-up calls (at least 1)")
    d.add_argument("--min-rounds", type=positive_int("min_rounds"), default=None, help="fewest measured rounds")
    d.add_argument("--max-rounds", type=positive_int("max_rounds"), default=None, help="most measured rounds")
    d.add_argument("--max-time", type=number("max_time", 0.0), default=None, help="time cap for one case's measured rounds, s (default 30 on a GPU; a multi-case study "
                        "shares 60 s among its cases, at least 4 s each)")
    d.add_argument("--target-ci", type=number("target_ci", 0.0), default=None,
                   help="stop when the 95%% CI half-width is within this fraction (default 0.02)")
    d.add_argument("--idle-seconds", type=number("idle_seconds", 0.0), default=None, help="idle-power baseline length, s")


def runner_config(args: argparse.Namespace, device: str) -> Any:
    """The RunnerConfig the measurement flags ask for on `device` (GPU defaults on CUDA, CPU defaults elsewhere)."""
    from sdbench.runner import RunnerConfig

    over: dict[str, Any] = {"energy": args.energy}
    for attr, key in (("warmup", "warmup_calls"), ("min_rounds", "min_rounds"), ("max_rounds", "max_rounds"),
                      ("max_time", "max_time_s"), ("target_ci", "target_rel_ci"), ("idle_seconds", "idle_s")):
        value = getattr(args, attr, None)
        if value is not None:
            over[key] = value
    if over.get("min_rounds") and over.get("max_rounds") and over["min_rounds"] > over["max_rounds"]:
        raise ConfigError("min_rounds", over["min_rounds"], f"<= max_rounds ({over['max_rounds']})")
    if "warmup_calls" in over and over["warmup_calls"] < 1:
        raise ConfigError("warmup", over["warmup_calls"], "a whole number >= 1")
    return RunnerConfig.for_device(device, **over)


def default_model(device: str) -> str:
    """The model run when no --model-variant is given: the seed's SD v1.4 on a GPU, tiny-sd elsewhere."""
    return DEFAULT_GPU_MODEL if device.startswith("cuda") else DEFAULT_CPU_MODEL


def default_scheduler(args: argparse.Namespace) -> str | None:
    """--scheduler, else the seed's optimized scheduler when no model was named either, else None (the model's own)."""
    if args.scheduler is not None:
        return str(args.scheduler)
    return DEFAULT_SCHEDULER if getattr(args, "model", None) is None else None


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
        weights=args.weights, strength=args.strength,
    )


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
