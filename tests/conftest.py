"""Shared fixtures: tiny pipelines built once per session, an isolated, offline Hugging Face cache, and one
torch thread for modules of tiny models."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: a second thread costs more than it saves (OpenMP's waits
    for a descheduled thread can make a module 10-20x slower). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_pipeline() -> Iterator[Callable[..., Any]]:
    """`tiny_pipeline(model, dtype="fp32", seed=0)` -> a BuiltPipeline, built once per session.

    The pipelines are shared: a test that depends on the scheduler must set it itself
    (`sdbench.pipelines.build.set_scheduler`), and no test may change the models' weights.
    """
    from sdbench.pipelines.build import build_pipeline

    cache: dict[tuple[str, str, int], Any] = {}

    def get(model: str, dtype: str = "fp32", seed: int = 0) -> Any:
        key = (model, dtype, seed)
        if key not in cache:
            cache[key] = build_pipeline(model, weights="synthetic", dtype=dtype, device="cpu", seed=seed)
        return cache[key]

    yield get
    cache.clear()


def commit_hash_for(repo_id: str) -> str:
    """A 40-hex commit id, stable per repository (what the hub's `refs/main` holds)."""
    return hashlib.sha1(repo_id.encode()).hexdigest()


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache under tmp_path, offline, honoured by sdbench.spec.weights.

    huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE into `huggingface_hub.constants` at import;
    `sdbench.spec.weights` and `snapshot_download` read those constants at call time, so both the
    environment (for subprocesses) and the constants (for this process) are patched.
    """
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("SDBENCH_FORCE_SYNTHETIC", raising=False)
    return cache


@pytest.fixture
def lay_out_hub_entry() -> Callable[[Path, str, Path], Path]:
    """`lay_out_hub_entry(cache, repo_id, folder)`: see `_lay_out_hub_entry`."""
    return _lay_out_hub_entry


def _lay_out_hub_entry(cache: Path, repo_id: str, folder: Path) -> Path:
    """Copy a saved diffusers folder into `cache` the way the hub lays out a downloaded snapshot.

    `<cache>/models--org--name/snapshots/<commit>/...` plus `refs/main` holding the commit (no newline,
    as huggingface_hub writes it). Returns the snapshot folder.
    """
    import shutil

    commit = commit_hash_for(repo_id)
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="session")
def saved_tiny_sd(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline: Callable[..., Any]) -> Path:
    """The synthetic tiny-sd pipeline (fp32, seed 0), saved once with `save_pretrained`."""
    folder = tmp_path_factory.mktemp("saved") / "tiny-sd"
    tiny_pipeline("tiny-sd").pipe.save_pretrained(folder)
    return folder
