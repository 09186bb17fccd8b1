"""The cross-GPU study for people (``sdbench report --across-gpus``): its tables, the markdown and the
self-contained HTML documents, the progression plot, and :func:`write_study`, which writes them all with the
study's JSON document.

The study itself (its runs, cases, cells, comparisons and statements) is
:func:`sdbench.analysis.crossgpu.build_study`'s :class:`~sdbench.analysis.crossgpu.CrossGpuStudy`.

Where a run's default clock drifted within the run, every document says so: the headline's WARNING, the
case table's "default clock within run" column (its within-run range and the drift test's verdict) and its
change columns ("not stated: drift"), the statements ("not stated: ..."), the order lines ("no ranking"), and
the plot (each default-clock measurement's median as a marker on its bar, and "DRIFTED" over the bar).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbench.analysis.crossgpu import (
    RUN_FIELDS,
    CaseStudy,
    Cell,
    CrossGpuStudy,
    change_pct_text,
    range_pct_text,
    value_text,
)
from sdbench.analysis.estimates import Estimate
from sdbench.analysis.text import est_text
from sdbench.output.html import IMG_CSS, NOTE_CSS, WARNING_CSS, Table, html_page, html_table, page_css
from sdbench.record.io import atomic_write_text, to_json

_CSS = page_css(
    1400,
    ".banner{background:#b00020;color:#fff;padding:0.8em 1em;font-weight:bold;border-radius:4px;margin:0.3em 0}",
    WARNING_CSS,
    ".headline{background:#eef5ee;padding:0.6em 1em;border-radius:4px;margin:0.3em 0}",
    IMG_CSS,
    NOTE_CSS,
)


# --- tables ---------------------------------------------------------------------------------------------------
def case_table(study: CrossGpuStudy, case: CaseStudy) -> Table:
    """One case's table: a row per run."""
    pct = f"{100 * study.confidence:g} %"
    header = ["GPU", "s/image [CI]", "images/s [CI]", "J/image [CI]", "net J/image [CI]", "images/kJ [CI]",
              "EDP J*s/image", "fraction of FLOP floor", "power W [CI]", "energy-optimal clock",
              "default clock within run", f"time vs {study.runs[0].label} [{pct} CI]", f"energy vs {study.runs[0].label} [{pct} CI]"]
    rows = []
    for run in study.runs:
        c = case.cell(run.label)
        label = run.label + (" [SIMULATED]" if run.simulated else "")
        if c is None:
            rows.append([label, "not measured"] + [""] * (len(header) - 2))
            continue
        floor = (f"{c.fraction_of_flop_floor:.3g}" if c.fraction_of_flop_floor is not None
                 else f"n/a ({c.fraction_of_flop_floor_unavailable_reason or 'not recorded'})")
        rows.append([label, est_text(c.time_per_image_s), est_text(c.images_per_s), est_text(c.energy_per_image_j),
                     est_text(c.net_energy_per_image_j), est_text(c.images_per_kj),
                     "-" if c.edp_js_per_image is None else f"{c.edp_js_per_image:.4g}", floor, est_text(c.power_w),
                     _optimum_text(c.energy_optimal_clock), default_clock_text(c),
                     _against_first(case, "time", run.label, study.runs[0].label),
                     _against_first(case, "energy", run.label, study.runs[0].label)])
    return header, rows


def default_clock_text(c: Cell) -> str:
    """A cell's default clock within its run: how often measured, the range of its medians (``max / min - 1``)
    and the drift test's verdict (``DRIFTED: ...`` when it drifted beyond its noise)."""
    if c.default_clock_measurements < 2:
        return "measured once"
    parts = [f"{c.default_clock_measurements} measurements"]
    spread = ", ".join(f"{key} {range_pct_text(r['rel'])}" for key, r in c.default_clock_range.items())
    if spread:
        parts.append(f"range {spread}")
    if c.drift is not None:
        parts.append(f"DRIFTED: {c.drift_text()}" if c.drifted else str(c.drift.get("verdict") or ""))
    return "; ".join(parts)


