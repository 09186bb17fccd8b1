"""The settings table (`sdbench.settings`): one row per option, from which the CLI's flags and the pytest plugin's
options are made, against which RunnerConfig, Case, SweepOptions, plans and SLURM options are checked, and the
one list of suites."""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testsupport import tiny_plan

from sdbench import settings
from sdbench.case import Case
from sdbench.cli import build_parser
from sdbench.errors import ConfigError
from sdbench.runner import RunnerConfig

REPO = Path(__file__).resolve().parents[2]


def _subparser(*path: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _cli_actions(*path: str) -> dict[str, argparse.Action]:
    return {opt: a for a in _subparser(*path)._actions for opt in a.option_strings}


def _plugin_options() -> dict[str, dict[str, Any]]:
    """What the plugin's pytest_addoption registers: option name -> addoption keyword arguments."""
    from sdbench.pytest_plugin import pytest_addoption

    seen: dict[str, dict[str, Any]] = {}

    class Group:
        def addoption(self, *names: str, **kwargs: Any) -> None:
            for name in names:
                seen[name] = kwargs

    class Parser:
        def getgroup(self, *_args: Any) -> Group:
            return Group()

    pytest_addoption(Parser())  # type: ignore[arg-type]
    return seen


# --- the table's shape --------------------------------------------------------------------------------------
def test_every_runner_config_field_is_one_row_with_its_default() -> None:
    rows = {s.name: s for s in settings.in_scope("runner")}
    fields = {f.name for f in dataclasses.fields(RunnerConfig)}
    assert set(rows) == fields
    gpu, cpu = RunnerConfig(), RunnerConfig.for_cpu()
    for name, row in rows.items():
        assert getattr(gpu, name) == row.default, name
        assert getattr(cpu, name) == (row.cpu_default if row.cpu_default is not None else row.default), name
        assert row.check(row.default) == row.default  # every default is allowed by its own check


def test_every_case_field_is_one_row_and_the_defaults_agree() -> None:
    rows = {s.name: s for s in settings.in_scope("case")}
    assert set(rows) == {f.name for f in dataclasses.fields(Case)}
    for f in dataclasses.fields(Case):
        if f.default is not dataclasses.MISSING and f.name not in ("prompt",):
            assert rows[f.name].default == f.default, f.name


def test_plan_keys_are_the_cases_and_runners_fields() -> None:
    from sdbench.distribute import plan

    assert set(plan.CASE_KEYS) == {f.name for f in dataclasses.fields(Case)}
    assert set(plan.RUNNER_KEYS) == {f.name for f in dataclasses.fields(RunnerConfig)}
    assert set(plan.POINT_KEYS) == {f.name for f in dataclasses.fields(plan.PlanPoint)}


def test_every_flag_and_option_belongs_to_one_row() -> None:
    flags = [(s.scope, f) for s in settings.SETTINGS_ROWS for f in s.cli if s.scope not in ("sweep", "slurm")]
    options = [s.pytest for s in settings.SETTINGS_ROWS if s.pytest]
    assert len(options) == len(set(options))
    by_scope: dict[str, list[str]] = {}
    for scope, flag in flags:
        by_scope.setdefault(scope, []).append(flag)
    assert all(len(v) == len(set(v)) for v in by_scope.values()), by_scope


# --- the CLI and the plugin from the same rows -----------------------------------------------------------------
SHARED = [k for k in (*settings.MEASUREMENT_KEYS, *settings.PLAN_AXES, "case.device", "output.results_dir",
                      "output.no_results_dir", "output.export", "output.results", "output.num_images")]


@pytest.mark.parametrize("key", SHARED)
def test_a_cli_flag_and_its_plugin_option_share_help_and_default(key: str) -> None:
    row = settings.get(key)
    plugin = _plugin_options()[str(row.pytest)]
    command = {"runner": ("generate",), "matrix": ("bench",), "case": ("bench",), "output": ("bench",)}[row.scope]
    if key == "output.num_images":
        command = ("generate",)
    action = _cli_actions(*command)[row.cli[0]]
    assert action.help == plugin["help"] == row.help
    assert action.default == plugin.get("default", False) == (row.flag_default if row.kind != "flag" else False)
    if row.scope == "runner" or row.scope == "matrix":
        plan_make = _cli_actions("plan", "make")[row.cli[0]]  # and `sdbench plan make` takes the same flag
        assert plan_make.help == row.help


def test_the_measurement_flags_of_every_measuring_command_are_the_tables() -> None:
    for command in (("generate",), ("quality",), ("sweep",), ("batch",), ("plan", "make")):
        actions = _cli_actions(*command)
        for key in settings.MEASUREMENT_KEYS:
            row = settings.get(key)
            assert actions[row.cli[0]].help == row.help, (command, key)


def test_a_flag_value_is_checked_by_its_row(capsys: pytest.CaptureFixture[str]) -> None:
    from testsupport import invoke

    # Measurement flags when parsed; a case's fields by the Case (the same rows), naming the field either way.
    for flags, words in ((["--max-time", "-1"], "invalid max_time_s: -1.0"), (["--target-ci", "0"], "target_rel_ci"),
                         (["--steps", "1001"], "invalid steps: 1001; allowed: an integer from 1 to 1000"),
                         (["--batch-size", "x"], "invalid batch_size: 'x'")):
        res = invoke(["generate", "--model-variant", "tiny-sd", "--device", "cpu", *flags])
        assert res.code == 2 and words in res.err, res.err


# --- the suites, written once ------------------------------------------------------------------------------------
def test_the_suite_list_is_written_once_and_everything_reads_it() -> None:
    from sdbench import pytest_plugin
    from sdbench.distribute import suite

    names = list(settings.SUITES)
    assert list(suite.SUITES) == names and list(pytest_plugin.SUITE_MARKERS) == names
    assert _cli_actions("bench")["--suite"].choices == names
    assert _cli_actions("generate")["--benchmark-type"].choices == names
    suites_text = "".join(p.read_text() for p in (REPO / "benchmarks").glob("test_*.py"))
    assert all(f"mark.{name}" in suites_text for name in names)  # every suite is a marker of the benchmarks


def test_pytest_ini_markers_match_the_suite_list() -> None:
    ini = configparser.ConfigParser()
    ini.read(REPO / "pytest.ini")
    lines = [ln.strip() for ln in ini["pytest"]["markers"].splitlines() if ln.strip()]
    suites = {name: text.split(" - ", 1)[1] for name, _, text in (ln.partition(": ") for ln in lines)
              if text.startswith("benchmark suite - ")}
    assert suites == dict(settings.SUITES)


def test_copies_kept_for_light_imports_match() -> None:
    from sdbench.cli.commands import generate
    from sdbench.distribute.suite import DEFAULT_SUITE
    from sdbench.studies.dvfs import grid, options, points

    assert generate.DEFAULT_SUITE == DEFAULT_SUITE
    assert settings.get("sweep.order").choice_list() == list(points.ORDERS)
    assert settings.get("sweep.profiling_mode").choice_list() == list(options.PROFILING_MODES)
    assert settings.get("sweep.gpu_type").choice_list() == sorted(grid.GPU_TYPE_PRESETS)


def test_the_table_imports_nothing_heavy() -> None:
    code = ("import sys, sdbench.settings as s; s.get('runner.max_time_s').check(1.0); "
            "print([m for m in ('torch', 'numpy', 'scipy', 'diffusers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


# --- checks -------------------------------------------------------------------------------------------------------
def test_an_unknown_key_names_its_close_match() -> None:
    with pytest.raises(ConfigError, match=r"invalid plan key: 'schedular' \(points\[0\].case; did you mean "
                                          r"'scheduler'\?\)"):
        settings.check_keys("plan key", ["schedular"], ["scheduler", "steps"], where="points[0].case")
    with pytest.raises(ConfigError) as exc:
        settings.check_keys("plan key", ["zzz"], ["scheduler"])
    assert "did you mean" not in str(exc.value)


def test_sweep_options_are_checked_once_when_made() -> None:
    from sdbench.studies.dvfs.options import SweepOptions

    with pytest.raises(ConfigError, match="invalid idle_gap_s: -1"):
        SweepOptions(idle_gap_s=-1)
    with pytest.raises(ConfigError, match="did you mean 'random'"):
        SweepOptions(order="randon")
    with pytest.raises(ConfigError, match="invalid retries"):
        SweepOptions(retries=-1)


def test_a_plan_is_checked_without_any_device(tmp_path: Path) -> None:
    from sdbench.distribute.plan import Plan

    # CPU offload with a CUDA-graph profile on a GPU this machine may not have: refused from the rules alone.
    case = Case.create("tiny-sd", device="cuda:3", profile="max", offload="model")
    with pytest.raises(ConfigError, match="CUDA graphs"):
        Plan.from_cases([case], device="cuda:3").validate()
    # A simulated card's own figures: fp8 needs compute capability 8.9, an A100 has 8.0.
    a100 = Case.create("tiny-sd", device="simulated:a100", dtype="bf16", profile="fp8")
    with pytest.raises(ConfigError, match="fp8"):
        Plan.from_cases([a100], device="simulated:a100").validate()
    # Runner settings over the device's defaults: 10 rounds at least, but the CPU's cap is 5.
    path = tmp_path / "plan.json"
    tiny_plan(path, 1)
    doc = json.loads(path.read_text())
    doc["runner"] = {"min_rounds": 10}
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"invalid min_rounds: 10; allowed: <= max_rounds \(5\)"):
        Plan.load(path)
    doc["device"] = "tpu"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="invalid plan device: 'tpu'"):
        Plan.load(path)


def test_slurm_values_are_checked_by_their_rows() -> None:
    from sdbench.distribute.slurm import check_value

    assert check_value("time", "04:00:00") == "04:00:00"
    with pytest.raises(ConfigError, match="invalid job-name: 'a b'"):
        check_value("job_name", "a b")
