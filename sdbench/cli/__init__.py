"""The `sdbench` command line. `sdbench generate` (the default) measures one configuration and saves images.

Every flag has an effect; bad input gives one line naming the field, the value and what is allowed,
and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sdbench.errors import ConfigError, SdbenchError

BENCHMARK_TYPES = ("speed", "energy_research", "memory_stress", "quality_test", "artistic_styles",
                   "multi_resolution", "scheduler_comparison")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line (no usage dump for a bad value)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def _int_at_least(field: str, minimum: int) -> Callable[[str], int]:
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


def _positive_int(field: str) -> Callable[[str], int]:
    return _int_at_least(field, 1)


def _float(field: str, minimum: float | None = None) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {field}: {text!r}; allowed: a number") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise argparse.ArgumentTypeError(f"invalid {field}: {text}; allowed: a finite number >= {minimum}")
        return value
    return parse


def _int(field: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {field}: {text!r}; allowed: a whole number") from None
    return parse


def add_case_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that describe what runs (shared by generate, sweep and batch commands)."""
    from sdbench.case import ATTENTION_BACKENDS, OFFLOAD_MODES

    g = p.add_argument_group("what runs")
    g.add_argument("--model-variant", "--model", dest="model", default=None, metavar="NAME",
                   help="model variant (see --list-models); default: sdxl on a GPU, tiny-sd on the CPU")
    g.add_argument("--scheduler", default=None, metavar="KEY", help="sampler (see --list-schedulers); default: the model's own")
    g.add_argument("--steps", type=_positive_int("steps"), default=None, help="denoising steps (default: the model's)")
    g.add_argument("--prompt", default=None, help="text prompt")
    g.add_argument("--negative-prompt", default=None, help="negative prompt (only with CFG)")
    g.add_argument("--guidance-scale", type=_float("guidance_scale", 0.0), default=None,
                   help="CFG scale; 0 or 1 disables CFG (default: the model's, 0 for turbo/lightning)")
    g.add_argument("--seed", type=_int("seed"), default=0, help="random seed (default 0)")
    g.add_argument("--batch-size", type=_positive_int("batch_size"), default=1, help="images per pipeline call")
    g.add_argument("--height", type=_int("height"), default=None, help="image height in pixels, multiple of 8")
    g.add_argument("--width", type=_int("width"), default=None, help="image width in pixels, multiple of 8")
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
    g.add_argument("--strength", type=_float("strength", 0.0), default=None, help="img2img strength (sdxl-refiner)")
    d = p.add_argument_group("where and how it is measured")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or simulated (CPU compute, simulated GPU energy)")
    d.add_argument("--energy", choices=["auto", "counter", "timeline", "rapl", "none"], default="auto",
                   help="energy source (auto: NVML counter, else power timeline, else none)")
    d.add_argument("--warmup", type=_int("warmup"), default=None, help="warm-up calls (at least 1)")
    d.add_argument("--min-rounds", type=_positive_int("min_rounds"), default=None, help="fewest measured rounds")
    d.add_argument("--max-rounds", type=_positive_int("max_rounds"), default=None, help="most measured rounds")
    d.add_argument("--max-time", type=_float("max_time", 0.0), default=None, help="time cap for measured rounds, s")
    d.add_argument("--target-ci", type=_float("target_ci", 0.0), default=None,
                   help="stop when the 95%% CI half-width is within this fraction (default 0.02)")
    d.add_argument("--idle-seconds", type=_float("idle_seconds", 0.0), default=None, help="idle-power baseline length, s")


def _runner_config(args: argparse.Namespace, device: str) -> Any:
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
    return RunnerConfig(**over) if device.startswith("cuda") else RunnerConfig.for_cpu(**over)


def _default_model(device: str) -> str:
    return "sdxl" if device.startswith("cuda") else "tiny-sd"


def _case_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    offload = "model" if args.enable_cpu_offload and args.offload == "none" else args.offload
    return dict(
        scheduler=args.scheduler, steps=args.steps, prompt=args.prompt, negative_prompt=args.negative_prompt,
        guidance_scale=args.guidance_scale, seed=args.seed, batch_size=args.batch_size, height=args.height,
        width=args.width, dtype=args.dtype, profile=args.profile, knobs=_knobs(args), attention=args.attention, offload=offload,
        weights=args.weights, strength=args.strength,
    )


def _knobs(args: argparse.Namespace) -> str:
    """--knob NAME=VALUE and the convenience flags, as one knob string."""
    items = list(args.knob)
    if args.compile_mode:
        items.append(f"compile_unet={args.compile_mode}")
    for flag, name in ((args.channels_last, "channels_last"), (args.vae_slicing, "vae_slicing"), (args.vae_tiling, "vae_tiling")):
        if flag:
            items.append(f"{name}=on")
    return ",".join(items)


