"""The cross-GPU study (`sdbench report --across-gpus`): the same tiny-sd case measured by sdbench's own Bench on
the simulated V100, A100, H100 and H200 (virtual clock: fast, and the same numbers on a loaded host), whose
physical model knows the true time and energy per image on each card.

The study must find the ordering the model implies (where the truth separates two cards by more than 1 %;
the H100 and H200 take the same time for this latency-bound model within 0.1 %, and there the study may only
say "indistinguishable" or get the sign right), every record's interval must contain its card's truth, and
every change interval the true change. A real-looking pair (two synthetic record sets that differ in GPU,
driver and torch) checks that the tables and statements name what differs, and a simulated-with-measured pair
that the statements say so.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testsupport import invoke

from sdbench.analysis.crossgpu import (
    WORKLOAD_IDENTITY,
    Comparison,
    CrossGpuStudy,
    Source,
    build_study,
    change_pct_text,
)
from sdbench.analysis.drift import DRIFT_UNTESTABLE_REL
from sdbench.case import Case
from sdbench.errors import ConfigError
from sdbench.gpu.simulated import CARDS, SimulatedGpu
from sdbench.output.crossgpu import case_table, render_markdown, write_study
from sdbench.pipelines.flops import count_work
from sdbench.record.io import export_metrics, read_records
from sdbench.runner import RunnerConfig, work_profile
from sdbench.session import Bench
from sdbench.stats import summarize
from sdbench.studies.dvfs.options import SweepOptions
from sdbench.studies.dvfs.run import run_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CARD_KEYS = ("v100", "a100", "h100", "h200")
SEPARATED_REL = 0.01  # truths further apart than this must be ordered by the study
QUICK = RunnerConfig(idle_s=0.5, warmup_min_s=0.5, min_rounds=8, max_rounds=8)  # 8 rounds: order-statistic intervals
SWEEP_CLOCKS = "count:4"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One --export-metrics document per simulated card (oldest first) and an A100 sweep of the same case."""
    out = tmp_path_factory.mktemp("crossgpu")
    paths = []
    for key in CARD_KEYS:
        bench = Bench(device=f"simulated:{key}", runner_config=QUICK)
        try:
            record = bench.measure(bench.case("tiny-sd"))
            paths.append(export_metrics([record], out / f"{key}.json", {"command": "test", "environment": bench.environment}))
            if key == "a100":
                run_sweep(bench, bench.case("tiny-sd"), out / "a100-sweep",
                          SweepOptions(clocks=SWEEP_CLOCKS, order="random", order_seed=3, idle_gap_s=0.0, cooldown_c=None,
                                       default_every=10), progress=False)
        finally:
            bench.close()
    return {"paths": paths, "sweep": out / "a100-sweep", "dir": out}


@pytest.fixture(scope="module")
def study(simulated: dict[str, Any]) -> CrossGpuStudy:
    inputs = [*simulated["paths"][:2], simulated["sweep"], *simulated["paths"][2:]]
    return build_study(inputs, analysis_options={"n_resamples": 400})


def label_of(key: str) -> str:
    return CARDS[key].name


# --- the known answer -------------------------------------------------------------------------------------------
def test_each_card_is_one_run_in_the_order_given(study: CrossGpuStudy) -> None:
    assert [r.label for r in study.runs] == [label_of(k) for k in CARD_KEYS]
    assert study.simulated and not study.mixed
    assert len(study.cases) == 1 and len(study.cases[0].cells) == 4


def test_the_records_truth_is_the_physical_models(study: CrossGpuStudy) -> None:
    """The truth the study is checked against is SimulatedGpu(card).expected_call of the case's work."""
    for cell, key in zip(study.cases[0].cells, CARD_KEYS):
        case = Case.create("tiny-sd", device=f"simulated:{key}", dtype="fp32")
        wc = count_work(case.model, case.height, case.width, case.batch_size, case.uses_cfg)
        truth = SimulatedGpu(card=key).expected_call(work_profile(case, wc, cell.record["simulated_unet_evaluations"]))
        assert cell.true_time_per_image_s == pytest.approx(truth.time_s / case.batch_size, rel=1e-9)
        assert cell.true_energy_per_image_j == pytest.approx(truth.energy_j / case.batch_size, rel=1e-9)


