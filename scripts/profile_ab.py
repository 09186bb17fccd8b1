"""Optimisation profiles measured side by side on one GPU, in one process, through the Runner.

For each profile: images/s, J/image (gross and net), warm-up (compile) time and energy, fraction of
the FLOP floor (UNet + VAE + text FLOPs over the measured matmul ceiling), and output fidelity
against the eager pipeline of the same dtype and seed (image PSNR and latent-free image error).

Usage: python scripts/profile_ab.py --model sdxl --profiles eager,reduce-overhead,max --out DIR
Entries: profile[@attention][+knob=value...], with dtype=... and offload=... as pseudo-knobs
(e.g. eager@flash, eager+vae_tiling=on, eager+dtype=bf16, eager+offload=model).
Run it twice with the same TORCHINDUCTOR_CACHE_DIR / SDBENCH_CACHE_DIR to see the cached warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from sdbench.measure.ceiling import measure_matmul_ceiling_tflops
from sdbench.runner import RunnerConfig
from sdbench.session import Bench


def image_of(bench: Bench, case) -> torch.Tensor:
    """The case's images from the Runner's own call function (same arguments and seed as measured)."""
    built, applied = bench.pipeline(case)
    with torch.inference_mode():
        out = bench.runner.make_call(case, built, applied)()
    return out.float().cpu()


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sdxl")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--profiles", default="eager,reduce-overhead,max")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default="profile_ab.json")
    ap.add_argument("--no-ceiling", action="store_true")
    args = ap.parse_args()
    t_start = time.perf_counter()
    ceiling = None if args.no_ceiling else measure_matmul_ceiling_tflops("cuda:0", torch.float16)
    results = {"gpu": torch.cuda.get_device_name(0), "matmul_fp16_tflops": ceiling, "profiles": {}}
    reference = None
    for entry in args.profiles.split(","):
        # profile[@attention][+knob=value...], e.g. max@cudnn+compile_text=reduce-overhead; the
        # pseudo-knobs dtype=fp32|bf16 and offload=model|sequential set the case's dtype and offload
        head, *items = entry.split("+")
        profile, _, attention = head.partition("@")
        case_opts = {k: v for k, _, v in (i.partition("=") for i in items) if k in ("dtype", "offload")}
        knob_items = [i for i in items if i.partition("=")[0] not in ("dtype", "offload")]
        warm = 1 if profile == "eager" else 3
        cfg = RunnerConfig(warmup_calls=warm, warmup_min_s=0.0, min_rounds=3, max_rounds=args.rounds,
                           idle_s=1.0, matmul_ceiling_tflops=ceiling)
        bench = Bench("cuda:0", runner_config=cfg, max_pipelines=1)
        case = bench.case(args.model, steps=args.steps, scheduler="euler", weights="synthetic", profile=profile,
                          batch_size=args.batch, attention=attention or "sdpa", knobs=",".join(knob_items),
                          **case_opts)
        t0 = time.perf_counter()
        try:
            rec = bench.measure(case)
            img = image_of(bench, case)
        except Exception as exc:  # one failing profile must not lose the others
            results["profiles"][entry] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(json.dumps({entry: results["profiles"][entry]}), flush=True)
            bench.close()
            torch.cuda.empty_cache()
            continue
        if reference is None:
            reference = img
        keep = ("images_per_s", "time_per_image_s_median", "time_per_image_s_ci95_halfwidth_rel",
                "energy_per_image_j_median", "energy_per_image_j_ci95_halfwidth_rel", "net_energy_per_image_j_median",
                "power_w", "idle_power_w", "warmup_s", "warmup_energy_j", "first_call_s", "step_time_median_s",
                "phase_text_encode_s", "phase_denoise_s", "phase_vae_decode_s", "phase_other_s", "fraction_of_flop_floor",
                "achieved_tflops", "mfu", "memory_peak_allocated_bytes", "stop_reason", "rounds",
                "telemetry_sm_clock_mhz_mean", "telemetry_throttle_reasons", "attention_processor", "optimization_notes",
                "counter_timeline_agreement_rel", "power_w", "calls_per_window", "preroll_calls_per_window")
        row = {k: rec.get(k) for k in keep}
        row["wall_incl_build_and_compile_s"] = time.perf_counter() - t0
        row["psnr_vs_eager_db"] = psnr_db(img, reference)
        row["max_abs_err_vs_eager"] = float((img - reference).abs().max())
        results["profiles"][entry] = row
        print(json.dumps({entry: row}, default=str), flush=True)
        with open(args.out, "w") as fh:  # after every profile: a later timeout loses nothing
            json.dump(results, fh, indent=1, default=str)
        bench.close()
        del bench
        torch.cuda.empty_cache()
    results["total_s"] = time.perf_counter() - t_start
    print("\nprofile            images/s   J/image  net J/img  warm-up s  floor%  PSNR vs eager")
    for p, r in results["profiles"].items():
        if "error" in r:
            print(f"{p:18s} failed: {r['error'][:200]}", flush=True)
            continue
        floor = r["fraction_of_flop_floor"]
        print(f"{p:18s} {r['images_per_s']:8.3f} {r['energy_per_image_j_median'] or float('nan'):9.1f} "
              f"{r['net_energy_per_image_j_median'] or float('nan'):9.1f} {r['warmup_s']:9.1f} "
              f"{100 * floor if floor else float('nan'):6.1f}  {r['psnr_vs_eager_db']:.1f}", flush=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
