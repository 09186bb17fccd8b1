"""pytest-benchmark histories per GPU and clock setting, and the pytest-benchmark hooks around them.

Histories are stored per GPU and clock setting (``.benchmarks/<gpu>-<uuid>-<clocks>/``), so
``--benchmark-compare`` compares like with like and refuses (without ``--sd-allow-cross-gpu``) to compare
across GPUs or clocks. The GPU's identity is read once per device and session (cached in ``config.stash``).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

import pytest

from sdbench.pytest_plugin.state import SD_CONFIG

DEFAULT_STORAGE = "file://./.benchmarks"


def storage_path(storage: str | None) -> Path | None:
    """The folder of a file:// (or plain path) --benchmark-storage, as given (relative to the cwd); else None."""
    if not storage:
        return None
    if "://" in storage:
        scheme, _, rest = storage.partition("://")
        if scheme != "file":
            return None
        storage = rest
    return Path(storage)


def missing_dirs(path: Path | None) -> list[Path]:
    """`path` and those of its ancestors that do not exist yet, deepest first (absolute)."""
    if path is None:
        return []
    path = Path.cwd() / path
    out = []
    for p in (path, *path.parents):
        if p.exists():
            break
        out.append(p)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def storage_slug(device: str, identity: dict[str, Any] | None = None) -> str:
    """The history root's name for this GPU and clock setting, e.g. nvidia-h100-80gb-hbm3-1a2b3c4d-default-clocks
    (`identity`: the device's :func:`gpu_identity`, read now when not given)."""
    ident = identity if identity is not None else gpu_identity(device)
    name = _slug(str(ident.get("gpu_name", "cpu")))
    uuid = str(ident.get("gpu_uuid") or "").replace("GPU-", "")[:8]
    return f"{name}-{uuid}-{ident['clock_setting']}" if uuid else f"{name}-{ident['clock_setting']}"


def legacy_storage_slug(device: str, identity: dict[str, Any] | None = None) -> str:
    """Where sdbench before the flat layout kept this GPU's histories (<gpu>-<uuid>/<clocks>, one level too deep
    for pytest-benchmark's own list/compare)."""
    ident = identity if identity is not None else gpu_identity(device)
    name = _slug(str(ident.get("gpu_name", "cpu")))
    uuid = str(ident.get("gpu_uuid") or "").replace("GPU-", "")[:8]
    return f"{name}-{uuid}/{ident['clock_setting']}" if uuid else f"{name}/{ident['clock_setting']}"


def gpu_identity(device: str) -> dict[str, Any]:
    """GPU name, UUID, driver and clock/power settings of `device` (read-only NVML, asked on every call: a
    session asks once per device, through :func:`session_gpu_identity`)."""
    from sdbench.record.environment import software_versions
    from sdbench.session import open_gpu_for

    ident: dict[str, Any] = {"compute_device": device, **{k: v for k, v in software_versions().items()
                                                          if k in ("torch", "diffusers", "cuda_runtime")}}
    gpu = open_gpu_for(device) if device != "cpu" else None
    if gpu is None:
        ident.update(gpu_name=f"cpu-{platform.machine()}", gpu_uuid=None, gpu_simulated=False)
    else:
        info = gpu.info()
        ident.update(gpu_name=info.name, gpu_uuid=info.uuid, gpu_simulated=info.simulated,
                     driver_version=info.driver_version, power_limit_w=info.power_limit_w)
        gpu.close()
    # sdbench never changes clocks in a plain benchmark run: the setting is what the card was found at.
    ident.update(sm_clock_mhz_setting=None, mem_clock_mhz_setting=None, power_limit_w_setting=None,
                 clock_setting="default-clocks")
    return ident


#: The GPU identities this session has read, by device.
GPU_IDENTITIES = pytest.StashKey[dict[str, dict[str, Any]]]()


def session_gpu_identity(config: pytest.Config, device: str) -> dict[str, Any]:
    """:func:`gpu_identity` of `device`, read once per session (and never shared with another session)."""
    known = config.stash.setdefault(GPU_IDENTITIES, {})
    if device not in known:
        known[device] = gpu_identity(device)
    return known[device]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    sd = config.stash.get(SD_CONFIG, None)
    if sd is None:
        return
    machine_info["sdbench"] = dict(session_gpu_identity(config, sd.device))


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """A case parameter is saved as its case id (JSON has no Case), next to the axis parameters."""
    for bench in output_json.get("benchmarks", []):
        params = bench.get("params")
        if isinstance(params, dict) and any(hasattr(v, "case_hash") for v in params.values()):
            bench["params"] = {k: v.case_id if hasattr(v, "case_hash") else v for k, v in params.items()}


def pytest_benchmark_compare_machine_info(config: pytest.Config, benchmarksession: Any, machine_info: dict[str, Any],
                                          compared_benchmark: dict[str, Any]) -> None:
    mine = machine_info.get("sdbench") or {}
    theirs = (compared_benchmark.get("machine_info") or {}).get("sdbench") or {}
    keys = ("gpu_name", "gpu_uuid", "gpu_simulated", "sm_clock_mhz_setting", "mem_clock_mhz_setting", "power_limit_w_setting")
    diffs = [f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in keys if mine.get(k) != theirs.get(k)]
    if diffs and not config.getoption("--sd-allow-cross-gpu"):
        raise pytest.UsageError(
            "refusing to compare benchmarks of a different GPU or clock setting ("
            + "; ".join(diffs) + "); pass --sd-allow-cross-gpu to compare anyway")
    if diffs:
        benchmarksession.logger.warning("comparing across GPUs/clocks: " + "; ".join(diffs))


def pytest_report_header(config: pytest.Config) -> list[str]:
    sd = config.stash.get(SD_CONFIG, None)
    if sd is None:
        return []
    storage = config.getoption("benchmark_storage", default=None)
    lines = [f"sdbench: device {sd.device}; histories in {storage}",
             f"sdbench: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}"]
    folder = storage_path(storage)
    ident = session_gpu_identity(config, sd.device) if folder is not None else None
    if folder is not None and storage == f"{DEFAULT_STORAGE}/{storage_slug(sd.device, ident)}":
        legacy = Path(".benchmarks") / legacy_storage_slug(sd.device, ident)
        if any(legacy.glob("*/*.json")):
            lines.append(f"sdbench: histories of this GPU from an older sdbench are in {legacy}/ (too deep for "
                         f"pytest-benchmark's list/compare): move its machine folders into {folder}/ to keep comparing")
    return lines
