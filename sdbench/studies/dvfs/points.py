"""A sweep's points and their order: one :class:`SweepSetting` per point, the measurement order
(:func:`order_settings`: random, interleaved or descending) and the plan points with their default-clock
re-measurements (:func:`sweep_points_from_grid`)."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdbench.case import Case
from sdbench.distribute.plan import PlanPoint
from sdbench.errors import ConfigError

__all__ = [
    "ORDERS",
    "ROLE_DEFAULT",
    "ROLE_POINT",
    "SweepSetting",
    "order_settings",
    "sweep_points_from_grid",
]

ORDERS: tuple[str, ...] = ("random", "interleaved", "descending")
ROLE_POINT = "point"
ROLE_DEFAULT = "default-clock"


@dataclass(frozen=True)
class SweepSetting:
    """One point's GPU settings; all ``None`` is the default clock (nothing locked)."""

    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_limit_w: int | None = None

    @property
    def is_default(self) -> bool:
        return self.sm_clock_mhz is None and self.mem_clock_mhz is None and self.power_limit_w is None

    def sort_key(self) -> tuple[int, int, int]:
        """High to low by SM clock, then memory clock, then power limit (None = the card's top)."""
        big = 1 << 30
        return (-(self.sm_clock_mhz or big), -(self.mem_clock_mhz or big), -(self.power_limit_w or big))


def order_settings(settings: Sequence[SweepSetting], order: str, rng: random.Random | None = None) -> list[SweepSetting]:
    """Settings in measurement order.

    ``random``: a seeded shuffle, so frequency is not confounded with the GPU warming up;
    ``interleaved``: alternately from the top and the bottom of the grid (high, low, next high, ...),
    a deterministic way to keep neighbouring clocks apart in time; ``descending``: the predecessor's
    high-to-low order, kept only for comparison (it confounds frequency with temperature).
    """
    if order not in ORDERS:
        raise ConfigError("order", order, allowed=ORDERS)
    ranked = sorted(settings, key=SweepSetting.sort_key)
    if order == "descending":
        return ranked
    if order == "interleaved":
        out: list[SweepSetting] = []
        lo, hi = 0, len(ranked) - 1
        while lo <= hi:
            out.append(ranked[lo])
            if lo != hi:
                out.append(ranked[hi])
            lo, hi = lo + 1, hi - 1
        return out
    if rng is None:
        raise ConfigError("rng", None, reason="a random order needs a seeded random.Random")
    shuffled = list(ranked)
    rng.shuffle(shuffled)
    return shuffled


def _case_dict(case: Case) -> dict[str, Any]:
    d = dataclasses.asdict(case)
    d["tags"] = list(case.tags)
    return d


def sweep_points_from_grid(base_case: Case, sm_clocks_mhz: Sequence[int | None] = (None,), *,
                           mem_clocks_mhz: Sequence[int | None] = (None,), power_limits_w: Sequence[int | None] = (None,),
                           repeats: int = 1, order: str = "random", seed: int = 0, default_every: int = 5,
                           include_default: bool = True) -> list[PlanPoint]:
    """The plan points of a sweep over the cross product of the given settings.

    One block per repeat, each in ``order`` (a random order draws from ``random.Random(seed)``,
    so a seed reproduces it). Default-clock points (role ``default-clock``, nothing locked) come
    first, after every ``default_every`` sweep points (0: only first and last), and last. Point ids
    are ``s<order index>-<case hash>-r<repeat>``: stable for a saved plan, so resume can skip them.
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError("repeats", repeats, allowed="a whole number >= 1")
    if not isinstance(default_every, int) or isinstance(default_every, bool) or default_every < 0:
        raise ConfigError("default_every", default_every, allowed="a whole number >= 0 (0: only first and last)")
    settings = [SweepSetting(sm, mem, pl) for sm, mem, pl in itertools.product(sm_clocks_mhz, mem_clocks_mhz, power_limits_w)]
    settings = [s for s in dict.fromkeys(settings) if not s.is_default]
    rng = random.Random(seed)
    sequence: list[tuple[SweepSetting, int]] = []
    if not settings:
        # Baseline: the default clock, once per repeat.
        sequence = [(SweepSetting(), r) for r in range(repeats)] if include_default else []
    else:
        if include_default:
            sequence.append((SweepSetting(), 0))
        since_default = 0
        for r in range(repeats):
            for s in order_settings(settings, order, rng):
                if include_default and default_every and since_default == default_every:
                    sequence.append((SweepSetting(), r))
                    since_default = 0
                sequence.append((s, r))
                since_default += 1
        if include_default:
            sequence.append((SweepSetting(), repeats - 1))
    points = []
    for idx, (s, r) in enumerate(sequence):
        case = base_case.with_(sm_clock_mhz=s.sm_clock_mhz, mem_clock_mhz=s.mem_clock_mhz, power_limit_w=s.power_limit_w)
        role = ROLE_DEFAULT if s.is_default else ROLE_POINT
        points.append(PlanPoint(point_id=f"s{idx:04d}-{case.case_hash}-r{r}", case=_case_dict(case), repeat=r, role=role))
    return points
