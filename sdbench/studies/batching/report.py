"""What `sdbench batch` shows and writes: the sweep and the fits search as tables, and the sweep's plot
(images/s and J/image against batch size, with intervals and the optima marked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdbench.studies.batching.max_batch import MaxBatchResult
from sdbench.studies.batching.memory import GIB
from sdbench.studies.batching.sweep import BatchSweep, fmt_value


def _ci_text(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    if ci is None:
        return fmt_value(value)
    return f"{fmt_value(value)} [{fmt_value(ci[0])}, {fmt_value(ci[1])}]"


def _gib(n_bytes: int | None) -> str:
    return "-" if not n_bytes else f"{n_bytes / GIB:.3f}"


def sweep_table(sweep: BatchSweep) -> str:
    """The sweep as a table: batch, status, images/s and J/image with 95% CIs, peak GiB."""
    from tabulate import tabulate

    rows = []
    for p in sweep.points:
        energy = _ci_text(p.energy_per_image_j, p.energy_per_image_j_ci95)
        if p.status == "ok" and p.energy_per_image_j is None:
            energy = "unavailable"
        elif energy != "-" and sweep.energy_simulated:
            energy += " (sim)"
        status = p.status if p.status != "oom" else ("oom (simulated)" if p.oom_simulated else "oom")
        rows.append([p.batch_size, status, _ci_text(p.images_per_s, p.images_per_s_ci95), energy, _gib(p.peak_bytes)])
    return tabulate(rows, headers=["batch", "status", "images/s [95% CI]", "J/image [95% CI]", "peak GiB"])


def max_batch_table(result: MaxBatchResult) -> str:
    """The fits search's probes in the order they ran."""
    from tabulate import tabulate

    rows = [[p.batch_size, p.outcome + (" (simulated)" if p.oom_simulated else ""), _gib(p.peak_bytes),
             f"{p.duration_s:.2f}"] for p in result.probes]
    return tabulate(rows, headers=["batch", "outcome", "peak GiB", "probe s"])


def plot_batch_sweep(sweep: BatchSweep, path: str | Path) -> Path:
    """Images/s and J/image against batch size with CI error bars and the optima marked; writes a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    ax_t, ax_e = fig.subplots(1, 2)
    panels = ((ax_t, "images_per_s", "images_per_s_ci95", sweep.throughput, "images/s (higher is better)"),
              (ax_e, "energy_per_image_j", "energy_per_image_j_ci95", sweep.energy, "J/image (lower is better)"))
    failed = [p for p in sweep.points if p.status != "ok"]
    for ax, attr, ci_attr, optimum, label in panels:
        pts = [p for p in sweep.points if getattr(p, attr) is not None]
        if pts:
            xs = [p.batch_size for p in pts]
            ys = [getattr(p, attr) for p in pts]
            cis = [getattr(p, ci_attr) or (y, y) for p, y in zip(pts, ys)]
            yerr = np.array([[y - lo for y, (lo, _) in zip(ys, cis)], [hi - y for y, (_, hi) in zip(ys, cis)]])
            ax.errorbar(xs, ys, yerr=np.clip(yerr, 0, None), marker="o", capsize=3, label="median, 95% CI")
            if optimum.batch_size is not None:
                ax.plot([optimum.batch_size], [optimum.value], marker="*", markersize=16, color="tab:red",
                        linestyle="none", label=f"optimum: batch {optimum.batch_size} "
                                                f"({100 * (optimum.choice_fraction or 0):.0f}% of resamples)")
        for p in failed:
            ax.axvline(p.batch_size, color="grey", linestyle=":", linewidth=1)
            ax.annotate(p.status + (" (sim)" if p.oom_simulated else ""), (p.batch_size, 0.02),
                        xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color="grey")
        ax.set_xscale("log", base=2)
        ax.set_xticks([p.batch_size for p in sweep.points], [str(p.batch_size) for p in sweep.points])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        if pts:
            ax.legend(fontsize=7)
    notes = []
    if sweep.energy.batch_size is None:
        notes.append(f"energy unavailable: {sweep.energy.reason}")
        ax_e.text(0.5, 0.5, "energy unavailable", transform=ax_e.transAxes, ha="center", va="center", color="grey")
    elif sweep.energy_simulated:
        notes.append("energy: simulated GPU (a physical model, not a measurement)")
    if sweep.oom_simulated:
        notes.append("OOM simulated by a memory budget")
    title = f"batch sweep: {sweep.base_case_id or ''}"
    if notes:
        title += "\n" + "; ".join(notes)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, format="png", dpi=100)
    return path