def _order_line(case: CaseStudy, metric: str, best: str) -> str | None:
    """"order by median ...", or, when a run's default clock drifted, the medians' order said to be no ranking."""
    order = case.order(metric)
    if not order:
        return None
    line = f"order by median {metric} per image ({best} first): {' < '.join(order)}"
    drifted = case.drifted_runs(metric)
    if drifted:
        line += (f" (medians only, no ranking: the default clock drifted within {' and within '.join(drifted)}; "
                 "see the statements)")
    return line


def differences_table(study: CrossGpuStudy) -> Table:
    """A row per field that differs between the runs (or a line saying none does), a column per run."""
    diff = study.differences()
    header = ["field", *[r.label for r in study.runs]]
    if not diff:
        return header, [["(nothing recorded differs)", *[""] * len(study.runs)]]
    return header, [[name, *[value_text(values.get(r.label)) for r in study.runs]] for name, values in diff.items()]


def runs_table(study: CrossGpuStudy) -> Table:
    """A row per run: every :data:`RUN_FIELDS` value it states."""
    names = [name for name, _ in RUN_FIELDS if any(r.fields.get(name) is not None for r in study.runs)]
    return ["run", *names, "sources"], [[r.label, *[value_text(r.fields.get(n)) for n in names], ", ".join(r.sources)]
                                        for r in study.runs]


# --- documents ------------------------------------------------------------------------------------------------
def render_markdown(study: CrossGpuStudy, plot_name: str | None = "progression.png") -> str:
    """The markdown document (the plot by relative path)."""
    out = ["# sdbench cross-GPU study", ""]
    out += [f"> **{line}**" if line.startswith(("SIMULATED", "WARNING")) else f"> {line}" for line in study.headline()]
    out += ["", "## What differs between the runs", "", _markdown_table(differences_table(study)), ""]
    out += ["## Runs", "", _markdown_table(runs_table(study)), ""]
    out += ["Sources: " + ", ".join(f"`{s}`" for s in study.sources), ""]
    out.append(f"Intervals in the tables are each record's own ({_record_confidence(study)}, sdbench.stats); "
               f"changes are `sdbench.stats.change_interval` on the per-round samples at {100 * study.confidence:g} %. "
               "images/s and images/kJ intervals are the reciprocals of the time and energy intervals; EDP is a "
               "point estimate (median energy x median time per image).")
    out.append("")
    for case in study.cases:
        out += [f"## {case.label}", "", _markdown_table(case_table(study, case)), ""]
        for metric in ("time", "energy"):
            line = _order_line(case, metric, "fastest" if metric == "time" else "least energy")
            if line:
                out.append(f"- {line}")
        if case.missing:
            out.append(f"- not measured on: {', '.join(case.missing)}")
        out += [f"- {c.statement}" for c in case.comparisons]
        notes = [f"{c.run}: {n}" for c in case.cells for n in c.notes]
        out += [f"- note: {n}" for n in notes]
        out.append("")
    if plot_name:
        out += [f"![progression]({plot_name})", ""]
    if study.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in study.notes] + [""]
    return "\n".join(out)


