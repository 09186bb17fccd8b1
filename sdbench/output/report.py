"""`sdbench report DIR --output-dir OUT`: plots, an HTML and a markdown report from sweep results.

Input (read by :func:`sdbench.record.io.read_results`): a sweep output directory (``results.jsonl`` plus
``sweep.json``; plan shards ``results-shard*.jsonl`` are read together), a results JSONL file, an
``--export-metrics`` JSON document, or pytest-benchmark JSON (each benchmark's record). Plain benchmark results with a single (default) clock work too: the report then has a
baseline and no clock to choose.

Output (per workload; file names get a ``wN-`` prefix when there are several):

* ``vs-clock.png``: time, energy (gross and net) and power per image against the swept setting, with
  95 % intervals, the default clock as a band and the optima marked;
* ``edp.png``: EDP and ED2P curves with their optima;
* ``power-timeline.png``: the record's power timeline when it carries one, otherwise the mean power
  of each phase and denoising step (from ``phase_*`` and ``step_*`` fields) on a time axis, phases shaded;
* ``step-energy.png``: energy per denoising step and per phase;
* ``report.html`` (self-contained, images by relative path), ``report.md``, ``analysis.json``;
* ``powermodel-features.csv`` / ``.parquet`` and ``powermodel.json`` (coefficients, held-out errors).

Simulated data carry a SIMULATED banner in every document and plot title.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdbench.analysis.dvfs.analyze import analyze_records
from sdbench.analysis.dvfs.result import (
    PointStats,
    SweepAnalysis,
    optima_table,
    points_table,
    provenance_lines,
)
from sdbench.analysis.estimates import Estimate
from sdbench.analysis.text import SETTING_NAMES, SETTING_UNITS
from sdbench.errors import SdbenchError
from sdbench.output.html import IMG_CSS, NOTE_CSS, WARNING_CSS, html_page, html_table, page_css
from sdbench.record.io import Results, json_safe, read_results

PHASES: tuple[str, ...] = ("text_encode", "denoise", "vae_decode", "other")
_PHASE_COLOURS = {"text_encode": "tab:blue", "denoise": "tab:green", "vae_decode": "tab:orange", "other": "tab:grey"}
_OPT_STYLE = {"energy": ("tab:red", "*", "min energy"), "net_energy": ("tab:brown", "P", "min net energy"),
              "edp": ("tab:green", "D", "min EDP"), "ed2p": ("tab:purple", "s", "min ED2P"),
              "energy_capped": ("tab:orange", "^", "min energy, slowdown cap")}
SIM_BANNER = "SIMULATED DATA: energy, power and clock behaviour come from the simulated GPU model, not real hardware"


# --- input ---------------------------------------------------------------------------------------
def load_input(path: str | os.PathLike[str]) -> Results:
    """The report's input through the one reader (:func:`sdbench.record.io.read_results`): a sweep or plan folder
    (its ``sweep.json`` as metadata), a results ``.jsonl`` file, an ``--export-metrics`` document or
    pytest-benchmark JSON. Raises :class:`SdbenchError` when it holds no record."""
    if not Path(path).exists():
        raise SdbenchError(f"report input not found: {path} (give a sweep output directory or a results .jsonl file)")
    results = read_results(path)
    if not any(r.row for r in results.rows):
        raise SdbenchError(f"no records in {', '.join(str(f) for f in results.files) or results.path}")
    return results


def _report_rows(results: Results) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The records to analyse and the sweep metadata (only a folder's ``sweep.json`` is sweep metadata)."""
    return [r.row for r in results.rows if r.row], (results.meta if results.format == "folder" else {})


# --- plots -----------------------------------------------------------------------------------------
def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    return fig


def _title(a: SweepAnalysis, what: str) -> str:
    """``[SIMULATED] what: workload on GPU`` (or ``(measured)``), plus the headline's first warning."""
    gpus = ", ".join(a.provenance.get("gpu_names") or []) or "unknown GPU"
    title = f"{what}: {a.workload_label} on {gpus}"
    title = ("[SIMULATED] " + title) if a.simulated else (title + " (measured)")
    warnings = a.headline_warnings
    if warnings:
        first = warnings[0].split(";")[0].split(" (")[0]
        title += f"\n{first}" + (f" (+{len(warnings) - 1} more warnings)" if len(warnings) > 1 else "")
    return title


