"""Failures the front door turns into one line: out of memory (with the device's memory at the time)."""

from __future__ import annotations

import os

from sdbench.errors import OutOfMemory

GIB = 2**30
OOM_ADVICE = "try a smaller --batch-size, --offload model, or --vae-slicing"


def memory_state(device: str) -> str:
    """The device's free and total memory now, in words (CUDA: the driver's view and what torch holds)."""
    if device.startswith("cuda"):
        try:
            import torch

            free_b, total_b = torch.cuda.mem_get_info(torch.device(device))
            held_b = torch.cuda.memory_reserved(torch.device(device))
        except Exception as exc:  # noqa: BLE001 - a broken context must not hide the OOM itself
            return f"{device} free memory unknown ({type(exc).__name__})"
        return (f"{device} had {free_b / GIB:.2f} GiB free of {total_b / GIB:.2f} GiB "
                f"(this process held {held_b / GIB:.2f} GiB)")
    try:
        page_b = os.sysconf("SC_PAGE_SIZE")
        free_b = os.sysconf("SC_AVPHYS_PAGES") * page_b
        total_b = os.sysconf("SC_PHYS_PAGES") * page_b
    except (ValueError, OSError, AttributeError):
        return f"{device} free memory unknown"
    return f"{device} had {free_b / GIB:.2f} GiB of RAM free of {total_b / GIB:.2f} GiB"


def out_of_memory(case_id: str, batch_size: int, device: str, exc: BaseException) -> OutOfMemory:
    """The one-line error for a case that did not fit: the case, its batch, the memory, what to try."""
    what = "simulated out of memory" if type(exc).__name__ == "SimulatedOutOfMemoryError" else "out of memory"
    return OutOfMemory(f"{what}: case {case_id} at batch size {batch_size}; {memory_state(device)}; {OOM_ADVICE}")
