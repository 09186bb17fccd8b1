"""The closing results table, the results folder's summary.md, and the text of progress lines.

`results_table(records)` is what a person reads at the end of a run: one line per case, at most
`TABLE_WIDTH` columns, the same numbers as the records (`images_per_s`, `time_per_image_s_median` with
`time_per_image_s_ci95_low/high`, `energy_per_image_j_*`, `stop_reason`), and a mark on the cases whose
noise was high. `summary_markdown(...)` wraps it with the run's status, environment, files and next steps;
`next_steps_in(summary_text)` reads those steps back (the `sdbench bench` front door prints them last).

Nothing here imports torch, numpy or pytest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sdbench.record.schema import record_is_simulated

TABLE_WIDTH = 120
# Stop reasons that mean the rounds ran out before the interval reached its target.
NOISY_STOPS = ("noise_limited", "max_rounds", "max_time")
NOISY_MARK = "!"
#: A real GPU busy (NVML utilisation: the share of time a kernel ran, mean of the measured rounds' telemetry)
#: less than this share of the measured time idled between kernels waiting for the host: the host's pace, not
#: the GPU's, set the case's numbers (eager batch-1 calls on a fast card), so a comparison of such cases across
#: GPU-side settings (resolution, scheduler, card, clock) measures the host.
HOST_BOUND_UTIL_PCT = 80.0
HOST_BOUND_MARK = "h"
DEFAULT_TARGET_REL_CI = 0.02
NEXT_STEPS_HEADING = "## What next"
HEADERS = ("case", "images/s", "s/image [95% CI]", "J/image [95% CI]", "stop", "")


# --- numbers --------------------------------------------------------------------------------------------
def sig(value: Any, digits: int = 3) -> str:
    """`value` with `digits` significant digits, trailing zeros kept (0.150, 12.3, 1234); '-' for None/NaN."""
    if value is None or isinstance(value, bool):
        return "-"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(x):
        return "-"
    if x == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude < -3 or magnitude >= 6:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    return f"{x:.{decimals}f}"


def with_interval(median: Any, low: Any, high: Any) -> str:
    """'0.150 [0.148, 0.152]': the median and its 95 % interval (the median alone without an interval)."""
    if median is None:
        return "-"
    if low is None or high is None:
        return sig(median)
    return f"{sig(median)} [{sig(low)}, {sig(high)}]"


def duration(seconds: float) -> str:
    """'45 s', '2 min 10 s', '1 h 5 min': a duration as a person reads it."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        minutes, rest = divmod(s, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(s, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# --- the closing table ------------------------------------------------------------------------------------
def is_noisy(record: Mapping[str, Any], target_rel_ci: float = DEFAULT_TARGET_REL_CI) -> bool:
    """High noise: the time or energy interval is wider than the target (relative half-width), or the stop
    rule ended the case without converging (noise_limited, max_rounds, max_time)."""
    if record.get("stop_reason") in NOISY_STOPS:
        return True
    for key in ("time_per_image_s_ci95_halfwidth_rel", "energy_per_image_j_ci95_halfwidth_rel"):
        value = record.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and value > target_rel_ci:
            return True
    return False


def host_bound_util_pct(record: Mapping[str, Any]) -> float | None:
    """The GPU's busy share (``telemetry_gpu_util_pct_mean``) when a real GPU was busy less than
    :data:`HOST_BOUND_UTIL_PCT` of the measured time (host-bound), else None: no telemetry, a simulated GPU
    (its utilisation is modelled SM activity, not a measurement of the host), or a busy GPU."""
    util = record.get("telemetry_gpu_util_pct_mean")
    if isinstance(util, bool) or not isinstance(util, (int, float)) or not math.isfinite(util):
        return None
    if record_is_simulated(record) or not str(record.get("compute_device") or record.get("env_compute_device") or "cuda").startswith("cuda"):
        return None
    return float(util) if util < HOST_BOUND_UTIL_PCT else None


def marks(record: Mapping[str, Any], target_rel_ci: float = DEFAULT_TARGET_REL_CI) -> str:
    """The closing table's mark column: ``!`` high noise, ``h`` host-bound (``!h`` both)."""
    return ((NOISY_MARK if is_noisy(record, target_rel_ci) else "")
            + (HOST_BOUND_MARK if host_bound_util_pct(record) is not None else ""))