def _series(a: SweepAnalysis) -> dict[str, list[PointStats]]:
    """Points per series (other varying settings), in x order."""
    out: dict[str, list[PointStats]] = {}
    for p in a.points:
        name = ", ".join(f"{SETTING_NAMES[f]} {p.settings[f]:g} {SETTING_UNITS[f]}" if p.settings[f] is not None
                         else f"{SETTING_NAMES[f]} default" for f in a.series_fields)
        out.setdefault(name, []).append(p)
    return out


def _errorbar(ax: Any, pts: Sequence[PointStats], x_field: str, get: Callable[[PointStats], Estimate | None],
              label: str, **kw: Any) -> None:
    xs, ys, lo, hi = [], [], [], []
    for p in pts:
        e = get(p)
        x = p.x(x_field)
        if e is None or x is None:
            continue
        xs.append(x)
        ys.append(e.value)
        lo.append(e.value - (e.ci_low if e.ci_low is not None else e.value))
        hi.append((e.ci_high if e.ci_high is not None else e.value) - e.value)
    if xs:
        ax.errorbar(xs, ys, yerr=np.clip(np.array([lo, hi]), 0, None), capsize=2, label=label, **kw)


def _default_band(ax: Any, a: SweepAnalysis, get: Callable[[PointStats], Estimate | None]) -> None:
    if a.default is None:
        return
    e = get(a.default.stats)
    if e is None:
        return
    ax.axhline(e.value, color="black", linestyle="--", linewidth=1, label="default clocks")
    if e.has_ci:
        ax.axhspan(e.ci_low, e.ci_high, color="black", alpha=0.08)
    x = a.default.stats.x(a.x_field)
    if x is not None:
        ax.plot([x], [e.value], marker="o", color="black", linestyle="none")


def _mark_optima(ax: Any, a: SweepAnalysis, get: Callable[[PointStats], Estimate | None],
                 objectives: Sequence[str]) -> None:
    by_label = {p.label: p for p in a.points}
    for obj in objectives:
        opt = a.optima.get(obj)
        if opt is None or opt.label is None or opt.label not in by_label:
            continue
        p = by_label[opt.label]
        e, x = get(p), p.x(a.x_field)
        if e is None or x is None:
            continue
        colour, marker, name = _OPT_STYLE[obj]
        # An optimum the data cannot support is drawn as an estimate, without its resampling share or band.
        how = (f"{100 * (opt.choice_fraction or 0):.0f}% of resamples" if opt.supported
               else f"estimate only, {'provisional' if opt.support == 'provisional' else 'NOT SUPPORTED'}")
        ax.plot([x], [e.value], marker=marker, markersize=13, color=colour, linestyle="none", markeredgecolor="black",
                label=f"{name}: {opt.label} ({how})")
        if opt.supported and opt.clock_ci is not None and opt.clock_ci[0] != opt.clock_ci[1]:
            ax.axvspan(opt.clock_ci[0], opt.clock_ci[1], color=colour, alpha=0.07)


def _plot_metric_panel(ax: Any, a: SweepAnalysis, get: Callable[[PointStats], Estimate | None], ylabel: str,
                       objectives: Sequence[str]) -> None:
    for name, pts in _series(a).items():
        ok = [p for p in pts if not p.excluded]
        _errorbar(ax, ok, a.x_field, get, label=name or "locked clocks", marker="o", markersize=4)
    excluded = [p for p in a.points if p.excluded]
    if excluded:
        _errorbar(ax, excluded, a.x_field, get, label="excluded (clock not verified)", marker="x", color="grey",
                  linestyle="none")
    _default_band(ax, a, get)
    _mark_optima(ax, a, get, objectives)
    ax.set_xlabel(f"{SETTING_NAMES[a.x_field]} ({SETTING_UNITS[a.x_field]})")
    ax.set_ylabel(ylabel)
    if not a.points:
        ax.text(0.5, 0.1, "single clock: nothing swept", transform=ax.transAxes, ha="center", va="center",
                color="grey")
    _legend_below(ax)


