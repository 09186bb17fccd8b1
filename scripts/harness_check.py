"""GPU validation of the measurement core (issue 3's targets), run on a real GPU with read-only NVML.

1. Harness overhead: median per-image time through the Runner vs a plain diffusers call in the same
   process (SDXL 1024, batch 1, 30 steps), with per-step/phase marks off and on.
2. Energy reproducibility on a sub-second case (SD-Turbo 512, 1 step): per-image energy CV.
3. Agreement: counter vs timeline energy on >= 2 s windows; per-phase energies vs the whole.

Prints one JSON line per check and a summary table; writes everything to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sdbench.measure.ceiling import measure_matmul_ceiling_tflops
from sdbench.runner import RunnerConfig
from sdbench.session import Bench


def plain_diffusers_s(pipe, kwargs, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        g = torch.Generator("cuda").manual_seed(0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        pipe(generator=g, **kwargs)
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="harness_check.json")
    ap.add_argument("--sdxl-steps", type=int, default=30)
    ap.add_argument("--plain-calls", type=int, default=7)
    ap.add_argument("--skip-overhead", action="store_true", help="only the energy checks (2 and 3)")
    ap.add_argument("--repro-models", default="sd-turbo,sd-v1.5")
    ap.add_argument("--repro-profile", default="eager", help="profile of the sub-second cases (max: CUDA graphs)")
    args = ap.parse_args()
    results: dict = {"gpu": torch.cuda.get_device_name(0)}
    results["matmul_fp16_tflops"] = measure_matmul_ceiling_tflops("cuda:0", torch.float16)
    results["matmul_bf16_tflops"] = measure_matmul_ceiling_tflops("cuda:0", torch.bfloat16)
    print(json.dumps({"ceiling": results}), flush=True)

    records: dict = {}
    if not args.skip_overhead:
        records = overhead_check(args, results)
    repro_check(results, records, args.repro_models.split(","), args.repro_profile)
    with open(args.out, "w") as fh:
        json.dump({"results": results, "records": records}, fh, indent=1, default=str)


def overhead_check(args: argparse.Namespace, results: dict) -> dict:
    """1. Harness overhead on SDXL (eager: see scripts/overhead_ab.py for the compiled, paired version)."""
    cfg_off = RunnerConfig(per_step=False, per_phase=False, min_rounds=5, max_rounds=7, idle_s=1.0, timeline_hz=0,
                           telemetry_hz=0, energy="none", warmup_min_s=0.0)
    bench = Bench("cuda:0", runner_config=cfg_off)
    case = bench.case("sdxl", steps=args.sdxl_steps, scheduler="euler", weights="synthetic")
    built, applied = bench.pipeline(case)
    kwargs = dict(prompt=[case.prompt], num_inference_steps=case.steps, guidance_scale=case.guidance_scale,
                  height=case.height, width=case.width, output_type="pt")
    plain_diffusers_s(built.pipe, kwargs, 2)  # warm-up
    plain_a = plain_diffusers_s(built.pipe, kwargs, args.plain_calls)
    rec_off = bench.measure(case)
    bench.runner.config = RunnerConfig(per_step=True, per_phase=True, min_rounds=5, max_rounds=7, idle_s=1.0,
                                       warmup_min_s=0.0)
    rec_on = bench.measure(case)
    plain_b = plain_diffusers_s(built.pipe, kwargs, args.plain_calls)
    plain = statistics.median(plain_a + plain_b)
    over = {
        "plain_median_s": plain, "plain_a": plain_a, "plain_b": plain_b,
        "runner_marks_off_s": rec_off["time_per_image_s_median"],
        "runner_marks_on_s": rec_on["time_per_image_s_median"],
        "overhead_marks_off_rel": rec_off["time_per_image_s_median"] / plain - 1,
        "overhead_marks_on_rel": rec_on["time_per_image_s_median"] / plain - 1,
        "sdxl_energy_per_image_j": rec_on.get("energy_per_image_j_median"),
        "sdxl_net_energy_per_image_j": rec_on.get("net_energy_per_image_j_median"),
        "sdxl_energy_ci_rel": rec_on.get("energy_per_image_j_ci95_halfwidth_rel"),
        "sdxl_counter_timeline_agreement_rel": rec_on.get("counter_timeline_agreement_rel"),
        "sdxl_phase_energy_j": {k: rec_on.get(f"phase_{k}_energy_j") for k in ("text_encode", "denoise", "vae_decode")},
        "sdxl_phase_s": {k: rec_on.get(f"phase_{k}_s") for k in ("text_encode", "denoise", "vae_decode", "other")},
        "sdxl_step_time_median_s": rec_on.get("step_time_median_s"),
        "sdxl_images_per_s": rec_on.get("images_per_s"),
        "sdxl_calls_per_window": rec_on.get("calls_per_window"),
        "sdxl_idle_power_w": rec_on.get("idle_power_w"),
        "sdxl_power_w": rec_on.get("power_w"),
        "sdxl_peak_allocated_gib": (rec_on.get("memory_peak_allocated_bytes") or 0) / 2**30,
        "sdxl_stop_reason": rec_on.get("stop_reason"),
        "sdxl_telemetry_sm_clock_mhz_mean": rec_on.get("telemetry_sm_clock_mhz_mean"),
        "sdxl_throttle": rec_on.get("telemetry_throttle_reasons"),
    }
    phases = over["sdxl_phase_energy_j"]
    if all(v is not None for v in phases.values()) and rec_on.get("timeline_energy_per_image_j_median"):
        over["phase_energy_sum_vs_timeline_rel"] = sum(phases.values()) / rec_on["timeline_energy_per_image_j_median"] - 1
    results["overhead"] = over
    print(json.dumps({"overhead": over}), flush=True)
    bench.close()
    return {"sdxl_marks_off": rec_off, "sdxl_marks_on": rec_on}


def repro_check(results: dict, records: dict, models: list[str], profile: str) -> None:
    """2. Energy reproducibility on sub-second cases, and 3. counter vs timeline on their windows."""
    bench = Bench("cuda:0", runner_config=RunnerConfig(min_rounds=10, max_rounds=10, idle_s=2.0))
    for model in models:
        kw = {"steps": 1} if model == "sd-turbo" else {"steps": 4}
        case = bench.case(model, weights="synthetic", profile=profile, **kw)
        rec = bench.measure(case)
        records[model] = rec
        results[f"repro_{model}"] = {k: rec.get(k) for k in (
            "time_per_image_s_median", "time_per_image_s_cv", "time_per_call_s", "warmup_s", "calls_per_window", "energy_per_image_j_median",
            "energy_per_image_j_cv", "net_energy_per_image_j_median", "net_energy_per_image_j_cv",
            "counter_timeline_agreement_rel", "rounds", "energy_resolution_s", "idle_power_w", "power_w",
            "preroll_calls_per_window", "phase_text_encode_energy_j", "phase_denoise_energy_j",
            "phase_vae_decode_energy_j", "timeline_energy_per_image_j_median")}
        print(json.dumps({f"repro_{model}": results[f"repro_{model}"]}), flush=True)
    bench.close()


if __name__ == "__main__":
    main()
