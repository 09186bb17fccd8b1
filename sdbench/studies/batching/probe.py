"""One real pipeline call at a case's settings and a given batch size, and its peak memory; and how long
the case's prompt is in CLIP tokens.

On CUDA the peak is torch's own statistic; on the CPU, where torch keeps none, it is the pipeline's
weights (`module_bytes`) plus the live-tensor peak of the call (`LiveTensorPeak`). With a memory budget,
a peak above it raises `SimulatedOutOfMemoryError`, as if the device had only that much memory.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sdbench.case import Case
from sdbench.errors import ConfigError
from sdbench.studies.batching.memory import SimulatedOutOfMemoryError, is_cuda

if TYPE_CHECKING:
    from sdbench.session import Bench


class LiveTensorPeak(TorchDispatchMode):
    """The peak bytes of tensors alive during a call on the CPU, where torch keeps no peak statistics.

    Every aten op's outputs are seen through torch's dispatch-mode extension point; a storage is
    counted once while any tensor on it is alive (views share it). Workspaces private to a kernel
    are not seen, so this is a lower bound of what the allocator really held.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._storages: dict[int, list[int]] = {}  # data_ptr -> [nbytes, tensors alive on it]

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self._storages[key]
            self.live_bytes -= entry[0]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            nbytes = storage.nbytes()
            if nbytes == 0:
                continue
            key = storage.data_ptr()
            entry = self._storages.get(key)
            if entry is None:
                self._storages[key] = [nbytes, 1]
                self.live_bytes += nbytes
                self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            else:
                entry[1] += 1
            weakref.finalize(t, self._release, key)
        return out


def module_bytes(pipe: Any) -> int:
    """Bytes of the pipeline's parameters and buffers (each storage once), what stays resident."""
    seen: set[int] = set()
    total = 0
    for component in getattr(pipe, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in [*component.parameters(), *component.buffers()]:
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


@dataclass(frozen=True)
class ProbeResult:
    """One probe call that fitted: its peak memory and where that number comes from."""

    peak_bytes: int | None
    peak_source: str
    reserved_peak_bytes: int | None = None


class PipelineProbe:
    """One real pipeline call at the case's settings with a given batch size, and its peak memory.

    On CUDA the peak is `torch.cuda.max_memory_allocated` since a reset just before the call; on the
    CPU it is the pipeline's weights plus the live-tensor peak of the call (`LiveTensorPeak`). With
    `memory_budget_bytes`, a peak above the budget raises `SimulatedOutOfMemoryError`, as if the
    device had only that much memory.

    `probe_steps` (None: the case's own) shortens each probe call: peak memory does not grow with
    the number of denoising steps (each step's activations are freed before the next), so fewer
    steps find the same boundary sooner.
    """

    def __init__(self, bench: Bench, case: Case, *, memory_budget_bytes: int | None = None,
                 probe_steps: int | None = None) -> None:
        if memory_budget_bytes is not None and (not isinstance(memory_budget_bytes, int) or memory_budget_bytes <= 0):
            raise ConfigError("memory_budget_bytes", memory_budget_bytes, "a positive whole number of bytes")
        self.bench = bench
        self.case = case if probe_steps is None else case.with_(steps=probe_steps)
        self.memory_budget_bytes = memory_budget_bytes
        self.device = case.compute_device

    def case_for(self, batch_size: int) -> Case:
        return self.case.with_(batch_size=batch_size)

    def __call__(self, batch_size: int) -> ProbeResult:
        from sdbench.pipelines.build import set_scheduler

        case = self.case_for(batch_size)
        built, applied = self.bench.pipeline(case)
        overrides = {"timestep_spacing": case.timestep_spacing} if case.timestep_spacing else None
        set_scheduler(built.pipe, case.scheduler, overrides)
        # The Runner's own call, so a probe runs exactly what a measurement of this case runs.
        call = self.bench.runner.make_call(case, built, applied)
        reserved: int | None = None
        with torch.inference_mode():
            if is_cuda(self.device):
                d = torch.device(self.device)
                torch.cuda.synchronize(d)
                torch.cuda.reset_peak_memory_stats(d)
                images = call()
                torch.cuda.synchronize(d)
                peak = int(torch.cuda.max_memory_allocated(d))
                reserved = int(torch.cuda.max_memory_reserved(d))
                source = "torch.cuda.max_memory_allocated"
            else:
                with LiveTensorPeak() as tracker:
                    images = call()
                peak = module_bytes(built.pipe) + tracker.peak_bytes
                source = "weights + live-tensor peak (CPU)"
        if self.memory_budget_bytes is not None and peak > self.memory_budget_bytes:
            # Raised while `images` is still referenced, as a real OOM would be: recovery must free it.
            raise SimulatedOutOfMemoryError(
                f"simulated out of memory: batch {batch_size} peaked at {peak} bytes, over the budget of "
                f"{self.memory_budget_bytes} bytes", peak_bytes=peak, budget_bytes=self.memory_budget_bytes)
        del images
        return ProbeResult(peak, source, reserved)


def device_memory_total_bytes(bench: Bench, device: str) -> int | None:
    """The GPU's total memory: torch's view on CUDA; None on the CPU (the simulated GPU's is not real)."""
    if is_cuda(device) and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return None


def prompt_token_fields(bench: Bench, case: Case) -> dict[str, Any]:
    """How long the case's prompt is in CLIP tokens and whether CLIP's context truncates it.

    CLIP text encoders see at most `model_max_length` (77) tokens, start and end included; a longer
    prompt is cut there, so its extra words cost no compute and change no image.
    """
    built, _ = bench.pipeline(case)
    tokenizer = getattr(built.pipe, "tokenizer", None) or getattr(built.pipe, "tokenizer_2", None)
    if tokenizer is None:
        return {"prompt_tokens": None, "prompt_token_reason": "the pipeline has no tokenizer"}
    n_tokens = len(tokenizer(case.prompt, truncation=False).input_ids)
    max_tokens = int(tokenizer.model_max_length)
    return {"prompt_tokens": n_tokens, "prompt_max_tokens": max_tokens, "prompt_truncated": n_tokens > max_tokens,
            "prompt_tokens_dropped": max(0, n_tokens - max_tokens)}
