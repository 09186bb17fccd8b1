"""Plans (`sdbench.distribute.plan`): JSON round trip, round-robin shards, resumable execution that appends a record
per point, failing points recorded and skipped over, merging shard results, and `sdbench plan make/run/merge`.

Execution semantics are tested with a stand-in bench (no pipelines); the command line runs tiny-sd on the
CPU for real, two points of one round each.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.case import Case
from sdbench.cli import main
from sdbench.distribute.plan import (
    Plan,
    PlanPoint,
    done_point_ids,
    execute,
    merge_results,
    parse_shard,
    shard_results_path,
)
from sdbench.errors import ConfigError, SdbenchError
from sdbench.record.io import read_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cases(device: str = "cpu") -> list[Case]:
    return [Case.create("tiny-sd", device=device, dtype="fp32", batch_size=b, steps=2) for b in (1, 2, 3)]


class FakeBench:
    """Stands in for sdbench.session.Bench: records what it measured, fails on chosen batch sizes, and checks
    that every earlier point's record is already in the results file when the next one starts."""

    def __init__(self, results: Path, fail_batch: set[int] | None = None, device: str = "cpu",
                 error: type[Exception] = SdbenchError) -> None:
        self.device = device
        self.results = results
        self.fail_batch = fail_batch or set()
        self.error = error
        self.measured: list[Case] = []
        self.lines_seen: list[int] = []
        self.closed = False

    def measure(self, case: Case) -> dict[str, Any]:
        self.lines_seen.append(len(read_records(self.results)) if self.results.exists() else 0)
        self.measured.append(case)
        if case.batch_size in self.fail_batch:
            raise self.error(f"boom at batch {case.batch_size}")
        return {**case.features(), "time_per_image_s_median": 0.01 * case.batch_size}

    def close(self) -> None:
        self.closed = True


# --- building and persistence -------------------------------------------------------------------------
def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    plan = Plan.from_cases(cases(), repeats=2, runner={"min_rounds": 1}, device="cpu", meta={"kind": "matrix"})
    assert [p.point_id for p in plan.points[:2]] == [f"{cases()[0].case_hash}-r0", f"{cases()[0].case_hash}-r1"]
    assert [p.repeat for p in plan.points] == [0, 1] * 3
    path = plan.save(tmp_path / "sub" / "plan.json")
    loaded = Plan.load(path)
    assert loaded.points == plan.points
    assert (loaded.runner, loaded.device, loaded.meta, loaded.version) == ({"min_rounds": 1}, "cpu", {"kind": "matrix"}, 1)
    assert loaded.plan_hash == plan.plan_hash
    assert [p.to_case() for p in loaded.points[::2]] == cases()
    assert not list(tmp_path.glob("sub/*.tmp"))  # written atomically


def test_duplicate_cases_are_refused() -> None:
    with pytest.raises(ConfigError, match="invalid plan"):
        Plan.from_cases([cases()[0], cases()[0]])


