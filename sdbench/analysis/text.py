"""How the analysis writes numbers: estimates, intervals, savings and changes with the verdicts their
intervals back, the names and units of clock settings, and markdown tables.

A verdict printed beside an interval ("saves", "slower", "faster") comes from that interval: "saves"
only when it excludes 0, and a number printed beside such a verdict never crosses to the other side of 0.
"""

from __future__ import annotations

from sdbench.analysis.estimates import Estimate

SETTING_UNITS: dict[str, str] = {"sm_clock_mhz": "MHz", "mem_clock_mhz": "MHz", "power_limit_w": "W"}
SETTING_NAMES: dict[str, str] = {"sm_clock_mhz": "SM clock", "mem_clock_mhz": "memory clock",
                                 "power_limit_w": "power limit"}


def _num_text(x: float, signed: bool, side: int) -> str:
    """``x`` to one decimal; when ``side`` is +1 (-1) and one decimal would print it at or below
    (above) 0, more decimals (up to six) instead: a printed number never crosses the verdict's side."""
    def wrong_side(t: str) -> bool:
        return (side > 0 and float(t) <= 0.0) or (side < 0 and float(t) >= 0.0)

    for decimals in range(1, 7):  # as few decimals as keep the number on its side of 0
        text = f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"
        if not wrong_side(text):
            return text
    return f"{x:+.2g}" if signed else f"{x:.2g}"


def interval_text(lo: float, hi: float, signed: bool, away_from_zero: bool) -> str:
    """``[lo, hi]``; an interval that excludes 0 (``away_from_zero``) is printed on its side of 0."""
    side = (1 if lo > 0 else -1) if away_from_zero else 0
    return f"[{_num_text(lo, signed, side)}, {_num_text(hi, signed, side)}]"


def _pct(e: Estimate, signed: bool) -> str:
    if not e.has_ci:
        return f"{e.value:+.1f} %" if signed else f"{e.value:.1f} %"
    assert e.ci_low is not None and e.ci_high is not None
    side = (1 if e.ci_low > 0 else -1) if e.excludes(0.0) else 0
    return f"{_num_text(e.value, signed, side)} % {interval_text(e.ci_low, e.ci_high, signed, side != 0)}"


def pct_text(e: Estimate) -> str:
    """``12.3 % [8.1, 16.0]`` (no interval: ``12.3 %``)."""
    return _pct(e, signed=False)


def signed_pct_text(e: Estimate) -> str:
    """``+4.2 % [+1.0, +7.5]`` (no interval: ``+4.2 %``)."""
    return _pct(e, signed=True)


def saving_text(e: Estimate, kind: str = "energy") -> str:
    """A saving with a verdict that its interval backs: "saves" only when the interval lies above 0,
    "uses more" only below 0, else "not distinguishable from no saving"; no interval, no verdict."""
    if not e.has_ci:
        return f"{kind} saved vs the default clock {e.value:.1f} % (no interval)"
    assert e.ci_low is not None and e.ci_high is not None
    if e.ci_low > 0:
        return f"saves {pct_text(e)} {kind} vs the default clock"
    if e.ci_high < 0:
        more = Estimate(-e.value, -e.ci_high, -e.ci_low)
        return f"uses {pct_text(more)} more {kind} than the default clock"
    return f"{kind} saved vs the default clock {pct_text(e)}: not distinguishable from no saving"


def time_change_text(e: Estimate) -> str:
    """A time change with the verdict its interval backs (slower / faster / not distinguishable)."""
    if not e.has_ci:
        return f"time {e.value:+.1f} % (no interval)"
    assert e.ci_low is not None and e.ci_high is not None
    if e.ci_low > 0:
        return f"time {signed_pct_text(e)} (slower)"
    if e.ci_high < 0:
        return f"time {signed_pct_text(e)} (faster)"
    return f"time {signed_pct_text(e)} (not distinguishable from the default clock's time)"


def rel_text(rel: float | None) -> str:
    """A relative change as a signed percentage (``-`` when unknown)."""
    return "-" if rel is None else f"{100 * rel:+.2f} %"


def est_text(e: Estimate | None, fmt: str = ".4g") -> str:
    """An estimate with its interval (``-`` when there is none)."""
    return "-" if e is None else e.text(fmt)


def markdown_table(table: tuple[list[str], list[list[str]]]) -> str:
    """A markdown table from a header and rows (``|`` in a cell is escaped)."""
    header, rows = table
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)
