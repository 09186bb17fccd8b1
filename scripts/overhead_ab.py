"""A/B test of the harness's cost on a real GPU: which instrument, if any, slows a pipeline call.

Variants run interleaved (ABCDE ABCDE ...) on one warm pipeline, so drift and noise hit all alike:
  plain       a bare diffusers call, synchronised, perf_counter
  timeline    the same, with the NVML power timeline sampling in its thread (100 Hz)
  telemetry   the same, with the telemetry sampler in its thread (20 Hz)
  marks       the same, with sdbench's per-step callback and phase hooks recording CUDA events
  runner      one Runner window per call (everything on: counter, timeline, telemetry, marks)
Also times single NVML queries. Writes JSON to --out and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch

from sdbench.bench import Bench
from sdbench.measure.energy import PowerTimelineMeter
from sdbench.measure.telemetry import TelemetrySampler
from sdbench.runner import RunnerConfig


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
    ap.add_argument("--out", default="overhead_ab.json")
    args = ap.parse_args()
    cfg = RunnerConfig(min_rounds=1, max_rounds=1, idle_s=0.0, warmup_min_s=0.0, warmup_calls=1)
    bench = Bench("cuda:0", runner_config=cfg)
    case = bench.case(args.model, steps=args.steps, scheduler="euler", weights="synthetic", batch_size=args.batch)
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
        pipe(generator=g, **kwargs)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def with_timeline() -> float:
        m = PowerTimelineMeter(bench.gpu, rate_hz=100)
        m.start()
        try:
            return plain()
        finally:
            m.stop()

    def with_telemetry() -> float:
        s = TelemetrySampler(bench.gpu, rate_hz=20)
        s.start()
        try:
            return plain()
        finally:
            s.stop()

    marks_box = [None]
    from sdbench.runner import Marks

    def on_step(_p, _i, _t, _k):
        m = marks_box[0]
        if m is not None:
            m.mark("step")
        return {}

    def with_marks() -> float:
        g = torch.Generator("cuda").manual_seed(0)
        torch.cuda.synchronize()
        origin = torch.cuda.Event(enable_timing=True)
        origin.record()
        marks_box[0] = Marks(True, origin)
        t0 = time.perf_counter()
        with runner._phase_hooks(pipe, marks_box):
            pipe(generator=g, callback_on_step_end=on_step, **kwargs)
        torch.cuda.synchronize()
        marks_box[0] = None
        return time.perf_counter() - t0

    def runner_window() -> float:
        rec = bench.measure(case)
        return rec["time_per_call_s"]

    variants = {"plain": plain, "timeline": with_timeline, "telemetry": with_telemetry, "marks": with_marks,
                "runner": runner_window}
    for fn in variants.values():  # warm every path once
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for rep in range(args.reps):
        # Rotate the order each repetition: whichever variant runs first after the gc pause meets a
        # GPU whose clocks dropped while idle, so a fixed order biases the first variant.
        gc.collect()
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            times[name].append(variants[name]())
    base = statistics.median(times["plain"])
    summary = {k: {"median_s": statistics.median(v), "rel_to_plain": statistics.median(v) / base - 1,
                   "min_s": min(v), "max_s": max(v)} for k, v in times.items()}
    print(json.dumps({"nvml_latency_us": lat}), flush=True)
    for k, v in summary.items():
        print(f"{k:10s} median {v['median_s']:.4f} s  ({100 * v['rel_to_plain']:+.2f}% vs plain)  "
              f"min {v['min_s']:.4f}  max {v['max_s']:.4f}", flush=True)
    with open(args.out, "w") as fh:
        json.dump({"model": args.model, "steps": args.steps, "batch": args.batch, "gpu": torch.cuda.get_device_name(0),
                   "nvml_latency_us": lat, "times_s": times, "summary": summary}, fh, indent=1)
    bench.close()


if __name__ == "__main__":
    main()
