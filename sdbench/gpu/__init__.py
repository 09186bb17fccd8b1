"""The device layer: one typed interface over real NVML GPUs and the simulated GPU."""

from __future__ import annotations

import os

from sdbench.errors import ConfigError
from sdbench.gpu.base import (
    CLOCK_EVENT_REASON_BITS,
    THROTTLE_REASONS,
    GpuDevice,
    GpuError,
    GpuInfo,
    GpuNoPermission,
    GpuNotSupported,
    GpuUnavailable,
    decode_clock_event_reasons,
    is_throttled,
)
from sdbench.gpu.nvml import (
    NvmlDevice,
    nvml_available,
    nvml_device_count,
    nvml_unavailable_reason,
    parse_cuda_visible_devices,
)
from sdbench.gpu.simulated import CARDS, SimulatedGpu, SimulatedGpuState, parse_simulated_device

__all__ = [
    "CARDS",
    "CLOCK_EVENT_REASON_BITS",
    "DEVICE_KINDS",
    "THROTTLE_REASONS",
    "GpuDevice",
    "GpuError",
    "GpuInfo",
    "GpuNoPermission",
    "GpuNotSupported",
    "GpuUnavailable",
    "NvmlDevice",
    "SimulatedGpu",
    "SimulatedGpuState",
    "decode_clock_event_reasons",
    "is_throttled",
    "nvml_available",
    "nvml_device_count",
    "nvml_unavailable_reason",
    "open_device",
    "parse_cuda_visible_devices",
    "parse_simulated_device",
]

DEVICE_KINDS: tuple[str, ...] = ("auto", "nvml", "simulated", "none")
#: The noise a `--device simulated` run gets unless its device string says otherwise (per-call time CV
#: 2 %, power CV 0.5 %, seed 0): realistic spread, the same numbers on every run and host.
SIMULATED_DEFAULT_NOISE: dict[str, float] = {"noise_cv": 0.02, "power_noise_cv": 0.005}


def open_device(kind: str = "auto", index: int = 0) -> GpuDevice | None:
    """Open the GPU measurements run on; ``None`` means "no GPU: energy unavailable".

    ``kind``: ``"auto"`` (NVML if this machine has a usable NVIDIA GPU, else ``None``),
    ``"nvml"`` (a real GPU or :class:`GpuUnavailable` saying why not), ``"simulated"``
    (a :class:`SimulatedGpu`; ``"simulated:a100[:noise_cv=0.02...]"`` picks a card and options),
    ``"none"`` (always ``None``). ``index`` is the CUDA index, i.e.
    counted among the GPUs that ``CUDA_VISIBLE_DEVICES`` leaves visible.

    Under ``"auto"``, ``CUDA_VISIBLE_DEVICES=""`` also gives ``None``; an index that does not exist while GPUs are present still raises, since
    that is a mistake rather than a GPU-less machine.
    """
    if kind.startswith("simulated:"):
        card, options = parse_simulated_device(kind)
        return SimulatedGpu(card=card, index=index, **{**SIMULATED_DEFAULT_NOISE, **options})
    if kind not in DEVICE_KINDS:
        raise ConfigError("device kind", kind, allowed=DEVICE_KINDS)
    if kind == "none":
        return None
    if kind == "simulated":
        return SimulatedGpu(index=index, **SIMULATED_DEFAULT_NOISE)
    if kind == "auto":
        if nvml_unavailable_reason() is not None:
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and not parse_cuda_visible_devices(visible):
            # CUDA_VISIBLE_DEVICES="" is how users say "no GPU for this run".
            return None
    if kind == "nvml":
        reason = nvml_unavailable_reason()
        if reason is not None:
            raise GpuUnavailable(reason)
    device = NvmlDevice(index)
    device.ensure_open()
    return device
