"""The results layer (sdbench.record): the one metric accessor, versioned rows and their upgrades, the one reader
of every format, torn lines, and the writers' all-or-nothing discipline. Pure and fast: no model runs here."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.errors import EXIT_ENVIRONMENT, ConfigError
from sdbench.record.io import (
    UPGRADES,
    ResultsReadError,
    ResultsWriteError,
    ResultsWriter,
    TornResultsFile,
    UnknownSchemaVersion,
    atomic_write_bytes,
    ensure_writable,
    ensure_writable_dir,
    export_metrics,
    read_jsonl,
    read_results,
    repair_torn_lines,
    upgrade_row,
)
from sdbench.record.schema import (
    OLDEST_SCHEMA_VERSION,
    SCHEMA_VERSION,
    MetricStats,
    energy_method,
    metric_stats,
)
from sdbench.stats import summarize


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"record_type": "case", "case_id": "c", "case_hash": "h", "model": "tiny-sd"}
    base.update(fields)
    return base


# --- the one accessor -------------------------------------------------------------------------------------------
def test_samples_come_first_with_the_interval_the_row_states() -> None:
    samples = [1.0, 1.2, 0.9, 1.1]
    s = summarize(samples)
    m = metric_stats(row(time_per_image_s_samples=samples, **s.as_dict("time_per_image_s")), "time_per_image_s")
    assert m is not None and m.has_samples and m.samples == tuple(samples) and m.source == "samples"
    assert (m.estimate, m.mean, m.stddev, m.n) == (s.median, s.mean, s.stddev, 4)
    assert (m.low, m.high, m.method) == (s.ci95_low, s.ci95_high, s.method) and m.unit == "s/image"


def test_without_samples_the_summary_is_used_and_a_lone_value_has_unknown_noise() -> None:
    m = metric_stats(row(energy_per_image_j_median=2.0, energy_per_image_j_mean=2.1, energy_per_image_j_stddev=0.1,
                         energy_per_image_j_n=5), "energy_per_image_j")
    assert m is not None and not m.has_samples and (m.estimate, m.mean, m.n, m.source) == (2.0, 2.1, 5, "record summary")
    assert m.rounds() == (2.0,) and m.rounds("mean") == (2.1,)
    lone = metric_stats(row(power_w=300.0), "power_w")
    assert lone is not None and (lone.estimate, lone.n, lone.has_noise, lone.source) == (300.0, 1, False,
                                                                                        "record median only")
    assert metric_stats(row(), "time_per_image_s") is None


def test_unusable_samples_are_ignored_with_a_reason_never_half_used() -> None:
    m = metric_stats(row(time_per_image_s_samples=[1.0, None], time_per_image_s_median=1.0), "time_per_image_s")
    assert m is not None and m.samples is None and m.invalid_samples == "sample None is not a finite number"


def test_pytest_benchmark_stats_are_per_call_and_divided_by_the_images_per_call() -> None:
    m = MetricStats.from_pytest_benchmark({"data": [2.0, 4.0, 6.0]}, images_per_call=2)
    assert m is not None and m.samples == (1.0, 2.0, 3.0) and m.source == "stats.data / 2 images"
    s = MetricStats.from_pytest_benchmark({"median": 4.0, "mean": 4.2, "stddev": 0.2, "rounds": 7}, 4)
    assert s is not None and (s.estimate, s.mean, s.stddev, s.n) == (1.0, 1.05, 0.05, 7)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=20))
def test_a_computed_interval_is_summarize_s(samples: list[float]) -> None:
    m = metric_stats(row(power_w_samples=samples), "power_w")
    assert m is not None and m.low is None
    s = summarize(samples)
    assert (m.with_interval().low, m.with_interval().high, m.with_interval().method) == (s.ci95_low, s.ci95_high,
                                                                                          s.method)


def test_the_energy_method_is_the_source_and_whether_it_was_simulated() -> None:
    assert energy_method(row(energy_source="counter", energy_simulated=True)) == "counter/simulated"
    assert energy_method(row(energy_source="timeline", energy_simulated=False)) == "timeline"
    assert energy_method(row()) is None


# --- versions and upgrades --------------------------------------------------------------------------------------
def test_the_upgrade_chain_reaches_the_current_version_one_step_at_a_time() -> None:
    assert sorted(UPGRADES) == list(range(OLDEST_SCHEMA_VERSION, SCHEMA_VERSION))
    old = {"case_id": "c", "memory_memory_unavailable_reason": "cpu", "memory_nvml_memory_unavailable_reason": "x",
           "telemetry_telemetry": "disabled", "activity_sm_active": 0.5, "activity_dram_active_max": 0.9}
    new = upgrade_row(old)
    assert new == {"schema_version": SCHEMA_VERSION, "record_type": "case", "case_id": "c", "memory_unavailable_reason": "cpu",
                   "memory_nvml_unavailable_reason": "x", "telemetry_available": False,
                   "telemetry_reason": "telemetry disabled", "activity_sm_active_mean": 0.5,
                   "activity_dram_active_max": 0.9}
    assert upgrade_row(new) == new  # a current row is left as it is


def test_a_newer_row_is_refused_naming_where_the_version_and_what_is_read() -> None:
    with pytest.raises(UnknownSchemaVersion) as info:
        upgrade_row({"schema_version": SCHEMA_VERSION + 1}, "results.jsonl: line 7")
    text = str(info.value)
    assert text.startswith(f"results.jsonl: line 7: results schema version {SCHEMA_VERSION + 1} is newer")
    assert f"versions {OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION}" in text and info.value.exit_code == 2
    with pytest.raises(ResultsReadError, match="not a whole number"):
        upgrade_row({"schema_version": "2"})


# --- the one reader -------------------------------------------------------------------------------------------
def test_every_format_reads_to_the_same_current_rows(tmp_path: Path) -> None:
    rows = [row(case_id="a", time_per_image_s_samples=[1.0, 2.0]), row(case_id="b", time_per_image_s_median=3.0)]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = export_metrics(rows, tmp_path / "doc.json", {"command": "generate"})
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"machine_info": {"sdbench": {"gpu_name": "X"}}, "benchmarks": [
        {"fullname": f"t[{r['case_id']}]", "extra_info": r, "stats": {"median": 1.0}} for r in rows]}))
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "results.jsonl").write_text(jsonl.read_text())
    (folder / "sweep.json").write_text(json.dumps({"simulated": True}))
    read = {p.name: read_results(p) for p in (jsonl, doc, bench, folder)}
    assert {k: v.format for k, v in read.items()} == {"r.jsonl": "jsonl", "doc.json": "export",
                                                     "bench.json": "pytest-benchmark", "sweep": "folder"}
    for results in read.values():
        assert [r["case_id"] for r in results.records()] == ["a", "b"]
        assert all(r["schema_version"] == SCHEMA_VERSION for r in results.records())
    assert read["sweep"].meta == {"simulated": True} and read["doc.json"].meta["command"] == "generate"
    assert read["bench.json"].rows[0].name == "t[a]" and read["bench.json"].rows[0].machine == {"gpu_name": "X"}
    on_disk = json.loads(doc.read_text())
    assert (on_disk["schema_version"], on_disk["record_type"]) == (SCHEMA_VERSION, "export-metrics")


def test_a_newer_document_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "records": []}))
    with pytest.raises(UnknownSchemaVersion, match=str(doc)):
        read_results(doc)


def tear(text: str) -> str:
    return text[: len(text) // 2]


def test_torn_lines_are_skipped_and_named_by_file_and_line(tmp_path: Path) -> None:
    lines = [json.dumps(row(case_id=c)) for c in "abcd"]
    path = tmp_path / "r.jsonl"
    path.write_text(lines[0] + "\n" + tear(lines[1]) + "\n" + lines[2] + "\n" + tear(lines[3]))
    results = read_results(path)
    assert [r["case_id"] for r in results.records()] == ["a", "c"]
    assert [(t.line, t.at_end) for t in results.torn] == [(2, False), (4, True)]
    assert results.warnings[0].startswith(f"{path}: line 2: torn line")


def test_a_folder_reads_its_other_shards_when_one_holds_only_a_torn_line(tmp_path: Path) -> None:
    (tmp_path / "results-shard0000-of-0002.jsonl").write_text(json.dumps(row(case_id="a")) + "\n")
    (tmp_path / "results-shard0001-of-0002.jsonl").write_text('{"case_id": "b", "time')  # torn in its first write
    results = read_results(tmp_path)
    assert [r["case_id"] for r in results.records()] == ["a"] and [t.line for t in results.torn] == [1]


def test_repair_moves_the_torn_bytes_aside_and_keeps_every_whole_line(tmp_path: Path) -> None:
    lines = [json.dumps(row(case_id=c)) for c in "abcd"]
    path = tmp_path / "r.jsonl"
    torn_end = "\n".join(lines[:3]) + "\n" + tear(lines[3])
    path.write_text(torn_end)
    report = repair_torn_lines(path)
    assert path.read_text() == "\n".join(lines[:3]) + "\n"  # cut back to the last whole line
    assert report.moved_to == tmp_path / "r.jsonl.torn-1" and report.moved_to.read_text() == tear(lines[3])
    path.write_text(lines[0] + "\n" + tear(lines[1]) + "\n" + lines[2] + "\n")
    report = repair_torn_lines(path)
    assert path.read_text() == lines[0] + "\n" + lines[2] + "\n"
    assert report.moved_to == tmp_path / "r.jsonl.torn-2"  # the first repair's bytes are kept too
    assert report.moved_to.read_text() == tear(lines[1]) + "\n"
    assert not repair_torn_lines(path).repaired and not repair_torn_lines(tmp_path / "missing.jsonl").repaired
    path.write_text(lines[0])  # a whole last record without its newline: completed, not moved
    assert repair_torn_lines(path).newline_added and path.read_text() == lines[0] + "\n"


# --- the writers ------------------------------------------------------------------------------------------------
def test_every_line_carries_the_schema_version_and_record_type(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "r.jsonl")
    writer.append({"case_id": "a", "schema_version": 1, "memory_memory_unavailable_reason": "cpu"})  # upgraded
    writer.append({"record_type": "memory_stress_oom", "case_id": "b"})
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["schema_version"], r["record_type"]) for r in lines] == [(SCHEMA_VERSION, "case"), (SCHEMA_VERSION, "memory_stress_oom")]
    assert [list(r)[:2] for r in lines] == [["schema_version", "record_type"]] * 2
    assert lines[0]["memory_unavailable_reason"] == "cpu" and "memory_memory_unavailable_reason" not in lines[0]
    with pytest.raises(UnknownSchemaVersion):
        writer.append({"case_id": "c", "schema_version": SCHEMA_VERSION + 1})  # never written as if current


def test_a_write_cut_short_leaves_the_file_as_it_was_and_says_what_was_kept(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.jsonl"
    writer = ResultsWriter(path)
    writer.append(row(case_id="a"))
    writer.append(row(case_id="b"))
    before = path.read_bytes()
    real_write = os.write
    calls: list[int] = []

    def short_then_full(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))  # a short write ...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ... then the disk is full

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(ResultsWriteError) as info:
        writer.append(row(case_id="c"))
    monkeypatch.undo()
    assert str(info.value) == f"no space left on device writing {path}: 2 records kept"
    assert info.value.exit_code == EXIT_ENVIRONMENT and len(calls) == 2
    assert path.read_bytes() == before  # no torn line
    writer.append(row(case_id="c"))  # space freed: the next append goes on from a whole line
    assert [r["case_id"] for r in read_jsonl(path).rows] == ["a", "b", "c"]


def test_the_appender_never_writes_onto_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(row()) + "\n" + '{"case_id": "half')
    with pytest.raises(TornResultsFile, match="line 2"):
        ResultsWriter(path).check()
    with pytest.raises(TornResultsFile):
        ResultsWriter(path).append(row())
    assert path.read_text().endswith('{"case_id": "half')


def test_an_atomic_write_that_fails_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sweep.json"
    atomic_write_bytes(path, b"old\n")

    def full(_fd: int, _data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"old\n" and [p.name for p in tmp_path.iterdir()] == ["sweep.json"]


def test_output_paths_are_checked_without_creating_anything(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="invalid --results: .*a-file/out.jsonl.*is a file, not a folder"):
        ensure_writable(a_file / "out.jsonl", "--results")
    with pytest.raises(ConfigError, match="is a folder"):
        ensure_writable(tmp_path, "--results")
    with pytest.raises(ConfigError, match="output_dir"):
        ensure_writable_dir(a_file, "output_dir")
    ensure_writable(tmp_path / "new" / "deeper" / "out.jsonl")
    ensure_writable_dir(tmp_path / "new-folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
