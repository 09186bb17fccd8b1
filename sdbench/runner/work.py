"""The work of one call: the UNet evaluations it made, its FLOPs, bytes and kernels as a simulated device
sees them, and the simulated device's true (noiseless) answer for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdbench.case import Case
from sdbench.pipelines.flops import WorkCount, count_work

if TYPE_CHECKING:
    from sdbench.gpu.simulated import WorkProfile


def unet_evaluations(scheduler: Any, case: Case) -> int:
    """UNet calls per pipeline call, read from the scheduler that ran (Heun/KDPM2 use two per step)."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is not None and len(timesteps) > 0:
        return int(len(timesteps))
    return case.steps * case.unet_evaluations_per_step


_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def work_profile(case: Case, wc: WorkCount, unet_evals: int) -> WorkProfile:
    """One call of ``case`` as a simulated device sees it: FLOPs, bytes and kernels of each part (counted on
    the meta device in fp32, so bytes are scaled to the case's dtype)."""
    from sdbench.gpu.simulated import WorkAmount, WorkProfile

    scale = _DTYPE_BYTES.get(case.dtype, 2) / 4.0
    return WorkProfile(
        text=WorkAmount(wc.text_encode_flop, wc.text_encode_bytes * scale, wc.text_encode_kernels),
        unet_eval=WorkAmount(wc.unet_flop_per_eval, wc.unet_bytes_per_eval * scale, wc.unet_kernels_per_eval),
        vae_decode=WorkAmount(wc.vae_decode_flop, wc.vae_decode_bytes * scale, wc.vae_decode_kernels),
        unet_evals=int(unet_evals),
        dtype=case.dtype if case.dtype in _DTYPE_BYTES else "fp16",
    )


def simulate_call(case: Case, gpu: Any, unet_evals: int) -> dict[str, Any]:
    """Describe one call (``unet_evals`` UNet evaluations) to a virtual-clock device, and return its true
    (noiseless) time and energy per image at the device's current clock setting: the known answer a
    simulated study is checked against."""
    wc = count_work(case.model, case.height, case.width, case.batch_size, case.uses_cfg)
    profile = work_profile(case, wc, unet_evals)
    gpu.set_work_profile(profile)
    state = gpu.state()
    locked_sm = state.locked_sm_clocks_mhz[1] if state.locked_sm_clocks_mhz else None
    locked_mem = state.locked_mem_clocks_mhz[1] if state.locked_mem_clocks_mhz else None
    truth = gpu.expected_call(profile, locked_sm, locked_mem, state.power_limit_w)
    info: dict[str, Any] = {f"simulated_{k}": v for k, v in gpu.describe().items()}
    info.update({
        "simulated_true_time_per_image_s": truth.time_s / case.batch_size,
        "simulated_true_energy_per_image_j": truth.energy_j / case.batch_size,
        "simulated_true_sm_clock_mhz": truth.sm_clock_mhz,
        "simulated_true_power_capped": truth.power_capped,
        "simulated_unet_evaluations": unet_evals,
    })
    return info