def test_every_records_interval_contains_its_cards_truth(study: CrossGpuStudy) -> None:
    for cell in study.cases[0].cells:
        t, e = cell.time_per_image_s, cell.energy_per_image_j
        assert t is not None and e is not None and t.has_ci and e.has_ci
        assert t.ci_low <= cell.true_time_per_image_s <= t.ci_high, cell.run
        assert e.ci_low <= cell.true_energy_per_image_j <= e.ci_high, cell.run


@pytest.mark.parametrize(("metric", "truth_field"), [("time", "true_time_per_image_s"),
                                                     ("energy", "true_energy_per_image_j")])
def test_the_study_orders_the_cards_as_the_physical_model_does(study: CrossGpuStudy, metric: str,
                                                               truth_field: str) -> None:
    case = study.cases[0]
    truth = {c.run: getattr(c, truth_field) for c in case.cells}
    order = case.order(metric)
    assert sorted(order) == sorted(truth)
    for a, b in combinations(order, 2):  # the study puts a before b
        if abs(truth[b] / truth[a] - 1.0) > SEPARATED_REL:
            assert truth[a] < truth[b], f"{metric}: the study puts {a} before {b}, the model the other way"
    for cmp in (c for c in case.comparisons if c.metric == metric):
        true_rel = truth[cmp.new] / truth[cmp.old] - 1.0
        assert cmp.low_rel is not None and cmp.high_rel is not None
        assert -1.0 < cmp.low_rel <= cmp.estimate_rel <= cmp.high_rel
        assert cmp.low_rel <= true_rel <= cmp.high_rel, cmp.statement
        if abs(true_rel) > SEPARATED_REL:
            lower, higher = ("faster", "slower") if metric == "time" else ("less energy", "more energy")
            assert cmp.verdict == (lower if true_rel < 0 else higher), cmp.statement
        assert cmp.statement.startswith("[SIMULATED] ") and "differs: GPU " in cmp.statement


def test_the_progression_the_model_implies_for_the_tiny_model(study: CrossGpuStudy) -> None:
    """The tiny model is latency-bound: each newer card is faster (H100 and H200 alike) but draws more power
    than the work needs, so energy per image rises from the V100 to the H200."""
    case = study.cases[0]
    v100, a100, h100, h200 = (label_of(k) for k in CARD_KEYS)
    assert case.order("time")[2:] == [a100, v100]
    assert set(case.order("time")[:2]) == {h100, h200}
    assert case.order("energy") == [v100, a100, h100, h200]
    tie = next(c for c in case.comparisons if c.metric == "time" and {c.new, c.old} == {h100, h200})
    assert tie.verdict.startswith("indistinguishable") or tie.verdict == "faster"  # truth: the H200 by 0.07 %


def test_the_energy_optimal_clock_comes_from_the_sweep_of_that_gpu(study: CrossGpuStudy, simulated: dict[str, Any]) -> None:
    from sdbench.analysis.dvfs.analyze import analyze_records

    case = study.cases[0]
    a100 = case.cell(label_of("a100"))
    assert a100 is not None and a100.energy_optimal_clock is not None
    records = read_records(simulated["sweep"] / "results.jsonl")
    own = analyze_records(records, meta=json.loads((simulated["sweep"] / "sweep.json").read_text()),
                          n_resamples=400)[0].optima["energy"]
    assert a100.energy_optimal_clock["value"] == own.x_value
    assert a100.energy_optimal_clock["label"] == own.label
    # ... and it is the model's own optimum over the swept clocks
    case_ = Case.create("tiny-sd", device="simulated:a100", dtype="fp32")
    wc = count_work(case_.model, case_.height, case_.width, case_.batch_size, case_.uses_cfg)
    profile = work_profile(case_, wc, a100.record["simulated_unet_evaluations"])
    swept = sorted({r["sm_clock_mhz_setting"] for r in records if r.get("sm_clock_mhz_setting")})
    gpu = SimulatedGpu(card="a100")
    assert a100.energy_optimal_clock["value"] == min(swept, key=lambda f: gpu.expected_call(profile, f).energy_j)
    assert a100.case_id == "tiny-sd-pndm-64x64-b1-4st-fp32-eager"  # the plain measurement, not a sweep point
    assert all(c.energy_optimal_clock is None for c in case.cells if c.run != a100.run)


