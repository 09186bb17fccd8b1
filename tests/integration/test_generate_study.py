"""`sdbench generate` studies as a user meets them: schedulers that cannot run here, an output path that
cannot be written, and a study stopped half-way (what was measured is kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testsupport import invoke

from sdbench.errors import SdbenchError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--model-variant", "tiny-sd", "--steps", "2", "--max-rounds", "1", "--min-rounds", "1",
        "--idle-seconds", "0", "--no-save-images", "--quiet"]


def _lacks_torchsde(monkeypatch: pytest.MonkeyPatch) -> None:
    import sdbench.spec.schedulers as schedulers

    original = schedulers.check_available

    def check(spec: object) -> None:
        if "torchsde" in getattr(spec, "requires", ()):
            raise SdbenchError(f"scheduler {spec.key!r} needs the Python package 'torchsde', which is not installed")
        original(spec)

    monkeypatch.setattr(schedulers, "check_available", check)


def test_the_comparison_leaves_out_schedulers_this_machine_cannot_run(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    _lacks_torchsde(monkeypatch)
    seen: list[str] = []
    import sdbench.session

    def fake_measure(self: object, case: object, progress: object = None) -> dict:
        seen.append(case.scheduler)  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # stop after the first case: only the case list matters here

    monkeypatch.setattr(sdbench.session.Bench, "measure", fake_measure)
    result = invoke(["generate", *FAST, "--scheduler-comparison"])
    assert result.code == 130
    assert "needs the Python package 'torchsde'" in result.err and "left out of the comparison" in result.err
    assert seen and "dpm-sde" not in seen


def test_a_named_scheduler_that_cannot_run_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    _lacks_torchsde(monkeypatch)
    import sdbench.session

    def never(*_a: object, **_k: object) -> dict:
        raise AssertionError("nothing may be measured")

    monkeypatch.setattr(sdbench.session.Bench, "measure", never)
    result = invoke(["generate", *FAST, "--scheduler-comparison", "--schedulers", "euler,dpm-sde"])
    assert result.code == 2 and "torchsde" in result.err and "Traceback" not in result.err


def test_an_export_path_that_cannot_be_written_is_refused_before_measuring(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("a file, not a folder")  # even root cannot write beneath it
    import sdbench.session

    monkeypatch.setattr(sdbench.session.Bench, "measure", lambda *a, **k: pytest.fail("measured before the check"))
    result = invoke(["generate", *FAST, "--export-metrics", str(not_a_folder / "m.json")])
    assert result.code == 2 and "--export-metrics" in result.err and "cannot be written" in result.err


def test_an_export_path_that_is_a_folder_is_refused_before_measuring(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import sdbench.session

    monkeypatch.setattr(sdbench.session.Bench, "measure", lambda *a, **k: pytest.fail("measured before the check"))
    result = invoke(["generate", *FAST, "--export-metrics", str(tmp_path)])
    assert result.code == 2 and "is a folder" in result.err


def test_a_study_stopped_half_way_keeps_what_it_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sdbench.session

    original = sdbench.session.Bench.measure
    calls = {"n": 0}

    def measure_then_stop(self: object, case: object, progress: object = None) -> dict:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, case, progress=progress)  # type: ignore[arg-type]

    monkeypatch.setattr(sdbench.session.Bench, "measure", measure_then_stop)
    out = tmp_path / "study.json"
    result = invoke(["generate", *FAST, "--scheduler-comparison", "--schedulers", "euler,ddim,unipc",
                     "--export-metrics", str(out)])
    assert result.code == 130
    doc = json.loads(out.read_text())
    assert [r["scheduler"] for r in doc["records"]] == ["euler"]
    assert doc["status"].startswith("incomplete: 1 of 3 cases")
    assert "kept in" in result.err
