"""A/B test of the harness's cost on a real GPU: which instrument, if any, slows a pipeline call.

Variants run interleaved (ABCDE ABCDE ...) on one warm pipeline, so drift and noise hit all alike:
  plain       a bare diffusers call, synchronised, perf_counter
  timeline    the same, with the NVML power timeline sampling in its thread (100 Hz)
  telemetry   the same, with the telemetry sampler in its thread (20 Hz)
  marks       the same, with sdbench's per-step callback and phase hooks recording CUDA events
  runner_nomarks  one Runner measurement (warm-up, pre-roll, one window) with per-step/phase marks off
  runner      the same with everything on: counter, timeline, telemetry, marks
Each repetition's times are divided by that repetition's plain time, so the reported overheads are
paired ratios with a 95 % CI. `--profile reduce-overhead` compiles the UNet under CUDA graphs, whose
calls are steady enough (+-0.4 %) to resolve a 1 % overhead; eager batch-1 calls vary by +-20 %.
Also times single NVML queries. Writes JSON to --out and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch

from sdbench.measure.energy import PowerTimelineMeter
from sdbench.measure.telemetry import TelemetrySampler
from sdbench.runner import RunnerConfig
from sdbench.session import Bench
from sdbench.stats import summarize


def nvml_latency_us(gpu, calls: int = 300) -> dict[str, float]:
    out = {}
    for name in ("power_instant_w", "total_energy_mj", "sm_clock_mhz", "clock_event_reasons", "temperature_c",
                 "utilization_pct", "memory_used_bytes"):
        fn = getattr(gpu, name)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out[name] = (time.perf_counter() - t0) / calls * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sdxl")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--profile", default="eager")
    ap.add_argument("--knobs", default="")
    ap.add_argument("--variants", default="plain,timeline,telemetry,marks,runner_nomarks,runner",
                    help="which variants to interleave (plain is always included)")
    ap.add_argument("--out", default="overhead_ab.json")
    args = ap.parse_args()
    cfg = RunnerConfig(min_rounds=1, max_rounds=1, idle_s=0.0, warmup_min_s=0.0, warmup_calls=1)
    cfg_nomarks = RunnerConfig(min_rounds=1, max_rounds=1, idle_s=0.0, warmup_min_s=0.0, warmup_calls=1,
                               per_step=False, per_phase=False)
    bench = Bench("cuda:0", runner_config=cfg)
    case = bench.case(args.model, steps=args.steps, scheduler="euler", weights="synthetic", batch_size=args.batch,
                      profile=args.profile, knobs=args.knobs)
    built, applied = bench.pipeline(case)
    pipe = built.pipe
    runner = bench.runner
    lat = nvml_latency_us(bench.gpu)
    kwargs = dict(prompt=[case.prompt] * case.batch_size, num_inference_steps=case.steps, guidance_scale=case.guidance_scale,
                  height=case.height, width=case.width, output_type="pt")

    def plain() -> float:
        g = torch.Generator("cuda").manual_seed(0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode(), applied.call_context():
            pipe(generator=g, **kwargs)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def sampling(make_sampler):
        """A plain call with a sampler thread running beside it."""
        def run() -> float:
            sampler = make_sampler()
            sampler.start()
            try:
                return plain()
            finally:
                sampler.stop()
        return run

    with_timeline = sampling(lambda: PowerTimelineMeter(bench.gpu, rate_hz=100))
    with_telemetry = sampling(lambda: TelemetrySampler(bench.gpu, rate_hz=20))

    from sdbench.runner import CallEvents, Marks

    events = CallEvents()  # the Runner's own mark sink: phase hooks and the step callback emit into it

    def on_step(_p, _i, _t, _k):
        events.emit("step")
        return {}

    def with_marks() -> float:
        g = torch.Generator("cuda").manual_seed(0)
        torch.cuda.synchronize()
        origin = torch.cuda.Event(enable_timing=True)
        origin.record()
        events.marks = Marks(True, origin)
        t0 = time.perf_counter()
        with runner._phase_hooks(pipe, events), torch.inference_mode(), applied.call_context():
            pipe(generator=g, callback_on_step_end=on_step, **kwargs)
        torch.cuda.synchronize()
        events.marks = None
        return time.perf_counter() - t0

    def runner_with(config: RunnerConfig):
        def measure() -> float:
            runner.config = config
            return bench.measure(case)["time_per_call_s"]
        return measure

    every = {"plain": plain, "timeline": with_timeline, "telemetry": with_telemetry, "marks": with_marks,
             "runner_nomarks": runner_with(cfg_nomarks), "runner": runner_with(cfg)}
    wanted = {"plain", *args.variants.split(",")}
    variants = {k: fn for k, fn in every.items() if k in wanted}
    t_warm = time.perf_counter()
    for fn in variants.values():  # warm every path once (compiles a compiled profile)
        fn()
    print(f"warm-up of every variant: {time.perf_counter() - t_warm:.1f} s", flush=True)
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for rep in range(args.reps):
        print(f"rep {rep + 1}/{args.reps}", flush=True)
        # Rotate the order each repetition: whichever variant runs first after the gc pause meets a
        # GPU whose clocks dropped while idle, so a fixed order biases the first variant.
        gc.collect()
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            times[name].append(variants[name]())
        print(json.dumps({k: round(v[-1], 5) for k, v in times.items()}), flush=True)
    base = statistics.median(times["plain"])
    summary = {}
    for k, v in times.items():
        ratios = [t / p - 1 for t, p in zip(v, times["plain"])]
        st = summarize(ratios) if len(ratios) > 1 else None
        summary[k] = {"median_s": statistics.median(v), "rel_to_plain": statistics.median(v) / base - 1,
                      "paired_rel_mean": st.mean if st else None,
                      "paired_rel_ci95": [st.ci95_low, st.ci95_high] if st else None,
                      "cv": statistics.pstdev(v) / statistics.mean(v), "min_s": min(v), "max_s": max(v)}
    print(json.dumps({"nvml_latency_us": lat}), flush=True)
    print(f"{args.model} {args.profile} b{args.batch} {args.steps} steps, {args.reps} reps", flush=True)
    for k, v in summary.items():
        ci = v["paired_rel_ci95"]
        ci_txt = f"paired {100 * v['paired_rel_mean']:+.2f}% [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""
        print(f"{k:15s} median {v['median_s']:.4f} s ({100 * v['rel_to_plain']:+.2f}% vs plain) {ci_txt}  "
              f"CV {100 * v['cv']:.2f}%  min {v['min_s']:.4f}  max {v['max_s']:.4f}", flush=True)
    with open(args.out, "w") as fh:
        json.dump({"model": args.model, "steps": args.steps, "batch": args.batch, "profile": args.profile,
                   "knobs": args.knobs, "gpu": torch.cuda.get_device_name(0),
                   "nvml_latency_us": lat, "times_s": times, "summary": summary}, fh, indent=1)
    bench.close()


if __name__ == "__main__":
    main()