def _progress_printer(quiet: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not quiet:
            print(f"  .. {msg}", file=sys.stderr, flush=True)
    return say


# --- generate -----------------------------------------------------------------------------------
def build_generate_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="measure one configuration and save its images (the default command)",
                       description="Build the pipeline, measure it with synchronised timing and energy, save images "
                                   "with their configuration, print a summary.")
    add_case_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--num-images", type=_positive_int("num_images"), default=1, help="images to generate and save")
    o.add_argument("--output-dir", default=None, help="where images and metrics go (default sdbench-output/<time>-<model>)")
    o.add_argument("--no-save-images", action="store_true", help="measure only; write no PNGs")
    o.add_argument("--export-metrics", default=None, metavar="FILE", help="write the records as a JSON document")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    s = p.add_argument_group("studies and listings")
    s.add_argument("--list-models", action="store_true", help="list model variants and their defaults, then exit")
    s.add_argument("--list-schedulers", action="store_true", help="list schedulers, then exit")
    s.add_argument("--multi-resolution", action="store_true", help="measure the case at several resolutions")
    s.add_argument("--resolutions", default=None, help="comma-separated square sides for --multi-resolution")
    s.add_argument("--scheduler-comparison", action="store_true", help="measure the case with every scheduler (or --schedulers)")
    s.add_argument("--schedulers", default=None, help="comma-separated scheduler keys for --scheduler-comparison")
    s.add_argument("--benchmark", action="store_true", help="run the pytest-benchmark suite (see --benchmark-type)")
    s.add_argument("--benchmark-type", choices=list(BENCHMARK_TYPES), default=None, help="which suite --benchmark runs")
    p.set_defaults(func=cmd_generate)


def list_models() -> str:
    from tabulate import tabulate

    from sdbench.models import MODELS

    rows = [[s.key, s.family, f"{s.default_resolution}", s.default_steps if not s.allowed_steps else f"{s.default_steps} ({'/'.join(map(str, s.allowed_steps))})",
             s.default_guidance, s.default_scheduler, s.prediction_type, s.scheduler_config.get("timestep_spacing", "leading"),
             s.repo_id or "-"] for s in MODELS.values()]
    return tabulate(rows, headers=["model", "family", "res", "steps", "cfg", "scheduler", "prediction", "spacing", "hub repo"])


def list_schedulers() -> str:
    from tabulate import tabulate

    from sdbench.schedulers import SCHEDULERS

    rows = [[s.key, s.class_name, ", ".join(f"{k}={v}" for k, v in s.settings.items()) or "-", s.description]
            for s in SCHEDULERS.values()]
    return tabulate(rows, headers=["key", "diffusers class", "settings", "description"])