def case_label(record: Mapping[str, Any]) -> str:
    """The pytest parameter id of the record's test (unique within a test, e.g. one per prompt), else its case_id."""
    test = str(record.get("test") or "")
    if test.endswith("]") and "[" in test:
        return test[test.index("[") + 1:-1]
    return str(record.get("case_id") or record.get("name") or "?")


def group_label(record: Mapping[str, Any]) -> str:
    """'test_speed.py::test_speed' of a record's node id ('' when it has none)."""
    test = str(record.get("test") or "")
    if not test:
        return ""
    return test.split("[", 1)[0].rsplit("/", 1)[-1]


def shorten(text: str, width: int) -> str:
    """`text` cut in the middle ('tiny-sdxl-euler-an...fp32-eager') to fit `width` columns."""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    keep = width - 3
    tail = keep // 3
    return text[:keep - tail] + "..." + (text[-tail:] if tail else "")


def _energy(record: Mapping[str, Any]) -> str:
    median = record.get("energy_per_image_j_median")
    if median is None or record.get("energy_status") == "unavailable":
        return "n/a"
    text = with_interval(median, record.get("energy_per_image_j_ci95_low"), record.get("energy_per_image_j_ci95_high"))
    if record.get("energy_status") == "simulated" or record.get("energy_simulated"):
        text += " (sim)"
    return text


def _row(record: Mapping[str, Any], target_rel_ci: float) -> list[str]:
    if record.get("oom") or str(record.get("record_type", "")).endswith("_oom"):
        return [case_label(record), "-", "out of memory", "-", "oom", ""]
    time_text = with_interval(record.get("time_per_image_s_median"), record.get("time_per_image_s_ci95_low"),
                              record.get("time_per_image_s_ci95_high"))
    return [case_label(record), sig(record.get("images_per_s")), time_text, _energy(record),
            str(record.get("stop_reason") or "-"), marks(record, target_rel_ci)]