def test_bad_plan_files_fail_on_load(tmp_path: Path) -> None:
    with pytest.raises(SdbenchError, match="plan file not found"):
        Plan.load(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(SdbenchError, match="not valid JSON"):
        Plan.load(tmp_path / "junk.json")
    doc = Plan.from_cases(cases()[:1]).to_json()
    (tmp_path / "v2.json").write_text(json.dumps({**doc, "version": 2}))
    with pytest.raises(ConfigError) as exc_info:
        Plan.load(tmp_path / "v2.json")
    assert exc_info.value.field == "plan version"
    # A bad case fails at load time, before any GPU time is spent.
    doc["points"][0]["case"]["steps"] = 0
    (tmp_path / "badcase.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as exc_info:
        Plan.load(tmp_path / "badcase.json")
    assert exc_info.value.field == "steps"


# --- shards ------------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(n_points=st.integers(0, 40), count=st.integers(1, 9))
def test_shards_are_disjoint_balanced_and_cover_the_plan(n_points: int, count: int) -> None:
    plan = Plan(points=[PlanPoint(point_id=f"p{i}", case={}) for i in range(n_points)])
    shards = [plan.shard(i, count) for i in range(count)]
    ids = [p.point_id for shard in shards for p in shard]
    assert sorted(ids) == sorted(p.point_id for p in plan.points)  # covered, and each point once
    assert len(set(ids)) == len(ids)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    for shard in shards:  # plan order within a shard
        order = [plan.points.index(p) for p in shard]
        assert order == sorted(order)


@pytest.mark.parametrize(("index", "count", "field"), [(0, 0, "shard count"), (2, 2, "shard index"), (-1, 3, "shard index")])
def test_bad_shard_numbers_are_refused(index: int, count: int, field: str) -> None:
    with pytest.raises(ConfigError) as exc_info:
        Plan.from_cases(cases()).shard(index, count)
    assert exc_info.value.field == field


def test_parse_shard() -> None:
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard("3/4") == (3, 4)


@pytest.mark.parametrize("text", ["4/4", "-1/4", "0/0", "a/b", "1", "1/2/3", "", "/", "1/-2"])
def test_parse_shard_errors_name_the_shard(text: str) -> None:
    with pytest.raises(ConfigError) as exc_info:
        parse_shard(text)
    assert exc_info.value.field == "shard"
    assert "I/N" in str(exc_info.value)


def test_shard_results_path() -> None:
    assert shard_results_path("out", 2, 16) == Path("out/results-shard0002-of-0016.jsonl")


# --- execution --------------------------------------------------------------------------------------------
def test_execute_appends_a_record_per_point_and_resume_skips_done_points(tmp_path: Path) -> None:
    plan = Plan.from_cases(cases(), repeats=2)
    results = tmp_path / "results.jsonl"
    bench = FakeBench(results)
    seen: list[tuple[int, int, str]] = []
    records = execute(plan, plan.points, results, bench=bench, progress=lambda n, total, p: seen.append((n, total, p.point_id)))
    assert [r["point_id"] for r in records] == [p.point_id for p in plan.points]
    assert bench.lines_seen == list(range(6))  # each record was on disk before the next point started
    assert not bench.closed  # a bench passed in belongs to the caller
    assert seen == [(n, 6, p.point_id) for n, p in enumerate(plan.points)]
    on_disk = read_records(results)
    assert [r["point_id"] for r in on_disk] == [p.point_id for p in plan.points]
    for rec, point in zip(on_disk, plan.points):
        assert rec["point_status"] == "ok" and rec["repeat"] == point.repeat and rec["point_role"] == "point"
        assert rec["plan_hash"] == plan.plan_hash and rec["case_hash"] == point.to_case().case_hash
        assert rec["started_utc"] and rec["worker_host"]
    assert done_point_ids([results]) == {p.point_id for p in plan.points}

    again = FakeBench(results)
    assert execute(plan, plan.points, results, bench=again) == []
    assert again.measured == [] and len(read_records(results)) == 6
    fresh = FakeBench(results)
    assert len(execute(plan, plan.points[:2], results, bench=fresh, resume=False)) == 2
    assert len(fresh.measured) == 2


@pytest.mark.parametrize("error", [SdbenchError, RuntimeError])
def test_a_failing_point_is_recorded_and_the_rest_go_on(tmp_path: Path, error: type[Exception]) -> None:
    plan = Plan.from_cases(cases())
    results = tmp_path / "results.jsonl"
    bench = FakeBench(results, fail_batch={2}, error=error)
    records = execute(plan, plan.points, results, bench=bench)
    assert [r["point_status"] for r in records] == ["ok", "error", "ok"]
    failed = records[1]
    assert failed["point_error"] == f"{error.__name__}: boom at batch 2"
    assert failed["case_id"] == plan.points[1].to_case().case_id and failed["point_id"] == plan.points[1].point_id
    assert [r["point_status"] for r in read_records(results)] == ["ok", "error", "ok"]
    # Resuming retries only the failed point.
    retry = FakeBench(results)
    assert [r["point_id"] for r in execute(plan, plan.points, results, bench=retry)] == [plan.points[1].point_id]
    assert [c.batch_size for c in retry.measured] == [2]


def test_points_run_on_the_benchs_device_inside_the_point_context(tmp_path: Path) -> None:
    plan = Plan.from_cases(cases(device="simulated")[:2])
    results = tmp_path / "r.jsonl"
    bench = FakeBench(results, device="cpu")
    entered: list[str] = []

    @contextlib.contextmanager
    def lock_clocks(point: PlanPoint, case: Case) -> Iterator[dict[str, Any]]:
        entered.append(point.point_id)
        yield {"sm_clock_mhz_verified": 1005}

    records = execute(plan, plan.points, results, bench=bench, point_context=lock_clocks)
    assert [c.device for c in bench.measured] == ["cpu", "cpu"]
    assert entered == [p.point_id for p in plan.points]
    assert all(r["sm_clock_mhz_verified"] == 1005 for r in records)


def test_merge_keeps_one_finished_record_per_point(tmp_path: Path) -> None:
    def rec(pid: str, value: float, status: str = "ok") -> dict[str, Any]:
        return {"point_id": pid, "point_status": status, "time_per_image_s_median": value}

    a, b = tmp_path / "results-shard0000-of-0002.jsonl", tmp_path / "results-shard0001-of-0002.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in [rec("p1", 1.0), rec("p2", 2.0), rec("p3", 0.0, "error")]))
    b.write_text("".join(json.dumps(r) + "\n" for r in [rec("p2", 2.5), rec("p3", 3.0), {"note": "no point id"}]))
    out = tmp_path / "merged.jsonl"
    assert merge_results([a, b], out) == (3, 1)
    merged = {r["point_id"]: r["time_per_image_s_median"] for r in read_records(out)}
    assert merged == {"p1": 1.0, "p2": 2.5, "p3": 3.0}  # the last finished record wins; errors never do
    assert merge_results([a, b], out) == (3, 1)  # merging again rewrites, never appends
    assert len(read_records(out)) == 3


# --- sdbench plan make / run / merge ---------------------------------------------------------------------------
def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_plan_make_run_merge_on_the_command_line(tmp_path: Path) -> None:
    plan_path, out_dir = tmp_path / "plan.json", tmp_path / "out"
    code, out, _ = cli(["plan", "make", "--models", "tiny-sd", "--batch-sizes", "1,2", "--steps", "2",
                        "--device", "cpu", "-o", str(plan_path)])
    assert code == 0 and "2 points" in out
    plan = Plan.load(plan_path)
    assert [p.to_case().batch_size for p in plan.points] == [1, 2]
    # The measurement settings travel inside the plan: one quick round per point.
    doc = json.loads(plan_path.read_text())
    doc["runner"] = {"min_rounds": 1, "max_rounds": 1, "idle_s": 0, "warmup_min_s": 0, "count_flops": False}
    plan_path.write_text(json.dumps(doc))

    for shard in ("0/2", "1/2"):
        code, out, _ = cli(["plan", "run", str(plan_path), "--shard", shard, "--output-dir", str(out_dir)])
        assert code == 0 and "1 point(s) measured, 0 failed" in out
    shard_files = sorted(out_dir.glob("results-shard*.jsonl"))
    assert [f.name for f in shard_files] == ["results-shard0000-of-0002.jsonl", "results-shard0001-of-0002.jsonl"]
    code, out, _ = cli(["plan", "run", str(plan_path), "--shard", "0/2", "--output-dir", str(out_dir)])
    assert code == 0 and "0 point(s) measured" in out  # resumed: nothing left in that shard

    merged = tmp_path / "merged.jsonl"
    code, out, _ = cli(["plan", "merge", str(out_dir), "-o", str(merged)])
    assert code == 0 and "2 point(s), 0 duplicate(s)" in out
    records = read_records(merged)
    assert sorted(r["point_id"] for r in records) == sorted(p.point_id for p in plan.points)
    assert all(r["point_status"] == "ok" and r["rounds"] == 1 and r["time_per_image_s_median"] > 0 for r in records)


def test_plan_command_line_errors(tmp_path: Path) -> None:
    code, _, err = cli(["plan", "merge", str(tmp_path), "-o", str(tmp_path / "m.jsonl")])
    assert code == 2 and "no shard results" in err
    code, _, err = cli(["plan", "run", str(tmp_path / "nope.json"), "--output-dir", str(tmp_path)])
    assert code == 2 and "plan file not found" in err
    Plan.from_cases(cases()[:1]).save(tmp_path / "p.json")
    code, _, err = cli(["plan", "run", str(tmp_path / "p.json"), "--shard", "1/1", "--output-dir", str(tmp_path)])
    assert code == 2 and "invalid shard" in err
