"""One worker per GPU (`sdbench.distribute.workers`): GPU lists, pinning, its verification, and the pool end to end.

The pool runs on the CPU with `cpu` stand-ins for GPUs: the same sharding, streaming, merge, death
and resume paths as on a GPU node. A worker is made to hang on a chosen point by a `sitecustomize`
hook on its PYTHONPATH (no test hooks in sdbench itself), then killed with SIGKILL, as a crashing
driver or the OOM killer would. NVML and torch are faked for the pinning checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pynvml as real_pynvml
import pytest
from testsupport import FAST_RUNNER, tiny_plan

from sdbench.case import Case
from sdbench.distribute.plan import Plan, shard_results_path
from sdbench.distribute.workers import (
    EXIT_PINNING_MISMATCH,
    PinningCheck,
    Worker,
    parse_gpus,
    plan_workers,
    run_on_gpus,
    run_shard,
    shard_status,
    verify_pinning,
    worker_command,
    worker_env,
)
from sdbench.errors import ConfigError, SdbenchError
from sdbench.record.io import read_records

UUIDS = ["GPU-aaaa0000-1111-2222-3333-444444444444", "GPU-bbbb0000-1111-2222-3333-444444444444",
         "GPU-cccc0000-1111-2222-3333-444444444444"]

# Installed as sitecustomize.py on a worker's PYTHONPATH: when the worker's environment has
# KEY=VALUE, its measurement number AFTER+1 announces itself and blocks, the first time only
# (the flag file marks that it happened, so a resumed run goes through).
HANG_HOOK = '''
import os
_key, _value = os.environ.get("SDBENCH_TEST_HANG_KEY", ""), os.environ.get("SDBENCH_TEST_HANG_VALUE")
_flag = os.environ.get("SDBENCH_TEST_HANG_FLAG", "")
if _key and os.environ.get(_key) == _value and _flag and not os.path.exists(_flag):
    import time
    import sdbench.session

    _after = int(os.environ.get("SDBENCH_TEST_HANG_AFTER", "1"))
    _measure = sdbench.session.Bench.measure
    _calls = []

    def _hanging_measure(self, case, *args, **kwargs):
        _calls.append(1)
        if len(_calls) > _after:
            with open(_flag, "w") as fh:
                fh.write(str(os.getpid()))
            print("TEST-HOOK: hanging", flush=True)
            time.sleep(3600)
        return _measure(self, case, *args, **kwargs)

    sdbench.session.Bench.measure = _hanging_measure
'''


def hang_hook_env(tmp_path: Path, key: str, value: str, after: int = 1) -> tuple[dict[str, str], Path]:
    """Environment that makes the worker whose `key` is `value` hang on measurement `after`+1."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HANG_HOOK)
    flag = tmp_path / "hung.flag"
    pythonpath = os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, "SDBENCH_TEST_HANG_KEY": key, "SDBENCH_TEST_HANG_VALUE": value,
            "SDBENCH_TEST_HANG_FLAG": str(flag), "SDBENCH_TEST_HANG_AFTER": str(after)}, flag




