"""The shared front-door object: a warm pipeline cache, a Runner and the device, for any number of cases."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sdbench.case import Case, resolve_device
from sdbench.errors import ConfigError
from sdbench.measure.ceiling import Ceiling, matmul_ceiling
from sdbench.pipelines.build import BuiltPipeline, PipelineCache, PipelineKey, build_pipeline
from sdbench.pipelines.capability import check_case
from sdbench.pipelines.optimize import Applied, apply
from sdbench.record.build import build_record
from sdbench.record.environment import environment
from sdbench.runner import Measurement, Runner, RunnerConfig
from sdbench.spec.devices import is_simulated_device

if TYPE_CHECKING:
    from sdbench.gpu.base import GpuDevice

log = logging.getLogger(__name__)

#: A progress callback: one short line about what the measurement is doing now.
Progress = Callable[[str], None]
#: One measurement of a case: its flat record and the Runner's Measurement (per-window bounds and telemetry).
Measured = tuple[dict[str, Any], Measurement]
#: What a hook calls to measure: the hooks inside it, then the Bench's one measurement path.
MeasureFn = Callable[[Case, Progress | None], Measured]


class PointHook(Protocol):
    """Something that runs around each measured case (a point) of a :class:`Bench`.

    ``measure(case, measure, progress)`` gets the case and ``measure``: the hooks inside this one and then the
    Bench's one measurement path. It may set things up before calling it (lock clocks), call it more than once
    (a retry), pass another progress callback, read the record and the Measurement's windows (verify), and
    add fields to the record; it returns the record and the Measurement it keeps. A hook that does not call
    ``measure`` measures nothing.
    """

    def measure(self, case: Case, measure: MeasureFn, progress: Progress | None) -> Measured: ...


def _through(hook: PointHook, inner: MeasureFn) -> MeasureFn:
    def run(case: Case, progress: Progress | None) -> Measured:
        return hook.measure(case, inner, progress)
    return run


def open_gpu_for(device: str) -> GpuDevice | None:
    """The NVML device that measures `device`'s energy: real for CUDA, simulated for `simulated`, else None."""
    from sdbench.gpu import open_device

    if is_simulated_device(device):
        return open_device(device)
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return open_device("auto", index=index)
    return None


def set_cpu_threads() -> int:
    """Run CPU compute on ``SDBENCH_CPU_THREADS`` torch threads (default 1); returns the previous count.

    On a shared 2-core machine a second OpenMP thread spin-waits for a descheduled partner: a tiny-sd call
    took 0.15 s on one thread and 0.9-2.6 s on two with the host loaded (BENCHMARKS.md)."""
    import torch

    previous = torch.get_num_threads()
    text = os.environ.get("SDBENCH_CPU_THREADS", "1")
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError("SDBENCH_CPU_THREADS", text, "a whole number >= 1")
    torch.set_num_threads(threads)
    return previous


