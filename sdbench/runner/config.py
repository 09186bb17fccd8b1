"""How a case is measured: :class:`RunnerConfig`, every field a row of the settings table (scope ``runner``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdbench import settings


def _default(name: str) -> Any:
    """A RunnerConfig field's default, from the settings table (sdbench.settings), its only source."""
    return settings.default_of(f"runner.{name}")


@dataclass
class RunnerConfig:
    """How a case is measured. Defaults suit a GPU; `for_cpu()` shortens them for tiny CPU runs.

    Every field is a row of the settings table (`sdbench.settings`, scope ``runner``): its default, unit and
    allowed range come from there, and a bad value raises ConfigError naming the field, the value and the
    range when the config is made. `min_rounds` left unset is the table's floor, lowered to `max_rounds`
    when that cap is below it (asking for at most 2 rounds means 2); set explicitly above `max_rounds`, it
    is an error.
    """

    warmup_calls: int = _default("warmup_calls")
    warmup_min_s: float = _default("warmup_min_s")  # keep warming up this long after the first call (clocks, caches, CUDA graphs settle)
    min_rounds: int = None  # type: ignore[assignment]  # None: the table's floor, capped by max_rounds
    max_rounds: int = _default("max_rounds")
    max_time_s: float = _default("max_time_s")  # measured rounds of one case; the stop rule also ends noise-limited cases early
    target_rel_ci: float = _default("target_rel_ci")
    energy: str = _default("energy")  # auto | counter | timeline | rapl | none
    idle_s: float = _default("idle_s")  # idle-power baseline before the case; 0 disables (net energy then unavailable)
    per_step: bool = _default("per_step")
    per_phase: bool = _default("per_phase")
    timeline_hz: float = _default("timeline_hz")  # power timeline for per-step/phase energy; 0 disables
    telemetry_hz: float = _default("telemetry_hz")
    min_window_periods: int = _default("min_window_periods")
    max_calls_per_window: int = _default("max_calls_per_window")
    align_to_counter: bool = _default("align_to_counter")  # start windows on a counter update, read the end on the next one
    # Unmeasured calls just before each window of several (short) calls, so the window starts on a
    # loaded GPU: NVML's power reading trails the load by ~0.25 s, and a window that starts from idle
    # reads low on the power timeline. At least `preroll_s` of calls; 0 disables.
    preroll_s: float = _default("preroll_s")
    count_flops: bool = _default("count_flops")
    matmul_ceiling_tflops: float | None = _default("matmul_ceiling_tflops")

    def __post_init__(self) -> None:
        if self.min_rounds is None:
            floor = _default("min_rounds")
            # A cap below the default floor lowers the floor (asking for at most 2 rounds means 2).
            self.min_rounds = min(floor, self.max_rounds) if _is_count(self.max_rounds) else floor
        settings.check_runner(self)

    @classmethod
    def for_device(cls, device: str, **overrides: Any) -> RunnerConfig:
        """The defaults for ``device``: a GPU's for CUDA and for the simulated GPU (its seconds are virtual, so
        the GPU's idle baseline, warm-up and rounds cost a few real calls), the short CPU ones otherwise."""
        from sdbench.case import is_simulated_device

        if device.startswith("cuda") or is_simulated_device(device):
            return cls(**overrides)
        return cls.for_cpu(**overrides)

    @classmethod
    def for_cpu(cls, **overrides: Any) -> RunnerConfig:
        """The short CPU defaults (the table's ``cpu_default`` column), with ``overrides`` on top."""
        gpu = settings.runner_defaults()
        base = {k: v for k, v in settings.runner_defaults(cpu=True).items() if v != gpu[k]}
        base.update(overrides)
        return cls(**base)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
