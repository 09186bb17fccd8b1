"""What ``sdbench compare`` found: a :class:`CompareRow` per metric of each matched benchmark, what was
not compared, and the whole :class:`CompareResult` with its renderings (the terminal report, the
markdown report CI summaries show, the JSON document and the CSV rows) and the writers of those files."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdbench.output.compare.metrics import format_fail_on
from sdbench.record.io import write_csv as write_records_csv
from sdbench.record.io import write_json as write_json_document


@dataclass
class CompareRow:
    """One metric of one benchmark, candidate against baseline. Relative numbers are fractions (0.1 = +10%)."""

    baseline_file: str
    candidate_file: str
    name: str
    case_id: str | None
    metric: str
    unit: str
    baseline_median: float | None
    candidate_median: float | None
    baseline_n: int | None
    candidate_n: int | None
    rel_change: float | None
    change_ci_low_rel: float | None
    change_ci_high_rel: float | None
    p_value: float | None
    verdict: str
    reason: str
    compared: bool
    regression: bool = False
    fail_on_pct: float | None = None
    source: str = ""
    ci_method: str = ""  # what made the change interval (sdbench.stats.CHANGE_METHODS); "" when not compared
    ci_extended: bool = False  # the interval was widened to contain the estimate


@dataclass
class NotCompared:
    """A benchmark present in one file but not comparable (changed case_hash, or only on one side)."""

    baseline_file: str
    candidate_file: str
    name: str
    reason: str


@dataclass
class CompareResult:
    """Everything ``sdbench compare`` found. ``exit_code`` is 1 when a ``fail_on`` threshold was exceeded."""

    files: list[str]
    metrics: tuple[str, ...]
    fail_on_pct: dict[str, float]
    confidence: float
    rows: list[CompareRow] = field(default_factory=list)
    not_compared: list[NotCompared] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[CompareRow]:
        return [r for r in self.rows if r.regression]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "metrics": list(self.metrics),
            "fail_on": format_fail_on(self.fail_on_pct) if self.fail_on_pct else None,
            "fail_on_pct": self.fail_on_pct,
            "confidence": self.confidence,
            "exit_code": self.exit_code,
            "regressions": len(self.regressions),
            "warnings": self.warnings,
            "notes": self.notes,
            "rows": [asdict(r) for r in self.rows],
            "not_compared": [asdict(n) for n in self.not_compared],
        }

    @property
    def table(self) -> str:
        """The whole human report as text (same as :meth:`render`), for terminal reporters."""
        return self.render()

    def format_table(self, candidate_file: str | None = None, tablefmt: str = "simple") -> str:
        """The comparison table (all candidates, or one), in any tabulate format ("github" for markdown)."""
        from tabulate import tabulate

        rows = [r for r in self.rows if candidate_file is None or r.candidate_file == candidate_file]
        pct = f"{round(self.confidence * 100, 4):g}%"
        body = [[r.case_id or r.name, r.metric, _fmt_value(r.baseline_median, r.unit),
                 _fmt_value(r.candidate_median, r.unit), _fmt_pct(r.rel_change),
                 _fmt_ci(r.change_ci_low_rel, r.change_ci_high_rel), r.verdict,
                 f"REGRESSION (> {r.fail_on_pct:g}%)" if r.regression else ""] for r in rows]
        headers = ["benchmark", "metric", "baseline median", "candidate median", "change", f"{pct} CI of change",
                   "verdict", "regression"]
        return tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)

    def render(self) -> str:
        """The human report: warnings, one table per candidate, what was not compared, notes, the outcome."""
        lines: list[str] = [f"WARNING: {w}" for w in self.warnings]
        baseline = self.files[0]
        for cand in self.files[1:]:
            lines.append(f"== {cand} vs baseline {baseline} ==")
            if any(r.candidate_file == cand for r in self.rows):
                lines.append(self.format_table(cand))
            for nc in self.not_compared:
                if nc.candidate_file == cand:
                    lines.append(f"{nc.reason}: {nc.name}")
            lines.append("")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(self.outcome())
        return "\n".join(lines)

    def markdown(self) -> str:
        """A markdown report (a CI job summary or PR comment)."""
        parts = ["## sdbench compare"]
        if self.warnings:
            parts.append("")
            parts.extend(f"> **Warning:** {w}" for w in self.warnings)
        for cand in self.files[1:]:
            parts += ["", f"### `{cand}` vs baseline `{self.files[0]}`", ""]
            if any(r.candidate_file == cand for r in self.rows):
                parts.append(self.format_table(cand, tablefmt="github"))
            nc = [n for n in self.not_compared if n.candidate_file == cand]
            if nc:
                parts.append("")
                parts.extend(f"- {n.reason}: `{n.name}`" for n in nc)
        if self.notes:
            parts.append("")
            parts.extend(f"- note: {n}" for n in self.notes)
        parts += ["", f"**{self.outcome()}**", ""]
        return "\n".join(parts)

    def outcome(self) -> str:
        if not self.fail_on_pct:
            return "result: no --fail-on thresholds given; exit 0"
        spec = format_fail_on(self.fail_on_pct)
        if self.regressions:
            return f"result: {len(self.regressions)} regression(s) beyond --fail-on {spec}; exit 1"
        return f"result: no significant regression beyond --fail-on {spec}; exit 0"


def _fmt_value(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.4g} {unit}"


def _fmt_pct(rel: float | None) -> str:
    return "-" if rel is None else f"{100.0 * rel:+.1f}%"


def _fmt_ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "-"
    return f"[{100.0 * low:+.1f}%, {100.0 * high:+.1f}%]"


def write_json(result: CompareResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result.to_dict()`` as JSON (NaN as null), atomically."""
    return write_json_document(path, result.to_dict(), indent=2)


def write_csv(result: CompareResult, path: str | os.PathLike[str]) -> Path:
    """Write one CSV row per compared metric (the table's rows, with every field)."""
    return write_records_csv([asdict(r) for r in result.rows], path)


def write_markdown(result: CompareResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result.markdown()`` (the report CI summaries show), making its folder if need be."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.markdown(), encoding="utf-8")
    return out