def _legend_below(ax: Any) -> None:
    """Legend under the axes: optima labels are long and would hide the curves inside."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)


def plot_vs_clock(a: SweepAnalysis, path: str | Path) -> Path:
    """Time, energy (gross, net) and power per image against the swept setting; writes a PNG."""
    fig = _figure(13.0, 5.6)
    ax_t, ax_e, ax_p = fig.subplots(1, 3)
    _plot_metric_panel(ax_t, a, lambda p: p.time_per_image_s, "time per image (s)", ["energy_capped"])
    if a.energy_available:
        _plot_metric_panel(ax_e, a, lambda p: p.energy_per_image_j, "energy per image (J)",
                           ["energy", "energy_capped"])
        if a.net_energy_available:
            for pts in _series(a).values():
                _errorbar(ax_e, [p for p in pts if not p.excluded], a.x_field, lambda p: p.net_energy_per_image_j,
                          label="net of idle power", marker=".", linestyle=":", color="tab:cyan")
            _mark_optima(ax_e, a, lambda p: p.net_energy_per_image_j, ["net_energy"])
            _legend_below(ax_e)
        _plot_metric_panel(ax_p, a, lambda p: p.power_w, "mean board power (W)", [])
    else:
        for ax in (ax_e, ax_p):
            ax.text(0.5, 0.5, "energy unavailable", transform=ax.transAxes, ha="center", va="center", color="grey")
    fig.suptitle(_title(a, "time, energy and power vs clock") + f"\n{a.statistic} per image, {100 * a.confidence:g} % CI; "
                 "dashed: default clocks", fontsize=8)
    return _save(fig, path)


def plot_edp(a: SweepAnalysis, path: str | Path) -> Path:
    """EDP and ED2P against the swept setting with their optima; writes a PNG."""
    fig = _figure(10.0, 5.0)
    ax1, ax2 = fig.subplots(1, 2)
    net = a.energy_basis == "net"
    if a.energy_available:
        _plot_metric_panel(ax1, a, (lambda p: p.net_edp_js) if net else (lambda p: p.edp_js),
                           "EDP (J*s per image)", ["edp"])
        _plot_metric_panel(ax2, a, (lambda p: p.net_ed2p_js2) if net else (lambda p: p.ed2p_js2),
                           "ED2P (J*s^2 per image)", ["ed2p"])
    else:
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, "energy unavailable", transform=ax.transAxes, ha="center", va="center", color="grey")
    fig.suptitle(_title(a, f"EDP and ED2P ({a.energy_basis} energy)"), fontsize=8)
    return _save(fig, path)


def _timeline_from_record(rec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """A recorded power timeline: ``[[t_s, power_w], ...]`` or ``{"t_s": [...], "power_w": [...]}``."""
    tl = rec.get("timeline")
    try:
        if isinstance(tl, Mapping):
            t, p = np.asarray(tl.get("t_s"), dtype=float), np.asarray(tl.get("power_w"), dtype=float)
        elif isinstance(tl, list) and tl:
            arr = np.asarray([(row["t_s"], row["power_w"]) if isinstance(row, Mapping) else row[:2] for row in tl],
                             dtype=float)
            t, p = arr[:, 0], arr[:, 1]
        else:
            return None
    except (TypeError, ValueError, KeyError, IndexError):
        return None
    if t.ndim != 1 or t.size < 2 or t.size != p.size or not np.all(np.isfinite(t)) or not np.all(np.isfinite(p)):
        return None
    return t - t[0], p


def call_segments(rec: Mapping[str, Any]) -> list[tuple[str, str, float, float]]:
    """One pipeline call as ``(phase, label, duration_s, energy_j)`` segments in call order.

    Denoising is split into its steps when ``step_time_s`` and ``step_energy_j`` are present; a
    phase without energy gets NaN. Empty when the record has no phase or step times.
    """
    segs: list[tuple[str, str, float, float]] = []
    steps_t = rec.get("step_time_s") if isinstance(rec.get("step_time_s"), list) else None
    steps_e = rec.get("step_energy_j") if isinstance(rec.get("step_energy_j"), list) else None

    def phase(name: str) -> tuple[float | None, float]:
        d = rec.get(f"phase_{name}_s")
        e = rec.get(f"phase_{name}_energy_j")
        return (float(d) if isinstance(d, (int, float)) else None,
                float(e) if isinstance(e, (int, float)) else math.nan)

    for name in PHASES:
        d, e = phase(name)
        if name == "denoise" and steps_t:
            energies = steps_e if steps_e and len(steps_e) == len(steps_t) else [math.nan] * len(steps_t)
            labels = step_marks(rec, len(steps_t)).labels
            for i, (st, se) in enumerate(zip(steps_t, energies)):
                segs.append(("denoise", f"step {labels[i]}", float(st), float(se)))
            if d is not None and d > sum(steps_t):
                # Time in the denoise phase outside the steps (scheduler bookkeeping, syncs).
                rest_e = e - sum(energies) if math.isfinite(e) and all(math.isfinite(x) for x in energies) else math.nan
                if rest_e < 0:
                    # Step and phase energies are separate medians; a negative rest is their mismatch, not power.
                    rest_e = math.nan
                segs.append(("denoise", "between steps", d - float(sum(steps_t)), rest_e))
            continue
        if d is not None and d > 0:
            segs.append((name, name.replace("_", " "), d, e))
    return segs


def _representative(a: SweepAnalysis) -> list[tuple[str, dict[str, Any]]]:
    """The records drawn in per-call plots: the default clock and the energy optimum (first record of each)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if a.default is not None:
        rec = _first_record(a, a.default.stats)
        if rec is not None:
            out.append(("default clocks", rec))
    opt = a.optima.get("energy")
    if opt is not None and opt.label is not None:
        p = next((q for q in a.points if q.label == opt.label), None)
        rec = _first_record(a, p) if p is not None else None
        if rec is not None:
            out.append((f"energy optimum ({opt.label})", rec))
    if not out and a.points:
        rec = _first_record(a, a.points[0])
        if rec is not None:
            out.append((a.points[0].label, rec))
    return out


