"""Where a profile's time goes on a GPU: warm-up per call, kernels by kind, and SDPA backends at the model's shapes.

1. Warm-up: each of the first calls timed on its own, with Dynamo's compile-time table, so a cached
   second process shows what the on-disk caches do not hold.
2. Kernels of one warm pipeline call (torch.profiler, CUDA graph replays included): time by kind
   (attention, GEMM, convolution, Triton-generated, other), GPU busy time against the call's wall time.
3. Host (`--host`): one warm call traced with CPU activity too: what the host was doing while the GPU sat
   idle (the innermost CPU op at each moment of every gap of 20 us or more, summed by name), every runtime
   call in which the host waits for the GPU (synchronise, blocking copy), host reads of tensor values
   (`.item()`, `bool()`) by Python call site, and the CPU ops by total time. The CPU trace slows the host side itself, so its gaps are an upper bound.
4. SDPA: the attention shapes one UNet step uses (recorded from an eager UNet forward), each timed with
   every backend torch has here, summed per UNet step; and which backend torch picks by default.

Usage: python scripts/unet_profile.py --model sdxl --profile max [--attention sdpa] [--knobs ...] --out DIR
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdbench.pipelines.build import set_scheduler
from sdbench.runner import RunnerConfig
from sdbench.session import Bench

KINDS = ("attention", "convolution", "gemm", "triton", "other")


def kernel_kind(name: str) -> str:
    n = name.lower()
    if any(s in n for s in ("fmha", "flash", "sdpa", "attention", "attn")):
        return "attention"
    if any(s in n for s in ("conv", "fprop", "implicit", "winograd", "dgrad")):
        return "convolution"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul", "scaled_mm")):
        return "gemm"
    if n.startswith("triton"):
        return "triton"
    return "other"


def timed(call: Callable[[], Any]) -> float:
    """One synchronised pipeline call (the Runner's own call function), in seconds."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        call()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def kernel_table(call: Callable[[], Any]) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    timed(call)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:  # CPU tracing would slow the host side
        wall = timed(call)
    by_kind: dict[str, float] = collections.defaultdict(float)
    by_name: dict[str, float] = collections.defaultdict(float)
    kernels = []
    for evt in prof.events():
        if evt.device_type != torch.autograd.DeviceType.CUDA or evt.device_time <= 0:
            continue
        if "memcpy" in evt.name.lower() or "memset" in evt.name.lower():
            kind = "other"
        else:
            kind = kernel_kind(evt.name)
        by_kind[kind] += evt.device_time / 1e3  # us -> ms
        by_name[evt.name] += evt.device_time / 1e3
        kernels.append((evt.time_range.start, evt.time_range.end, evt.name))
    kernels.sort()
    gaps = gap_table(kernels)
    span_us = max(e for _, e, _ in kernels) - kernels[0][0] if kernels else 0.0
    busy_ms = span_us / 1e3 - sum(ms for _, ms in gaps["histogram_count_ms"].values())
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:25]
    return {"call_wall_ms": wall * 1e3, "gpu_busy_ms": busy_ms, "kernel_ms_by_kind": dict(by_kind),
            "kernel_ms_total": sum(by_kind.values()), "top_kernels_ms": [[n[:140], round(t, 3)] for n, t in top],
            "gaps": gaps}


def is_sync(name: str) -> bool:
    """A CUDA runtime call in which the host waits for the GPU: a stream, device or event synchronise, or a
    plain (blocking) cudaMemcpy. A host read of a tensor value waits in one of these when the tensor is on
    the GPU; :func:`sync_sites` says where such reads come from."""
    return "Synchronize" in name or name == "cudaMemcpy"


def idle_spans(kernels: list[tuple[float, float, str]]) -> Iterator[tuple[float, float, str, str]]:
    """GPU-idle intervals between the (start-sorted) kernels: (start, end, kernel before, kernel after)."""
    if not kernels:
        return
    end, prev = kernels[0][1], kernels[0][2]
    for s, e, name in kernels[1:]:
        if s > end:
            yield end, s, prev, name
        if e > end:
            end, prev = e, name


def idle_gaps(kernels: list[tuple[float, float, str]], min_us: float) -> list[tuple[float, float]]:
    """GPU-idle intervals (start, end) of at least `min_us` between the (start-sorted) kernels."""
    return [(a, b) for a, b, _, _ in idle_spans(kernels) if b - a >= min_us]