def _study_cases(args: argparse.Namespace, bench: Any, model: str) -> list[Any]:
    from sdbench.schedulers import SCHEDULERS

    base = _case_kwargs(args)
    cases = []
    if args.multi_resolution:
        spec_res = bench.case(model, **base).spec.default_resolution
        if args.resolutions:
            sides = []
            for item in args.resolutions.split(","):
                try:
                    sides.append(int(item))
                except ValueError:
                    raise ConfigError("resolutions", args.resolutions, "comma-separated whole numbers of pixels") from None
        else:
            sides = sorted({(spec_res // 2) // 8 * 8, spec_res, (spec_res * 3 // 2) // 8 * 8})
        for side in sides:
            cases.append(bench.case(model, **{**base, "height": side, "width": side}))
    elif args.scheduler_comparison:
        keys = args.schedulers.split(",") if args.schedulers else list(SCHEDULERS)
        for key in keys:
            cases.append(bench.case(model, **{**base, "scheduler": key}))
    else:
        cases.append(bench.case(model, **base))
    return cases


def _save_images(bench: Any, case: Any, num_images: int, out_dir: Path, record: dict[str, Any]) -> list[Path]:
    """Generate `num_images` images (seed, seed+1, ... per call) and save each with its configuration."""
    import torch
    from PIL import Image

    from sdbench.runner import pipeline_call_kwargs

    built, applied = bench.pipeline(case)
    pipe = built.pipe
    saved: list[Path] = []
    calls = math.ceil(num_images / case.batch_size)
    gen_device = "cpu" if case.compute_device == "cpu" else case.compute_device
    for c in range(calls):
        seed = case.seed + c
        g = torch.Generator(device=gen_device).manual_seed(seed)
        kwargs = pipeline_call_kwargs(case, gen_device)
        with torch.inference_mode(), applied.call_context():
            images = pipe(generator=g, **kwargs).images
        arr = (images.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
        for b in range(arr.shape[0]):
            idx = c * case.batch_size + b
            if idx >= num_images:
                break
            stem = out_dir / f"{case.case_id}-{idx:04d}"
            Image.fromarray(arr[b]).save(stem.with_suffix(".png"))
            config = {**case.features(), "image_index": idx, "call_seed": seed, "index_in_batch": b,
                      "scheduler_class": record.get("scheduler_class"), "weights_source": record.get("weights_source"),
                      "synthetic_weights_note": "synthetic weights: the image shows noise-like structure, not content"
                      if record.get("weights_source") == "synthetic" else None}
            stem.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
            saved.append(stem.with_suffix(".png"))
    return saved


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    from tabulate import tabulate

    rows = []
    for r in records:
        t_ci = r.get("time_per_image_s_ci95_halfwidth_rel")
        e = r.get("energy_per_image_j_median")
        energy = f"{e:.3g}" + (" (sim)" if r.get("energy_simulated") else "") if e is not None else "unavailable"
        peak = r.get("memory_peak_allocated_bytes")
        rows.append([r["case_id"], r.get("scheduler_class"), f"{r['time_per_image_s_median']:.4g}",
                     f"±{100 * t_ci:.1f}%" if t_ci is not None else "-", f"{r['images_per_s']:.3g}", energy,
                     f"{r['net_energy_per_image_j_median']:.3g}" if r.get("net_energy_per_image_j_median") is not None else "-",
                     f"{peak / 2**30:.2f}" if peak else "-", r.get("rounds"), r.get("stop_reason")])
    return tabulate(rows, headers=["case", "scheduler ran", "s/image", "95% CI", "images/s", "J/image", "net J/image",
                                   "peak GiB", "rounds", "stop"])


def cmd_generate(args: argparse.Namespace) -> int:
    if args.list_models:
        print(list_models())
        return 0
    if args.list_schedulers:
        print(list_schedulers())
        return 0
    if args.benchmark:
        from sdbench.suite import run_suite_from_generate

        return run_suite_from_generate(args)
    if args.benchmark_type:
        raise ConfigError("benchmark_type", args.benchmark_type, "only together with --benchmark")
    if args.multi_resolution and args.scheduler_comparison:
        raise ConfigError("multi_resolution", True, "one study at a time", reason="--scheduler-comparison was also given")
    if args.resolutions and not args.multi_resolution:
        raise ConfigError("resolutions", args.resolutions, "only together with --multi-resolution")
    if args.schedulers and not args.scheduler_comparison:
        raise ConfigError("schedulers", args.schedulers, "only together with --scheduler-comparison")
    from sdbench.bench import Bench
    from sdbench.case import resolve_device
    from sdbench.records import export_metrics

    device = resolve_device(args.device)
    model = args.model or _default_model(device)
    runner_config = _runner_config(args, device)
    bench = Bench(device=device, runner_config=runner_config, gpu="open")
    say = _progress_printer(args.quiet)
    try:
        cases = _study_cases(args, bench, model)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = Path(args.output_dir or Path("sdbench-output") / f"{stamp}-{model}")
        records = []
        for case in cases:
            say(f"{case.case_id}: building pipeline")
            rec = bench.measure(case, progress=say)
            if not args.no_save_images:
                out_dir.mkdir(parents=True, exist_ok=True)
                rec["images_saved"] = [str(p) for p in _save_images(bench, case, args.num_images, out_dir, rec)]
            records.append(rec)
        print(summary_table(records))
        meta = {"command": "generate", "argv": list(args.argv), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "environment": bench.environment}
        if not args.no_save_images:
            # The images' folder always gets the metrics too, so a run's output stands on its own.
            export_metrics(records, out_dir / "metrics.json", meta)
            print(f"images, their configurations and metrics.json: {out_dir}")
        if args.export_metrics:
            path = export_metrics(records, args.export_metrics, meta)
            print(f"metrics: {path}")
    finally:
        bench.close()
    return 0


def build_list_parsers(sub: Any) -> None:
    p = sub.add_parser("models", help="list model variants and their defaults")
    p.set_defaults(func=lambda _a: print(list_models()) or 0)
    p = sub.add_parser("schedulers", help="list schedulers")
    p.set_defaults(func=lambda _a: print(list_schedulers()) or 0)


COMMAND_BUILDERS: list[Callable[[Any], None]] = [build_generate_parser, build_list_parsers]


def _optional_builders() -> list[Callable[[Any], None]]:
    """Commands that live in their own modules register here (compare, sweep, report, slurm, ...)."""
    import importlib

    out = []
    for mod in ("sdbench.suite", "sdbench.compare", "sdbench.quality", "sdbench.plan", "sdbench.workers", "sdbench.batching", "sdbench.sweep", "sdbench.report", "sdbench.slurm"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        out.append(module.build_parser)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sdbench", description="GPU performance and energy benchmarks for Stable Diffusion inference.",
                     epilog="`sdbench COMMAND --help` describes each command; with no command, `generate` runs.")
    parser.add_argument("--version", action="version", version=f"sdbench {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for builder in COMMAND_BUILDERS + _optional_builders():
        builder(sub)
    return parser


def _version() -> str:
    from sdbench import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help", "--version")):
        argv = ["generate", *argv]
    args = parser.parse_args(argv)
    args.argv = list(argv)  # the words as given: commands that fan out to one process per GPU reuse them
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SdbenchError as exc:
        print(f"sdbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
