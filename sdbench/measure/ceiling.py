"""The dense matmul ceiling a card's MFU and FLOP floor are measured against.

On a CUDA GPU it is measured once per card (by UUID), dtype and torch version, and cached on disk
(``<cache>/matmul-ceiling.json``): about a second of 8192^3 products. Where measuring is switched off
(``SDBENCH_MEASURE_CEILING=0``) or fails, the datasheet's dense tensor rate stands in, named as such. The
simulated GPU uses its card's published rate. The CPU has none: the record says why.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from sdbench.files import atomic_write_text

log = logging.getLogger(__name__)

#: Dense (no sparsity) fp16/bf16 tensor rates in TFLOP/s from the vendors' datasheets, matched against
#: NVML's device name (first match wins, so the more specific names come first).
DATASHEET_DENSE_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("H200", 989.0, "NVIDIA H200 product brief (2024), SXM"),
    ("H100 NVL", 835.0, "NVIDIA H100 datasheet (2023), NVL"),
    ("H100 PCIe", 756.0, "NVIDIA H100 datasheet (2023), PCIe"),
    ("H100", 989.0, "NVIDIA H100 datasheet (2023), SXM"),
    ("A100", 312.0, "NVIDIA A100 datasheet (2021)"),
    ("L40S", 362.0, "NVIDIA L40S datasheet (2023)"),
    ("L4", 121.0, "NVIDIA L4 datasheet (2023)"),
    ("A10", 125.0, "NVIDIA A10 datasheet (2021)"),
    ("V100-PCIE", 112.0, "NVIDIA V100 datasheet (2020), PCIe"),
    ("V100", 125.0, "NVIDIA V100 datasheet (2020), SXM2"),
)

_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


@dataclass(frozen=True)
class Ceiling:
    """A dense matmul rate in TFLOP/s and where it came from; ``tflops`` None with a ``reason``."""

    tflops: float | None
    source: str | None
    reason: str | None = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"matmul_ceiling_tflops": self.tflops, "matmul_ceiling_source": self.source}
        if self.tflops is None:
            out["matmul_ceiling_unavailable_reason"] = self.reason
        return out


def datasheet_tflops(gpu_name: str, dtype: str) -> tuple[float, str] | None:
    """The datasheet dense tensor rate for an NVML device name (fp16/bf16 only), or None."""
    if dtype not in ("fp16", "bf16"):
        return None
    for key, tflops, source in DATASHEET_DENSE_TFLOPS:
        if key.lower() in gpu_name.lower():
            return tflops, source
    return None


def _cache_path() -> Any:
    from sdbench.files import cache_root

    return cache_root() / "matmul-ceiling.json"


def _read_cache() -> dict[str, Any]:
    path = _cache_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_cache(doc: dict[str, Any]) -> None:
    try:
        atomic_write_text(_cache_path(), json.dumps(doc, indent=1, sort_keys=True) + "\n")
    except OSError as exc:  # a read-only home: the ceiling is measured again next time, nothing is lost
        log.info("matmul ceiling not cached: %s", exc)


def matmul_ceiling(device: str, gpu: Any, dtype: str) -> Ceiling:
    """The ceiling for cases of ``dtype`` on ``device`` measured through ``gpu`` (NVML or simulated)."""
    if gpu is not None and getattr(gpu, "simulated", False) and hasattr(gpu, "card"):
        card = gpu.card
        try:
            return Ceiling(card.dense_tflops(dtype), f"simulated card: {card.source.split(':')[0]}")
        except Exception as exc:  # noqa: BLE001 - a dtype the card lacks: say so
            return Ceiling(None, None, str(exc))
    if not device.startswith("cuda"):
        return Ceiling(None, None, "no matmul ceiling on the CPU: MFU and the FLOP floor are defined against a "
                                   "GPU's dense tensor rate")
    info = gpu.info() if gpu is not None else None
    name = info.name if info is not None else ""
    uuid = info.uuid if info is not None else f"unknown-{device}"
    import torch

    key = f"{uuid}/{dtype}/torch-{torch.__version__}"
    if os.environ.get("SDBENCH_MEASURE_CEILING", "1") != "0":
        cache = _read_cache()
        cached = cache.get(key)
        if isinstance(cached, dict) and isinstance(cached.get("tflops"), (int, float)):
            return Ceiling(float(cached["tflops"]), "measured (cached)")
        try:
            tflops = measure_matmul_ceiling_tflops(device, getattr(torch, _TORCH_DTYPES.get(dtype, "float16")))
        except Exception as exc:  # noqa: BLE001 - fall back to the datasheet, and say why
            log.warning("matmul ceiling not measured on %s: %s", device, exc)
        else:
            cache[key] = {"tflops": tflops, "gpu_name": name}
            _write_cache(cache)
            return Ceiling(tflops, "measured")
    sheet = datasheet_tflops(name, dtype)
    if sheet is not None:
        return Ceiling(sheet[0], f"datasheet: {sheet[1]}")
    return Ceiling(None, None, f"the ceiling was not measured and {name or 'this GPU'} has no datasheet entry "
                               f"for {dtype}")


def measure_matmul_ceiling_tflops(device: str, dtype: Any = None, n: int = 8192, repeats: int = 20) -> float:
    """Dense matmul rate on `device` (random inputs, CUDA events, median of `repeats`): the MFU denominator."""
    import torch

    dtype = torch.float16 if dtype is None else dtype
    if not device.startswith("cuda"):
        raise ValueError("the matmul ceiling is measured on a CUDA device")
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    # Two input pairs, alternated, so repeats do not run out of a warm cache; random, never zeros.
    pairs = [(torch.randn(n, n, device=dev, dtype=dtype, generator=g), torch.randn(n, n, device=dev, dtype=dtype, generator=g))
             for _ in range(2)]
    for a, b in pairs:
        torch.matmul(a, b)
    torch.cuda.synchronize(dev)
    times = []
    for i in range(repeats):
        a, b = pairs[i % 2]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    median_s = times[len(times) // 2]
    return 2.0 * n**3 / median_s / 1e12
