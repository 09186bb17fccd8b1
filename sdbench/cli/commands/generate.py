"""`sdbench generate` (the default command): measure one configuration, save its images, print a summary."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdbench import settings
from sdbench.cli.args import (
    DEFAULT_CPU_MODEL,
    DEFAULT_GPU_MODEL,
    DEFAULT_SCHEDULER,
    add_case_arguments,
    case_kwargs,
    default_model,
    default_scheduler,
    progress_printer,
    runner_config,
)
from sdbench.errors import ConfigError
from sdbench.output.tables import (
    DEFAULT_TARGET_REL_CI,
    TABLE_WIDTH,
    CaseClock,
    duration,
    legend,
    results_table,
)
from sdbench.settings import SUITES

DEFAULT_SUITE = "speed"  # sdbench.distribute.suite.DEFAULT_SUITE (tests/unit/test_settings.py checks they match)


def register(sub: Any) -> None:
    """Add `sdbench generate` to the CLI's subparsers."""
    p = sub.add_parser("generate", help="measure one configuration and save its images (the default command)",
                       description="Build the pipeline, measure it with synchronised timing and energy, save images "
                                   "with their configuration, print a summary. With no flags the seed's default runs: "
                                   f"{DEFAULT_GPU_MODEL} with the {DEFAULT_SCHEDULER} scheduler (DPM++ multistep, the "
                                   f"seed's 'optimized' scheduler) on a GPU; without a GPU {DEFAULT_CPU_MODEL}, the tiny "
                                   "SD 1.x model, with the same scheduler (and a line saying so).")
    add_case_arguments(p)
    o = p.add_argument_group("output")
    settings.add_arguments(o, ("output.num_images",))
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
    s.add_argument("--benchmark", action="store_true",
                   help=f"run one pytest-benchmark suite for this model (--benchmark-type; default: {DEFAULT_SUITE})")
    s.add_argument("--benchmark-type", choices=list(SUITES), default=None,
                   help=f"which suite --benchmark runs (default {DEFAULT_SUITE}; `sdbench bench` runs them all)")
    p.set_defaults(func=run)


def _study_cases(args: argparse.Namespace, bench: Any, model: str) -> list[Any]:
    from sdbench.spec.schedulers import SCHEDULERS

    base = case_kwargs(args)
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
        from sdbench.errors import SdbenchError
        from sdbench.spec.schedulers import check_available, get_scheduler_spec

        if args.schedulers:
            keys = args.schedulers.split(",")
            for key in keys:  # a named scheduler that cannot run is an error before anything runs
                check_available(get_scheduler_spec(key))
        else:
            keys = []
            for key, spec in SCHEDULERS.items():
                try:
                    check_available(spec)
                except SdbenchError as exc:  # every scheduler: those that cannot run here are left out, said so
                    print(f"sdbench: note: {exc}; left out of the comparison", file=sys.stderr, flush=True)
                    continue
                keys.append(key)
        for key in keys:
            cases.append(bench.case(model, **{**base, "scheduler": key}))
    else:
        cases.append(bench.case(model, **base))
    return cases


def save_images(bench: Any, case: Any, num_images: int, out_dir: Path, record: dict[str, Any]) -> list[Path]:
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