def _first_record(a: SweepAnalysis, p: PointStats) -> dict[str, Any] | None:
    from sdbench.analysis.dvfs.records import is_default_record, record_settings

    for rec in a.records:
        if rec.get("point_status") not in (None, "ok"):
            continue
        if p.is_default and is_default_record(rec):
            return rec
        if not p.is_default and not is_default_record(rec) and record_settings(rec) == p.settings:
            return rec
    return None


def plot_power_timeline(a: SweepAnalysis, path: str | Path) -> Path:
    """Power over one pipeline call, phases shaded; writes a PNG.

    A recorded ``timeline`` is drawn as is; otherwise each phase and step is drawn at its mean power
    (its energy over its duration), which is what Runner records carry.
    """
    reps = _representative(a)
    fig = _figure(10.0, 3.2 * max(1, len(reps)))
    axes = fig.subplots(max(1, len(reps)), 1, squeeze=False, sharex=True, sharey=True)[:, 0]
    if not reps:
        axes[0].text(0.5, 0.5, "no record to draw", transform=axes[0].transAxes, ha="center", va="center")
    for ax, (name, rec) in zip(axes, reps):
        tl = _timeline_from_record(rec)
        segs = call_segments(rec)
        t0 = 0.0
        for phase, _label, dur, _e in segs:
            ax.axvspan(t0, t0 + dur, color=_PHASE_COLOURS[phase], alpha=0.12, linewidth=0)
            t0 += dur
        for phase in dict.fromkeys(seg[0] for seg in segs):
            # Legend entries for the shading (short phases are too narrow to label in place).
            ax.fill_between([], [], color=_PHASE_COLOURS[phase], alpha=0.25, label=phase.replace("_", " "))
        if tl is not None:
            ax.plot(tl[0], tl[1], color="black", linewidth=0.8, label="recorded power timeline")
            source = "recorded timeline"
        elif segs and any(math.isfinite(e) for *_, e in segs):
            xs, ys = [], []
            t0 = 0.0
            for _phase, _label, dur, e in segs:
                power = e / dur if dur > 0 and math.isfinite(e) else math.nan
                xs += [t0, t0 + dur]
                ys += [power, power]
                t0 += dur
            ax.plot(xs, ys, color="black", linewidth=1.0, label="mean power per phase / step")
            source = "reconstructed from per-step and per-phase energy (no timeline in the record)"
        else:
            source = "no timeline, per-step or per-phase energy in the record"
            ax.text(0.5, 0.5, source, transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_title(f"{name}: {source}", fontsize=7)
        ax.set_xlabel("time within one pipeline call (s)")
        ax.set_ylabel("power (W)")
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(_title(a, "power over one call"), fontsize=8)
    return _save(fig, path)


@dataclass
class StepMarks:
    """What the per-step marks of a record are: a label per mark, which marks are not steps of their
    own (``extra``), and the caption that says why (``None`` when marks and steps agree)."""

    labels: list[str]
    extra: set[int]
    caption: str | None


def step_marks(rec: Mapping[str, Any], n_marks: int) -> StepMarks:
    """Label a record's ``n_marks`` step marks against its ``steps``.

    diffusers calls the step callback once per timestep. PNDM (PLMS) evaluates the UNet twice for its
    first step (a warm-up that starts the multistep history: the second mark repeats the first step's
    timestep), so ``steps`` steps give ``steps + 1`` marks; that second mark is labelled the warm-up.
    Other schedulers with more marks than steps (second-order samplers evaluate the UNet twice per
    step) get their marks numbered with a caption saying so.
    """
    steps = rec.get("steps")
    n_steps = int(steps) if isinstance(steps, (int, float)) and not isinstance(steps, bool) else None
    labels = [str(i + 1) for i in range(n_marks)]
    if n_steps is None or n_marks <= n_steps:
        return StepMarks(labels, set(), None)
    scheduler = str(rec.get("scheduler") or "")
    if scheduler == "pndm" and n_marks == n_steps + 1 and n_marks >= 2:
        labels = ["1", "1 warm-up", *[str(i) for i in range(2, n_steps + 1)]]
        caption = (f"PNDM (PLMS) runs one extra warm-up UNet evaluation for its first step; diffusers calls the step "
                   f"callback once per timestep, so {n_steps} steps show {n_marks} marks (hatched: the warm-up)")
        return StepMarks(labels, {1}, caption)
    caption = (f"{scheduler or 'this scheduler'}: {n_marks} step marks for {n_steps} steps (the scheduler evaluates "
               "the UNet more than once per step; diffusers marks every timestep)")
    return StepMarks(labels, set(), caption)


def plot_step_energy(a: SweepAnalysis, path: str | Path) -> Path:
    """Energy per denoising step and per phase (one call) for the default clock and the energy optimum.

    Marks that are not steps of their own (PNDM's warm-up evaluation) are hatched and labelled, with
    the reason above the plot (:func:`step_marks`)."""
    reps = _representative(a)
    fig = _figure(11.0, 4.2)
    ax_s, ax_p = fig.subplots(1, 2, width_ratios=[3, 1])
    width = 0.8 / max(1, len(reps))
    any_steps = any_phase = False
    captions: list[str] = []
    tick_labels: list[str] = []
    any_extra = False
    for k, (name, rec) in enumerate(reps):
        steps = rec.get("step_energy_j")
        if isinstance(steps, list) and steps:
            marks = step_marks(rec, len(steps))
            xs = np.arange(1, len(steps) + 1) + (k - (len(reps) - 1) / 2) * width
            bars = ax_s.bar(xs, [float(v) if isinstance(v, (int, float)) else np.nan for v in steps], width=width,
                            label=name)
            for i in marks.extra:
                bars[i].set_hatch("//")
                bars[i].set_edgecolor("black")
                any_extra = True
            if marks.caption and marks.caption not in captions:
                captions.append(marks.caption)
            if len(marks.labels) > len(tick_labels):
                tick_labels = marks.labels
            any_steps = True
        vals = [rec.get(f"phase_{ph}_energy_j") for ph in PHASES]
        if any(isinstance(v, (int, float)) for v in vals):
            xs = np.arange(len(PHASES)) + (k - (len(reps) - 1) / 2) * width
            ax_p.bar(xs, [float(v) if isinstance(v, (int, float)) else np.nan for v in vals], width=width, label=name)
            any_phase = True
    if tick_labels and (any_extra or len(tick_labels) <= 40):
        ax_s.set_xticks(range(1, len(tick_labels) + 1), tick_labels, fontsize=7,
                        rotation=45 if any(len(t) > 3 for t in tick_labels) else 0)
    ax_s.set_xlabel("denoising step (one mark per UNet step callback)")
    ax_s.set_ylabel("energy per step, one call (J)")
    if captions:
        # Above the axes (constrained layout makes room for a title, wrapped to the axes' width).
        import textwrap

        ax_s.set_title("\n".join(textwrap.fill(c, 110) for c in captions), fontsize=7, color="dimgrey")
    ax_p.set_xticks(range(len(PHASES)), [p.replace("_", "\n") for p in PHASES], fontsize=7)
    ax_p.set_xlabel("pipeline phase")
    ax_p.set_ylabel("energy per phase, one call (J)")
    for ax, present, what in ((ax_s, any_steps, "no per-step energy in the records"),
                              (ax_p, any_phase, "no per-phase energy")):
        if present:
            handles, labels = ax.get_legend_handles_labels()
            if ax is ax_s and any_extra:
                from matplotlib.patches import Patch

                handles.append(Patch(facecolor="white", edgecolor="black", hatch="//"))
                labels.append("warm-up: an extra UNet evaluation, not a step of its own")
            ax.legend(handles, labels, fontsize=6)
        else:
            ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="grey")
    fig.suptitle(_title(a, "energy per denoising step and phase"), fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


# --- the report ----------------------------------------------------------------------------------
@dataclass
class ReportResult:
    """What `generate_report` wrote."""

    output_dir: Path
    html: Path
    markdown: Path
    analysis_json: Path
    plots: dict[str, list[Path]]  # workload label -> PNGs
    analyses: list[SweepAnalysis]
    features_csv: Path | None = None
    features_parquet: Path | None = None
    powermodel_json: Path | None = None
    powermodel: Any = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about the input: torn lines skipped (file and line)

    @property
    def simulated(self) -> bool:
        return any(a.simulated for a in self.analyses)

    @property
    def png_paths(self) -> list[Path]:
        return [p for paths in self.plots.values() for p in paths]

    @property
    def headline_warnings(self) -> list[str]:
        """Every workload's headline warnings (prefixed by the workload when there are several) and
        every failed power-model fit."""
        several = len(self.analyses) > 1
        out = [f"{a.workload_label}: {w}" if several else w for a in self.analyses for w in a.headline_warnings]
        if self.powermodel is not None:
            out += [f"POWER MODEL: {line}" for line in self.powermodel.failed_fits()]
        return out

    @property
    def headline(self) -> list[str]:
        """The report's first lines: the warnings, or what was measured and that it held."""
        if self.headline_warnings:
            return self.headline_warnings
        several = len(self.analyses) > 1
        return [f"{a.workload_label}: {line}" if several else line for a in self.analyses for line in a.headline]


def generate_report(
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    slowdown_cap_pct: float = 5.0,
    energy_basis: str = "gross",
    statistic: str = "mean",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    power_model: bool = True,
    n_folds: int = 5,
) -> ReportResult:
    """Analyse results and write plots, ``report.html``, ``report.md``, ``analysis.json`` and the
    power-model files into ``output_dir``. See the module docstring for the inputs accepted; a torn line in
    them is skipped and named in ``ReportResult.warnings`` (and the notes)."""
    results = load_input(input_path)
    records, meta = _report_rows(results)
    sources = results.files
    analyses = analyze_records(records, meta=meta, slowdown_cap_pct=slowdown_cap_pct, energy_basis=energy_basis,
                               confidence=confidence, n_resamples=n_resamples, seed=seed, statistic=statistic)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, list[Path]] = {}
    for i, a in enumerate(analyses):
        prefix = f"w{i + 1}-" if len(analyses) > 1 else ""
        plots[a.workload_label] = [
            plot_vs_clock(a, out / f"{prefix}vs-clock.png"),
            plot_edp(a, out / f"{prefix}edp.png"),
            plot_power_timeline(a, out / f"{prefix}power-timeline.png"),
            plot_step_energy(a, out / f"{prefix}step-energy.png"),
        ]
    result = ReportResult(output_dir=out, html=out / "report.html", markdown=out / "report.md",
                          analysis_json=out / "analysis.json", plots=plots, analyses=analyses,
                          warnings=results.warnings, notes=list(results.warnings))
    if power_model:
        _power_model(records, meta, out, n_folds, result)
    doc = {"simulated": result.simulated, "sources": [str(s) for s in sources], "sweep_meta": meta,
           "workloads": [a.to_dict() for a in analyses],
           "powermodel": result.powermodel.to_dict() if result.powermodel is not None else None,
           "notes": result.notes, "headline": result.headline, "headline_warnings": result.headline_warnings}
    result.analysis_json.write_text(json.dumps(json_safe(doc), indent=2) + "\n", encoding="utf-8")
    result.markdown.write_text(render_markdown(result, sources), encoding="utf-8")
    result.html.write_text(render_html(result, sources), encoding="utf-8")
    return result


