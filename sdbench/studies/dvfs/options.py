"""What to sweep and how: :class:`SweepOptions` (the library form of `sdbench sweep`'s flags), checked once
when made against the settings table (scope ``sweep``) and the rules that join a profiling mode and its grid
flags."""

from __future__ import annotations

from dataclasses import dataclass

from sdbench import settings
from sdbench.errors import ConfigError

__all__ = ["PROFILING_MODES", "SweepOptions"]

PROFILING_MODES: tuple[str, ...] = ("baseline", "dvfs", "custom")


@dataclass
class SweepOptions:
    """What to sweep and how (the library form of `sdbench sweep`'s flags)."""

    clocks: str | None = None  # grid spec; None: chosen by profiling_mode / gpu_type
    mem_clocks: str | None = None
    power_limits: str | None = None
    profiling_mode: str = "dvfs"
    gpu_type: str | None = None
    repeats: int = 1
    order: str = "random"
    order_seed: int | None = None  # None: drawn at random and recorded
    default_every: int = 5
    cooldown_c: float | None = 5.0  # None: no cooldown
    cooldown_timeout_s: float = 120.0
    idle_gap_s: float = 2.0
    read_only: bool = False
    clock_command: list[str] | None = None
    activity: str = "auto"  # activity counter backend (sdbench.gpu.dcgm)
    retries: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the options once, when they are made: each field against its row of the settings table
        (sdbench.settings, scope ``sweep``), then the rules that join them (a mode and its grid flags)."""
        for name in ("profiling_mode", "gpu_type", "repeats", "order", "order_seed", "default_every", "cooldown_c",
                     "cooldown_timeout_s", "idle_gap_s", "activity", "retries"):
            settings.check(f"sweep.{name}", getattr(self, name))
        if self.profiling_mode == "custom" and self.clocks is None and self.power_limits is None and self.mem_clocks is None:
            raise ConfigError("profiling_mode", "custom", reason="custom needs --clocks (or --mem-clocks / --power-limits)")
        if self.profiling_mode == "baseline" and (self.clocks or self.mem_clocks or self.power_limits):
            raise ConfigError("profiling_mode", "baseline", reason="baseline measures the default clock only; drop --clocks, "
                              "--mem-clocks and --power-limits or use --profiling-mode custom")