def render_html(study: CrossGpuStudy, plot_name: str | None = "progression.png") -> str:
    """A self-contained HTML document (inline CSS, the plot by relative path)."""
    e = html.escape
    body = ["<h1>sdbench cross-GPU study</h1>"]
    for line in study.headline():
        cls = "banner" if line.startswith("SIMULATED") else "warning" if line.startswith("WARNING") else "headline"
        body.append(f'<div class="{cls}">{e(line)}</div>')
    body += ["<h2>What differs between the runs</h2>", html_table(differences_table(study)),
             "<h2>Runs</h2>", html_table(runs_table(study)),
             f"<p class='note'>Sources: {e(', '.join(study.sources))}. Intervals in the tables are each record's "
             f"own ({e(_record_confidence(study))}); changes are sdbench.stats.change_interval on the per-round "
             f"samples at {100 * study.confidence:g} %.</p>"]
    for case in study.cases:
        body += [f"<h2>{e(case.label)}</h2>", html_table(case_table(study, case)), "<ul>"]
        for metric in ("time", "energy"):
            line = _order_line(case, metric, "best")
            if line:
                body.append(f"<li>{e(line)}</li>")
        if case.missing:
            body.append(f"<li>not measured on: {e(', '.join(case.missing))}</li>")
        body += [f'<li class="warning">{e(c.statement)}</li>' if c.drifted else f"<li>{e(c.statement)}</li>"
                 for c in case.comparisons]
        body += [f"<li>note: {e(c.run)}: {e(n)}</li>" for c in case.cells for n in c.notes]
        body.append("</ul>")
    if plot_name:
        body.append(f'<img src="{e(plot_name)}" alt="progression per case">')
    if study.notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in study.notes) + "</ul>")
    title = "sdbench cross-GPU study" + (" [SIMULATED]" if study.simulated else "")
    return html_page(title, _CSS, body)


# --- the plot -------------------------------------------------------------------------------------------------
def plot_progression(study: CrossGpuStudy, path: str | os.PathLike[str]) -> Path:
    """Per case, the runs side by side (in run order): time per image and energy per image (gross, and net
    hatched), with each record's interval as error bars. A run with several default-clock measurements of the
    case shows each one's median as a black marker on its bar (the within-run range), and "DRIFTED" over the
    bar when its default clock drifted within the run. Agg backend, without touching pyplot's state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(study.cases)
    fig = Figure(figsize=(11.0, 3.4 * n + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 2, squeeze=False)
    labels = [r.label for r in study.runs]
    colours = [f"C{i % 10}" for i in range(len(labels))]
    for row, case in enumerate(study.cases):
        ax_t, ax_e = axes[row]
        for i, run in enumerate(labels):
            c = case.cell(run)
            if c is None:
                continue
            _bar(ax_t, i, c.time_per_image_s, colours[i], 0.6)
            _bar(ax_e, i - 0.18, c.energy_per_image_j, colours[i], 0.34)
            _bar(ax_e, i + 0.18, c.net_energy_per_image_j, colours[i], 0.34, hatch="//")
            _within_run(ax_t, i, 0.6, c, "time", c.time_per_image_s)
            _within_run(ax_e, i - 0.18, 0.34, c, "energy", c.energy_per_image_j)
        for ax, ylabel in ((ax_t, "s / image"), (ax_e, "J / image (gross; net hatched)")):
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([_short(x) for x in labels], rotation=15, ha="right", fontsize=8)
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
            if any(c.drifted for c in case.cells):
                ax.set_ylim(top=ax.get_ylim()[1] * 1.1)  # room for the "DRIFTED" labels
            ax.grid(axis="y", alpha=0.3)
        ax_t.set_title(_wrap(case.label), fontsize=9)
        ax_e.set_title("error bars: each record's 95 % interval of the median;\ndots joined: the medians of the "
                       "run's default-clock measurements (within-run range)", fontsize=8)
    title = "Cross-GPU progression"
    if study.simulated:
        title = ("[SIMULATED] " if not study.mixed else "[SIMULATED and MEASURED] ") + title
    fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def _bar(ax: Any, x: float, e: Estimate | None, colour: str, width: float, hatch: str | None = None) -> None:
    if e is None:
        return
    yerr = None
    if e.has_ci:
        yerr = [[e.value - e.ci_low], [e.ci_high - e.value]]  # type: ignore[operator]
    ax.bar([x], [e.value], width=width, color=colour, alpha=0.55 if hatch else 0.85, hatch=hatch, edgecolor="black",
           linewidth=0.5, yerr=yerr, capsize=3, error_kw={"elinewidth": 1})


def _within_run(ax: Any, x: float, width: float, c: Cell, key: str, shown: Estimate | None) -> None:
    """The medians of a run's default-clock measurements as dots joined by a line (the within-run range) inside
    the right edge of the bar at ``x``; "DRIFTED" above the bar when the run's default clock drifted."""
    r = c.default_clock_range.get(key)
    at = x + 0.3 * width
    if r:
        ax.plot([at, at], [r["min"], r["max"]], color="black", linewidth=1.2, zorder=3)
        ax.plot([at] * len(r["medians"]), r["medians"], linestyle="none", marker="o", markersize=4,
                color="black", zorder=4)
    if c.drifted and (shown is not None or r):
        top = max([*(r["medians"] if r else []), *([shown.ci_high or shown.value] if shown else [])])
        ax.annotate("DRIFTED", (x, top), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8,
                    color="#b00020", fontweight="bold")


