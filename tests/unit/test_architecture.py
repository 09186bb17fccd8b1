"""The architecture contracts in pyproject.toml ([tool.importlinter]) hold: layers point one way, no import
circles at any depth, argparse only in the command layer, pytest only in the plugin, NVML only in gpu/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> Path:
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        pytest.fail("lint-imports is missing: install the test extras (pip install -e '.[test]')")
    return exe


def test_import_linter_contracts_are_kept() -> None:
    run = subprocess.run([str(_lint_imports()), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in run.stdout


def test_a_broken_layer_is_reported(tmp_path: Path) -> None:
    """The contract really checks: a copy of the package where the spec layer imports the CLI breaks it."""
    import shutil

    pkg = tmp_path / "sdbench"
    shutil.copytree(ROOT / "sdbench", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "spec" / "upward.py").write_text("from sdbench.cli import main  # noqa: F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    run = subprocess.run([str(_lint_imports()), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode != 0
    assert "sdbench.spec.upward -> sdbench.cli" in run.stdout
