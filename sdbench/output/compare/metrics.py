"""The metrics ``sdbench compare`` compares (time, energy, power: each lower is better) and the parsing of
``--fail-on`` thresholds (``"time:5%,energy:2.5%"``) and ``--metric`` lists."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sdbench.errors import ConfigError


@dataclass(frozen=True)
class MetricDef:
    """A compared metric: its key, the record prefix its samples and summaries live under, and its unit."""

    key: str
    prefix: str
    unit: str
    label: str


METRICS: dict[str, MetricDef] = {
    "time": MetricDef("time", "time_per_image_s", "s/image", "time per image"),
    "energy": MetricDef("energy", "energy_per_image_j", "J/image", "energy per image"),
    "power": MetricDef("power", "power_w", "W", "mean power"),
}
#: Metrics that exist only when energy was measured (power is energy over time of each round).
ENERGY_METRICS = frozenset({"energy", "power"})

FAIL_ON_ALLOWED = "metric:N% items separated by commas, metric one of time|energy|power, N a positive number (e.g. time:5%,energy:2.5%)"
_FAIL_ON_ITEM = re.compile(r"^\s*([A-Za-z]+)\s*:\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%\s*$", re.ASCII)


def parse_fail_on(text: str) -> dict[str, float]:
    """Parse ``"time:5%,energy:2.5%"`` into ``{"time": 5.0, "energy": 2.5}`` (values are percentages).

    Metrics are ``time``, ``energy`` and ``power`` (case-insensitive); each at most once; N is a positive
    decimal number followed by ``%``. Anything else raises :class:`ConfigError` naming ``fail_on``.
    """
    if not isinstance(text, str):
        raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason="not a string")
    items = text.split(",")
    if not text.strip():
        raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason="empty")
    out: dict[str, float] = {}
    for item in items:
        m = _FAIL_ON_ITEM.match(item)
        if m is None:
            raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason=f"cannot read item {item.strip()!r}")
        metric, number = m.group(1).lower(), m.group(2)
        if metric not in METRICS:
            raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason=f"unknown metric {metric!r}")
        if metric in out:
            raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason=f"metric {metric!r} given twice")
        pct = float(number)
        if not (math.isfinite(pct) and pct > 0):
            raise ConfigError("fail_on", text, FAIL_ON_ALLOWED, reason=f"{number}% is not a positive finite percentage")
        out[metric] = pct
    return out


def format_fail_on(thresholds_pct: Mapping[str, float]) -> str:
    """The inverse of :func:`parse_fail_on`: ``{"time": 5.0}`` -> ``"time:5%"`` (exact round trip)."""
    return ",".join(f"{k}:{np.format_float_positional(float(v), trim='-')}%" for k, v in thresholds_pct.items())


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"time,energy"`` (or a sequence of names) -> ``("time", "energy")`` in the canonical order."""
    names = [p.strip().lower() for p in text.split(",")] if isinstance(text, str) else [str(p).strip().lower() for p in text]
    names = [n for n in names if n]
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise ConfigError("metric", text, list(METRICS), reason=f"unknown metric {bad[0]!r}" if bad else "empty")
    return tuple(k for k in METRICS if k in names)


def normalise_fail_on(fail_on: str | Mapping[str, float] | None) -> dict[str, float]:
    """``fail_on`` as a string (:func:`parse_fail_on`) or a mapping of percentages, checked; None: no thresholds."""
    if fail_on is None:
        return {}
    if isinstance(fail_on, str):
        return parse_fail_on(fail_on)
    out: dict[str, float] = {}
    for k, v in fail_on.items():
        key = str(k).lower()
        if key not in METRICS or isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ConfigError("fail_on", dict(fail_on), FAIL_ON_ALLOWED, reason=f"bad item {k!r}: {v!r} (percentages)")
        out[key] = float(v)
    return out