def _short(label: str, width: int = 30) -> str:
    """A tick label: the vendor prefix dropped, "(simulated)" as "(sim)", cut to ``width``."""
    for prefix in ("NVIDIA ", "Tesla "):
        label = label.removeprefix(prefix)
    label = label.replace("(simulated)", "(sim)")
    return label if len(label) <= width else label[: width - 1] + "…"


def _wrap(text: str, width: int = 70) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


# --- writing it -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyFiles:
    """Where :func:`write_study` put the study."""

    output_dir: Path
    markdown: Path
    html: Path
    json: Path
    plot: Path


def write_study(study: CrossGpuStudy, output_dir: str | os.PathLike[str]) -> StudyFiles:
    """Write ``crossgpu.md``, ``crossgpu.html``, ``crossgpu.json`` and ``progression.png`` into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_progression(study, out / "progression.png")
    md = atomic_write_text(out / "crossgpu.md", render_markdown(study, plot.name))
    page = atomic_write_text(out / "crossgpu.html", render_html(study, plot.name))
    doc = atomic_write_text(out / "crossgpu.json", to_json(study.to_dict(), indent=2) + "\n")
    return StudyFiles(out, md, page, doc, plot)


# --- text helpers ---------------------------------------------------------------------------------------------
def _optimum_text(opt: Mapping[str, Any] | None) -> str:
    if not opt:
        return "no sweep"
    if opt.get("label") is None:
        return "none"
    text = str(opt["label"])
    if opt.get("clock_ci"):
        lo, hi = opt["clock_ci"]
        text += f" [{lo:g}, {hi:g}]"
    if opt.get("saving_pct") is not None:
        ci = opt.get("saving_pct_ci") or [None, None]
        interval = "" if ci[0] is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]"
        text += f", saves {opt['saving_pct']:.1f} %{interval} vs default"
    if not opt.get("supported"):
        text += f" ({str(opt.get('support', 'unsupported')).upper()}: point estimate only)"
    return text


def _against_first(case: CaseStudy, metric: str, run: str, first: str) -> str:
    if run == first:
        return "reference"
    cmp = next((c for c in case.comparisons if c.metric == metric and c.new == run and c.old == first), None)
    if cmp is None or cmp.estimate_rel is None:
        return "-" + (" (not stated: drift)" if cmp is not None and cmp.drifted else "")
    interval = "" if cmp.low_rel is None else f" [{change_pct_text(cmp.low_rel)}, {change_pct_text(cmp.high_rel)}]"
    return (f"{change_pct_text(cmp.estimate_rel)}{interval}" + (" (sim vs measured)" if cmp.mixed else "")
            + (" (not stated: drift)" if cmp.drifted else ""))


def _record_confidence(study: CrossGpuStudy) -> str:
    levels = {c.record.get("time_per_image_s_ci_confidence") for case in study.cases for c in case.cells}
    levels.discard(None)
    if not levels:
        return "95 % unless the records say otherwise"
    return ", ".join(f"{100 * float(v):g} %" for v in sorted(levels))


def _markdown_table(table: Table) -> str:
    header, rows = table

    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