def legend(target_rel_ci: float = DEFAULT_TARGET_REL_CI, records: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """The table's legend, each line within TABLE_WIDTH; the host-bound line only when one of ``records`` is."""
    lines = [f"{NOISY_MARK} high noise: a 95 % interval wider than +-{100 * target_rel_ci:g} % of the median (the target), "
             "or the case stopped short of it",
             f"  (stop reason {', '.join(NOISY_STOPS[:-1])} or {NOISY_STOPS[-1]})"]
    busy = [u for u in (host_bound_util_pct(r) for r in records) if u is not None]
    if busy:
        lines += [f"{HOST_BOUND_MARK} host-bound: the GPU ran kernels only {min(busy):.0f}-{max(busy):.0f} % of the measured time "
                  f"(NVML, below {HOST_BOUND_UTIL_PCT:g} %):",
                  "  the host set the pace, so differences between such cases measure the host, not the GPU"]
    lines.append("values: median [95 % interval] per image over the measured rounds; (sim) simulated energy; "
                 "n/a no energy source")
    return lines


def results_table(records: Iterable[Mapping[str, Any]], target_rel_ci: float = DEFAULT_TARGET_REL_CI,
                  width: int = TABLE_WIDTH) -> list[str]:
    """One line per case (grouped under their test), header first; no line is wider than `width`."""
    groups: dict[str, list[list[str]]] = {}
    for rec in records:
        groups.setdefault(group_label(rec), []).append(_row(rec, target_rel_ci))
    if not groups:
        return []
    rows = [r for rs in groups.values() for r in rs]
    indent = 2 if any(groups) else 0
    cols = len(HEADERS)
    widths = [max([len(HEADERS[i])] + [len(r[i]) for r in rows]) for i in range(cols)]
    widths[0] += indent
    gaps = 2 * (cols - 1)
    room = width - gaps - sum(widths[1:])
    widths[0] = max(min(widths[0], room), min(widths[0], 16))

    def line(cells: Sequence[str], lead: str = "") -> str:
        parts = [(lead + shorten(cells[0], widths[0] - len(lead))).ljust(widths[0])]
        for i in range(1, cols):
            cell = cells[i]
            parts.append(cell.rjust(widths[i]) if i == 1 else cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()[:width]

    out = [line(HEADERS)]
    for name, group_rows in groups.items():
        if name:
            out.append(shorten(name, width))
        for r in group_rows:
            out.append(line(r, " " * indent if name else ""))
    return out


# --- summary.md -------------------------------------------------------------------------------------------
def environments_of(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The distinct environments (`env_*` fields) of `records`, one per device and host, first seen first."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records:
        env = {k[4:]: v for k, v in rec.items() if k.startswith("env_")}
        if not env:
            continue
        key = (env.get("host"), env.get("compute_device"), env.get("gpu_uuid"))
        seen.setdefault(key, env)
    return list(seen.values())


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def summary_markdown(*, title: str, status: Sequence[str], table: Sequence[str], legend_lines: Sequence[str],
                     environments: Sequence[Mapping[str, Any]], files: Sequence[tuple[str, str]],
                     next_steps: Sequence[str], command: str | None = None) -> str:
    """summary.md: status lines, the closing table, the environment, the files and what to do next."""
    out = [f"# {title}", ""]
    out += [f"- {s}" for s in status]
    if command:
        out.append(f"- command: `{command}`")
    out += ["", "## Results", ""]
    if table:
        out += ["```text", *table, "", *legend_lines, "```"]
    else:
        out.append("No case was measured.")
    out += ["", "## Environment", ""]
    if not environments:
        out.append("Not recorded (no measured case).")
    for i, env in enumerate(environments):
        if len(environments) > 1:
            out += [f"### {env.get('compute_device', f'device {i}')} on {env.get('host', '?')}", ""]
        out += ["| field | value |", "|---|---|"]
        out += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in env.items()]
        out.append("")
    out += ["", "## Files", ""]
    out += [f"- `{name}`: {what}" for name, what in files]
    out += ["", NEXT_STEPS_HEADING, "", "```bash", *next_steps, "```", ""]
    return "\n".join(out)


def status_in(summary_text: str) -> str | None:
    """summary.md's first status line ('complete: 12 of 12 cases in 3 min 5 s'), None when it has none."""
    for line in summary_text.splitlines():
        if line.startswith("- "):
            return line[2:]
        if line.startswith("## "):
            break
    return None


def next_steps_in(summary_text: str) -> list[str]:
    """The commands of summary.md's 'What next' block ([] when it has none)."""
    _, found, rest = summary_text.partition(NEXT_STEPS_HEADING)
    if not found:
        return []
    _, fence, body = rest.partition("```bash\n")
    if not fence:
        return []
    block, _, _ = body.partition("```")
    return [line for line in block.splitlines() if line.strip()]


# --- progress ---------------------------------------------------------------------------------------------
class CaseClock:
    """Counts a suite's cases and estimates the time left from the cases done so far.

    `start()` before a case, `finish()` after it; `position` is the running case's 1-based number (never
    more than `total`), `eta_s()` the estimated seconds left for the cases not done (None before the first
    case is done). A run cut short never shows every case as done: `done` counts finished cases only.
    """

    def __init__(self, total: int, now: Callable[[], float] = time.monotonic) -> None:
        self.total = max(0, int(total))
        self.now = now
        self.done = 0
        self.position = 0
        self.durations_s: list[float] = []
        self._started: float | None = None

    def start(self) -> int:
        self.position = min(self.done + 1, max(self.total, self.done + 1))
        self._started = self.now()
        return self.position

    def finish(self) -> float:
        elapsed = self.elapsed_s()
        self.durations_s.append(elapsed)
        self.done += 1
        self._started = None
        return elapsed

    def elapsed_s(self) -> float:
        return 0.0 if self._started is None else max(0.0, self.now() - self._started)

    def eta_s(self) -> float | None:
        if not self.durations_s:
            return None
        mean = sum(self.durations_s) / len(self.durations_s)
        left = max(0, self.total - self.done)
        if self._started is None or left == 0:
            return mean * left
        # The running case: the mean less what it has run already, never below nothing left of it.
        return max(0.0, mean - self.elapsed_s()) + mean * (left - 1)

    def label(self) -> str:
        total = max(self.total, self.position)
        return f"case {self.position}/{total}"

    def eta_text(self) -> str:
        """'ETA 2 min 10 s'; '' before the first case is done and once every case is."""
        eta = self.eta_s()
        return "" if eta is None or self.done >= self.total else f"ETA {duration(eta)}"
