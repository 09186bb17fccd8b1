"""`--gpus` on `sdbench sweep` and `sdbench bench`: one pinned process per GPU (CPU/simulated stand-ins here)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from sdbench.cli import main
from sdbench.distribute.workers import run_command_per_gpu, strip_options


def test_strip_options_drops_both_spellings() -> None:
    argv = ["sweep", "--gpus", "0,1", "--output-dir=out", "--device", "cuda", "--model-variant", "sdxl"]
    assert strip_options(argv, ["--gpus", "--output-dir", "--device"]) == ["sweep", "--model-variant", "sdxl"]


def test_one_pinned_process_per_gpu_and_the_worst_exit_code() -> None:
    code = "import os, sys; print('pin=' + repr(os.environ['CUDA_VISIBLE_DEVICES'])); sys.exit(int(sys.argv[1]))"
    out = io.StringIO()
    rc = run_command_per_gpu("cpu,cpu", lambda spec: [sys.executable, "-c", code, str(3 * spec.slot)], stream=out)
    text = out.getvalue()
    assert rc == 3
    assert "[w0:cpu] pin=''" in text and "[w1:cpu] pin=''" in text  # a CPU worker sees no GPU
    assert "[w1:cpu] exit 3" in text


def test_sweep_on_two_simulated_gpus_writes_one_sweep_each(tmp_path: Path) -> None:
    rc = main(["sweep", "--gpus", "simulated,simulated", "--device", "simulated", "--model-variant", "tiny-sd",
               "--clocks", "list:1980,1200", "--repeats", "1", "--default-every", "10", "--idle-gap-s", "0",
               "--max-rounds", "1", "--min-rounds", "1", "--output-dir", str(tmp_path), "--quiet"])
    assert rc == 0
    for slot in (0, 1):
        folder = tmp_path / f"gpu{slot}-simulated"
        meta = json.loads((folder / "sweep.json").read_text())
        assert meta["status"] == "complete" and meta["settings_restored"] is True
        settings = {json.loads(line)["sm_clock_mhz_setting"] for line in (folder / "results.jsonl").read_text().splitlines()}
        assert {1980, 1200} <= settings  # each GPU swept the whole grid


@pytest.mark.slow
def test_bench_deals_cases_to_workers_and_merges_their_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the run's results folder goes under the cwd
    results = tmp_path / "res.jsonl"
    rc = main(["bench", "--suite", "speed", "--gpus", "cpu,cpu", "--models", "tiny-sd", "--batch-sizes", "1,2",
               "--results", str(results), "--", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
               "--sd-max-rounds", "1", "--sd-min-rounds", "1", "--sd-idle-seconds", "0"])
    assert rc == 0
    shards = [json.loads(line) for i in (0, 1)
              for line in (tmp_path / f"res-shard{i}-of-2.jsonl").read_text().splitlines()]
    assert len(shards) == 2 and {r["batch_size"] for r in shards} == {1, 2}  # one case each, none twice
    assert len(results.read_text().splitlines()) == 2
