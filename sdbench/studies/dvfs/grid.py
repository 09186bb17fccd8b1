"""The sweep's grid specs, resolved on the device: which SM clocks, memory clocks and power limits to sweep.

A spec (``all``, ``every:N``, ``count:N``, ``range:MIN-MAX[:N]``, ``list:A,B,...``) is parsed for syntax
(:func:`parse_clock_spec`) and resolved against the device's own supported list (:func:`resolve_clock_spec`,
:func:`resolve_mem_clock_spec`, :func:`resolve_power_limit_spec`); nothing is hard-coded. The ``--gpu-type``
presets (:data:`GPU_TYPE_PRESETS`) only choose a ``range:`` spec whose spacing fits the device's grid.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdbench.errors import ConfigError
from sdbench.measure.clocks import validate_clock_mhz

__all__ = [
    "CLOCK_SPEC_HELP",
    "DEFAULT_DVFS_SPEC",
    "GPU_TYPE_PRESETS",
    "POWER_SPEC_HELP",
    "ClockSpec",
    "GpuTypePreset",
    "parse_clock_spec",
    "resolve_clock_spec",
    "resolve_mem_clock_spec",
    "resolve_power_limit_spec",
]

CLOCK_SPEC_HELP = ("all | every:N (every Nth supported clock from the top) | range:MIN-MAX[:N] (supported clocks "
                   "in [MIN, MAX], every Nth) | count:N (N clocks spread evenly over the grid) | list:A,B,... "
                   "(each a supported clock)")
POWER_SPEC_HELP = ("list:W1,W2,... | range:MIN-MAX:STEP (watts) | count:N (N limits spread evenly over the device's "
                   "min..max)")

# ASCII digits only: Python's \d also matches other scripts' digits, which int() would accept.
_SPEC_RE = {
    "all": re.compile(r"all"),
    "every": re.compile(r"every:([0-9]{1,4})"),
    "count": re.compile(r"count:([0-9]{1,4})"),
    "range": re.compile(r"range:([0-9]{1,5})-([0-9]{1,5})(?::([0-9]{1,4}))?"),
    "list": re.compile(r"list:([0-9]{1,5}(?:,[0-9]{1,5})*)"),
}


@dataclass(frozen=True)
class ClockSpec:
    """A parsed grid spec (syntax only; :func:`resolve_clock_spec` checks it against a device)."""

    kind: str  # all | every | count | range | list
    n: int | None = None
    low: int | None = None
    high: int | None = None
    values: tuple[int, ...] = ()


def parse_clock_spec(text: Any, field_name: str = "clocks") -> ClockSpec:
    """Parse ``all``, ``every:N``, ``count:N``, ``range:MIN-MAX[:N]`` or ``list:A,B,...``.

    Only digits, commas and the fixed words pass, so nothing but numbers ever reaches a clock call.
    """
    if not isinstance(text, str):
        raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP)
    spec = text.strip()
    for kind, pattern in _SPEC_RE.items():
        m = pattern.fullmatch(spec)
        if m is None:
            continue
        if kind == "all":
            return ClockSpec("all")
        if kind in ("every", "count"):
            n = int(m.group(1))
            if n < 1:
                raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP, reason=f"{kind} needs N >= 1")
            return ClockSpec(kind, n=n)
        if kind == "range":
            low, high = int(m.group(1)), int(m.group(2))
            n = int(m.group(3)) if m.group(3) else 1
            if low > high:
                raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP, reason=f"MIN {low} exceeds MAX {high}")
            if n < 1:
                raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP, reason="the step N must be >= 1")
            return ClockSpec("range", n=n, low=low, high=high)
        values = tuple(int(v) for v in m.group(1).split(","))
        return ClockSpec("list", values=values)
    raise ConfigError(field_name, text, allowed=CLOCK_SPEC_HELP)


def _spread(values: Sequence[int], n: int) -> list[int]:
    """``n`` entries of ``values`` spread evenly, first and last included."""
    if n >= len(values):
        return list(values)
    if n == 1:
        return [values[0]]
    idx = sorted({round(i * (len(values) - 1) / (n - 1)) for i in range(n)})
    return [values[i] for i in idx]


def resolve_clock_spec(text: Any, grid: Sequence[int], field_name: str = "clocks") -> list[int]:
    """The supported clocks (descending) that a spec picks from the device's ``grid``.

    ``list:`` values must each be on the grid (an error names the nearest supported clocks);
    ``range:`` takes the grid clocks inside it (an empty range is an error that shows the grid).
    """
    spec = parse_clock_spec(text, field_name)
    clocks = sorted({int(c) for c in grid}, reverse=True)
    if not clocks:
        raise ConfigError(field_name, text, reason="the device lists no supported clocks")
    if spec.kind == "all":
        return clocks
    if spec.kind == "every":
        assert spec.n is not None
        return clocks[:: spec.n]
    if spec.kind == "count":
        assert spec.n is not None
        return _spread(clocks, spec.n)
    if spec.kind == "range":
        assert spec.low is not None and spec.high is not None and spec.n is not None
        inside = [c for c in clocks if spec.low <= c <= spec.high]
        if not inside:
            raise ConfigError(field_name, text, allowed=f"a range overlapping the device's grid, {clocks[-1]}..{clocks[0]} MHz",
                              reason="no supported clock in this range")
        return inside[:: spec.n]
    out = [validate_clock_mhz(field_name, v, clocks) for v in spec.values]
    return sorted(set(out), reverse=True)


def resolve_mem_clock_spec(text: str | None, mem_grid: Sequence[int]) -> list[int | None]:
    """Memory clocks to sweep: ``None`` (nothing locked) when no spec, else the spec on the memory grid."""
    if text is None:
        return [None]
    return list(resolve_clock_spec(text, mem_grid, "mem_clocks"))


def resolve_power_limit_spec(text: str | None, min_w: float, max_w: float) -> list[int | None]:
    """Power limits (whole watts, descending) from ``list:``, ``range:MIN-MAX:STEP`` or ``count:N``.

    Each must lie in the device's ``[min_w, max_w]``; ``None`` spec means "leave the limit alone".
    """
    if text is None:
        return [None]
    spec = text.strip() if isinstance(text, str) else text
    allowed = f"{POWER_SPEC_HELP}; this device accepts {min_w:g}..{max_w:g} W"
    m_list = _SPEC_RE["list"].fullmatch(spec) if isinstance(spec, str) else None
    m_range = _SPEC_RE["range"].fullmatch(spec) if isinstance(spec, str) else None
    m_count = _SPEC_RE["count"].fullmatch(spec) if isinstance(spec, str) else None
    if m_list:
        values = [int(v) for v in m_list.group(1).split(",")]
    elif m_range and m_range.group(3):
        low, high, step = int(m_range.group(1)), int(m_range.group(2)), int(m_range.group(3))
        if low > high or step < 1:
            raise ConfigError("power_limits", text, allowed=allowed, reason="need MIN <= MAX and STEP >= 1")
        values = list(range(low, high + 1, step))
    elif m_count:
        n = int(m_count.group(1))
        if n < 1:
            raise ConfigError("power_limits", text, allowed=allowed, reason="count needs N >= 1")
        lo, hi = int(-(-min_w // 1)), int(max_w // 1)
        values = [hi] if n == 1 else sorted({round(lo + i * (hi - lo) / (n - 1)) for i in range(n)})
    else:
        raise ConfigError("power_limits", text, allowed=allowed)
    for v in values:
        if not min_w <= v <= max_w:
            raise ConfigError("power_limits", v, allowed=f"{min_w:g}..{max_w:g} W", reason="outside the device's power-limit range")
    return list(sorted(set(values), reverse=True))


@dataclass(frozen=True)
class GpuTypePreset:
    """The seed's ``--gpu-type`` grids, as a range and a target spacing; the clocks come from the device."""

    min_mhz: int
    max_mhz: int
    spacing_mhz: int = 60

    def spec(self, grid: Sequence[int]) -> str:
        """A ``range:MIN-MAX:N`` spec whose every-Nth step approximates ``spacing_mhz`` on this grid."""
        clocks = sorted(set(grid), reverse=True)
        gaps = [a - b for a, b in zip(clocks, clocks[1:])]
        step = statistics.median(gaps) if gaps else self.spacing_mhz
        n = max(1, round(self.spacing_mhz / step))
        return f"range:{self.min_mhz}-{self.max_mhz}:{n}"


#: The seed's grids (A100 1410..510, V100 1380..510, H100 up to 1980), spaced about 60 MHz.
GPU_TYPE_PRESETS: dict[str, GpuTypePreset] = {
    "A100": GpuTypePreset(510, 1410),
    "V100": GpuTypePreset(510, 1380),
    "H100": GpuTypePreset(510, 1980),
}
DEFAULT_DVFS_SPEC = "every:4"