def _power_model(records: list[dict[str, Any]], meta: Mapping[str, Any], out: Path, n_folds: int,
                 result: ReportResult) -> None:
    from sdbench.analysis.powermodel import feature_rows, fit_power_models, write_features

    rows = feature_rows(records, meta)
    if not rows:
        result.notes.append("power model: no usable records for the feature table")
        return
    written = write_features(rows, out)
    result.features_csv = written["csv"]
    result.features_parquet = written["parquet"]
    if written["parquet_reason"]:
        result.notes.append(f"power-model features: Parquet not written: {written['parquet_reason']}")
    # Unverified clocks are left out of the fit as they are out of the optima: the clock is not known.
    fit_rows = [r for r in rows if r.get("clock_verified") in (None, "ok") or r.get("is_default_clock")]
    try:
        pm = fit_power_models(fit_rows, n_folds=n_folds)
    except SdbenchError as exc:
        result.notes.append(f"power model not fitted: {exc}")
        return
    result.powermodel = pm
    result.powermodel_json = pm.save_json(out / "powermodel.json")




def render_markdown(result: ReportResult, sources: Sequence[Path]) -> str:
    """The markdown report (images referenced by relative path)."""
    out = ["# sdbench DVFS report", ""]
    if result.simulated:
        out += [f"> **{SIM_BANNER}.**", ""]
    warnings = result.headline_warnings
    out += ["## Headline", ""]
    out += [f"- **{line}**" if warnings else f"- {line}" for line in result.headline]
    out.append("")
    out.append("Sources: " + ", ".join(f"`{s}`" for s in sources))
    out.append("")
    out.append("Savings are always against the default clock (never against the worst clock): energy saved % = "
               "100 (1 - E / E_default), time change % = 100 (t / t_default - 1), positive = slower.")
    out.append("")
    for a in result.analyses:
        out.append(a.markdown(heading_level=2))
        for png in result.plots[a.workload_label]:
            out.append(f"![{png.stem}]({png.name})")
        out.append("")
    if result.powermodel is not None:
        out.append(result.powermodel.markdown(heading_level=2))
        out.append("")
    files = [p for p in (result.features_csv, result.features_parquet, result.powermodel_json) if p is not None]
    if files:
        out.append("Power-model files: " + ", ".join(f"[{p.name}]({p.name})" for p in files))
        out.append("")
    if result.notes:
        out += ["## Report notes", ""] + [f"- {n}" for n in result.notes] + [""]
    return "\n".join(out)