# --- a fake NVML: enough of pynvml for UUID lookups, with the real binding's errors and constants ---------
def fake_pynvml(uuids: list[str]) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    for name in dir(real_pynvml):
        if name.startswith("NVML"):
            setattr(mod, name, getattr(real_pynvml, name))
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(uuids)  # type: ignore[attr-defined]

    def handle(i: int) -> int:
        if not 0 <= i < len(uuids):
            raise real_pynvml.NVMLError_InvalidArgument()
        return i

    mod.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUUID = lambda h: uuids[h]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: "580.00"  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def three_gpus(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three fake GPUs behind NVML; CUDA_VISIBLE_DEVICES unset."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(UUIDS))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return UUIDS


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fake_pynvml([])

    def init() -> None:
        raise real_pynvml.NVMLError_LibraryNotFound()

    mod.nvmlInit = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", mod)


# --- GPU lists and pinning ----------------------------------------------------------------------------
def test_gpu_lists_are_parsed_and_bad_entries_refused() -> None:
    assert parse_gpus("0, 1") == ["0", "1"]
    assert parse_gpus(["cpu", "cpu"]) == ["cpu", "cpu"]  # stand-ins may repeat: they share no GPU
    assert parse_gpus(f"{UUIDS[0]},simulated") == [UUIDS[0], "simulated"]
    with pytest.raises(ConfigError, match="a GPU is named twice"):
        parse_gpus("0,0")
    with pytest.raises(ConfigError, match="MIG"):
        parse_gpus("MIG-1234")
    with pytest.raises(ConfigError, match="invalid --gpus: 'cuda:1'"):
        parse_gpus("0,cuda:1")
    with pytest.raises(ConfigError):
        parse_gpus(",")


def test_all_means_every_visible_gpu_by_uuid(three_gpus: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_gpus("all") == three_gpus
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert parse_gpus("all") == [three_gpus[2], three_gpus[0]]


def test_all_without_a_gpu_says_why(no_nvml: None) -> None:
    with pytest.raises(SdbenchError, match="no GPU is visible.*--gpus cpu,cpu"):
        parse_gpus("all")


def test_workers_are_pinned_by_uuid_each_to_its_own_shard(three_gpus: list[str]) -> None:
    specs = plan_workers(["2", "0"])
    # By UUID: CUDA's default device order (fastest first) may differ from NVML's (PCI bus).
    assert [s.pin for s in specs] == [three_gpus[2], three_gpus[0]]
    assert [s.device for s in specs] == ["cuda:0", "cuda:0"]  # each worker sees only its GPU
    assert [(s.shard, s.shard_count) for s in specs] == [(0, 2), (1, 2)]
    env = worker_env(specs[0], cpu_workers=0, base={"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert env["CUDA_VISIBLE_DEVICES"] == three_gpus[2]
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "OMP_NUM_THREADS" not in env


def test_without_nvml_indices_follow_the_parents_visible_devices(no_nvml: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert [s.pin for s in plan_workers(["1", "0"])] == ["5", "4"]
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
        plan_workers(["2"])


def test_stand_in_workers_see_no_gpu_and_share_the_cores(no_nvml: None) -> None:
    specs = plan_workers(["cpu", "simulated"], shard_base=2, shard_count=6)
    assert [(s.device, s.pin, s.shard, s.shard_count) for s in specs] == [("cpu", "", 2, 6), ("simulated", "", 3, 6)]
    env = worker_env(specs[1], cpu_workers=2, base={})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert int(env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2)
    assert env["SDBENCH_WORKER_SHARD"] == "3/6"
    with pytest.raises(ConfigError, match="shard range"):
        plan_workers(["cpu", "cpu"], shard_base=5, shard_count=6)


def test_worker_command_is_an_argv_list(no_nvml: None, tmp_path: Path) -> None:
    plan = tmp_path / "a plan; rm -rf ~.json"
    spec = plan_workers(["cpu", "cpu"])[1]
    argv = worker_command(plan, spec, tmp_path / "out", resume=False)
    assert argv[:5] == [sys.executable, "-m", "sdbench", "workers", "shard"]
    assert argv[5] == str(plan)  # one argument, never parsed by a shell
    assert argv[argv.index("--shard") + 1] == "1/2"
    assert argv[-1] == "--no-resume"


# --- pinning verification ----------------------------------------------------------------------------------
def test_same_gpu_by_uuid_is_verified() -> None:
    check = verify_pinning("cuda:0", nvml_uuid=lambda i: UUIDS[1], torch_uuid=lambda i: UUIDS[1][4:].upper())
    assert check.verified is True and not check.mismatch
    assert check.record_fields() == {"pinning_verified": True, "gpu_uuid": UUIDS[1],
                                     "pinning_reason": "NVML and torch name the same GPU"}


def test_different_gpus_are_a_mismatch() -> None:
    check = verify_pinning("cuda:0", nvml_uuid=lambda i: UUIDS[0], torch_uuid=lambda i: UUIDS[1][4:])
    assert check.verified is False and check.mismatch
    assert UUIDS[0] in check.reason and UUIDS[1] in check.reason


def test_an_unreadable_side_is_unverified_not_a_mismatch() -> None:
    def no_nvml_uuid(index: int) -> str:
        raise SdbenchError("no NVIDIA GPU/NVML on this machine")

    check = verify_pinning("cuda:1", nvml_uuid=no_nvml_uuid, torch_uuid=lambda i: UUIDS[2][4:])
    assert check.verified is False and not check.mismatch
    assert check.reason.startswith("cannot verify pinning: NVML: no NVIDIA GPU")


def test_cpu_has_nothing_to_pin() -> None:
    check = verify_pinning("cpu")
    assert check.verified is None and check.gpu_uuid is None


def test_default_queries_read_nvml_and_torch(three_gpus: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The real query path: NVML through CUDA_VISIBLE_DEVICES, torch's device properties."""
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", three_gpus[1])
    seen: list[int] = []

    def props(index: int) -> Any:
        seen.append(index)
        return types.SimpleNamespace(uuid=three_gpus[1][4:])

    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    assert verify_pinning("cuda:0").verified is True
    assert seen == [0]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=three_gpus[0][4:]))
    assert verify_pinning("cuda:0").mismatch


def test_a_mismatched_worker_measures_nothing(tmp_path: Path) -> None:
    tiny_plan(tmp_path / "plan.json", 2)
    bad = PinningCheck(device="cuda:0", verified=False, gpu_uuid=None, nvml_uuid=UUIDS[0], torch_uuid=UUIDS[1],
                       reason="different GPUs")
    lines: list[str] = []
    code = run_shard(tmp_path / "plan.json", 0, 1, tmp_path / "out", pinning=bad, echo=lines.append)
    assert code == EXIT_PINNING_MISMATCH
    assert any("refusing to measure" in line for line in lines)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_every_record_carries_the_pinning_check(tmp_path: Path) -> None:
    tiny_plan(tmp_path / "plan.json", 1)
    good = PinningCheck(device="cpu", verified=True, gpu_uuid=UUIDS[2], reason="same GPU")
    assert run_shard(tmp_path / "plan.json", 0, 1, tmp_path / "out", pinning=good, echo=lambda _: None) == 0
    (rec,) = read_records(shard_results_path(tmp_path / "out", 0, 1))
    assert (rec["pinning_verified"], rec["gpu_uuid"], rec["point_status"]) == (True, UUIDS[2], "ok")


def test_plans_that_lock_clocks_are_refused(tmp_path: Path) -> None:
    """A plain worker measures the card as found: it must not label points with clocks it never set."""
    case = Case.create("tiny-sd", device="simulated", dtype="fp32", height=64, width=64, steps=2, sm_clock_mhz=1410)
    Plan.from_cases([case], runner=FAST_RUNNER, device="simulated").save(tmp_path / "dvfs.json")
    with pytest.raises(SdbenchError, match="set GPU clocks or power limits.*sdbench sweep"):
        run_shard(tmp_path / "dvfs.json", 0, 1, tmp_path / "out", echo=lambda _: None)
    with pytest.raises(SdbenchError, match="sdbench sweep"):
        run_on_gpus(tmp_path / "dvfs.json", "cpu", tmp_path / "out", stream=None)
    assert not (tmp_path / "out").exists()


def test_shard_status_counts_points_from_every_shard_file(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path / "plan.json", 6)
    ids = [p.point_id for p in plan.shard(1, 2)]  # 3 points
    out = tmp_path / "out"
    out.mkdir()
    (out / "results-shard0001-of-0002.jsonl").write_text(
        json.dumps({"point_id": ids[0], "point_status": "ok"}) + "\n"
        + json.dumps({"point_id": ids[1], "point_status": "error"}) + "\n")
    # A point finished by an earlier run with another shard count counts as done too.
    (out / "results-shard0000-of-0001.jsonl").write_text(json.dumps({"point_id": ids[0], "point_status": "ok"}) + "\n")
    st = shard_status(plan, 1, 2, out)
    assert (st.points_total, st.points_done, st.points_failed, st.points_missing) == (3, 1, 1, 1)
    assert st.status == "failed"


# --- the pool, end to end -----------------------------------------------------------------------------------
def _ok_ids(paths: list[Path]) -> list[str]:
    return [r["point_id"] for p in paths for r in read_records(p) if r.get("point_status") == "ok"]


@pytest.mark.slow
def test_a_killed_worker_loses_one_point_and_a_resume_completes_the_study(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path / "plan.json", 4)
    out = tmp_path / "out"
    env, flag = hang_hook_env(tmp_path, "SDBENCH_WORKER_SHARD", "1/2", after=1)
    killed: list[int] = []

    def kill_the_hung_worker(worker: Worker, line: str) -> None:
        if line.startswith("TEST-HOOK: hanging"):
            killed.append(worker.spec.shard)
            worker.proc.send_signal(signal.SIGKILL)

    report = run_on_gpus(tmp_path / "plan.json", "cpu,cpu", out, env={**os.environ, **env}, stream=None,
                         on_line=kill_the_hung_worker)
    assert killed == [1] and flag.exists()
    s0, s1 = report.shards
    # The other worker went on and finished its shard.
    assert (s0.status, s0.points_done, s0.returncode) == ("done", 2, 0)
    # The dead one kept the point it had finished and lost only the one in flight (and those after it).
    assert (s1.status, s1.points_done, s1.points_failed, s1.points_missing) == ("failed", 1, 0, 1)
    assert s1.returncode == -signal.SIGKILL
    assert not report.complete
    merged = read_records(out / "results.jsonl")
    assert len(merged) == 3
    first_of_shard1 = read_records(shard_results_path(out, 1, 2))[0]

    # Resume through the command line: only the lost point is measured.
    cp = subprocess.run([sys.executable, "-m", "sdbench", "workers", "run", str(tmp_path / "plan.json"),
                         "--output-dir", str(out), "--gpus", "cpu,cpu"],
                        capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "[w1:cpu] shard 1/2: 2 point(s), 1 already done" in cp.stdout
    assert "[w0:cpu] shard 0/2: 2 point(s), 2 already done" in cp.stdout
    assert "4/4 point(s) done, complete" in cp.stdout

    shard_paths = sorted(out.glob("results-shard*.jsonl"))
    ok = _ok_ids(shard_paths)
    assert sorted(ok) == sorted(p.point_id for p in plan.points)  # every point once: none lost, none twice
    assert read_records(shard_results_path(out, 1, 2))[0] == first_of_shard1  # the early point was kept as it was
    merged = read_records(out / "results.jsonl")
    assert sorted(r["point_id"] for r in merged) == sorted(p.point_id for p in plan.points)
    for rec in merged:
        assert rec["pinning_verified"] is None and rec["pinning_reason"] == "device cpu: no GPU to pin"
        assert rec["cuda_visible_devices"] == ""  # a CPU stand-in sees no GPU
        assert rec["time_per_image_s_median"] > 0
