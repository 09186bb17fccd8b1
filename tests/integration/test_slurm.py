"""SLURM job arrays (`sdbench.distribute.slurm`): rendering, quoting and injection, status logic, and a real cluster.

The first half needs no cluster: rendered scripts are checked line by line and executed with bash
(a stub interpreter records the argv it receives), and status/collect run against canned
`scontrol` answers. The second half (marker `slurm`) submits tiny-model arrays to the real
single-node cluster that `scripts/slurm-test-cluster.sh` starts (`scripts/test.sh` does that), waits
by polling squeue, and checks every point's record, never the job state alone. It is skipped, with
the reason, when that cluster is not up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from testsupport import tiny_plan

from sdbench.case import Case
from sdbench.cli import main
from sdbench.distribute.plan import Plan, shard_results_path
from sdbench.distribute.slurm import (
    PRESETS,
    SlurmOptions,
    collect,
    compress_array,
    expand_array,
    load_state,
    parse_scontrol_jobs,
    read_script_info,
    render_script,
    study_status,
    submit,
    write_script,
)
from sdbench.errors import ConfigError, SdbenchError
from sdbench.record.io import read_records


def sbatch_lines(script: str) -> list[str]:
    return [line[len("#SBATCH "):] for line in script.splitlines() if line.startswith("#SBATCH ")]


# --- rendering ----------------------------------------------------------------------------------------
def test_render_writes_the_checked_options_and_one_shard_per_task(tmp_path: Path) -> None:
    tiny_plan(tmp_path / "plan.json", 6)
    opts = SlurmOptions(partition="gpu-long", account="proj_42", qos="normal",
                        modules=("cuda/12.4", "python/3.11"), venv="/opt/venvs/sd", time="1-02:00:00", gres="gpu:1",
                        cpus_per_task=4, mem="32G", array_size=3, max_parallel=2, results_dir=str(tmp_path / "res"))
    script = render_script(tmp_path / "plan.json", opts)
    assert script.startswith("#!/bin/bash -l\n")  # a login shell, so that `module` exists
    assert sbatch_lines(script) == [
        f"--job-name=sdbench-{Plan.load(tmp_path / 'plan.json').plan_hash}", "--array=0-2%2",
        f"--output={tmp_path}/res/slurm-logs/%A_%a.out", f"--error={tmp_path}/res/slurm-logs/%A_%a.err",
        "--nodes=1", "--ntasks=1", "--partition=gpu-long", "--account=proj_42", "--qos=normal",
        "--time=1-02:00:00", "--gres=gpu:1", "--cpus-per-task=4", "--mem=32G"]
    body = script.splitlines()
    assert "module load cuda/12.4" in body and "module load python/3.11" in body
    assert body[-1] == (f'exec /opt/venvs/sd/bin/python -m sdbench workers shard {tmp_path}/plan.json '
                        f'--shard "${{SLURM_ARRAY_TASK_ID}}/3" --output-dir {tmp_path}/res')
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid shell


def test_presets_set_resources_never_the_partition(tmp_path: Path) -> None:
    tiny_plan(tmp_path / "plan.json", 2)
    for name, values in PRESETS.items():
        lines = sbatch_lines(render_script(tmp_path / "plan.json", SlurmOptions(preset=name)))
        assert f"--gres={values['gres']}" in lines and f"--cpus-per-task={values['cpus_per_task']}" in lines
        assert f"--mem={values['mem']}" in lines and f"--time={values['time']}" in lines
        assert not any(line.startswith(("--partition", "--account")) for line in lines)
    # Explicit values win over the preset; a --gpus-per-node request replaces its gres.
    lines = sbatch_lines(render_script(tmp_path / "plan.json", SlurmOptions(preset="h100", cpus_per_task=2,
                                                                            gpus_per_node="1")))
    assert "--cpus-per-task=2" in lines and "--gpus-per-node=1" in lines
    assert not any(line.startswith("--gres") for line in lines)
    with pytest.raises(ConfigError, match="preset"):
        render_script(tmp_path / "plan.json", SlurmOptions(preset="k80"))


@pytest.mark.parametrize(("field", "value"), [
    ("partition", "gpu; rm -rf ~"),
    ("partition", "gpu\n#SBATCH --uid=0"),
    ("partition", "$(reboot)"),
    ("account", "proj --wrap=id"),
    ("account", "a`id`"),
    ("qos", "high|id"),
    ("job_name", "x\ny"),
    ("time", "01:00:00 --x"),
    ("time", "1h"),
    ("gres", "gpu:1 --wrap=id"),
    ("gres", "gpu:0"),
    ("gpus_per_node", "4;id"),
    ("mem", "4G;id"),
    ("conda", "env; id"),
    ("results_dir", "/tmp/has space"),
    ("results_dir", "/tmp/job-%j"),
])
def test_injection_attempts_are_refused(tmp_path: Path, field: str, value: str) -> None:
    tiny_plan(tmp_path / "plan.json", 2)
    with pytest.raises(ConfigError) as info:
        render_script(tmp_path / "plan.json", SlurmOptions(**{field: value}))
    assert repr(value) in str(info.value) or repr(str(Path(value).absolute())) in str(info.value)


@pytest.mark.parametrize("module", ["cuda/12.4; id", "$(id)", "cuda 12", "-r", "../x`y`"])
def test_module_names_are_checked(tmp_path: Path, module: str) -> None:
    tiny_plan(tmp_path / "plan.json", 2)
    with pytest.raises(ConfigError, match="invalid module"):
        render_script(tmp_path / "plan.json", SlurmOptions(modules=(module,)))


def test_plans_that_lock_clocks_are_refused_at_render_time(tmp_path: Path) -> None:
    case = Case.create("tiny-sd", device="simulated", dtype="fp32", height=64, width=64, steps=2, power_limit_w=300)
    Plan.from_cases([case], device="simulated").save(tmp_path / "dvfs.json")
    with pytest.raises(SdbenchError, match="sdbench sweep"):
        render_script(tmp_path / "dvfs.json")


def test_the_command_line_refuses_a_bad_partition_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_plan(tmp_path / "plan.json", 2)
    code = main(["slurm", "render", str(tmp_path / "plan.json"), "-o", str(tmp_path / "s.sbatch"),
                 "--partition", "gpu;id"])
    err = capsys.readouterr().err
    assert code == 2 and "invalid partition: 'gpu;id'" in err
    assert not (tmp_path / "s.sbatch").exists()


def _stub_python(where: Path) -> Path:
    """An 'interpreter' that records its argv, one argument per line, in $ARGV_OUT."""
    stub = where / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/bash\nprintf \'%s\\n\' "$@" > "$ARGV_OUT"\n')
    stub.chmod(0o755)
    return stub


def _run_script(script: Path, tmp_path: Path, task: str | None) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "argv.txt"
    out.unlink(missing_ok=True)
    env = {"PATH": os.environ["PATH"], "ARGV_OUT": str(out), "SLURM_CPUS_PER_TASK": "2"}
    if task is not None:
        env["SLURM_ARRAY_TASK_ID"] = task
    cp = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    return cp, out.read_text().splitlines() if out.exists() else []


def test_paths_reach_python_verbatim_and_are_never_run_as_shell(tmp_path: Path) -> None:
    weird = tmp_path / "we ird $(touch PWNED) 'q' `touch PWNED2`; rm -rf x"
    weird.mkdir()
    tiny_plan(weird / "plan.json", 8)
    _stub_python(weird / "venv")
    script = write_script(weird / "plan.json", tmp_path / "study.sbatch",
                          SlurmOptions(venv=str(weird / "venv"), array_size=4, results_dir=str(tmp_path / "res")))
    cp, argv = _run_script(script, tmp_path, task="1")
    assert cp.returncode == 0, cp.stderr
    assert argv == ["-m", "sdbench", "workers", "shard", str(weird / "plan.json"), "--shard", "1/4",
                    "--output-dir", str(tmp_path / "res")]
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    # Outside an array task the script refuses instead of measuring shard "/4".
    cp, argv = _run_script(script, tmp_path, task=None)
    assert cp.returncode != 0 and argv == []
    assert "submit this script with sbatch" in cp.stderr


def test_a_task_with_several_gpus_runs_one_worker_per_gpu(tmp_path: Path) -> None:
    tiny_plan(tmp_path / "plan.json", 16)
    stub = _stub_python(tmp_path / "py")
    script = write_script(tmp_path / "plan.json", tmp_path / "study.sbatch",
                          SlurmOptions(python=str(stub), gres="gpu:h100:2", array_size=4, results_dir=str(tmp_path / "res")))
    info = read_script_info(script)
    assert (info["array_size"], info["gpus_per_task"], info["shards"]) == (4, 2, 8)
    cp, argv = _run_script(script, tmp_path, task="3")
    assert cp.returncode == 0, cp.stderr
    assert argv == ["-m", "sdbench", "workers", "run", str(tmp_path / "plan.json"), "--output-dir", str(tmp_path / "res"),
                    "--gpus", "all", "--shard-base", "6", "--shard-count", "8", "--no-merge"]


def test_array_specs_round_trip() -> None:
    assert expand_array("0-3,7%2") == [0, 1, 2, 3, 7]
    assert compress_array([5, 0, 1, 2, 9, 10]) == "0-2,5,9-10"
    assert expand_array(compress_array([3])) == [3]


# --- status and collect against canned scontrol answers ---------------------------------------------------
SCONTROL = """\
JobId=78 ArrayJobId=77 ArrayTaskId=0 ArrayTaskThrottle=0 JobName=sdbench UserId=root(0) JobState=COMPLETED Reason=None Dependency=(null) ExitCode=0:0
JobId=79 ArrayJobId=77 ArrayTaskId=1 JobName=sdbench JobState=CANCELLED Reason=None ExitCode=0:15
JobId=80 ArrayJobId=77 ArrayTaskId=2 JobName=sdbench JobState=COMPLETED Reason=None ExitCode=0:0
JobId=81 ArrayJobId=77 ArrayTaskId=3 JobName=sdbench JobState=RUNNING Reason=None ExitCode=0:0
JobId=77 ArrayJobId=77 ArrayTaskId=4-5%6 JobName=sdbench JobState=PENDING Reason=Resources ExitCode=0:0
"""


class FakeSlurm:
    """Answers sbatch and scontrol like a cluster would; records every command."""

    def __init__(self, scontrol: dict[str, str]) -> None:
        self.scontrol = scontrol
        self.calls: list[list[str]] = []
        self.next_job = 77

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "sbatch":
            job, self.next_job = self.next_job, self.next_job + 100
            return subprocess.CompletedProcess(argv, 0, f"{job};cluster\n", "")
        if argv[:4] == ["scontrol", "-o", "show", "job"]:
            if argv[4] in self.scontrol:
                return subprocess.CompletedProcess(argv, 0, self.scontrol[argv[4]], "")
            return subprocess.CompletedProcess(argv, 1, "", "slurm_load_jobs error: Invalid job id specified\n")
        raise AssertionError(f"unexpected command {argv}")


def test_scontrol_lines_give_every_tasks_state() -> None:
    tasks = parse_scontrol_jobs(SCONTROL)
    assert [(t.task, t.state, t.exit_code) for t in tasks] == [
        (0, "COMPLETED", "0:0"), (1, "CANCELLED", "0:15"), (2, "COMPLETED", "0:0"), (3, "RUNNING", "0:0"),
        (4, "PENDING", "0:0"), (5, "PENDING", "0:0")]
    assert {t.job_id for t in tasks} == {"77"}


def _write_records(out: Path, index: int, count: int, ids: list[str], status: str = "ok") -> None:
    path = shard_results_path(out, index, count)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for pid in ids:
            fh.write(json.dumps({"point_id": pid, "point_status": status}) + "\n")


def test_status_reads_points_not_job_states_and_collect_resubmits_only_what_failed(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path / "plan.json", 12)
    res = tmp_path / "res"
    script = write_script(tmp_path / "plan.json", tmp_path / "s.sbatch", SlurmOptions(array_size=6, results_dir=str(res)))
    slurm = FakeSlurm({"77": SCONTROL})
    sub = submit(script, run=slurm)
    assert (sub.job_id, sub.array) == ("77", "0-5")
    assert slurm.calls[0] == ["sbatch", "--parsable", str(script.absolute())]
    assert (res / "slurm-logs").is_dir()  # sbatch would not create it, and the tasks' logs would vanish
    ids = [[p.point_id for p in plan.shard(i, 6)] for i in range(6)]
    _write_records(res, 0, 6, ids[0])
    _write_records(res, 1, 6, ids[1][:1])  # cancelled after its first point
    _write_records(res, 3, 6, ids[3][:1])  # running
    # shard 2: COMPLETED and nothing written (what proctrack/cgroup without a freezer does)

    status = study_status(res, run=slurm)
    got = [(s.shard, s.status, s.points_done, s.points_missing, s.slurm_state) for s in status.shards]
    assert got == [(0, "done", 2, 0, "COMPLETED"), (1, "failed", 1, 1, "CANCELLED"), (2, "failed", 0, 2, "COMPLETED"),
                   (3, "running", 1, 1, "RUNNING"), (4, "pending", 0, 2, "PENDING"), (5, "pending", 0, 2, "PENDING")]
    assert "no finished record" in status.shards[2].detail
    assert not status.complete and status.points_done == 4

    report = collect(res, resubmit=True, run=slurm)
    assert report.points_merged == 4 and len(read_records(res / "results.jsonl")) == 4
    assert report.resubmitted is not None and report.resubmitted.array == "1-2"
    assert slurm.calls[-1] == ["sbatch", "--parsable", "--array=1-2", str(script.absolute())]
    assert [s["array"] for s in load_state(res)["submissions"]] == ["0-5", "1-2"]

    # The resubmission finishes; the first job has aged out of slurmctld. The newest submission decides.
    slurm.scontrol = {"177": "JobId=190 ArrayJobId=177 ArrayTaskId=1 JobState=COMPLETED ExitCode=0:0\n"
                             "JobId=191 ArrayJobId=177 ArrayTaskId=2 JobState=FAILED ExitCode=1:0\n"}
    _write_records(res, 1, 6, ids[1][1:])
    _write_records(res, 2, 6, ids[2][:1], status="error")
    status = study_status(res, run=slurm)
    got = [(s.shard, s.status, s.points_failed, s.slurm_state) for s in status.shards]
    assert got == [(0, "done", 0, None), (1, "done", 0, "COMPLETED"), (2, "failed", 1, "FAILED"),
                   (3, "missing", 0, None), (4, "missing", 0, None), (5, "missing", 0, None)]
    assert "no longer knows" in status.shards[3].detail


def test_submit_refuses_a_plan_changed_since_rendering(tmp_path: Path) -> None:
    tiny_plan(tmp_path / "plan.json", 4)
    script = write_script(tmp_path / "plan.json", tmp_path / "s.sbatch", SlurmOptions(results_dir=str(tmp_path / "res")))
    tiny_plan(tmp_path / "plan.json", 5)
    slurm = FakeSlurm({})
    with pytest.raises(SdbenchError, match="changed since"):
        submit(script, run=slurm)
    assert slurm.calls == []


def test_status_without_a_submission_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slurm", "status", str(tmp_path)]) == 2
    assert "sdbench slurm submit SCRIPT" in capsys.readouterr().err


# --- a real SLURM cluster -------------------------------------------------------------------------------------
def _cluster_down_reason() -> str | None:
    start = "start it with `bash scripts/slurm-test-cluster.sh start` and `source <(bash scripts/slurm-test-cluster.sh env)`"
    if not os.environ.get("SLURM_CONF"):
        return f"SLURM_CONF is not set: no test SLURM cluster ({start}; scripts/test.sh does both)"
    missing = [exe for exe in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(exe) is None]
    if missing:
        return f"SLURM client commands not found: {', '.join(missing)} (bash scripts/slurm-test-cluster.sh install)"
    try:
        cp = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out (munged down?)"
    if cp.returncode != 0 or "UP" not in cp.stdout:
        return f"the test SLURM cluster does not answer (scontrol ping: {(cp.stdout + cp.stderr).strip()}); {start}"
    return None


@pytest.fixture(scope="module")
def cluster() -> dict[str, int]:
    reason = _cluster_down_reason()
    if reason is not None:
        pytest.skip(reason)
    return {"fake_gpus": int(os.environ.get("SDBENCH_SLURM_FAKE_GPUS", "0"))}


def wait_for(what: str, done: object, timeout_s: float = 150.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            squeue = subprocess.run(["squeue", "-a"], capture_output=True, text=True, timeout=20).stdout
            pytest.fail(f"timed out waiting for {what}\n{squeue}")
        time.sleep(0.3)


def job_gone(job_id: str) -> bool:
    """The job left the queue (squeue lists pending, running and completing jobs only)."""
    cp = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, timeout=20)
    return (cp.returncode == 0 and not cp.stdout.strip()) or "Invalid job id" in cp.stderr


def render_for_cluster(tmp_path: Path, n_points: int, cluster: dict[str, int]) -> tuple[Plan, Path, Path]:
    plan = tiny_plan(tmp_path / "plan.json", n_points)
    res = tmp_path / "results"
    opts = SlurmOptions(array_size=4, cpus_per_task=1, time="00:10:00", python=sys.executable, results_dir=str(res),
                        gres="gpu:1" if cluster["fake_gpus"] >= 1 else None)
    return plan, write_script(tmp_path / "plan.json", tmp_path / "study.sbatch", opts), res


def ok_ids(res: Path) -> list[str]:
    return [r["point_id"] for p in sorted(res.glob("results-shard*.jsonl")) for r in read_records(p)
            if r.get("point_status") == "ok"]


@pytest.mark.slurm
def test_a_four_task_array_measures_every_point_once(tmp_path: Path, cluster: dict[str, int]) -> None:
    plan, script, res = render_for_cluster(tmp_path, 8, cluster)
    sub = submit(script)
    wait_for(f"job {sub.job_id}", lambda: job_gone(sub.job_id))

    status = study_status(res)
    assert [(s.status, s.slurm_state, s.exit_code) for s in status.shards] == [("done", "COMPLETED", "0:0")] * 4
    report = collect(res)
    merged = read_records(res / "results.jsonl")
    assert report.points_merged == 8 and report.duplicates_dropped == 0
    # Outputs, not job states: every point once, measured, by the task that owns its shard.
    assert sorted(ok_ids(res)) == sorted(p.point_id for p in plan.points)
    by_id = {r["point_id"]: r for r in merged}
    for shard in range(4):
        for point in plan.shard(shard, 4):
            rec = by_id[point.point_id]
            assert rec["slurm_job_id"] and rec["slurm_array_task_id"] == str(shard)
            assert rec["time_per_image_s_median"] > 0 and rec["pinning_reason"] == "device cpu: no GPU to pin"
            if cluster["fake_gpus"]:
                assert rec["cuda_visible_devices"] in {str(i) for i in range(cluster["fake_gpus"])}
    logs = sorted(p.name for p in (res / "slurm-logs").glob("*.out"))
    assert logs == [f"{sub.job_id}_{i}.out" for i in range(4)]
    assert "pinning: device cpu" in (res / "slurm-logs" / f"{sub.job_id}_0.out").read_text()


HANG_HOOK = '''
import os
_task = os.environ.get("SLURM_ARRAY_TASK_ID")
if _task is not None and _task == os.environ.get("SDBENCH_TEST_HANG_TASK") \\
        and not os.path.exists(os.environ["SDBENCH_TEST_HANG_FLAG"]):
    import time
    import sdbench.session

    _measure, _calls = sdbench.session.Bench.measure, []

    def _hanging_measure(self, case, *args, **kwargs):
        _calls.append(1)
        if len(_calls) > 1:  # the second point: the first one's record is already on disk
            with open(os.environ["SDBENCH_TEST_HANG_FLAG"], "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(3600)
        return _measure(self, case, *args, **kwargs)

    sdbench.session.Bench.measure = _hanging_measure
'''


@pytest.mark.slurm
def test_a_cancelled_task_is_found_and_a_resubmission_completes_the_study(
        tmp_path: Path, cluster: dict[str, int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    plan, script, res = render_for_cluster(tmp_path, 8, cluster)
    # Task 2 blocks on its second point the first time it runs (a sitecustomize on the job's
    # PYTHONPATH; sbatch hands the submitter's environment to the tasks).
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HANG_HOOK)
    flag = tmp_path / "task2-hung"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("SDBENCH_TEST_HANG_TASK", "2")
    monkeypatch.setenv("SDBENCH_TEST_HANG_FLAG", str(flag))

    sub = submit(script)
    wait_for("task 2 to reach its second point", flag.exists)
    subprocess.run(["scancel", f"{sub.job_id}_2"], check=True, timeout=20)
    wait_for(f"job {sub.job_id}", lambda: job_gone(sub.job_id))
    first_of_shard2 = read_records(shard_results_path(res, 2, 4))[0]

    status = study_status(res)
    got = [(s.shard, s.status, s.points_done, s.points_missing) for s in status.shards]
    assert got == [(0, "done", 2, 0), (1, "done", 2, 0), (2, "failed", 1, 1), (3, "done", 2, 0)]
    assert status.shards[2].slurm_state == "CANCELLED"
    assert main(["slurm", "status", str(res)]) == 0
    out = capsys.readouterr().out
    assert "7/8 point(s) done; shards: 3 done, 1 failed" in out

    assert main(["slurm", "collect", str(res), "--resubmit"]) == 1  # incomplete, so not 0
    out = capsys.readouterr().out
    assert "merged 7 point(s)" in out and "resubmitted array task(s) 2 as job" in out
    second = load_state(res)["submissions"][-1]
    assert second["array"] == "2"
    wait_for(f"job {second['job_id']}", lambda: job_gone(second["job_id"]))

    assert main(["slurm", "collect", str(res)]) == 0
    assert "merged 8 point(s) (0 duplicate(s) dropped)" in capsys.readouterr().out
    # No point lost, none measured twice; the point finished before the kill was kept, not redone.
    assert sorted(ok_ids(res)) == sorted(p.point_id for p in plan.points)
    shard2 = read_records(shard_results_path(res, 2, 4))
    assert shard2[0] == first_of_shard2 and len(shard2) == 2
    assert shard2[1]["slurm_job_id"] != first_of_shard2["slurm_job_id"]
    assert sorted(r["point_id"] for r in read_records(res / "results.jsonl")) == sorted(p.point_id for p in plan.points)
