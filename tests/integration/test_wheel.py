"""A wheel that works (issue 13): the built wheel carries the CLI, the plugin and the suites, and runs
from a fresh venv outside the checkout, with the real CLIP tokenizer and the CPU torch only.

The slow test builds the wheel from a copy of the source tree (building in the shared checkout would
leave build/ and *.egg-info there, and files left in build/ by an older build can end up in a wheel),
installs it into a fresh venv after `pip install torch==2.13.0`, then runs `sdbench` from a temporary
folder. It uses pip's default cache, so a second run reuses what the first downloaded or built (the
openai-clip wheel, built from its sdist). Subprocess timeouts only guard against a hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIP_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CPU_TORCH = "torch==2.13.0"
HANG_GUARD_S = 1800
# Never copied into the build tree: version control, environments, caches and outputs.
SKIP_NAMES = {".git", ".venv", "build", "dist", ".benchmarks", ".hypothesis", ".pytest_cache", ".ruff_cache",
              "__pycache__", "sdbench-output", "sdbench-results", ".whl", ".devout"}


def _pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_pyproject_packages_every_suite_module() -> None:
    """packages.find cannot rename benchmarks/ to sdbench/benchmarks/: each suite module is listed."""
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == {"sdbench.benchmarks": "benchmarks"}
    assert (ROOT / "benchmarks" / "__init__.py").is_file()
    on_disk = {f"sdbench.benchmarks.{p.stem}" for p in (ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py"}
    listed = set(setuptools_cfg["py-modules"])
    assert on_disk == listed, f"add to / remove from py-modules in pyproject.toml: {sorted(on_disk ^ listed)}"


def test_plugin_registers_every_suite_marker() -> None:
    """An installed sdbench runs its suites without the checkout's pytest.ini (--strict-markers needs them)."""
    from sdbench.distribute.suite import SUITES
    from sdbench.pytest_plugin import SUITE_MARKERS

    assert set(SUITE_MARKERS) == set(SUITES)


def test_run_pytest_in_a_checkout_keeps_the_callers_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdbench.distribute import suite

    calls: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    assert suite.run_pytest(["benchmarks", "-q"]) == 0
    ((cmd, kwargs),) = calls
    assert cmd == [sys.executable, "-m", "pytest", "benchmarks", "-q"]  # pytest finds pytest.ini + conftest.py
    assert kwargs.get("cwd") is None and kwargs.get("env") is None


def test_run_pytest_of_installed_suites_uses_no_config_and_writes_nothing_beside_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdbench.distribute import suite

    suites = tmp_path / "site-packages" / "sdbench" / "benchmarks"
    suites.mkdir(parents=True)
    (suites / "test_speed.py").write_text("")
    monkeypatch.setattr(suite, "benchmarks_dir", lambda: suites)
    calls: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    assert suite.run_pytest([str(suites), "-q"]) == 0
    ((cmd, kwargs),) = calls
    pytest_at = cmd.index("pytest")
    options = cmd[pytest_at + 1:]
    assert options[options.index("-c") + 1] == os.devnull  # no pytest.ini/pyproject.toml above site-packages
    assert options[options.index("--rootdir") + 1] == str(suites.parent)  # node ids benchmarks/test_*.py::...
    assert options[options.index("--confcutdir") + 1] == str(suites)  # no conftest.py from above the suites
    assert "no:cacheprovider" in options and options[-2:] == [str(suites), "-q"]
    assert kwargs.get("cwd") is None  # the user's cwd: histories and outputs land there
    assert kwargs["env"]["PYTHONDONTWRITEBYTECODE"] == "1"


# --- the wheel in a fresh venv -------------------------------------------------------------------------
def _run(cmd: list[str | Path], *, env: dict[str, str] | None = None, cwd: Path | None = None,
         stdout_only: bool = False) -> str:
    """Run `cmd`, fail with its output unless it exits 0; return stdout and stderr (or stdout only)."""
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=HANG_GUARD_S, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{out[-6000:]}"
    return proc.stdout if stdout_only else out


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _distributions(python: Path, env: dict[str, str]) -> dict[str, str]:
    out = _run([python, "-m", "pip", "list", "--format", "json"], env=env, stdout_only=True)
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out)}


def _copy_source(dest: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP_NAMES or n.endswith((".egg-info", ".pyc"))}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


@dataclass
class CliRun:
    """What the installed CLI did from a folder outside the checkout."""

    help: str
    bench_output: str
    benchmarks: list[dict[str, Any]]  # bench.json's benchmarks
    histograms: list[Path]
    written_into_site: list[str]  # files under site-packages created, changed or removed meanwhile