def test_the_study_is_written_as_markdown_html_json_and_a_plot(study: CrossGpuStudy, tmp_path: Path) -> None:
    files = write_study(study, tmp_path / "out")
    md = files.markdown.read_text()
    assert md.startswith("# sdbench cross-GPU study") and "> **SIMULATED:" in md
    assert "| GPU | s/image [CI] | images/s [CI] | J/image [CI] | net J/image [CI] | images/kJ [CI] | EDP J*s/image |" in md
    assert all(label_of(k) in md for k in CARD_KEYS) and "![progression](progression.png)" in md
    page = files.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'class="banner"' in page and "progression.png" in page
    doc = json.loads(files.json.read_text())
    assert doc["schema"] == "sdbench-crossgpu/1" and doc["simulated"] is True
    assert doc["workload_identity"] == list(WORKLOAD_IDENTITY)
    cells = doc["cases"][0]["cells"]
    assert [c["run"] for c in cells] == [label_of(k) for k in CARD_KEYS]
    for c in cells:
        for key in ("time_per_image_s", "images_per_s", "energy_per_image_j", "net_energy_per_image_j", "images_per_kj",
                    "power_w"):
            assert c[key]["ci_low"] <= c[key]["value"] <= c[key]["ci_high"], key
        assert c["edp_js_per_image"] == pytest.approx(c["energy_per_image_j"]["value"] * c["time_per_image_s"]["value"])
        assert c["fraction_of_flop_floor"] is not None and 0 < c["fraction_of_flop_floor"] < 1
    assert set(doc["differences"]) >= {"GPU", "power limit W", "simulated card"}
    assert files.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_writes_the_study(simulated: dict[str, Any], tmp_path: Path) -> None:
    res = invoke(["report", "--across-gpus", *map(str, simulated["paths"]), str(simulated["sweep"]),
                  "--output-dir", str(tmp_path / "cli"), "--resamples", "200"])
    assert res.code == 0, res.err
    assert res.out.startswith("SIMULATED:") and "study: " in res.out
    assert "time per image" in res.out and (tmp_path / "cli" / "crossgpu.html").is_file()


def test_the_command_takes_a_directory_or_the_study_not_both(simulated: dict[str, Any]) -> None:
    res = invoke(["report", str(simulated["dir"]), "--across-gpus", *map(str, simulated["paths"])])
    assert res.code == 2 and "invalid input" in res.err and "not both" in res.err
    res = invoke(["report"])
    assert res.code == 2 and "invalid input: None" in res.err


