"""`sdbench compare` on golden pytest-benchmark JSON and results JSONL fixtures (tests/data/compare).

The fixtures are small hand-made files: a baseline and candidates that are 10% slower with tight noise,
very different but noisy, worse in energy only, without energy, measured on another GPU, with a changed
case_hash, with only summary statistics; and the same cases as results JSON Lines / an export document.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.cli import main
from sdbench.errors import ConfigError, SdbenchError
from sdbench.output.compare import (
    CompareResult,
    compare_files,
    compare_results,
    format_fail_on,
    parse_fail_on,
    write_csv,
    write_json,
)
from sdbench.output.compare.entries import Entry, ResultsFile, results_file
from sdbench.output.compare.metrics import METRICS
from sdbench.output.compare.result import CompareRow
from sdbench.record.io import read_results
from sdbench.stats import CHANGE_METHODS

DATA = Path(__file__).resolve().parents[2] / "data" / "compare"
BASE = str(DATA / "baseline.json")
CASE_A = "sd15-euler-512x512-b1-25st-fp16-eager"
CASE_B = "sdxl-dpmpp_2m-1024x1024-b2-30st-fp16-channels-last"


def fixture(name: str) -> str:
    return str(DATA / name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def row_line(out: str, case_id: str, metric: str) -> str:
    """The table line of one case and metric."""
    hits = [line for line in out.splitlines() if line.startswith(case_id) and line.split()[1] == metric]
    assert len(hits) == 1, out
    return hits[0]


# --- the CLI on golden files --------------------------------------------------------------------------------


def test_identical_files_are_unchanged_and_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, BASE, "--fail-on", "time:5%,energy:5%,power:10%")
    assert code == 0
    for case in (CASE_A, CASE_B):
        for metric in ("time", "energy", "power"):
            assert "unchanged (within noise)" in row_line(out, case, metric)
    assert "REGRESSION" not in out
    assert "no significant regression beyond --fail-on time:5%,energy:5%,power:10%; exit 0" in out


def test_ten_percent_slower_with_tight_noise_is_a_regression(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_slower.json"), "--fail-on", "time:5%")
    assert code == 1
    line = row_line(out, CASE_A, "time")
    assert "0.8005 s/image" in line and "0.8805 s/image" in line
    assert "+10.0%" in line and "slower" in line and "REGRESSION (> 5%)" in line
    assert "REGRESSION" in row_line(out, CASE_B, "time")
    # The same energy per image spread over more time: power fell, which is not a regression.
    assert "lower" in row_line(out, CASE_A, "power")
    assert "2 regression(s) beyond --fail-on time:5%; exit 1" in out


def test_slower_but_below_the_threshold_does_not_fail(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_slower.json"), "--fail-on", "time:12.5%")
    assert code == 0
    assert "slower" in row_line(out, CASE_A, "time")
    assert "REGRESSION" not in out


def test_without_fail_on_a_slowdown_is_reported_but_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_slower.json"))
    assert code == 0
    assert "slower" in row_line(out, CASE_A, "time")
    assert "no --fail-on thresholds given" in out


def test_big_but_noisy_difference_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_noisy.json"), "--fail-on", "time:5%")
    assert code == 0
    line = row_line(out, CASE_A, "time")
    assert "+12.4%" in line  # a big change of the median ...
    assert "unchanged (within noise)" in line  # ... that the noise cannot tell from nothing
    assert "REGRESSION" not in out


def test_energy_regression_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_energy.json"), "--fail-on", "time:5%")
    assert code == 0  # time did not change; energy is not gated
    assert "unchanged (within noise)" in row_line(out, CASE_A, "time")
    assert "higher" in row_line(out, CASE_A, "energy")
    code, out, _ = run(capsys, BASE, fixture("candidate_energy.json"), "--fail-on", "time:5%,energy:5%")
    assert code == 1
    assert "REGRESSION (> 5%)" in row_line(out, CASE_A, "energy")
    assert "REGRESSION" not in row_line(out, CASE_A, "time")


def test_fail_on_metric_is_compared_even_when_metric_leaves_it_out(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_energy.json"), "--metric", "time", "--fail-on", "energy:5%")
    assert code == 1
    assert "REGRESSION" in row_line(out, CASE_B, "energy")
    assert not any(line.split()[1:2] == ["power"] for line in out.splitlines() if line.startswith(CASE_A))


def test_metric_selects_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_slower.json"), "--metric", "power")
    assert code == 0
    assert "lower" in row_line(out, CASE_A, "power")
    assert not [line for line in out.splitlines() if line.startswith(CASE_A) and line.split()[1] == "time"]


def test_energy_unavailable_on_one_side_never_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_energy_unavailable.json"), "--fail-on", "time:5%,energy:5%,power:5%")
    assert code == 0
    assert "energy unavailable" in row_line(out, CASE_A, "energy")
    assert "power unavailable" in row_line(out, CASE_A, "power")
    assert "never fails the run" in out
    # Either direction: the baseline may be the side without a counter.
    code, out, _ = run(capsys, fixture("candidate_energy_unavailable.json"), BASE, "--fail-on", "energy:1%")
    assert code == 0
    assert "energy unavailable" in row_line(out, CASE_B, "energy")


def test_simulated_and_measured_energy_are_never_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads((DATA / "candidate_energy.json").read_text())
    for bench in doc["benchmarks"]:
        bench["extra_info"]["energy_status"] = "simulated"
        bench["extra_info"]["energy_simulated"] = True
    path = tmp_path / "simulated.json"
    path.write_text(json.dumps(doc))
    code, out, _ = run(capsys, BASE, str(path), "--fail-on", "energy:5%")
    assert code == 0
    assert "not compared (simulated vs measured)" in row_line(out, CASE_A, "energy")
    assert "simulated and measured energy are never compared" in out


def test_different_gpu_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, BASE, fixture("candidate_other_gpu.json"))
    assert code == 2
    assert "refusing to compare results from different GPUs" in err
    assert "gpu_uuid" in err and "--allow-cross-gpu" in err
    assert out == ""


def test_different_gpu_is_compared_with_the_flag_and_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_other_gpu.json"), "--allow-cross-gpu", "--fail-on", "time:5%")
    assert code == 0
    warning = [line for line in out.splitlines() if line.startswith("WARNING:")]
    assert len(warning) == 1 and "different GPUs" in warning[0] and "gpu_uuid" in warning[0]
    assert "unchanged (within noise)" in row_line(out, CASE_A, "time")


def test_different_power_limit_setting_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads((DATA / "baseline.json").read_text())
    doc["machine_info"]["sdbench"]["power_limit_w_setting"] = 500
    path = tmp_path / "capped.json"
    path.write_text(json.dumps(doc))
    code, _, err = run(capsys, BASE, str(path))
    assert code == 2
    assert "power_limit_w_setting None (baseline) != 500 (candidate)" in err


def test_changed_case_hash_is_not_compared(capsys: pytest.CaptureFixture[str]) -> None:
    # Case A is 10% slower there, but it measures something else now: it must not fail the run.
    code, out, _ = run(capsys, BASE, fixture("candidate_changed_hash.json"), "--fail-on", "time:5%")
    assert code == 0
    assert not [line for line in out.splitlines() if line.startswith(CASE_A)]
    changed = [line for line in out.splitlines() if line.startswith("changed benchmark, not compared")]
    assert len(changed) == 1
    assert "3f2a9c1b7e40 -> c0ffee12ab34" in changed[0] and CASE_A in changed[0]
    assert "unchanged (within noise)" in row_line(out, CASE_B, "time")


def test_summary_statistics_fallback_uses_the_t_test(capsys: pytest.CaptureFixture[str]) -> None:
    # No per-round samples: case A has stats.data, case B only stats' median/stddev/rounds (per call of 2 images).
    code, out, _ = run(capsys, BASE, fixture("candidate_stats_only.json"), "--fail-on", "time:5%")
    assert code == 1
    for case in (CASE_A, CASE_B):
        line = row_line(out, case, "time")
        assert "+10.0%" in line and "REGRESSION" in line
    assert "2.641 s/image" in row_line(out, CASE_B, "time")  # per image, not per call
    result = compare_files([BASE, fixture("candidate_stats_only.json")], fail_on="time:5%")
    sources = {r.case_id: r.source for r in result.rows if r.metric == "time"}
    assert sources == {CASE_A: "samples / stats.data", CASE_B: "samples / stats summary / 2 images"}


def test_more_than_two_files_compare_each_with_the_first(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_noisy.json"), fixture("candidate_slower.json"), "--fail-on", "time:5%")
    assert code == 1
    headers = [line for line in out.splitlines() if line.startswith("== ")]
    assert len(headers) == 2
    assert "candidate_noisy.json vs baseline" in headers[0] and "candidate_slower.json vs baseline" in headers[1]
    result = compare_files([BASE, fixture("candidate_noisy.json"), fixture("candidate_slower.json")], fail_on="time:5%")
    assert {Path(r.candidate_file).name for r in result.regressions} == {"candidate_slower.json"}


def test_json_csv_and_markdown_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_csv, out_md = tmp_path / "c.json", tmp_path / "c.csv", tmp_path / "c.md"
    code, _, _ = run(capsys, BASE, fixture("candidate_slower.json"), "--fail-on", "time:5%", "--json", str(out_json),
                     "--csv", str(out_csv), "--markdown", str(out_md))
    assert code == 1
    doc = json.loads(out_json.read_text())
    assert doc["exit_code"] == 1 and doc["regressions"] == 2 and doc["fail_on"] == "time:5%"
    time_a = next(r for r in doc["rows"] if r["case_id"] == CASE_A and r["metric"] == "time")
    assert time_a["verdict"] == "slower" and time_a["regression"] is True
    assert time_a["unit"] == "s/image" and math.isclose(time_a["rel_change"], 0.10, rel_tol=1e-6)
    assert time_a["change_ci_low_rel"] < 0.10 < time_a["change_ci_high_rel"]
    csv_lines = out_csv.read_text().splitlines()
    assert len(csv_lines) == 1 + 6 and "rel_change" in csv_lines[0]
    md = out_md.read_text()
    assert "| benchmark" in md and "REGRESSION (> 5%)" in md


# --- results JSONL and export documents ---------------------------------------------------------------------


def test_jsonl_results_regression(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, fixture("baseline.jsonl"), fixture("candidate_slower.jsonl"), "--fail-on", "time:5%")
    assert code == 1
    assert "REGRESSION" in row_line(out, CASE_A, "time")
    assert results_file(read_results(fixture("baseline.jsonl"))).format == "records"


def test_jsonl_against_an_export_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, fixture("baseline.jsonl"), fixture("candidate_export.json"), "--fail-on", "time:5%,energy:5%")
    assert code == 0
    assert "unchanged (within noise)" in row_line(out, CASE_B, "time")


def test_pytest_benchmark_json_against_jsonl_pairs_by_case_id(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, BASE, fixture("candidate_slower.jsonl"), "--fail-on", "time:5%")
    assert code == 1
    assert "paired by case_id" in out
    assert "REGRESSION" in row_line(out, CASE_B, "time")


def test_jsonl_from_another_gpu_is_refused_against_pytest_benchmark_json(tmp_path: Path) -> None:
    lines = [json.loads(line) for line in (DATA / "candidate_slower.jsonl").read_text().splitlines()]
    for rec in lines:
        rec["env_gpu_uuid"] = "GPU-00000000-0000-0000-0000-000000000000"
    path = tmp_path / "other.jsonl"
    path.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    with pytest.raises(SdbenchError, match="gpu_uuid"):
        compare_files([BASE, path])


def test_case_clock_setting_beats_the_session_setting(tmp_path: Path) -> None:
    # A DVFS case locks its own SM clock while the session's machine_info says "not set".
    doc = json.loads((DATA / "baseline.json").read_text())
    for bench in doc["benchmarks"]:
        bench["extra_info"]["sm_clock_mhz"] = 1200
    locked = tmp_path / "locked.json"
    locked.write_text(json.dumps(doc))
    with pytest.raises(SdbenchError, match="sm_clock_mhz_setting None"):
        compare_files([BASE, locked])
    assert compare_files([locked, locked]).exit_code == 0


def test_torn_last_jsonl_line_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "torn.jsonl"
    path.write_text((DATA / "candidate_slower.jsonl").read_text() + '{"record_type": "case", "case_id": "sd')
    code, out, _ = run(capsys, fixture("baseline.jsonl"), str(path), "--fail-on", "time:5%")
    assert code == 1
    assert "REGRESSION" in row_line(out, CASE_A, "time")


# --- errors -------------------------------------------------------------------------------------------------


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, BASE, str(tmp_path / "nope.json"))
    assert code == 2
    assert "results file not found" in err and "nope.json" in err


@pytest.mark.parametrize("text", ["{not json", "[1, 2", '{"hello": "world"}', ""])
def test_unreadable_json_is_a_clear_error(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    code, _, err = run(capsys, BASE, str(path))
    assert code == 2
    assert err.startswith("sdbench: error:") and "bad.json" in err
    assert "Traceback" not in err


def test_no_common_benchmarks_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads((DATA / "baseline.json").read_text())
    for bench in doc["benchmarks"]:
        bench["fullname"] += "-renamed"
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(doc))
    code, _, err = run(capsys, BASE, str(path))
    assert code == 2
    assert "no common benchmarks" in err


def test_all_changed_hashes_is_a_clear_error(tmp_path: Path) -> None:
    doc = json.loads((DATA / "baseline.json").read_text())
    for bench in doc["benchmarks"]:
        bench["extra_info"]["case_hash"] = "000000000000"
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SdbenchError, match="no comparable benchmarks"):
        compare_files([BASE, path])


def test_bad_fail_on_is_a_config_error_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, BASE, BASE, "--fail-on", "latency:5%")
    assert code == 2
    assert "invalid fail_on: 'latency:5%'" in err and "time|energy|power" in err
    assert out == ""


def test_bad_metric_and_confidence_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, BASE, BASE, "--metric", "time,speed")
    assert code == 2 and "invalid metric" in err
    with pytest.raises(SystemExit) as exc:
        main(["compare", BASE, BASE, "--confidence", "1.5"])
    assert exc.value.code == 2
    assert "invalid confidence" in capsys.readouterr().err


# --- library API --------------------------------------------------------------------------------------------


def test_compare_files_api() -> None:
    result = compare_files([BASE, fixture("candidate_slower.json")], fail_on={"time": 5.0})
    assert isinstance(result, CompareResult)
    assert result.exit_code == 1
    assert {(r.case_id, r.metric) for r in result.regressions} == {(CASE_A, "time"), (CASE_B, "time")}
    assert "REGRESSION" in result.render()
    assert result.table == result.render()  # what a terminal reporter writes
    ok = compare_files([BASE, fixture("candidate_slower.json")], fail_on="time:20%")
    assert ok.exit_code == 0 and ok.regressions == []


def test_compare_files_needs_two_paths() -> None:
    with pytest.raises(ConfigError) as exc:
        compare_files([BASE])
    assert exc.value.field == "paths"


def test_compare_files_rejects_cross_gpu_unless_allowed() -> None:
    with pytest.raises(SdbenchError, match="different GPUs"):
        compare_files([BASE, fixture("candidate_other_gpu.json")])
    result = compare_files([BASE, fixture("candidate_other_gpu.json")], allow_cross_gpu=True)
    assert result.exit_code == 0 and len(result.warnings) == 1


# --- parse_fail_on ------------------------------------------------------------------------------------------


def test_parse_fail_on_examples() -> None:
    assert parse_fail_on("time:5%,energy:5%,power:10%") == {"time": 5.0, "energy": 5.0, "power": 10.0}
    assert parse_fail_on(" time : 2.5% , ENERGY:.5%") == {"time": 2.5, "energy": 0.5}


@pytest.mark.parametrize("text", ["", "time", "time:5", "time:-5%", "time:0%", "time:5%,time:6%", "time:5%,",
                                  "speed:5%", "time:1e3%", "time:nan%", "time:inf%", "time:5%%", "time:٣%"])
def test_parse_fail_on_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_fail_on(text)
    assert exc.value.field == "fail_on"
    assert exc.value.value == text
    assert "metric:N%" in str(exc.value)


thresholds = st.dictionaries(
    st.sampled_from(sorted(METRICS)),
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
)


@settings(deadline=None, max_examples=200)
@given(thresholds)
def test_parse_fail_on_round_trips(spec: dict[str, float]) -> None:
    assert parse_fail_on(format_fail_on(spec)) == spec


@settings(deadline=None, max_examples=200)
@given(st.dictionaries(st.sampled_from(sorted(METRICS)),
                       st.tuples(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=999)),
                       min_size=1))
def test_parse_fail_on_reads_written_decimals(parts: dict[str, tuple[int, int]]) -> None:
    spec = {k: (whole, frac) for k, (whole, frac) in parts.items() if whole or frac}
    if not spec:
        return
    text = ",".join(f"{k}:{whole}.{frac:03d}%" for k, (whole, frac) in spec.items())
    assert parse_fail_on(text) == {k: float(f"{whole}.{frac:03d}") for k, (whole, frac) in spec.items()}


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.text(), st.text(alphabet="timenrgypow:%.,0123456789 -eE+")))
def test_parse_fail_on_junk_gives_config_error_only(text: str) -> None:
    try:
        parsed = parse_fail_on(text)
    except ConfigError as exc:
        assert exc.field == "fail_on"
        return
    assert parsed and set(parsed) <= set(METRICS)
    assert all(math.isfinite(v) and v > 0 for v in parsed.values())


# --- one computation: estimate, interval, verdict and regression ------------------------------------------

_AGREES = {"slower": "above", "higher": "above", "faster": "below", "lower": "below",
           "unchanged (within noise)": "straddles", "unchanged (noise unknown)": "none"}


def check_row(row: CompareRow) -> None:
    """The invariants every compared row keeps (the issue's bad rows broke each of them)."""
    if not row.compared:
        return
    side = _AGREES[row.verdict]
    low, high, rel = row.change_ci_low_rel, row.change_ci_high_rel, row.rel_change
    if side == "none":
        assert low is None and high is None and row.ci_method == "none"
        assert not row.regression
        return
    assert low is not None and high is not None and rel is not None
    assert -1.0 < low <= rel <= high  # above -100 %, holding its estimate
    assert side == ("above" if low > 0 else "below" if high < 0 else "straddles")
    assert row.ci_method in CHANGE_METHODS
    threshold = row.fail_on_pct
    assert row.regression == (threshold is not None and side == "above" and rel * 100.0 >= threshold)


FIXTURES = ["baseline.json", "candidate_slower.json", "candidate_noisy.json", "candidate_energy.json",
            "candidate_energy_unavailable.json", "candidate_stats_only.json", "candidate_changed_hash.json"]


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_row_agrees_with_its_interval(name: str) -> None:
    for pair in ([BASE, fixture(name)], [fixture(name), BASE]):
        result = compare_files(pair, fail_on="time:5%,energy:5%,power:5%")
        assert result.rows, f"{name}: no comparison rows"
        for row in result.rows:
            check_row(row)


def test_ci_method_is_in_json_and_csv(tmp_path: Path) -> None:
    result = compare_files([BASE, fixture("candidate_stats_only.json")], fail_on="time:5%")
    out_json, out_csv = write_json(result, tmp_path / "c.json"), write_csv(result, tmp_path / "c.csv")
    rows = json.loads(out_json.read_text())["rows"]
    methods = {(r["case_id"], r["metric"]): r["ci_method"] for r in rows}
    assert methods[(CASE_A, "time")] == "ratio-of-medians"  # stats.data: per-round samples on both sides
    assert methods[(CASE_B, "time")] == "summary-log-welch"  # the candidate saved only a summary
    assert all(r["ci_method"] in CHANGE_METHODS and isinstance(r["ci_extended"], bool) for r in rows)
    header = out_csv.read_text().splitlines()[0].split(",")
    assert "ci_method" in header and "ci_extended" in header
    assert any(n.startswith("change intervals: ") for n in result.notes)


def _records_file(name: str, cases: dict[str, dict[str, Any]]) -> ResultsFile:
    entries = {case: Entry(name=case, case_id=case, case_hash="h", record={"case_id": case, **rec}, identity={},
                           software={}) for case, rec in cases.items()}
    return ResultsFile(Path(name), "records", entries)


def _time_record(value: list[float] | tuple[float, float, float, int]) -> dict[str, Any]:
    """Per-round samples (a list) or a summary (median, mean, stddev, n) of time per image."""
    if isinstance(value, list):
        return {"time_per_image_s_samples": value, "energy_status": "unavailable"}
    median, mean, stddev, n = value
    return {"time_per_image_s_median": median, "time_per_image_s_mean": mean, "time_per_image_s_stddev": stddev,
            "time_per_image_s_n": n, "energy_status": "unavailable"}


positive_s = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
one_side = st.one_of(
    st.lists(positive_s, min_size=1, max_size=12),
    st.tuples(positive_s, positive_s, st.floats(min_value=0.0, max_value=1e3), st.integers(1, 30)),
)


@settings(deadline=None, max_examples=60)
@given(one_side, one_side, st.floats(min_value=0.5, max_value=50.0))
def test_rows_agree_with_their_intervals(base: Any, cand: Any, threshold_pct: float) -> None:
    files = [_records_file("base.jsonl", {"c": _time_record(base)}), _records_file("cand.jsonl", {"c": _time_record(cand)})]
    result = compare_results(files, fail_on={"time": threshold_pct}, metrics="time")
    (row,) = [r for r in result.rows if r.metric == "time"]
    check_row(row)
    assert result.exit_code == int(row.regression)
    # Swapping baseline and candidate mirrors the verdict.
    (back,) = [r for r in compare_results(files[::-1], metrics="time").rows if r.metric == "time"]
    mirror = {"slower": "faster", "faster": "slower"}
    assert back.verdict == mirror.get(row.verdict, row.verdict)


def test_summary_median_and_mean_disagreeing_is_unchanged_not_contradicted() -> None:
    # Equal medians, a candidate mean 50 % higher (a few very slow rounds), tight stddevs: the summary's log
    # moments alone would say "slower"; the interval is widened to hold the estimate, 0, so it says unchanged.
    files = [_records_file("base.jsonl", {"c": _time_record((1.0, 1.0, 0.01, 10))}),
             _records_file("cand.jsonl", {"c": _time_record((1.0, 1.5, 0.01, 10))})]
    (row,) = compare_results(files, fail_on="time:5%", metrics="time").rows
    check_row(row)
    assert row.verdict == "unchanged (within noise)" and row.ci_extended and not row.regression
    assert row.change_ci_low_rel == 0.0 == row.rel_change


def test_regression_needs_slower_and_at_least_the_threshold() -> None:
    # Constant rounds, 10 % slower: a zero-width interval at +10 %. 10 % is a regression at --fail-on
    # time:10% (estimate >= threshold), not at 10.5 %.
    files = [_records_file("base.jsonl", {"c": _time_record([1.0] * 6)}),
             _records_file("cand.jsonl", {"c": _time_record([1.1] * 6)})]
    (row,) = compare_results(files, fail_on="time:10%", metrics="time").rows
    assert row.verdict == "slower" and row.ci_method == "zero-spread" and row.regression
    assert compare_results(files, fail_on="time:10.5%").exit_code == 0
    # Noisy enough that the interval straddles 0: never a regression, however large the estimate.
    files = [_records_file("base.jsonl", {"c": _time_record([1.0, 0.5, 2.0, 1.0, 0.6, 1.8])}),
             _records_file("cand.jsonl", {"c": _time_record([1.5, 0.6, 2.5, 1.4, 0.9, 2.2])})]
    (row,) = compare_results(files, fail_on="time:5%", metrics="time").rows
    assert row.rel_change > 0.05 and row.verdict == "unchanged (within noise)" and not row.regression


def test_one_round_summary_has_no_interval() -> None:
    files = [_records_file("base.jsonl", {"c": _time_record([1.0, 1.01, 0.99])}),
             _records_file("cand.jsonl", {"c": _time_record((2.0, 2.0, 0.0, 1))})]
    result = compare_results(files, fail_on="time:5%", metrics="time")
    (row,) = result.rows
    assert row.verdict == "unchanged (noise unknown)" and row.change_ci_low_rel is None and not row.regression
    assert any("no noise estimate" in n for n in result.notes)
