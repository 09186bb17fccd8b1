"""`sdbench report`: every plot, the HTML and markdown reports and the power-model files are written from a
sweep directory, a results file or plain single-clock results; simulated data are bannered; bad input is a
clear error. Contaminated data are refused in the headline (drift, an incomplete sweep, a failed fit), and
plots say what they show (PNDM's warm-up step)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sdbench.analysis.dvfs.analyze import analyze_records
from sdbench.analysis.synthetic import synthetic_sweep_records
from sdbench.cli import main
from sdbench.errors import SdbenchError
from sdbench.output.report import _title, call_segments, generate_report, load_input, step_marks
from sdbench.record.io import ResultsWriter, read_results


def load_results(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any], list[Path]]:
    """What the report reads: every record, the sweep metadata and the files (sdbench.record.io.read_results)."""
    res = read_results(path)
    return res.records(None), res.meta, res.files


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("vs-clock.png", "edp.png", "power-timeline.png", "step-energy.png")
FAST: dict[str, Any] = {"n_resamples": 200, "n_folds": 3}
REAL = {"energy_simulated": False, "env_gpu_simulated": False, "device": "cuda", "env_compute_device": "cuda",
        "env_gpu_name": "NVIDIA H100 80GB HBM3", "time_source": "cuda-synchronised perf_counter"}


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    writer = ResultsWriter(path)
    for rec in records:
        writer.append(rec)
    return path


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sweep")
    recs = synthetic_sweep_records(sm_clocks_mhz=tuple(range(1980, 700, -140)), rounds=5, noise_rel=0.005, seed=31,
                                   clock_verified={1420: "drift"})
    _write(d / "results.jsonl", recs)
    (d / "sweep.json").write_text(json.dumps({"simulated": True, "grid": {"sm_clock_mhz": list(range(1980, 700, -140))}}))
    return d


@pytest.fixture(scope="module")
def simulated_report(sweep_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return generate_report(sweep_dir, tmp_path_factory.mktemp("report"), **FAST)


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000


def test_report_writes_every_plot_and_document(simulated_report: Any) -> None:
    out: Path = simulated_report.output_dir
    for name in PLOTS:
        assert _is_png(out / name), name
    assert [p.name for p in simulated_report.png_paths] == list(PLOTS)
    for name in ("report.html", "report.md", "analysis.json", "powermodel.json", "powermodel-features.csv",
                 "powermodel-features.parquet"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for name in PLOTS:
        # Images are referenced by relative path, next to the report.
        assert f'src="{name}"' in html and f"({name})" in md
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html and "http" not in html


def test_report_content_for_simulated_data(simulated_report: Any) -> None:
    out: Path = simulated_report.output_dir
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert 'class="banner"' in html and "SIMULATED" in html and "SIMULATED" in md
    assert "simulated GPU" in html  # which parts came from the simulation
    for text in ("minimum energy", "minimum EDP", "minimum ED2P", "slowdown cap", "energy saved % vs default",
                 "Held-out clocks", "held-out MAPE %", "Excluded from the optima", "SM 1420 MHz"):
        assert text in html, text
    assert "against the default clock" in md
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["simulated"] is True
    (w,) = doc["workloads"]
    assert w["optima"]["energy"]["label"] is not None and w["optima"]["energy"]["clock_ci"]
    assert w["optima"]["energy"]["label"] != "SM 1420 MHz"
    assert doc["powermodel"]["validation"]


def test_real_hardware_report_has_no_simulated_banner(tmp_path: Path) -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1680, 1380, 1080), rounds=4, seed=32, workload=REAL)
    src = _write(tmp_path / "results.jsonl", recs)
    result = generate_report(src, tmp_path / "out", **FAST)
    html = result.html.read_text()
    assert not result.simulated
    assert 'class="banner"' not in html and "SIMULATED" not in html
    assert "Measured on real hardware" in html and "locked through the device layer on real hardware" in html


def test_plain_single_clock_results(tmp_path: Path) -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(), default_repeats=1, rounds=4, seed=33, workload=REAL)
    for r in recs:  # a plain Runner record: no sweep fields
        for k in [k for k in r if k.endswith("_setting") or k in ("is_default_clock", "point_role", "clock_verified")]:
            del r[k]
    src = _write(tmp_path / "bench.jsonl", recs)
    result = generate_report(src, tmp_path / "out", **FAST)
    for name in PLOTS:
        assert _is_png(tmp_path / "out" / name), name
    (a,) = result.analyses
    assert a.default is not None and not a.points
    assert "only the default clock" in (a.optima["energy"].reason or "")
    assert result.powermodel is None and any("power model not fitted" in n for n in result.notes)
    assert "only the default clock" in result.html.read_text()


def test_timeline_in_a_record_is_drawn(tmp_path: Path) -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1260), rounds=3, seed=34)
    for r in recs:
        r["timeline"] = [[0.01 * i, 300.0 + (i % 7)] for i in range(200)]
    result = generate_report(_write(tmp_path / "r.jsonl", recs), tmp_path / "out", power_model=False, n_resamples=100)
    assert _is_png(tmp_path / "out" / "power-timeline.png")
    assert result.powermodel is None and not (tmp_path / "out" / "powermodel.json").exists()


def test_call_segments_split_denoise_into_steps() -> None:
    rec = {"phase_text_encode_s": 0.1, "phase_text_encode_energy_j": 20.0, "phase_denoise_s": 1.1,
           "phase_denoise_energy_j": 500.0, "phase_vae_decode_s": 0.2, "phase_vae_decode_energy_j": 60.0,
           "step_time_s": [0.5, 0.5], "step_energy_j": [240.0, 240.0]}
    segs = call_segments(rec)
    assert [s[1] for s in segs] == ["text encode", "step 1", "step 2", "between steps", "vae decode"]
    assert segs[3][2] == pytest.approx(0.1) and segs[3][3] == pytest.approx(20.0)
    assert sum(s[3] for s in segs) == pytest.approx(580.0)
    assert call_segments({}) == []


def test_inputs_accepted(tmp_path: Path, sweep_dir: Path) -> None:
    recs, meta, files = load_results(sweep_dir)
    assert meta["simulated"] is True and files == [sweep_dir / "results.jsonl"] and recs
    # Plan shards are read together.
    shards = tmp_path / "shards"
    shards.mkdir()
    _write(shards / "results-shard0000-of-0002.jsonl", recs[::2])
    _write(shards / "results-shard0001-of-0002.jsonl", recs[1::2])
    recs2, meta2, files2 = load_results(shards)
    assert len(recs2) == len(recs) and meta2 == {} and len(files2) == 2
    # An --export-metrics document.
    doc = tmp_path / "export.json"
    doc.write_text(json.dumps({"schema_version": 1, "records": recs}))
    assert len(load_results(doc)[0]) == len(recs)


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SdbenchError, match="not found"):
        load_results(tmp_path / "missing")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(SdbenchError, match="no results in"):
        load_results(empty_dir)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SdbenchError, match="no records"):
        load_results(tmp_path / "empty.jsonl")
    (tmp_path / "other.json").write_text(json.dumps({"hello": []}))
    with pytest.raises(SdbenchError, match="not a results file sdbench knows"):
        load_results(tmp_path / "other.json")
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": []}))  # pytest-benchmark JSON without records
    with pytest.raises(SdbenchError, match="no records"):
        load_input(tmp_path / "bench.json")


def test_cli_report(sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-out"
    rc = main(["report", str(sweep_dir), "--output-dir", str(out), "--resamples", "100", "--folds", "3",
               "--slowdown-cap", "10"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "SIMULATED" in text and "minimum energy under the slowdown cap" in text and "cap <= 10 %" in text
    assert f"report: {out / 'report.html'}" in text
    assert all(_is_png(out / name) for name in PLOTS)


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["report", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "report input not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- reports that refuse contaminated data ------------------------------------------------------------------
def _sweep_dir(path: Path, records: list[dict[str, Any]], meta: dict[str, Any] | None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    _write(path / "results.jsonl", records)
    if meta is not None:
        (path / "sweep.json").write_text(json.dumps(meta))
    return path


def test_drifted_default_clock_puts_a_warning_in_every_headline(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=tuple(range(1980, 700, -140)), rounds=5, noise_rel=0.005, seed=41,
                                   drift_rel=0.1)
    src = _sweep_dir(tmp_path / "sweep", recs, {"simulated": True, "points_planned": len(recs), "status": "complete"})
    out = tmp_path / "out"
    assert main(["report", str(src), "--output-dir", str(out), "--resamples", "100", "--no-power-model"]) == 0
    cli = capsys.readouterr().out
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    warning = "WARNING: the default clock drifted beyond its noise"
    # The warning comes first: before any optimum in the CLI, right under the title in the documents.
    assert warning in cli and cli.index(warning) < cli.index("minimum energy")
    assert md.index("## Headline") < md.index(warning) < md.index("Optima")
    assert f'<div class="warning">{warning}' in html and html.index(warning) < html.index("<h3>Optima")
    for text in (cli, md, html):
        assert "95 % confidence" not in text and "saves " not in text and "cannot support this claim" in text
    doc = json.loads((out / "analysis.json").read_text())
    (w,) = doc["workloads"]
    assert doc["headline_warnings"][0].startswith(warning) and w["drift_flagged"]
    assert all(o["supported"] is False for o in w["optima"].values())


def test_interrupted_sweep_says_n_of_m_points_in_the_headline(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=tuple(range(1980, 700, -80)), repeats=2, rounds=4, noise_rel=0.005,
                                   seed=42)
    assert len(recs) == 35
    first = sorted(recs, key=lambda r: r["sweep_order_index"])[:4]
    src = _sweep_dir(tmp_path / "sweep", first, {"simulated": True, "points_planned": 35, "points_to_measure": 35,
                                                 "status": "interrupted"})
    out = tmp_path / "out"
    assert main(["report", str(src), "--output-dir", str(out), "--resamples", "100", "--no-power-model"]) == 0
    cli = capsys.readouterr().out
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    headline = "INCOMPLETE SWEEP: 4 of 35 planned points measured, sweep interrupted"
    for text in (cli, md, html):
        # No resampling share beside an optimum of an incomplete sweep.
        assert headline in text and not re.search(r"chosen in \d+ ?% of", text)
    assert "4 of 35 planned points measured" in cli.split("minimum energy:")[1]


def test_a_sweep_killed_before_sweep_json_still_counts_its_planned_points(tmp_path: Path) -> None:
    recs = sorted(synthetic_sweep_records(sm_clocks_mhz=(1980, 1500, 1260, 900), rounds=4, seed=43),
                  key=lambda r: r["sweep_order_index"])
    src = _sweep_dir(tmp_path / "sweep", recs[:3], None)
    (src / "plan.json").write_text(json.dumps({"points": [{"point_id": f"p{i}"} for i in range(7)]}))
    records, meta, _ = load_results(src)
    assert meta["points_planned"] == 7
    result = generate_report(src, tmp_path / "out", power_model=False, n_resamples=100)
    assert "INCOMPLETE SWEEP: 3 of 7 planned points measured" in result.markdown.read_text()


def test_a_failed_power_model_fit_is_reported_not_printed(sweep_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import sdbench.analysis.powermodel as pm

    real = pm._errors

    def runtime_blows_up(pred: Any, truth: Any) -> tuple[float, float]:
        mape, rmse = real(pred, truth)
        # The runtime fits extrapolate to 1.05e56 % (as seen on an interrupted sweep).
        return (1.05e56, 3.1e53) if float(truth.mean()) < 50 else (mape, rmse)

    monkeypatch.setattr(pm, "_errors", runtime_blows_up)
    out = tmp_path / "out"
    assert main(["report", str(sweep_dir), "--output-dir", str(out), "--resamples", "100", "--folds", "3"]) == 0
    cli = capsys.readouterr().out
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for text in (cli, md, html):
        assert "fit failed" in text and "e+56" not in text and "e+53" not in text and "1.05e56" not in text
    assert "POWER MODEL: log-linear runtime model: fit failed" in md
    doc = json.loads((out / "powermodel.json").read_text())
    runtime = [v for v in doc["validation"] if v["target"] == "time_per_image_s"]
    assert runtime and all(v["fit_status"] == "failed" and v["mape_pct"] is None and v["reason"] for v in runtime)
    power = [v for v in doc["validation"] if v["target"] == "power_w"]
    assert all(v["fit_status"] == "ok" and v["mape_pct"] < 100 for v in power)
    assert doc["fits"]["loglinear_runtime"]["fit_status"] == "failed"


# --- plots say what they show ------------------------------------------------------------------------------
def test_pndm_warm_up_step_is_labelled_with_its_reason() -> None:
    marks = step_marks({"steps": 4, "scheduler": "pndm"}, 5)
    assert marks.labels == ["1", "1 warm-up", "2", "3", "4"] and marks.extra == {1}
    assert marks.caption is not None and "warm-up UNet evaluation" in marks.caption and "4 steps show 5 marks" in marks.caption
    plain = step_marks({"steps": 4, "scheduler": "euler"}, 4)
    assert plain.labels == ["1", "2", "3", "4"] and not plain.extra and plain.caption is None
    other = step_marks({"steps": 3, "scheduler": "heun"}, 5)
    assert not other.extra and "5 step marks for 3 steps" in (other.caption or "")
    rec = {"steps": 2, "scheduler": "pndm", "phase_denoise_s": 0.3, "step_time_s": [0.1, 0.1, 0.1],
           "step_energy_j": [1.0, 1.0, 1.0]}
    assert [s[1] for s in call_segments(rec)] == ["step 1", "step 1 warm-up", "step 2"]


def test_pndm_sweep_plots_and_titles(tmp_path: Path) -> None:
    recs = synthetic_sweep_records(sm_clocks_mhz=(1980, 1500, 1260), rounds=4, steps=4, seed=44,
                                   workload={"scheduler": "pndm"})
    for r in recs:  # diffusers' PNDM: 4 steps, 5 step marks
        r["step_time_s"] = r["step_time_s"] + [r["step_time_s"][-1]]
        r["step_energy_j"] = r["step_energy_j"] + [r["step_energy_j"][-1]]
    result = generate_report(_write(tmp_path / "r.jsonl", recs), tmp_path / "out", power_model=False, n_resamples=100)
    assert _is_png(tmp_path / "out" / "step-energy.png")
    (a,) = result.analyses
    title = _title(a, "energy per denoising step and phase")
    assert title.startswith("[SIMULATED] ") and a.workload_label in title and f"on {recs[0]['env_gpu_name']}" in title
    real = analyze_records(synthetic_sweep_records(sm_clocks_mhz=(1980, 1500), rounds=3, seed=45, workload=REAL),
                           n_resamples=50)[0]
    assert _title(real, "x").endswith("on NVIDIA H100 80GB HBM3 (measured)")