# --- real-looking runs, built from synthetic records ------------------------------------------------------------
def synthetic(gpu: str, driver: str, torch: str, time_s: float, energy_j: float, *, simulated: bool = False,
              rounds: int = 10, **case: Any) -> dict[str, Any]:
    """A flat record of one case as a real GPU run writes it, with per-round samples spread +-1 %."""
    spread = [1.0 + 0.01 * ((i * 7) % rounds - rounds / 2) / rounds for i in range(rounds)]
    times = [time_s * f for f in spread]
    energies = [energy_j * f for f in reversed(spread)]
    rec: dict[str, Any] = {"record_type": "case", "model": "sdxl", "scheduler": "euler", "steps": 30, "width": 1024,
                           "height": 1024, "batch_size": 1, "dtype": "fp16", "profile": "eager", "knobs": "",
                           "attention": "sdpa", "prompt_tokens": 19, "guidance_scale": 5.0, "offload": "none",
                           "strength": None, "timestep_spacing": "leading", "sm_clock_mhz": None, "mem_clock_mhz": None,
                           "power_limit_w": None}
    rec.update(case)
    rec["case_id"] = f"{rec['model']}-{rec['dtype']}-b{rec['batch_size']}" + (
        f"-sm{rec['sm_clock_mhz']}" if rec["sm_clock_mhz"] else "")
    rec.update(summarize(times).as_dict("time_per_image_s"))
    rec.update(summarize(energies).as_dict("energy_per_image_j"))
    rec.update(summarize([e * 0.8 for e in energies]).as_dict("net_energy_per_image_j"))
    rec["time_per_image_s_samples"], rec["energy_per_image_j_samples"] = times, energies
    rec["power_w_samples"] = [e / t for e, t in zip(energies, times)]
    rec["power_w"] = sorted(rec["power_w_samples"])[rounds // 2]
    rec["energy_status"] = "simulated" if simulated else "measured"
    rec["energy_simulated"] = simulated
    rec.update({"fraction_of_flop_floor": None, "mfu_unavailable_reason": "no matmul ceiling for this card",
                "env_gpu_name": gpu, "env_gpu_uuid": "GPU-" + gpu.replace(" ", "-"), "env_gpu_driver_version": driver,
                "env_torch": torch, "env_diffusers": "0.31.0", "env_gpu_power_limit_w": 700.0,
                "env_gpu_simulated": simulated, "env_host": "node1"})
    return rec


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_real_looking_pair_names_what_differs(tmp_path: Path) -> None:
    h100 = write_jsonl(tmp_path / "h100.jsonl", [synthetic("NVIDIA H100 80GB HBM3", "550.54.15", "2.5.1", 2.0, 980.0)])
    h200 = write_jsonl(tmp_path / "h200.jsonl", [synthetic("NVIDIA H200", "560.35.03", "2.6.0", 1.8, 950.0)])
    study = build_study([h100, h200])
    assert not study.simulated
    diff = study.differences()
    assert diff["GPU"] == {"NVIDIA H100 80GB HBM3": "NVIDIA H100 80GB HBM3", "NVIDIA H200": "NVIDIA H200"}
    assert diff["driver"] == {"NVIDIA H100 80GB HBM3": "550.54.15", "NVIDIA H200": "560.35.03"}
    assert diff["torch"] == {"NVIDIA H100 80GB HBM3": "2.5.1", "NVIDIA H200": "2.6.0"}
    assert "power limit W" not in diff and study.same()["diffusers"] == "0.31.0"
    md = render_markdown(study)
    assert "SIMULATED" not in md
    assert "| driver | 550.54.15 | 560.35.03 |" in md and "| torch | 2.5.1 | 2.6.0 |" in md
    assert "The runs differ in: GPU, GPU UUID, driver, torch" in md
    time_cmp = next(c for c in study.cases[0].comparisons if c.metric == "time")
    assert time_cmp.verdict == "faster" and time_cmp.estimate_rel == pytest.approx(-0.1, abs=0.002)
    assert time_cmp.statement.startswith("[MEASURED] NVIDIA H200 vs NVIDIA H100 80GB HBM3: time per image -10.0 % [")
    assert "driver 550.54.15 -> 560.35.03" in time_cmp.statement and "torch 2.5.1 -> 2.6.0" in time_cmp.statement
    assert "GPU NVIDIA H100 80GB HBM3 -> NVIDIA H200" in time_cmp.statement
    assert "n/a (no matmul ceiling for this card)" in md  # a missing FLOP floor says why


def test_simulated_against_measured_is_said_in_every_statement(tmp_path: Path) -> None:
    real = write_jsonl(tmp_path / "real.jsonl", [synthetic("NVIDIA H100 80GB HBM3", "550.54.15", "2.5.1", 2.0, 980.0)])
    sim = write_jsonl(tmp_path / "sim.jsonl", [synthetic("NVIDIA H200 (simulated)", "simulated", "2.5.1", 1.8, 950.0,
                                                         simulated=True)])
    study = build_study([real, sim])
    assert study.mixed and any(line.startswith("WARNING: simulated and measured") for line in study.headline())
    assert study.cases[0].comparisons and all(c.mixed and c.statement.startswith("[SIMULATED vs MEASURED] ")
                                              for c in study.cases[0].comparisons)
    assert "(sim vs measured)" in render_markdown(study)


def test_cases_are_matched_by_workload_not_by_clock_or_gpu(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [synthetic("GPU A", "1", "2.5.1", 2.0, 900.0),
                                           synthetic("GPU A", "1", "2.5.1", 1.0, 450.0, dtype="bf16")])
    b = write_jsonl(tmp_path / "b.jsonl", [synthetic("GPU B", "1", "2.5.1", 1.5, 800.0),
                                           synthetic("GPU B", "1", "2.5.1", 2.5, 700.0, sm_clock_mhz=1200),
                                           synthetic("GPU B", "1", "2.5.1", 1.2, 600.0, batch_size=4)])
    study = build_study([a, b])
    assert len(study.cases) == 1  # fp16 batch 1 on both; bf16 only on A, batch 4 only on B
    cell = study.cases[0].cell("GPU B")
    assert cell is not None and cell.time_per_image_s.value == pytest.approx(1.5, rel=0.02)  # the default clock's
    assert cell.energy_optimal_clock is not None and cell.energy_optimal_clock["value"] == 1200
    assert sum("measured on 1 GPU run(s) only" in n for n in study.notes) == 2


def test_one_gpu_is_no_study(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [synthetic("GPU A", "1", "2.5.1", 2.0, 900.0)])
    with pytest.raises(ConfigError, match=r"across-gpus.*found 1 GPU run\(s\): GPU A"):
        build_study([a])


def test_two_runs_of_one_gpu_model_are_told_apart_by_what_differs(tmp_path: Path) -> None:
    old = write_jsonl(tmp_path / "old.jsonl", [synthetic("NVIDIA H100 80GB HBM3", "550.54.15", "2.5.1", 2.0, 980.0)])
    new = write_jsonl(tmp_path / "new.jsonl", [synthetic("NVIDIA H100 80GB HBM3", "550.54.15", "2.6.0", 1.9, 970.0)])
    study = build_study([old, new])
    assert [r.label for r in study.runs] == ["NVIDIA H100 80GB HBM3 (torch 2.5.1)", "NVIDIA H100 80GB HBM3 (torch 2.6.0)"]


def test_pytest_benchmark_json_is_read(tmp_path: Path) -> None:
    recs = [synthetic("GPU A", "1", "2.5.1", 2.0, 900.0), synthetic("GPU B", "1", "2.5.1", 1.5, 800.0)]
    doc = {"machine_info": {}, "benchmarks": [{"fullname": f"bench[{i}]", "extra_info": r, "stats": {}}
                                               for i, r in enumerate(recs)]}
    (tmp_path / "bench.json").write_text(json.dumps(doc))
    study = build_study([tmp_path / "bench.json"])
    assert [r.label for r in study.runs] == ["GPU A", "GPU B"] and len(study.cases) == 1


# --- the measured example: H100 rows from before prompt_tokens beside an H200 run ------------------------------
EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


def test_old_records_without_prompt_tokens_match_by_model_and_prompt_text() -> None:
    """The H100 example's rows (schema 1) predate prompt_tokens; the H200's say 19. The same model and prompt
    text is the same token count, so the case matches, and the study says it filled the field."""
    study = build_study([EXAMPLES / "h100-default-clock", EXAMPLES / "h200-default-clock"])
    (case,) = study.cases
    assert case.workload["prompt_tokens"] == 19
    assert [c.run for c in case.cells] == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    assert any("took prompt_tokens from records of the same model and prompt text" in n for n in study.notes)
    for cell in case.cells:
        for est in (cell.time_per_image_s, cell.energy_per_image_j, cell.net_energy_per_image_j):
            assert est is not None and 0 < est.ci_low <= est.value <= est.ci_high


# --- the default clock drifting within a run ---------------------------------------------------------------------
LOWER_HIGHER = {"time": ("faster", "slower"), "energy": ("less energy", "more energy")}


def remeasured(gpu: str, levels: list[float], *, energy_j: float = 900.0, energy_levels: list[float] | None = None,
               samples: list[bool] | None = None) -> list[dict[str, Any]]:
    """A read-only sweep's default-clock re-measurements of one case, in the order taken: the i-th at time
    per image ``levels[i]`` (per-round samples +-0.5 %, as :func:`synthetic`), energy ``energy_levels[i]``
    (default: ``energy_j`` each); ``samples[i]`` False drops that record's per-round samples (its summary stays)."""
    out = []
    for i, t in enumerate(levels):
        rec = synthetic(gpu, "1", "2.5.1", t, (energy_levels or [energy_j] * len(levels))[i])
        rec.update({"point_role": "default-clock", "point_status": "ok", "point_id": f"default-{i}",
                    "sweep_order_index": 5 * i, "started_utc": f"2026-11-26T13:{17 + i:02d}:00+00:00"})
        if samples is not None and not samples[i]:
            for key in ("time_per_image_s_samples", "energy_per_image_j_samples", "power_w_samples"):
                rec.pop(key)
        out.append(rec)
    return out


def source(name: str, records: list[dict[str, Any]]) -> Source:
    return Source(Path(name), records, {})


def comparison(study: CrossGpuStudy, metric: str) -> Comparison:
    return next(c for c in study.cases[0].comparisons if c.metric == metric)


def test_a_run_whose_default_clock_drifted_within_itself_gets_no_verdict() -> None:
    """Run A's default clock fell 30 % over its three re-measurements (2.6, 2.3, 2.0 s/image, each +-0.5 %),
    B's held at 2.2: B's last against A's last is +10 %, well outside its own interval, yet one measurement
    of a drifting card is no measure of it. The verdict is withheld on time and energy, the estimate kept."""
    study = build_study([source("a", remeasured("GPU A", [2.6, 2.3, 2.0])),
                         source("b", remeasured("GPU B", [2.2, 2.2, 2.2]))])
    a, b = study.cases[0].cell("GPU A"), study.cases[0].cell("GPU B")
    assert a is not None and b is not None
    assert a.default_clock_measurements == 3 and a.drifted and a.drift is not None
    assert a.drift["tested"] is True and a.drift["metrics"] == {"time": True, "energy": False}
    assert a.drift["onset"] == 1 and a.drift["rel_change"] == pytest.approx(2.3 / 2.6 - 1.0, abs=0.005)
    assert a.default_clock_range["time"]["rel"] == pytest.approx(0.3, abs=0.01)
    assert a.default_clock_range["time"]["medians"] == pytest.approx([2.6, 2.3, 2.0], rel=0.01)  # time order
    assert not b.drifted and b.drift is not None and b.drift["significant"] is False
    assert b.default_clock_range["time"]["rel"] == pytest.approx(0.0, abs=1e-9)
    for metric in ("time", "energy"):
        cmp = comparison(study, metric)
        assert cmp.drifted and cmp.drifted_runs == ["GPU A"]
        assert cmp.verdict.startswith("not stated: the default clock drifted within GPU A (time ")
        assert cmp.verdict not in LOWER_HIGHER[metric]
        assert cmp.within_run_range["GPU A"] == pytest.approx(a.default_clock_range[metric]["rel"])
        assert cmp.estimate_rel is not None and cmp.low_rel is not None and cmp.high_rel is not None
    time_cmp = comparison(study, "time")
    assert time_cmp.estimate_rel == pytest.approx(0.1, abs=0.002) and time_cmp.low_rel > 0  # the interval is kept
    assert time_cmp.statement.startswith("[MEASURED] GPU B vs GPU A: time per image +10.0 % [")
    assert ": not stated: the default clock drifted within GPU A" in time_cmp.statement
    assert "within-run range of time per image: GPU A 30.0 % over 3 default-clock measurements; GPU B 0.0 % over 3" \
        in time_cmp.statement
    assert any(line.startswith("WARNING: the default clock drifted within GPU A") and "2 of 2 comparison(s)" in line
               for line in study.headline())
    assert study.cases[0].drifted_runs("time") == ["GPU A"]
    doc = study.to_dict()
    cmp_doc = next(c for c in doc["cases"][0]["comparisons"] if c["metric"] == "time")
    assert cmp_doc["drifted"] is True and cmp_doc["drifted_runs"] == ["GPU A"]
    cell_doc = doc["cases"][0]["cells"][0]
    assert cell_doc["default_clock_drifted"] is True and cell_doc["default_clock_measurements"] == 3
    assert cell_doc["default_clock_drift"]["significant"] is True and cell_doc["default_clock_range"]["time"]["n"] == 3
    assert doc["cases"][0]["drifted_runs"] == {"time": ["GPU A"], "energy": ["GPU A"]}


def test_drift_is_found_in_time_order_not_in_file_order() -> None:
    """The same three re-measurements written out of order (2.0 first in the file): sorted by when they were
    measured, the test still compares each with the first one taken (2.6)."""
    recs = remeasured("GPU A", [2.6, 2.3, 2.0])
    study = build_study([source("a", recs[::-1]), source("b", remeasured("GPU B", [2.2, 2.2, 2.2]))])
    a = study.cases[0].cell("GPU A")
    assert a is not None and a.drifted and a.record["point_id"] == "default-0"  # the last in the file is shown
    assert a.default_clock_range["time"]["medians"] == pytest.approx([2.6, 2.3, 2.0], rel=0.01)


def test_stable_runs_keep_their_verdict_and_show_their_within_run_range() -> None:
    """Both default clocks steady over three re-measurements (changes of 0.1 %, under DRIFT_MIN_REL), B 10 %
    slower with +-0.5 % noise: "slower", as before, with each run's range beside it."""
    study = build_study([source("a", remeasured("GPU A", [2.0, 2.002, 1.999])),
                         source("b", remeasured("GPU B", [2.2, 2.2, 2.201]))])
    time_cmp = comparison(study, "time")
    assert not time_cmp.drifted and time_cmp.drifted_runs == []
    assert time_cmp.verdict == "slower" and time_cmp.estimate_rel == pytest.approx(0.1, abs=0.003)
    assert time_cmp.low_rel > 0
    assert "within-run range of time per image: GPU A 0.2 % over 3 default-clock measurements; GPU B 0.045 %" in time_cmp.statement
    assert all(c.drift is not None and c.drift["significant"] is False for c in study.cases[0].cells)
    assert not any(line.startswith("WARNING") for line in study.headline())
    assert "no ranking" not in render_markdown(study, None)


def test_one_default_record_per_run_is_compared_as_before(tmp_path: Path) -> None:
    """No re-measurements: no drift test, no range, and the statement reads exactly as it did."""
    a = write_jsonl(tmp_path / "a.jsonl", [synthetic("GPU A", "1", "2.5.1", 2.0, 900.0)])
    b = write_jsonl(tmp_path / "b.jsonl", [synthetic("GPU B", "1", "2.5.1", 2.2, 900.0)])
    study = build_study([a, b])
    cells = study.cases[0].cells
    assert all(c.default_clock_measurements == 1 and c.drift is None and c.default_clock_range == {} for c in cells)
    time_cmp = comparison(study, "time")
    assert not time_cmp.drifted and time_cmp.within_run_range == {"GPU A": None, "GPU B": None}
    assert time_cmp.verdict == "slower"
    lo, hi = change_pct_text(time_cmp.low_rel), change_pct_text(time_cmp.high_rel)
    assert time_cmp.statement == (f"[MEASURED] GPU B vs GPU A: time per image +10.0 % [{lo}, {hi}] (95 % CI, "
                                  f"{time_cmp.method}): slower; differs: GPU GPU A -> GPU B")
    assert comparison(study, "energy").verdict.startswith("indistinguishable")
    header, rows = case_table(study, study.cases[0])
    column = header.index("default clock within run")
    assert [r[column] for r in rows] == ["measured once", "measured once"]


def test_untested_drift_follows_the_drift_modules_rule() -> None:
    """Re-measurements without per-round samples cannot be tested: a change above DRIFT_UNTESTABLE_REL (5 %)
    counts as drift (the verdict is withheld), a smaller one is reported as untested and withholds nothing."""
    big = build_study([source("a", remeasured("GPU A", [2.6, 2.3, 2.0], samples=[False, False, True])),
                       source("b", remeasured("GPU B", [2.2, 2.2, 2.2]))])
    a = big.cases[0].cell("GPU A")
    assert a is not None and a.drifted and a.drift is not None and a.drift["tested"] is False
    assert comparison(big, "time").drifted and comparison(big, "time").verdict.startswith("not stated")
    assert DRIFT_UNTESTABLE_REL == 0.05
    small = build_study([source("a", remeasured("GPU A", [2.06, 2.03, 2.0], samples=[False, False, True])),
                         source("b", remeasured("GPU B", [2.2, 2.2, 2.2]))])
    a = small.cases[0].cell("GPU A")
    assert a is not None and not a.drifted and a.drift is not None and a.drift["tested"] is False
    assert "could not be tested" in a.drift["verdict"]
    assert comparison(small, "time").verdict == "slower"


def test_the_documents_show_the_drift_and_the_withheld_verdict(tmp_path: Path) -> None:
    study = build_study([source("a", remeasured("GPU A", [2.6, 2.3, 2.0])),
                         source("b", remeasured("GPU B", [2.2, 2.2, 2.2]))])
    files = write_study(study, tmp_path / "out")
    md = files.markdown.read_text()
    assert "> **WARNING: the default clock drifted within GPU A" in md
    assert "| default clock within run |" in md and "DRIFTED: time -11.5 %" in md
    assert "(not stated: drift)" in md and ": not stated: the default clock drifted within GPU A" in md
    assert "(medians only, no ranking: the default clock drifted within GPU A; see the statements)" in md
    assert not any(f": {word};" in md for word in ("faster", "slower", "less energy", "more energy"))
    page = files.html.read_text()
    assert '<div class="warning">WARNING: the default clock drifted within GPU A' in page
    assert '<li class="warning">[MEASURED] GPU B vs GPU A: time per image +10.0 %' in page
    doc = json.loads(files.json.read_text())
    assert all(c["drifted"] for c in doc["cases"][0]["comparisons"])
    assert doc["headline"][0].startswith("WARNING: the default clock drifted within GPU A")
    assert files.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# one run's re-measurements: each a level (1.0 steady; others move the default clock) and its rounds' noise
_levels = st.sampled_from([1.0, 1.0, 1.0, 1.004, 0.97, 1.08, 1.3, 0.75])
_rounds = st.lists(st.floats(min_value=-0.06, max_value=0.06, allow_nan=False), min_size=1, max_size=8)
_run = st.lists(st.tuples(_levels, _rounds, _rounds), min_size=1, max_size=3)


def _records(gpu: str, base_t: float, base_e: float, run: list[tuple[float, list[float], list[float]]]
             ) -> list[dict[str, Any]]:
    out = []
    for i, (level, noise_t, noise_e) in enumerate(run):
        rec = synthetic(gpu, "1", "2.5.1", base_t, base_e)
        times = [base_t * level * (1.0 + n) for n in noise_t]
        energies = [base_e * level * (1.0 + n) for n in noise_e]
        rec.update(summarize(times).as_dict("time_per_image_s"))
        rec.update(summarize(energies).as_dict("energy_per_image_j"))
        rec["time_per_image_s_samples"], rec["energy_per_image_j_samples"] = times, energies
        rec.pop("power_w_samples")
        if len(run) > 1:
            rec.update({"point_role": "default-clock", "point_status": "ok", "sweep_order_index": 5 * i,
                        "started_utc": f"2026-11-26T13:{10 + i:02d}:00+00:00"})
        out.append(rec)
    return out


@settings(max_examples=80, deadline=None)
@given(run_a=_run, run_b=_run, ratio_t=st.sampled_from([0.9, 1.0, 1.02, 1.1, 1.5]),
       ratio_e=st.sampled_from([0.95, 1.0, 1.1]))
def test_no_verdict_contradicts_its_interval_and_no_drifted_comparison_has_one(
        run_a: list[tuple[float, list[float], list[float]]], run_b: list[tuple[float, list[float], list[float]]],
        ratio_t: float, ratio_e: float) -> None:
    study = build_study([source("a", _records("GPU A", 2.0, 900.0, run_a)),
                         source("b", _records("GPU B", 2.0 * ratio_t, 900.0 * ratio_e, run_b))])
    (case,) = study.cases
    cells = {c.run: c for c in case.cells}
    for cmp in case.comparisons:
        lower, higher = LOWER_HIGHER[cmp.metric]
        drifted = [r for r in (cmp.old, cmp.new) if cells[r].drifted]
        assert cmp.drifted == bool(drifted) and cmp.drifted_runs == drifted
        if cmp.drifted:
            assert cmp.verdict.startswith("not stated: the default clock drifted within ")
            assert cmp.verdict not in (lower, higher) and f": {lower};" not in cmp.statement
            assert f": {higher};" not in cmp.statement
            if cmp.low_rel is not None:  # the estimate and interval stay in the statement
                assert cmp.estimate_rel is not None and change_pct_text(cmp.estimate_rel) in cmp.statement
                assert f"[{change_pct_text(cmp.low_rel)}, {change_pct_text(cmp.high_rel)}]" in cmp.statement
            continue
        if cmp.verdict == lower:
            assert cmp.high_rel is not None and cmp.high_rel < 0, cmp.statement
        elif cmp.verdict == higher:
            assert cmp.low_rel is not None and cmp.low_rel > 0, cmp.statement
        elif cmp.verdict.startswith("indistinguishable"):
            assert cmp.low_rel is not None and cmp.low_rel <= 0 <= cmp.high_rel, cmp.statement
        else:
            assert cmp.verdict.startswith("noise unknown") and cmp.low_rel is None, cmp.statement
        if cmp.low_rel is not None and cmp.high_rel is not None:
            assert cmp.low_rel <= cmp.estimate_rel <= cmp.high_rel
    withheld = any(c.drifted for c in case.comparisons)
    headline = " ".join(study.headline())
    assert headline.startswith("WARNING: the default clock drifted") == withheld
    assert not any(word in headline for word in ("faster", "slower", "less energy", "more energy"))
    for metric in ("time", "energy"):
        line = next((x for x in render_markdown(study, None).splitlines() if x.startswith(f"- order by median {metric}")),
                    "")
        assert ("no ranking" in line) == bool(case.drifted_runs(metric))
