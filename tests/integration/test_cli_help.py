"""The command layer: every command registered, help without heavy imports, the help texts copied from heavy
modules still matching them, and the exit-code table in `sdbench --help`."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

from testsupport import invoke

from sdbench.cli import build_parser
from sdbench.cli.commands import COMMANDS

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "scipy", "matplotlib", "numpy")
EXPECTED_COMMANDS = {"generate", "models", "schedulers", "bench", "compare", "quality", "plan", "workers", "batch",
                     "sweep", "report", "slurm"}

# Runs in a fresh interpreter: `--help` of the root, of every command and of every action, through main(),
# then reports which heavy libraries got imported.
HELP_SCRIPT = f"HEAVY = {HEAVY!r}\n" + """
import contextlib, io, json, sys
from sdbench.cli import build_parser, main

def paths(parser, prefix=()):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from paths(child, (*prefix, name))

helps = {}
for path in [(), *paths(build_parser())]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*path, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, (path, exc.code)
    helps[" ".join(path)] = out.getvalue()
print(json.dumps({"helps": helps, "loaded": [m for m in HEAVY if m in sys.modules]}))
"""


def test_help_of_every_command_imports_no_heavy_library() -> None:
    proc = subprocess.run([sys.executable, "-c", HELP_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["loaded"] == []
    helps = report["helps"]
    assert EXPECTED_COMMANDS <= set(helps)
    assert {"plan make", "plan run", "plan merge", "workers run", "workers shard", "workers verify",
            "slurm render", "slurm submit", "slurm status", "slurm collect"} <= set(helps)
    for path, text in helps.items():
        assert text.startswith("usage: sdbench"), path
    assert "--model-variant" in helps["generate"] and "--benchmark-type" in helps["generate"]


def test_every_command_is_registered_none_skipped() -> None:
    assert set(COMMANDS) == EXPECTED_COMMANDS
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(COMMANDS)
    for name in COMMANDS:
        module = importlib.import_module(f"sdbench.cli.commands.{name}")
        assert callable(module.register) and callable(module.run)


def test_help_lists_the_exit_codes_of_each_error_class() -> None:
    from sdbench.errors import ConfigError, DeviceUnavailableError, OutOfMemory, WeightsNotFoundError

    res = invoke(["--help"])
    assert res.code == 0
    table = res.out[res.out.index("exit codes:"):]
    codes = {int(line.split()[0]) for line in table.splitlines()[1:] if line.strip()[:1].isdigit()}
    assert codes == {0, 1, 2, 3, 4, 130, 141}
    assert ConfigError("x", 1).exit_code == 2
    assert DeviceUnavailableError("no NVML").exit_code == WeightsNotFoundError("none").exit_code == 3
    assert OutOfMemory("full").exit_code == 4
    assert "sd-v1.4" in res.out and "dpm++" in res.out  # the default run, said in the help


def test_help_constants_copied_from_heavy_modules_still_match() -> None:
    from sdbench import case
    from sdbench.cli import args
    from sdbench.cli.commands import batch as batch_command
    from sdbench.cli.commands import sweep as sweep_command
    from sdbench.studies.batching import max_batch
    from sdbench.studies.dvfs import grid, options, points

    assert args.ATTENTION_BACKENDS == case.ATTENTION_BACKENDS and args.OFFLOAD_MODES == case.OFFLOAD_MODES
    assert batch_command.CPU_DEFAULT_LIMIT == max_batch.CPU_DEFAULT_LIMIT and batch_command.MAX_BATCH == case.MAX_BATCH
    assert sweep_command.ORDERS == points.ORDERS and sweep_command.PROFILING_MODES == options.PROFILING_MODES
    assert sweep_command.GPU_TYPES == tuple(sorted(grid.GPU_TYPE_PRESETS))
    assert sweep_command.CLOCK_SPEC_HELP == grid.CLOCK_SPEC_HELP
    assert sweep_command.POWER_SPEC_HELP == grid.POWER_SPEC_HELP


def test_shared_helpers_are_public_names_of_cli_args() -> None:
    """The commands share these through sdbench.cli.args; the old private aliases in sdbench.cli are gone."""
    from sdbench import cli
    from sdbench.cli import args

    for name in ("number", "integer", "positive_int", "int_at_least", "case_kwargs", "default_model",
                 "runner_config", "progress_printer", "knobs", "add_case_arguments"):
        assert callable(getattr(args, name)) and name in args.__all__, name
    assert cli.add_case_arguments is args.add_case_arguments
    for old in ("_float", "_int", "_positive_int", "_int_at_least", "_case_kwargs", "_default_model", "_runner_config",
                "_progress_printer", "_knobs", "_Parser"):
        assert not hasattr(cli, old), old
