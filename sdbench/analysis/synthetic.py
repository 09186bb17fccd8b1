"""Synthetic sweep records (SIMULATED; for demos and tests), drawn from a known true curve.

:func:`synthetic_sweep_records` makes records shaped like a DVFS sweep's (what
:func:`sdbench.analysis.dvfs.analyze.analyze_records` reads); :func:`simulated_true_curve` is the
simulated GPU's noise-free model they are drawn from by default, the truth a known-answer test compares
with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: A true per-image curve: ``(sm_clock_mhz, mem_clock_mhz) -> (time_s, busy_power_w)``.
TrueCurve = Callable[[float, float], tuple[float, float]]


def simulated_true_curve(ref_time_s: float = 2.0, idle_power_w: float = 70.0) -> TrueCurve:
    """The simulated GPU's noise-free model as a :data:`TrueCurve`: ``t = ref_time_s * s(f)`` and
    ``P(f)`` from :class:`sdbench.gpu.simulated.SimulatedGpu` (what :func:`synthetic_sweep_records`
    draws from by default, and what a known-answer test takes as the truth)."""
    from sdbench.gpu.simulated import SimulatedGpu

    gpu = SimulatedGpu(idle_power_w=idle_power_w)

    def curve(sm_clock_mhz: float, mem_clock_mhz: float) -> tuple[float, float]:
        return (ref_time_s * gpu.expected_time_scale(sm_clock_mhz, mem_clock_mhz),
                gpu.expected_busy_power_w(sm_clock_mhz, mem_clock_mhz))

    return curve


def synthetic_sweep_records(
    *,
    sm_clocks_mhz: Sequence[int] = (1980, 1800, 1620, 1440, 1260, 1080, 900, 720),
    mem_clocks_mhz: Sequence[int | None] = (None,),
    rounds: int = 8,
    repeats: int = 1,
    default_repeats: int = 3,
    noise_rel: float = 0.01,
    ref_time_s: float = 2.0,
    idle_power_w: float = 70.0,
    default_drift_rel: float = 0.0,
    drift_rel: float = 0.0,
    true_curve: TrueCurve | None = None,
    clock_verified: Mapping[int, str] | None = None,
    activity: bool = True,
    steps: int = 30,
    seed: int = 0,
    workload: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Sweep records drawn from a known true curve (by default the simulated GPU's physical model).

    Every record is flagged simulated (``energy_simulated``, ``env_gpu_simulated``). Per round:
    ``t = t(f) * (1 + noise)``, ``P = P(f) * drift * (1 + noise)``, ``E = P * t``, with
    ``(t(f), P(f)) = true_curve(f, mem)`` (default :func:`simulated_true_curve`) and ``1 + noise``
    lognormal with mean 1 and CV ``noise_rel`` (the per-round noise; positive at any CV). The default clock runs at the model's
    maximum clock, re-measured ``default_repeats`` times, spread over the sweep (first and last
    included). Injected drift: ``default_drift_rel`` moves only the default re-measurements' energy
    (0 at the first, the full amount at the last); ``drift_rel`` moves every record's power the same
    way along the measurement order (the GPU or host changing under the whole sweep). Records carry
    ``sweep_order_index``. ``clock_verified`` maps SM clocks to a status other than "ok" (e.g.
    ``{1260: "drift"}``). Per-step and per-phase fields are included.
    """
    from sdbench.gpu.simulated import SimulatedGpu

    gpu = SimulatedGpu(idle_power_w=idle_power_w)
    curve = true_curve or simulated_true_curve(ref_time_s, idle_power_w)
    f_max = gpu.info().max_sm_clock_mhz
    mem_max = max(gpu.supported_memory_clocks_mhz())
    m_fraction = 0.3  # SimulatedGpu's default memory-bound fraction (its activity split uses the same)
    rng = np.random.default_rng(seed)
    verified = dict(clock_verified or {})
    base = {"record_type": "case", "model": "sd15", "scheduler": "euler", "steps": steps, "width": 512, "height": 512,
            "pixels": 512 * 512, "batch_size": 1, "dtype": "fp16", "profile": "eager", "knobs": "", "attention": "sdpa",
            "offload": "none", "guidance_scale": 7.5, "device": "simulated", "energy_simulated": True,
            "env_gpu_simulated": True, "env_gpu_name": gpu.name, "energy_source": "counter",
            "time_source": "perf_counter", "env_compute_device": "cpu"}
    base.update(workload or {})
    plan: list[tuple[int | None, int | None, int, str]] = []
    for r in range(default_repeats):
        plan.append((None, None, r, "default-clock"))
    for mem in mem_clocks_mhz:
        for f in sm_clocks_mhz:
            for r in range(repeats):
                plan.append((int(f), mem, r, "point"))
    # Randomised point order (as a sweep runs), the default re-measurements spread over it, first and last.
    order = [int(i) for i in rng.permutation(len(plan)) if i >= default_repeats]
    slots = np.linspace(0, len(order), default_repeats).round().astype(int) if default_repeats else []
    for slot, i in sorted(zip(slots, range(default_repeats)), reverse=True):
        order.insert(int(slot), i)
    # Lognormal factors of mean 1 and CV noise_rel: positive, like a time or a power, at any CV.
    sigma = math.sqrt(math.log1p(noise_rel**2))

    def noise(size: int) -> np.ndarray:
        return np.exp(sigma * rng.standard_normal(size) - sigma**2 / 2.0)

    records = []
    for n, i in enumerate(order):
        sm, mem, rep, role = plan[i]
        f_eff = float(sm if sm is not None else f_max)
        fm = float(mem if mem is not None else mem_max)
        t_true, p_true = curve(f_eff, fm)
        scale = gpu.expected_time_scale(f_eff, fm)
        drift = 1.0 + drift_rel * n / max(1, len(order) - 1)
        if role == "default-clock" and default_repeats > 1:
            drift *= 1.0 + default_drift_rel * rep / (default_repeats - 1)
        t = t_true * noise(rounds)
        p = p_true * drift * noise(rounds)
        e = p * t
        net = e - idle_power_w * t
        rec = dict(base)
        rec.update({
            "case_id": f"synthetic-sm{sm}" if sm else "synthetic-default",
            "sm_clock_mhz": sm, "mem_clock_mhz": mem, "power_limit_w": None,
            "sm_clock_mhz_setting": sm, "mem_clock_mhz_setting": mem, "power_limit_w_setting": None,
            "is_default_clock": role == "default-clock", "point_role": role, "repeat": rep,
            "clock_verified": "ok" if sm is None else verified.get(int(sm), "ok"),
            "point_id": f"{role}-{sm}-{mem}-{rep}", "point_status": "ok", "sweep_order_index": n,
            "started_utc": f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00",
            "rounds": rounds,
            "time_per_image_s_samples": t.tolist(), "time_per_image_s_mean": float(t.mean()),
            "time_per_image_s_median": float(np.median(t)),
            "energy_per_image_j_samples": e.tolist(), "energy_per_image_j_mean": float(e.mean()),
            "energy_per_image_j_median": float(np.median(e)),
            "net_energy_per_image_j_samples": net.tolist(), "net_energy_per_image_j_median": float(np.median(net)),
            "power_w_samples": p.tolist(), "power_w": float(np.median(p)), "idle_power_w": idle_power_w,
            "telemetry_sm_clock_mhz_mean": f_eff, "telemetry_mem_clock_mhz_mean": fm,
            "telemetry_power_limit_w": 700.0, "env_gpu_default_sm_clock_mhz": f_max,
        })
        # Per step and phase: the denoise loop takes 90 % of a call, text encode 2 %, VAE decode 8 %.
        call_t = float(np.median(t))
        call_p = float(np.median(p))
        step_t = call_t * 0.90 / steps
        rec["step_time_s"] = [step_t * (1.3 if k == 0 else 1.0) for k in range(steps)]
        rec["step_energy_j"] = [s * call_p for s in rec["step_time_s"]]
        for phase, share, rel_power in (("text_encode", 0.02, 0.6), ("denoise", 0.90, 1.0), ("vae_decode", 0.07, 0.85),
                                        ("other", 0.01, 0.5)):
            rec[f"phase_{phase}_s"] = call_t * share
            rec[f"phase_{phase}_energy_j"] = call_t * share * call_p * rel_power
        if activity:
            compute_share = (1.0 - m_fraction) * f_max / f_eff / scale
            memory_share = m_fraction * mem_max / fm / scale
            # Counter sampling noise keeps fp and DRAM activity from being exactly collinear, as on hardware.
            jitter = 1.0 + noise_rel * rng.standard_normal(3)
            # Named as a sweep's records name them (sdbench.gpu.dcgm: activity_<counter>_mean over the windows).
            rec.update({"activity_status": "simulated", "activity_sm_active_mean": 1.0,
                        "activity_tensor_active_mean": 0.8 * compute_share * jitter[0],
                        "activity_fp16_active_mean": 0.15 * compute_share * jitter[1],
                        "activity_dram_active_mean": memory_share * jitter[2]})
        records.append(rec)
    return records