def host_during_gaps(gaps: list[tuple[float, float]], cpu: list[tuple[float, float, str]],
                     sample_us: float = 5.0) -> dict[str, float]:
    """Microseconds of GPU idle time by what the host was doing: at sample points every `sample_us`
    through each gap, the innermost (shortest) CPU event open at that moment, or '(no CPU op open)'."""
    points = [a + k * sample_us for a, b in gaps for k in range(max(1, int((b - a) / sample_us)))]
    events = sorted(cpu)
    out: dict[str, float] = collections.defaultdict(float)
    active: list[tuple[float, float, str]] = []
    i = 0
    for t in points:  # increasing: gaps are sorted and disjoint
        while i < len(events) and events[i][0] <= t:
            active.append(events[i])
            i += 1
        active = [ev for ev in active if ev[1] >= t]
        inner = min(active, key=lambda ev: ev[1] - ev[0])[2] if active else "(no CPU op open)"
        out[inner] += sample_us
    return dict(out)


def host_table(call: Callable[[], Any], min_gap_us: float = 20.0) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    timed(call)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall = timed(call)
    kernels, cpu = [], []
    for evt in prof.events():
        span = (evt.time_range.start, evt.time_range.end, evt.name)
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            if evt.device_time > 0:
                kernels.append(span)
        else:
            cpu.append(span)
    kernels.sort()
    gaps = idle_gaps(kernels, min_gap_us)
    during = host_during_gaps(gaps, cpu)
    syncs: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for s, e, name in cpu:
        if is_sync(name):
            syncs[name][0] += 1
            syncs[name][1] += (e - s) / 1e3
    totals = sorted(((a.key, a.count, a.cpu_time_total / 1e3) for a in prof.key_averages()), key=lambda r: -r[2])
    return {"call_wall_ms_under_cpu_trace": wall * 1e3, "min_gap_us": min_gap_us, "gaps": len(gaps),
            "gap_ms": sum(b - a for a, b in gaps) / 1e3,
            "host_during_gaps_ms": [[n[:120], round(us / 1e3, 3)] for n, us in
                                    sorted(during.items(), key=lambda kv: -kv[1])[:25]],
            "syncs_count_ms": {n[:120]: [c, round(ms, 3)] for n, (c, ms) in syncs.items()},
            "cpu_ops_count_ms": [[n[:120], c, round(ms, 3)] for n, c, ms in totals[:40]]}


