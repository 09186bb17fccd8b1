"""What a result was measured on: software versions, the GPU and its settings, the host."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from typing import Any

import torch


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def software_versions() -> dict[str, Any]:
    return {
        "sdbench": _version("sdbench"),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
    }


def gpu_environment(gpu: Any, compute_device: str) -> dict[str, Any]:
    """GPU identity and settings (name, UUID, driver, power limit, clocks) for records and machine_info."""
    out: dict[str, Any] = {"compute_device": compute_device}
    if compute_device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(compute_device))
        out.update(torch_gpu_name=props.name, torch_gpu_memory_bytes=int(props.total_memory),
                   compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    if gpu is None:
        out["gpu_telemetry"] = "unavailable: no NVML device"
        return out
    info = gpu.info()
    out.update({f"gpu_{k}": v for k, v in info.as_dict().items()})
    for name, fn in (("gpu_power_limit_w_now", gpu.power_limit_w), ("gpu_sm_clock_mhz_now", gpu.sm_clock_mhz),
                     ("gpu_mem_clock_mhz_now", gpu.mem_clock_mhz)):
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - an unsupported query is recorded, not invented
            out[name] = None
            out[f"{name}_unavailable"] = str(exc)
    return out


def environment(gpu: Any, compute_device: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **software_versions(),
        **gpu_environment(gpu, compute_device),
    }