def summary_table(records: Sequence[dict[str, Any]], target_rel_ci: float = DEFAULT_TARGET_REL_CI) -> str:
    """The closing table every sdbench run ends with (:func:`sdbench.output.tables.results_table`, at most 120
    columns): one line per case, images/s, s/image and J/image with their intervals, the stop reason, the
    high-noise and host-bound marks, and its legend; then the scheduler class each asked scheduler ran as (a
    key such as ``dpm++-sde`` is a setting of another class). The rest of each record (net energy, peak
    memory, rounds) is in the metrics JSON."""
    import textwrap

    ran = {str(r.get("scheduler")): str(r.get("scheduler_class")) for r in records if r.get("scheduler_class")}
    lines = [*results_table(records, target_rel_ci), *legend(target_rel_ci, records)]
    if ran:
        text = "scheduler ran as: " + ", ".join(f"{key} = {cls}" for key, cls in ran.items())
        lines += textwrap.wrap(text, width=TABLE_WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    return "\n".join(lines)


def _case_progress(say: Any, clock: CaseClock, case_id: str) -> Any:
    """The progress callback of one case: `case 2/5 <id>: <message> | ETA 1 min 10 s` in a study of several
    cases (the ETA from the cases done so far), `<id>: <message>` for a single case."""
    clock.start()

    def step(message: str) -> None:
        if clock.total <= 1:
            say(f"{case_id}: {message}")
            return
        eta = clock.eta_text()
        say(f"{clock.label()} {case_id}: {message}" + (f" | {eta}" if eta else ""))

    return step


def _check_study_flags(args: argparse.Namespace) -> None:
    if args.benchmark_type:
        raise ConfigError("benchmark_type", args.benchmark_type, "only together with --benchmark")
    if args.multi_resolution and args.scheduler_comparison:
        raise ConfigError("multi_resolution", True, "one study at a time", reason="--scheduler-comparison was also given")
    if args.resolutions and not args.multi_resolution:
        raise ConfigError("resolutions", args.resolutions, "only together with --multi-resolution")
    if args.schedulers and not args.scheduler_comparison:
        raise ConfigError("schedulers", args.schedulers, "only together with --scheduler-comparison")


def substitution_note(requested_device: str) -> str:
    """The line printed when no model was named and the device is no GPU: the tiny model runs instead."""
    why = "no GPU is present" if requested_device == "auto" else f"--device {requested_device} is not a GPU"
    return (f"sdbench: {why}: running {DEFAULT_CPU_MODEL} (the tiny SD 1.x model, the embedded default) instead of "
            f"{DEFAULT_GPU_MODEL}; name a model with --model-variant")


#: Measured-round seconds a multi-case study (--scheduler-comparison, --multi-resolution) shares out, unless
#: --max-time sets each case's own; no case gets less than STUDY_MIN_CASE_S.
STUDY_BUDGET_S = 60.0
STUDY_MIN_CASE_S = 4.0


def _save_partial(records: list[dict[str, Any]], planned: int, meta: dict[str, Any], bench: Any,
                  args: argparse.Namespace, out_dir: Path, why: str) -> None:
    """A study stopped by an error or Ctrl-C: the cases measured so far are written, marked incomplete."""
    if not records:
        return
    from sdbench.record.io import export_metrics

    doc = {**meta, "environment": bench.environment, "status": f"incomplete: {len(records)} of {planned} cases ({why})"}
    targets = [Path(args.export_metrics)] if args.export_metrics else []
    if not args.no_save_images or not targets:
        targets.append(out_dir / "metrics.json")
    for path in targets:
        export_metrics(records, path, doc)
        print(f"sdbench: {len(records)} of {planned} cases measured before the stop were kept in {path}",
              file=sys.stderr, flush=True)


def _run_suite(args: argparse.Namespace, *, model: str, scheduler: str | None, notes: tuple[str, ...] = ()) -> int:
    """`--benchmark [--benchmark-type X]`: one suite for `model`, the generate flags as its matrix (see
    `sdbench.distribute.suite.run_suite_from_generate`); `scheduler` None keeps each suite's own scheduler axis."""
    from sdbench.distribute.suite import run_suite_from_generate

    res = None
    if args.height or args.width:
        if args.height != args.width:
            raise ConfigError("height", args.height, f"equal to --width ({args.width}) with --benchmark",
                              reason="the suite's resolution axis is square")
        res = str(args.height)
    axes = {"models": model, "schedulers": scheduler, "resolutions": res,
            "batch_sizes": str(args.batch_size) if args.batch_size != 1 else None,
            "steps": str(args.steps) if args.steps else None, "dtypes": args.dtype,
            "profiles": args.profile if args.profile != "eager" else None,
            "weights": args.weights if args.weights != "auto" else None}
    measurement = {key: getattr(args, settings.get(key).attr, None) for key in settings.MEASUREMENT_KEYS}
    return run_suite_from_generate(args.benchmark_type, model=model, device=args.device, axes=axes,
                                   num_images=args.num_images, output_dir=args.output_dir,
                                   export=args.export_metrics, measurement=measurement, notes=notes)


def run(args: argparse.Namespace) -> int:
    """Measure the case (or the study's cases), save images and metrics, print the summary table."""
    if args.list_models:
        from sdbench.cli.commands.models import list_models

        print(list_models())
        return 0
    if args.list_schedulers:
        from sdbench.cli.commands.schedulers import list_schedulers

        print(list_schedulers())
        return 0
    if not args.benchmark:
        _check_study_flags(args)
    from sdbench.case import resolve_device

    device = resolve_device(args.device)
    model = args.model or default_model(device)
    notes = (substitution_note(args.device),) if args.model is None and not device.startswith("cuda") else ()
    if args.benchmark:
        # The seed's default scheduler goes with the default model, except where schedulers are the axis.
        scheduler = default_scheduler(args) if args.benchmark_type != "scheduler_comparison" else args.scheduler
        return _run_suite(args, model=model, scheduler=scheduler, notes=notes)
    from sdbench.cli.failures import out_of_memory
    from sdbench.errors import is_out_of_memory
    from sdbench.record.io import ensure_writable, export_metrics
    from sdbench.session import Bench

    config = runner_config(args, device)
    bench = Bench(device=device, runner_config=config, gpu="open")
    say = progress_printer(args.quiet)
    try:
        cases = _study_cases(args, bench, model)
        if len(cases) > 1 and args.max_time is None:
            # A study shares one time budget: each case's rounds get their part (its record says the
            # precision reached and why it stopped), so the whole study finishes in minutes.
            bench.runner.config.max_time_s = max(STUDY_MIN_CASE_S, STUDY_BUDGET_S / len(cases))
        for note in notes:  # once the cases are valid: a bad flag stays one line
            print(note, file=sys.stderr, flush=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = Path(args.output_dir or Path("sdbench-output") / f"{stamp}-{model}")
        if args.export_metrics:
            ensure_writable(args.export_metrics, "--export-metrics")  # before anything is measured
        records = []
        clock = CaseClock(len(cases))
        meta = {"command": "generate", "argv": list(args.argv), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "cases_planned": len(cases)}
        for case in cases:
            step = _case_progress(say, clock, case.case_id)
            try:
                step("building pipeline")
                rec = bench.measure(case, progress=step)
                if not args.no_save_images:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    rec["images_saved"] = [str(p) for p in save_images(bench, case, args.num_images, out_dir, rec)]
            except BaseException as exc:
                # Keep what the study measured before this case failed or was interrupted.
                _save_partial(records, len(cases), meta, bench, args, out_dir, f"{type(exc).__name__} in {case.case_id}")
                if not isinstance(exc, Exception) or not is_out_of_memory(exc):
                    raise
                # One line instead of torch's traceback, with what the user can change.
                raise out_of_memory(case.case_id, case.batch_size, case.compute_device, exc) from None
            records.append(rec)
            took = clock.finish()
            if len(cases) > 1:
                step(f"done in {duration(took)}")
        print(summary_table(records, bench.runner.config.target_rel_ci))
        meta["environment"] = bench.environment
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