def sync_sites(call: Callable[[], Any], depth: int = 4) -> list[list[Any]]:
    """Where host reads of tensor values come from: one more call traced with Python frames; each scalar read
    (`_local_scalar_dense`: `.item()`, `bool()`, `float()`; on a GPU tensor a wait for the GPU), `nonzero` and
    `equal`, with its innermost `depth` Python frames, by count and total time (the wait is in the time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as prof:
        timed(call)
    sites: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for evt in prof.events():
        if evt.name not in ("aten::_local_scalar_dense", "aten::nonzero", "aten::equal"):
            continue
        frames, parent = [], evt.cpu_parent
        while parent is not None and len(frames) < depth:  # the Python tracer's frames are the op's parents
            if ".py(" in parent.name and "torch/profiler" not in parent.name:
                frames.append(parent.name)
            parent = parent.cpu_parent
        key = f"{evt.name} @ " + (" <- ".join(frames) if frames else "(no Python frame)")
        sites[key][0] += 1
        sites[key][1] += evt.cpu_time_total / 1e3
    return [[k[:400], c, round(ms, 3)] for k, (c, ms) in sorted(sites.items(), key=lambda kv: -kv[1][1])[:20]]


def gap_table(kernels: list[tuple[float, float, str]]) -> dict[str, Any]:
    """Idle GPU time between consecutive kernels (us): a histogram and the largest gaps, with neighbours."""
    edges = (2, 5, 10, 50, 200, 1000, 10000)
    hist = {f"<{e}us": [0, 0.0] for e in edges}
    hist[f">={edges[-1]}us"] = [0, 0.0]
    found = []
    for a, b, prev, name in idle_spans(kernels):
        gap = b - a
        key = next((f"<{x}us" for x in edges if gap < x), f">={edges[-1]}us")
        hist[key][0] += 1
        hist[key][1] += gap / 1e3
        found.append((gap, (b - kernels[0][0]) / 1e3, prev[:60], name[:60]))
    found.sort(reverse=True)
    return {"histogram_count_ms": {k: [c, round(ms, 3)] for k, (c, ms) in hist.items()},
            "largest": [[round(g, 1), round(at, 2), a, b] for g, at, a, b in found[:20]]}


def unet_inputs(unet: Any, case: Any, dtype: torch.dtype) -> tuple[tuple, dict]:
    cfg = unet.config
    h, w = case.height // 8, case.width // 8
    b = 2 * case.batch_size  # classifier-free guidance
    dev = unet.device
    sample = torch.randn(b, cfg.in_channels, h, w, device=dev, dtype=dtype)
    ehs = torch.randn(b, 77, cfg.cross_attention_dim, device=dev, dtype=dtype)
    kwargs: dict[str, Any] = {"encoder_hidden_states": ehs}
    if cfg.addition_embed_type == "text_time":
        n_time = 6
        text_dim = cfg.projection_class_embeddings_input_dim - n_time * cfg.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(b, text_dim, device=dev, dtype=dtype),
                                       "time_ids": torch.randn(b, n_time, device=dev, dtype=dtype)}
    return (sample, torch.tensor(500.0, device=dev)), kwargs


def sdpa_shapes(unet: Any, case: Any, dtype: torch.dtype) -> collections.Counter:
    """The (q, k, v) shapes of one eager UNet forward (the module's own forward: no compiled graph)."""
    shapes: collections.Counter = collections.Counter()
    original = F.scaled_dot_product_attention

    def recording(q, k, v, *args, **kwargs):
        shapes[(tuple(q.shape), tuple(k.shape), tuple(v.shape))] += 1
        return original(q, k, v, *args, **kwargs)

    args, kwargs = unet_inputs(unet, case, dtype)
    F.scaled_dot_product_attention = recording
    try:
        with torch.inference_mode():
            unet.forward(*args, **kwargs)
    finally:
        F.scaled_dot_product_attention = original
    return shapes


def time_sdpa(shapes: collections.Counter, dtype: torch.dtype) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION}
    out: dict[str, Any] = {"shapes": [], "per_step_ms": {}}
    totals: dict[str, float] = collections.defaultdict(float)
    for (qs, ks, vs), count in shapes.items():
        q, k, v = (torch.randn(s, device="cuda", dtype=dtype) for s in (qs, ks, vs))
        row: dict[str, Any] = {"q": qs, "k": ks, "count": count}
        try:
            row["default_choice"] = str(SDPBackend(torch._fused_sdp_choice(q, k, v)))
        except Exception as exc:  # noqa: BLE001 - informational only
            row["default_choice"] = f"? ({exc})"
        for name, backend in backends.items():
            ctx = sdpa_kernel([backend]) if backend is not None else torch.no_grad()
            try:
                with ctx:
                    for _ in range(5):
                        F.scaled_dot_product_attention(q, k, v)
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    times = []
                    for _ in range(15):
                        start.record()
                        for _ in range(10):
                            F.scaled_dot_product_attention(q, k, v)
                        end.record()
                        end.synchronize()
                        times.append(start.elapsed_time(end) / 10)
                times.sort()
                ms = times[len(times) // 2]
                row[name + "_ms"] = round(ms, 4)
                totals[name] += ms * count
            except RuntimeError as exc:
                row[name + "_ms"] = f"unavailable ({str(exc).splitlines()[0][:100]})"
                totals[name] = float("nan")
        out["shapes"].append(row)
    out["per_step_ms"] = {k: round(v, 3) for k, v in totals.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sdxl")
    ap.add_argument("--profile", default="max")
    ap.add_argument("--attention", default="sdpa")
    ap.add_argument("--knobs", default="")
    ap.add_argument("--scheduler", default="euler")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warm-calls", type=int, default=3)
    ap.add_argument("--no-sdpa", action="store_true")
    ap.add_argument("--host", action="store_true", help="also trace one call with CPU activity (what the host did "
                    "while the GPU was idle, and every wait for the GPU)")
    ap.add_argument("--out", default="unet_profile")
    ap.add_argument("--precompile-cache", action="store_true",
                    help="experimental: Dynamo's caching precompile (saves traced frames next to the compile cache); "
                         "with torch 2.11 it fails on the SD pipelines (their guards cannot be serialised)")
    args = ap.parse_args()
    if args.precompile_cache:
        torch._dynamo.config.caching_precompile = True
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench("cuda:0", runner_config=RunnerConfig(warmup_min_s=0, min_rounds=1, max_rounds=1))
    case = bench.case(args.model, steps=args.steps, scheduler=args.scheduler, weights="synthetic", profile=args.profile,
                      attention=args.attention, knobs=args.knobs)
    t0 = time.perf_counter()
    built, applied = bench.pipeline(case)
    # The case's scheduler, as the Runner sets it before measuring (a pipeline is built with the model's own:
    # PNDM for SD 1.x, whose steps read GPU timesteps on the host and so wait for the GPU three times a step).
    set_scheduler(built.pipe, case.scheduler)
    result: dict[str, Any] = {"model": args.model, "profile": args.profile, "attention": args.attention,
                              "scheduler": type(built.pipe.scheduler).__name__,
                              "knobs": args.knobs, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                              "cudnn": torch.backends.cudnn.version(), "build_s": time.perf_counter() - t0,
                              "notes": applied.notes}
    call = bench.runner.make_call(case, built, applied)
    result["warm_calls_s"] = [timed(call) for _ in range(args.warm_calls)]
    result["dynamo_compile_times"] = torch._dynamo.utils.compile_times(repr="str", aggregate=True)
    if args.precompile_cache:
        t_save = time.perf_counter()
        try:
            torch.compiler.save_cache_artifacts()
            result["precompile_saved_s"] = time.perf_counter() - t_save
        except Exception as exc:  # noqa: BLE001 - experimental path, report and go on
            result["precompile_saved_s"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        print(f"precompile cache save: {result['precompile_saved_s']}", flush=True)
    print(json.dumps({k: result[k] for k in ("model", "profile", "scheduler", "build_s", "warm_calls_s")}), flush=True)
    print(result["dynamo_compile_times"], flush=True)
    result["kernels"] = kernel_table(call)
    k = result["kernels"]
    steps = args.steps
    print(f"call {k['call_wall_ms']:.1f} ms, GPU busy {k['gpu_busy_ms']:.1f} ms, kernels {k['kernel_ms_total']:.1f} ms; "
          "per UNet step: " + ", ".join(f"{n} {k['kernel_ms_by_kind'].get(n, 0) / steps:.2f}" for n in KINDS), flush=True)
    for name, ms in k["top_kernels_ms"][:12]:
        print(f"  {ms / steps:8.3f} ms/step  {name}", flush=True)
    print("gaps between kernels (count, ms): " + json.dumps(k["gaps"]["histogram_count_ms"]), flush=True)
    for g, at, a, b in k["gaps"]["largest"][:12]:
        print(f"  gap {g:9.1f} us at {at:8.2f} ms  after {a}  before {b}", flush=True)
    if args.host:
        result["host"] = h = host_table(call)
        print(f"host trace: call {h['call_wall_ms_under_cpu_trace']:.1f} ms; {h['gaps']} GPU gaps >= "
              f"{h['min_gap_us']:.0f} us, {h['gap_ms']:.2f} ms; host waits for the GPU (count, ms): {json.dumps(h['syncs_count_ms'])}",
              flush=True)
        print("  GPU idle by what the host was doing (ms):", flush=True)
        for name, ms in h["host_during_gaps_ms"][:15]:
            print(f"  {ms:9.3f}  {name}", flush=True)
        h["sync_sites"] = sync_sites(call)
        print("  host reads of tensor values by call site (op @ innermost frames, count, ms; a GPU tensor's waits):",
              flush=True)
        for site, count, ms in h["sync_sites"]:
            print(f"  {ms:9.3f} {count:6d}  {site}", flush=True)
        print("  CPU ops by total time (name, count, ms):", flush=True)
        for name, count, ms in h["cpu_ops_count_ms"][:25]:
            print(f"  {ms:9.3f} {count:6d}  {name}", flush=True)
    if not args.no_sdpa:
        dtype = built.pipe.unet.dtype
        result["sdpa"] = time_sdpa(sdpa_shapes(built.pipe.unet, case, dtype), dtype)
        print("SDPA per UNet step (ms): " + json.dumps(result["sdpa"]["per_step_ms"]), flush=True)
        for row in result["sdpa"]["shapes"]:
            print("  " + json.dumps(row), flush=True)
    (out_dir / f"{args.model}-{args.profile}-{args.attention}.json").write_text(json.dumps(result, indent=1, default=str))
    bench.close()


if __name__ == "__main__":
    main()