def _venv_env(tmp_path: Path, venv: Path) -> dict[str, str]:
    """This process's environment for the venv: nothing of the checkout's Python, caches under `tmp_path`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SDBENCH_CLIP_BPE", "PYTHONDONTWRITEBYTECODE")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), SDBENCH_CACHE_DIR=str(tmp_path / "sdbench-cache"),
               MPLCONFIGDIR=str(tmp_path / "mpl"), TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1")
    return env


def _build_wheels(tmp_path: Path, venv: Path, env: dict[str, str]) -> list[Path]:
    """Make the venv and build the wheel in it as a user would (`pip wheel --no-deps -w DIR .`) from a copy of
    the tree; the wheels that came out."""
    src = tmp_path / "src"
    _copy_source(src)
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], env=env)
    wheelhouse = tmp_path / "wheelhouse"
    _run([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheelhouse, src], env=env)
    return sorted(wheelhouse.glob("sdbench-*.whl"))


def _install(python: Path, wheel: Path, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    """CPU torch first, then the wheel with its dependencies: torch's version after the first step, and every
    distribution installed after the second."""
    _run([python, "-m", "pip", "install", "-q", CPU_TORCH], env=env)
    torch_version = _distributions(python, env)["torch"]
    _run([python, "-m", "pip", "install", "-q", wheel], env=env)
    return torch_version, _distributions(python, env)


def _installed_paths(python: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """The venv's site-packages and the CLIP vocabulary file the installed sdbench finds."""
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env,
                     stdout_only=True).strip())
    bpe = Path(_run([python, "-c", "from sdbench.pipelines.tokenizer import find_clip_vocab_file as f; print(f())"], env=env,
                    stdout_only=True).strip())
    return site, bpe


def _use_the_cli(venv: Path, env: dict[str, str], work: Path, site: Path) -> CliRun:
    """`sdbench --help`, `sdbench generate` and `sdbench bench --suite speed` run from `work`, with a
    snapshot of site-packages before and after."""
    before = _snapshot(site)
    sdbench = venv / "bin" / "sdbench"
    help_text = _run([sdbench, "--help"], env=env, cwd=work)
    _run([sdbench, "generate", "--model-variant", "tiny-sd", "--steps", "2", "--no-save-images"], env=env, cwd=work)
    out = _run([sdbench, "bench", "--suite", "speed", "--models", "tiny-sd", "--batch-sizes", "1", "--steps", "2",
                "--", "--strict-markers", "--sd-min-rounds", "1", "--sd-max-rounds", "2", "--sd-idle-seconds", "0",
                "--benchmark-json", "bench.json", "--benchmark-histogram", "hist"], env=env, cwd=work)
    benchmarks = json.loads((work / "bench.json").read_text())["benchmarks"]
    after = _snapshot(site)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return CliRun(help_text, out, benchmarks, list(work.glob("hist*.svg")), changed)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_outside_the_checkout(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    try:
        env = _venv_env(tmp_path, venv)

        # 1. The wheel, built as a user would, from a copy of the tree.
        (wheel,) = _build_wheels(tmp_path, venv, env)
        names = zipfile.ZipFile(wheel).namelist()
        for module in ("sdbench/benchmarks/__init__.py", "sdbench/benchmarks/test_speed.py", "sdbench/pytest_plugin/__init__.py",
                       "sdbench/studies/dvfs/run.py", "sdbench/distribute/suite.py"):
            assert module in names
        assert not [n for n in names if n.startswith(("benchmarks/", "tests/"))]  # no top-level package of those names

        # 2. CPU torch first, then the wheel with its dependencies: no other torch, nothing CUDA.
        torch_version, dists = _install(python, wheel, env)
        assert dists["torch"] == torch_version
        cuda = sorted(n for n in dists if (n.startswith("nvidia-") and n != "nvidia-ml-py") or n in ("triton", "torchvision"))
        assert not cuda, f"the wheel pulled CUDA packages: {cuda}"
        assert "open-clip-torch" not in dists and "openai-clip" in dists  # the vocabulary comes with a plain dependency
        assert {"pygal", "pygaljs"} <= set(dists)  # pytest-benchmark[histogram]

        site, bpe = _installed_paths(python, env)
        assert bpe == site / "clip" / "bpe_simple_vocab_16e6.txt.gz"
        assert hashlib.sha256(bpe.read_bytes()).hexdigest() == CLIP_BPE_SHA256

        # 3. The CLI from a folder outside the checkout; site-packages must not change.
        work = tmp_path / "work"
        work.mkdir()
        assert ROOT not in work.parents
        cli = _use_the_cli(venv, env, work, site)
        assert "generate" in cli.help
        # The real tokenizer was built from that BPE file (its folder is named by the file's digest).
        assert (tmp_path / "sdbench-cache" / "clip-tokenizer" / f"bpe-{CLIP_BPE_SHA256[:16]}" / "vocab.json").is_file()
        assert str(site / "sdbench" / "benchmarks") in cli.bench_output  # the installed suites ran, not a checkout's
        assert cli.benchmarks and all(b["fullname"].startswith("benchmarks/test_speed.py::") for b in cli.benchmarks)
        assert cli.histograms  # the histogram extra works, and writes into the user's folder
        assert not cli.written_into_site, f"written into site-packages: {cli.written_into_site[:20]}"
    finally:
        # A venv with torch is about 1 GB: never keep one per run in pytest's temporary folders.
        shutil.rmtree(venv, ignore_errors=True)
