"""Golden record rows pin the schema (tests/data/records/, see its README).

- a record built now has exactly the fields of the golden row of the current version of the same case (a field
  renamed, dropped or added fails here until the golden row, and an upgrade step, say so);
- every older golden row (version 1: written by sdbench before ``sdbench/record/``; version 2: before the knob
  ``fp8_torchao``; version 3: before the knob ``freezing``) upgrades to exactly the fields of its current row, keeping every value;
- every field of a real record belongs to one part of the typed schema, and the typed view round-trips.

The fresh rows are measured as the golden ones were: tiny-sd at 64 px on the simulated GPU (virtual clock) and
on the CPU, and one clock point of a two-clock sweep.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdbench.record.io import read_results, upgrade_row
from sdbench.record.schema import HEADER_KEYS, SCHEMA_VERSION, Record, part_of

DATA = Path(__file__).resolve().parents[2] / "data" / "records"
CASES = ("case-simulated", "case-cpu-no-telemetry", "sweep-point")


def golden(version: int, name: str) -> dict[str, Any]:
    (row,) = [json.loads(line) for line in (DATA / f"v{version}-{name}.jsonl").read_text().splitlines()]
    return row


@pytest.fixture(scope="module")
def fresh(one_torch_thread: None) -> Iterator[dict[str, dict[str, Any]]]:
    """Rows built by the current code for the golden cases (same settings as tests/data/records/README.md)."""
    from sdbench.gpu import SimulatedGpu
    from sdbench.runner import RunnerConfig
    from sdbench.session import Bench
    from sdbench.studies.dvfs.options import SweepOptions
    from sdbench.studies.dvfs.run import run_sweep

    rows: dict[str, dict[str, Any]] = {}
    bench = Bench(device="simulated", runner_config=RunnerConfig(warmup_min_s=0.0, min_rounds=3, max_rounds=3,
                                                                  idle_s=0.5, count_flops=True))
    try:
        rows["case-simulated"] = bench.measure(bench.case("tiny-sd", steps=2, height=64, width=64, seed=0))
    finally:
        bench.close()
    bench = Bench(device="cpu", runner_config=RunnerConfig.for_cpu(warmup_min_s=0.0, min_rounds=3, max_rounds=3,
                                                                    idle_s=0.0, count_flops=True, telemetry_hz=0.0))
    try:
        rows["case-cpu-no-telemetry"] = bench.measure(bench.case("tiny-sd", steps=2, height=64, width=64, seed=0))
    finally:
        bench.close()
    runner = RunnerConfig.for_cpu(min_rounds=2, max_rounds=2, idle_s=0.05, min_window_periods=2, warmup_calls=1)
    bench = Bench(device="simulated", runner_config=runner, gpu=SimulatedGpu())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_sweep(bench, bench.case("tiny-sd", steps=1, resolution=64), Path(tmp),
                      SweepOptions(clocks="list:1980,1200", profiling_mode="custom", order_seed=1,
                                   idle_gap_s=0.0, cooldown_c=None, default_every=0), progress=False)
            rows["sweep-point"] = next(r for r in read_results(Path(tmp) / "results.jsonl").records()
                                       if r["point_role"] == "point")
    finally:
        bench.close()
    yield rows


@pytest.mark.parametrize("name", CASES)
def test_a_record_built_now_has_exactly_the_golden_current_fields(fresh: dict[str, dict[str, Any]], name: str) -> None:
    row, pinned = fresh[name], golden(SCHEMA_VERSION, name)
    assert list(row)[:2] == list(HEADER_KEYS) and row["schema_version"] == SCHEMA_VERSION
    missing, extra = sorted(set(pinned) - set(row)), sorted(set(row) - set(pinned))
    assert not missing and not extra, (f"fields dropped or renamed: {missing}; new fields: {extra} -- update "
                                       f"tests/data/records/v{SCHEMA_VERSION}-{name}.jsonl, and add an upgrade step")


@pytest.mark.parametrize("name", CASES)
def test_a_golden_v1_row_upgrades_to_the_current_fields_keeping_every_value(name: str) -> None:
    old, pinned = golden(1, name), golden(SCHEMA_VERSION, name)
    assert "schema_version" not in old  # version 1 rows carried none
    new = upgrade_row(old, f"v1-{name}")
    assert new["schema_version"] == SCHEMA_VERSION and list(new)[:2] == list(HEADER_KEYS)
    assert set(new) == set(pinned), (sorted(set(pinned) - set(new)), sorted(set(new) - set(pinned)))
    renamed = {"memory_memory_unavailable_reason": "memory_unavailable_reason",
               "memory_nvml_memory_unavailable_reason": "memory_nvml_unavailable_reason"}
    for key, value in old.items():
        if key == "telemetry_telemetry":
            assert (new["telemetry_available"], new["telemetry_reason"]) == (False, f"telemetry {value}")
        else:
            assert new[renamed.get(key, key)] == value, key
    assert new["knob_fp8_torchao"] is False  # added in version 3: no row before it used torchao


@pytest.mark.parametrize("name", CASES)
def test_a_golden_v2_row_upgrades_to_the_current_fields_keeping_every_value(name: str) -> None:
    old, pinned = golden(2, name), golden(SCHEMA_VERSION, name)
    new = upgrade_row(old, f"v2-{name}")
    assert new["schema_version"] == SCHEMA_VERSION and list(new)[:2] == list(HEADER_KEYS)
    assert set(new) == set(pinned), (sorted(set(pinned) - set(new)), sorted(set(new) - set(pinned)))
    assert {k: v for k, v in new.items() if k != "schema_version"} == {
        **{k: v for k, v in old.items() if k != "schema_version"}, "knob_fp8_torchao": False, "knob_freezing": False}
    assert list(new).index("knob_fp8_torchao") == list(new).index("knob_fp8_rowwise") + 1  # beside its kin
    assert new["knob_freezing"] is False  # added in version 4


@pytest.mark.parametrize("name", CASES)
def test_a_golden_v3_row_upgrades_to_the_current_fields_keeping_every_value(name: str) -> None:
    old, pinned = golden(3, name), golden(SCHEMA_VERSION, name)
    new = upgrade_row(old, f"v3-{name}")
    assert new["schema_version"] == SCHEMA_VERSION and list(new) == list(pinned)  # same fields, same order
    assert {k: v for k, v in new.items() if k != "schema_version"} == {
        **{k: v for k, v in old.items() if k != "schema_version"}, "knob_freezing": False}


def test_the_drifted_keys_are_fixed() -> None:
    cpu = upgrade_row(golden(1, "case-cpu-no-telemetry"))
    assert "memory_memory_unavailable_reason" not in cpu and "telemetry_telemetry" not in cpu
    assert cpu["memory_unavailable_reason"] == "torch peak memory is tracked on CUDA devices only"
    assert not any(k.startswith(("memory_memory", "telemetry_telemetry")) for k in golden(2, "case-simulated"))


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("name", CASES)
def test_every_field_of_a_record_belongs_to_a_part_and_the_typed_view_round_trips(version: int, name: str) -> None:
    row = upgrade_row(golden(version, name))
    unowned = [k for k in row if part_of(k) == "extra"]
    assert not unowned, f"fields no part of sdbench.record.schema owns: {unowned}"
    rec = Record.from_row(row)
    assert rec.to_row() == row
    assert rec.case.case_hash == row["case_hash"] and rec.case.model == "tiny-sd"
    assert rec.timing.time_per_image is not None and rec.timing.time_per_image.unit == "s/image"
    assert rec.timing.time_per_image.samples == tuple(row["time_per_image_s_samples"])


def test_the_typed_view_names_how_energy_was_measured() -> None:
    sim = Record.from_row(upgrade_row(golden(1, "case-simulated")))
    cpu = Record.from_row(upgrade_row(golden(1, "case-cpu-no-telemetry")))
    assert sim.energy.method == "counter/simulated" and sim.identity.energy_method == "counter/simulated"
    assert sim.energy.per_image is not None and sim.energy.per_image.estimate == pytest.approx(1.935425)
    assert cpu.energy.method == "none" and cpu.energy.per_image is None and cpu.energy.status == "unavailable"
    assert cpu.telemetry.available is False and cpu.telemetry.reason == "telemetry disabled"
    point = Record.from_row(upgrade_row(golden(1, "sweep-point")))
    assert point.clock is not None and point.clock.sm_clock_mhz_setting == 1200 and point.clock.clock_verified == "ok"
    assert sim.clock is None


def test_the_golden_rows_read_back_through_the_one_reader(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join((DATA / f"v{v}-{name}.jsonl").read_text() for v in (1, 2, 3) for name in CASES))
    results = read_results(mixed)
    assert len(results.rows) == 9 and not results.torn
    assert all(r.row["schema_version"] == SCHEMA_VERSION for r in results.rows)
    fields = [set(r.row) for r in results.rows]
    assert fields[:3] == fields[3:6] == fields[6:]