_CSS = page_css(
    1200,
    "tr.excluded td{color:#999} tr.default td{font-weight:bold}",
    ".banner{background:#b00020;color:#fff;padding:0.8em 1em;font-weight:bold;font-size:1.1em;border-radius:4px}",
    ".real{background:#1b5e20;color:#fff;padding:0.6em 1em;border-radius:4px}",
    IMG_CSS,
    NOTE_CSS,
    WARNING_CSS,
    ".headline{background:#eef5ee;padding:0.6em 1em;border-radius:4px}",
)


def render_html(result: ReportResult, sources: Sequence[Path]) -> str:
    """A self-contained HTML report (inline CSS, images by relative path)."""
    e = html.escape
    body: list[str] = ["<h1>sdbench DVFS report</h1>"]
    if result.simulated:
        body.append(f'<div class="banner">SIMULATED &mdash; {e(SIM_BANNER)}.</div>')
    else:
        body.append('<div class="real">Measured on real hardware (see provenance below).</div>')
    warnings = result.headline_warnings
    body.append("<h2>Headline</h2>")
    if warnings:
        body += [f'<div class="warning">{e(line)}</div>' for line in warnings]
    else:
        body.append('<div class="headline">' + "<br>".join(e(line) for line in result.headline) + "</div>")
    body.append(f"<p class='note'>Sources: {e(', '.join(str(s) for s in sources))}</p>")
    body.append("<p class='note'>Savings are always against the default clock (never the worst clock): "
                "energy saved % = 100 (1 &minus; E / E<sub>default</sub>); time change % = "
                "100 (t / t<sub>default</sub> &minus; 1), positive = slower. Intervals: of a mean over rounds, "
                "Student's t on the log scale (Welch's for a saving or change against the default clock); of a "
                "median, those of docs/statistics.md. The bootstrap only picks: how often each clock wins, "
                "and the clock interval.</p>")
    for a in result.analyses:
        body.append(f"<h2>{e(a.workload_label)}{' [SIMULATED]' if a.simulated else ''}</h2>")
        body.append("<h3>What was measured on real hardware and what was simulated</h3><ul>")
        body += [f"<li>{e(line)}</li>" for line in provenance_lines(a.provenance)]
        body.append("</ul>")
        body.append(f"<h3>Optima ({100 * a.confidence:g} % intervals; choice shares from {a.n_resamples} "
                    "bootstrap resamples)</h3>")
        body.append(html_table(optima_table(a)))
        body.append("<ul>" + "".join(f"<li>{e(o.statement())}</li>" for o in a.optima.values()) + "</ul>")
        body.append(f"<h3>Points ({e(a.statistic)} per image)</h3>")
        classes = [("default" if p.is_default else "excluded" if p.excluded else "") for p in a.all_points]
        body.append(html_table(points_table(a), classes))
        if a.default is not None:
            d = a.default
            body.append("<h3>Default-clock baseline</h3>")
            text = f"{len(d.remeasurements)} measurement(s) pooled ({d.stats.n_rounds} rounds)."
            if len(d.remeasurements) > 1:
                drift_e = "-" if d.drift_energy_rel is None else f"{100 * d.drift_energy_rel:+.2f} %"
                drift_t = "-" if d.drift_time_rel is None else f"{100 * d.drift_time_rel:+.2f} %"
                text += f" Drift between re-measurements, first to last: time {drift_t}, energy {drift_e}; {d.drift_verdict}."
            body.append(f"<p>{e(text)}</p>")
        else:
            body.append("<p>No default-clock measurement: savings against the default clock are unavailable.</p>")
        if a.excluded:
            body.append("<h3>Excluded from the optima (clock not verified)</h3><ul>")
            body += [f"<li>{e(x['label'])}: {e(str(x['reason']))}</li>" for x in a.excluded]
            body.append("</ul>")
        if a.failed:
            body.append("<h3>Failed points</h3><ul>")
            body += [f"<li>{e(str(x.get('point_id') or x.get('label')))}: {e(str(x.get('error')))}</li>"
                     for x in a.failed]
            body.append("</ul>")
        if a.notes:
            body.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in a.notes) + "</ul>")
        body.append("<h3>Plots</h3>")
        for png in result.plots[a.workload_label]:
            body.append(f'<p><img src="{e(png.name)}" alt="{e(png.stem)}"></p>')
    body.append("<h2>Power and runtime models</h2>")
    pm = result.powermodel
    if pm is not None:
        if pm.simulated:
            body.append('<p class="banner">SIMULATED: fitted to the simulated GPU model.</p>')
        body.append(f"<p>{pm.n_rows} rows at {pm.n_clocks} clock settings; activity counters "
                    f"{'used' if pm.activity_used else 'absent (workload features instead)'}.</p><ul>")
        for key in ("loglinear_power", "loglinear_runtime"):
            fit = pm.fits.get(key)
            if fit and fit.get("fit_status") == "failed":
                body.append(f"<li><code>{e(fit['form'])}</code>: <strong>fit failed</strong> "
                            f"({e(str(fit.get('fit_failure_reason')))})</li>")
            elif fit:
                coefs = ", ".join(f"{n} = {c:.4g}" for n, c in fit["coefficients"].items())
                body.append(f"<li><code>{e(fit['form'])}</code>: intercept {fit['intercept']:.4g}; {e(coefs)}</li>")
        for key in ("kernel_ridge_power", "kernel_ridge_runtime"):
            fit = pm.fits.get(key)
            if fit and fit.get("fit_status") == "failed":
                body.append(f"<li>{e(fit['learner'])} of {e(fit['target'])}: <strong>fit failed</strong> "
                            f"({e(str(fit.get('fit_failure_reason')))})</li>")
            elif fit:
                body.append(f"<li>{e(fit['learner'])} of {e(fit['target'])}: length scale {fit['length_scale']:.3g}, "
                            f"ridge {fit['alpha']:.3g}</li>")
        body.append("</ul>")
        if pm.validation:
            body.append(f"<p>Held-out clocks ({pm.n_folds}-fold leave-clocks-out): models fitted on the other "
                        "clocks predict each fold.</p>")
            body.append(html_table(pm.validation_table()))
        else:
            body.append(f"<p>No held-out validation: {e(str(pm.validation_reason))}</p>")
        body += [f"<p class='note'>{e(n)}</p>" for n in pm.notes]
    else:
        body.append("<p>No power model was fitted (see the notes).</p>")
    files = [p for p in (result.features_csv, result.features_parquet, result.powermodel_json, result.analysis_json,
                         result.markdown) if p is not None]
    body.append("<p>Files: " + ", ".join(f'<a href="{e(p.name)}">{e(p.name)}</a>' for p in files) + "</p>")
    if result.notes:
        body.append("<h2>Report notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in result.notes) + "</ul>")
    title = "sdbench DVFS report" + (" [SIMULATED]" if result.simulated else "")
    return html_page(title, _CSS, body)


# --- where a report goes ------------------------------------------------------------------------
def default_output_dir(input_path: str | os.PathLike[str]) -> Path:
    """Where the report of `input_path` goes by default: DIR/report, or FILE's stem + -report beside it."""
    p = Path(input_path)
    return p / "report" if p.is_dir() else p.with_name(f"{p.stem}-report")
