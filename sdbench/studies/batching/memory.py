"""Out-of-memory as a result, not a crash: the guarded call (`attempt`), the recovery after an OOM, and
the simulated OOM that exercises that path where there is no VRAM to run out of.

`attempt(fn, device)` runs one call; an out-of-memory error is caught, its traceback's frames cleared,
memory recovered (`recover_memory`: `gc.collect()`, `torch.cuda.empty_cache()`, peak statistics reset)
and the call reported as an `Attempt` with outcome "oom". `SimulatedOutOfMemoryError` subclasses torch's
OOM error, so it takes exactly the same path as a real one.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import torch

from sdbench.errors import SdbenchError, is_out_of_memory

T = TypeVar("T")

GIB = 2**30

Outcome = Literal["fits", "oom", "error"]


class SimulatedOutOfMemoryError(torch.OutOfMemoryError):
    """A probe's peak memory exceeded the memory budget: handled exactly like a real CUDA OOM.

    It subclasses `torch.OutOfMemoryError` (which is `torch.cuda.OutOfMemoryError`), so every
    `except` that catches a real OOM catches this one too.
    """

    def __init__(self, message: str, *, peak_bytes: int | None = None, budget_bytes: int | None = None) -> None:
        super().__init__(message)
        self.peak_bytes = peak_bytes
        self.budget_bytes = budget_bytes


def is_cuda(device: str) -> bool:
    """Whether `device` is a CUDA device (where torch keeps memory statistics)."""
    return device.startswith("cuda")


def recover_memory(device: str) -> int | None:
    """Give memory back after an out-of-memory error; returns the bytes still allocated (CUDA), else None.

    Call it only once nothing refers to the failed call's tensors any more (the exception and its
    traceback are gone): `gc.collect()` breaks reference cycles through frames, `empty_cache()` hands
    the cached blocks back to the driver, and the peak statistics are reset so the next probe's peak
    is its own.
    """
    gc.collect()
    if is_cuda(device) and torch.cuda.is_available():
        d = torch.device(device)
        torch.cuda.synchronize(d)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(d)
        return int(torch.cuda.memory_allocated(d))
    return None


def _peak_so_far_bytes(device: str) -> int | None:
    """CUDA's high-water mark since the last reset (before a failure: how far the failed call got)."""
    if is_cuda(device) and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    return None


@dataclass
class Attempt(Generic[T]):
    """What one guarded call did: its value, or the out-of-memory (or other) failure and the recovery."""

    outcome: Outcome
    value: T | None = None
    message: str | None = None
    oom_simulated: bool = False
    peak_bytes: int | None = None  # on failure: the simulated peak, or CUDA's high-water mark when it failed
    memory_after_recovery_bytes: int | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "fits"


def attempt(fn: Callable[[], T], device: str, *, catch_errors: bool = False) -> Attempt[T]:
    """Run `fn()`; an out-of-memory error is caught, its memory recovered, and reported as `oom`.

    Other errors propagate, unless `catch_errors` (then they are reported as `error` with their
    message, after the same recovery). sdbench's own errors (a bad configuration) always propagate:
    they are the user's to fix, not a property of the device.
    """
    t0 = time.perf_counter()
    outcome: Outcome = "fits"
    message: str | None = None
    simulated = False
    peak: int | None = None
    try:
        value = fn()
    except SdbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - an OOM is a result; other errors only when asked (else re-raised)
        oom = is_out_of_memory(exc)
        if not (oom or catch_errors):
            raise
        outcome = "oom" if oom else "error"
        message = f"{type(exc).__name__}: {exc}"
        simulated = isinstance(exc, SimulatedOutOfMemoryError)
        peak = exc.peak_bytes if isinstance(exc, SimulatedOutOfMemoryError) else _peak_so_far_bytes(device)
        # The traceback's frames hold the failed call's tensors; clear them so recovery can free them.
        traceback.clear_frames(exc.__traceback__)
        value = None
    # Past the except block Python has unbound `exc`: nothing refers to the failed call any more.
    after: int | None = None
    if outcome != "fits":
        after = recover_memory(device)
    return Attempt(outcome, value, message, simulated, peak, after, time.perf_counter() - t0)
