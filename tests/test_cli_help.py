"""The command layer: every command registered, help without heavy imports, parsers as the domain modules
defined them, and the exit-code table in `sdbench --help`."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testsupport import invoke

from sdbench.cli import build_parser
from sdbench.cli.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]
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


# --- the parsers are the ones the domain modules defined -------------------------------------------------
SAMPLES = ("1", "0", "-1", "2.5", "x", "nan", "0.5", "1e9", "")


def _type_behaviour(kind: Any) -> Any:
    """What an argparse type does with a few inputs: values and error messages (closures compare by behaviour)."""
    if kind is None:
        return None
    out = []
    for text in SAMPLES:
        try:
            out.append(("ok", kind(text)))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            out.append(("error", str(exc)))
    return repr(out)


def _describe(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Any]:
    """Help text and every action's settings, per (sub)parser, recursively."""
    found: dict[str, Any] = {prefix: {"help": parser.format_help(), "actions": [
        (a.option_strings, a.dest, a.default, a.help, a.choices if not isinstance(a.choices, dict) else sorted(a.choices),
         a.nargs, a.required, a.const, a.metavar, _type_behaviour(a.type)) for a in parser._actions]}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(_describe(child, f"{prefix} {name}".strip()))
    return found


def _root() -> tuple[argparse.ArgumentParser, Any]:
    from sdbench.cli.args import Parser

    root = Parser(prog="sdbench")
    return root, root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)


# (command, the domain module whose build_parser defined it until the command layer took it over)
OLD_PARSERS = [("compare", "sdbench.output.compare"), ("quality", "sdbench.studies.quality"), ("plan", "sdbench.distribute.plan"),
               ("workers", "sdbench.distribute.workers"), ("batch", "sdbench.studies.batching"), ("sweep", "sdbench.studies.dvfs"),
               ("report", "sdbench.output.report"), ("slurm", "sdbench.distribute.slurm")]


@pytest.mark.parametrize(("command", "module_name"), OLD_PARSERS, ids=[c for c, _ in OLD_PARSERS])
def test_command_parser_matches_the_domain_modules_old_parser(command: str, module_name: str) -> None:
    module = importlib.import_module(module_name)
    if not hasattr(module, "build_parser"):
        pytest.skip(f"{module_name}.build_parser is gone: the command layer is the only definition")
    old_root, old_sub = _root()
    module.build_parser(old_sub)
    new_root, new_sub = _root()
    importlib.import_module(f"sdbench.cli.commands.{command}").register(new_sub)
    old = _describe(old_sub.choices[command], command)
    new = _describe(new_sub.choices[command], command)
    assert new.keys() == old.keys()
    for path in old:
        assert new[path]["help"] == old[path]["help"], path
        assert new[path]["actions"] == old[path]["actions"], path
    assert new_sub._choices_actions[0].help == next(a.help for a in old_sub._choices_actions if a.dest == command)


def test_help_constants_copied_from_heavy_modules_still_match() -> None:
    from sdbench import case
    from sdbench.cli import args
    from sdbench.cli.commands import batch as batch_command
    from sdbench.cli.commands import sweep as sweep_command
    from sdbench.studies import batching
    from sdbench.studies import dvfs as sweep

    assert args.ATTENTION_BACKENDS == case.ATTENTION_BACKENDS and args.OFFLOAD_MODES == case.OFFLOAD_MODES
    assert batch_command.CPU_DEFAULT_LIMIT == batching.CPU_DEFAULT_LIMIT and batch_command.MAX_BATCH == case.MAX_BATCH
    assert sweep_command.ORDERS == sweep.ORDERS and sweep_command.PROFILING_MODES == sweep.PROFILING_MODES
    assert sweep_command.GPU_TYPES == tuple(sorted(sweep.GPU_TYPE_PRESETS))
    assert sweep_command.CLOCK_SPEC_HELP == sweep.CLOCK_SPEC_HELP
    assert sweep_command.POWER_SPEC_HELP == sweep.POWER_SPEC_HELP


def test_old_private_helper_names_still_work() -> None:
    """sweep, batching, quality and report import these from sdbench.cli."""
    from sdbench import cli
    from sdbench.cli import args

    assert cli._float is args.number and cli._positive_int is args.positive_int and cli._int is args.integer
    assert cli._int_at_least is args.int_at_least and cli._case_kwargs is args.case_kwargs
    assert cli._default_model is args.default_model and cli._runner_config is args.runner_config
    assert cli._progress_printer is args.progress_printer and cli.add_case_arguments is args.add_case_arguments