class Bench:
    """Measures cases through one Runner, keeping pipelines warm between them.

    ``gpu``: the device that measures energy and telemetry. ``"open"`` (the default) opens the one for
    ``device`` (:func:`open_gpu_for`: NVML for CUDA, the simulated GPU for ``simulated``, none on the CPU);
    a :class:`~sdbench.gpu.base.GpuDevice` is used as given (the Bench closes it); ``None`` measures without one.

    ``hooks`` (:class:`PointHook`) run around every measured case, the first the outermost; none by default.
    :meth:`hooked` installs more for a while (a sweep's clock lock).
    """

    def __init__(self, device: str = "auto", runner_config: RunnerConfig | None = None,
                 max_pipelines: int = 2, gpu: GpuDevice | None | Literal["open"] = "open",
                 hooks: list[PointHook] | None = None) -> None:
        self.device: str = resolve_device(device)
        self.gpu: GpuDevice | None = open_gpu_for(self.device) if gpu == "open" else gpu
        if runner_config is None:
            runner_config = RunnerConfig.for_device(self.device)
        self.runner: Runner = Runner(runner_config, self.gpu)
        self.hooks: list[PointHook] = list(hooks or [])
        budget = None
        if self.device.startswith("cuda"):
            import torch

            # Weights of warm pipelines may fill 60 % of the card; the rest is for activations.
            budget = int(0.6 * torch.cuda.get_device_properties(torch.device(self.device)).total_memory)
        self.cache: PipelineCache = PipelineCache(max_pipelines=max_pipelines, vram_budget_bytes=budget)
        self._saved_threads: int | None = None
        if not self.device.startswith("cuda"):
            self._saved_threads = set_cpu_threads()
        self._applied: dict[PipelineKey, Applied] = {}
        self._ceilings: dict[str, Ceiling] = {}
        self._environment: dict[str, Any] | None = None

    @property
    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = environment(self.gpu, self.device)
        return self._environment

    def case(self, model: str, **kwargs: Any) -> Case:
        """A case on this bench's device (dtype defaults to fp16 on a GPU, fp32 on the CPU)."""
        kwargs.setdefault("device", self.device)
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = "fp16" if self.device.startswith("cuda") else "fp32"
        return Case.create(model, **kwargs)

    def pipeline(self, case: Case) -> tuple[BuiltPipeline, Applied]:
        """The warm pipeline for `case`: rebuilt only when model, weights, dtype, device or profile change."""
        # The rules read the device the run uses (this bench's NVML or simulated GPU when it measures the case),
        # so a simulated V100 refuses bf16 as a real one would, and nothing is built for a case that cannot run.
        check_case(case, gpu=self.gpu if case.device == self.device else None)
        key = PipelineKey(case.model, case.weights, case.dtype, case.compute_device,
                          f"{case.profile}/{case.knobs}/{case.attention}/{case.offload}")

        def build() -> BuiltPipeline:
            built = build_pipeline(case.model, weights=case.weights, dtype=case.dtype, device=case.compute_device,
                                   seed=0, steps=case.steps)
            if case.offload != "none":
                # Offloaded pipelines start on the CPU; the offload hooks move modules as they run. They
                # are built on the compute device first: synthetic weights are drawn on the device that
                # holds them, so only this gives the same weights (and images) as without offload.
                built.pipe.to("cpu")
                if case.compute_device.startswith("cuda"):
                    import torch

                    torch.cuda.empty_cache()
            self._applied[key] = apply(built.pipe, profile=case.profile, attention=case.attention,
                                       offload=case.offload, device=case.compute_device, knobs=case.knobs)
            return built

        built = self.cache.get(key, build)
        return built, self._applied[key]

    @contextlib.contextmanager
    def hooked(self, *hooks: PointHook) -> Iterator[Bench]:
        """Run every case measured inside the block through ``hooks`` too (the first the outermost; inside the
        hooks already installed); they are taken off again when the block ends, however it ends."""
        self.hooks.extend(hooks)
        try:
            yield self
        finally:
            for hook in hooks:
                self.hooks.remove(hook)

    def measure(self, case: Case, progress: Progress | None = None) -> dict[str, Any]:
        """Measure one case through the hooks; returns its flat record (the environment included)."""
        return self.measure_with_windows(case, progress)[0]

    def measure_with_windows(self, case: Case, progress: Progress | None = None) -> Measured:
        """Measure one case through the hooks; returns its record and the Runner's Measurement that the hooks
        kept (per-window data, for sweeps)."""
        run: MeasureFn = self._measure_once
        for hook in reversed(self.hooks):
            run = _through(hook, run)
        return run(case, progress)

    def _measure_once(self, case: Case, progress: Progress | None = None) -> Measured:
        """The one measurement path: the warm pipeline, one Runner run, and the record built from it."""
        built, applied = self.pipeline(case)
        m = self.runner.run(case, built, applied, progress=progress)
        ceiling = self.ceiling(case.dtype)
        rec = build_record(m, ceiling.tflops)
        rec.update(ceiling.fields())
        if rec.get("mfu") is None:
            rec["mfu_unavailable_reason"] = (ceiling.reason if ceiling.tflops is None
                                             else "no FLOP count for this case (count_flops off)")
        rec.update(applied.as_dict())
        # The pipeline's warnings about a cut prompt are silenced; the record says it instead.
        from sdbench.pipelines.tokenizer import prompt_token_fields

        rec.update(prompt_token_fields(built.pipe, case.prompt))
        if not case.compute_device.startswith("cuda"):
            import torch

            rec["torch_threads"] = torch.get_num_threads()
        rec.update({f"env_{k}": v for k, v in self.environment.items()})
        return rec, m

    def ceiling(self, dtype: str) -> Ceiling:
        """The dense matmul ceiling MFU is taken against for ``dtype`` (a RunnerConfig value wins; else measured
        once per card and cached, the datasheet's, or the simulated card's; None with a reason on the CPU)."""
        fixed = self.runner.config.matmul_ceiling_tflops
        if fixed:
            return Ceiling(float(fixed), "configured")
        if dtype not in self._ceilings:
            self._ceilings[dtype] = matmul_ceiling(self.device, self.gpu, dtype)
        return self._ceilings[dtype]

    def close(self) -> None:
        self.cache.clear()
        if self._saved_threads is not None:
            import torch

            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
        if self.gpu is not None:
            self.gpu.close()
