"""Root conftest: GPU tests are skipped where torch sees no CUDA device."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible to torch)")
    for item in items:
        # The marker itself, not item.keywords: keywords also hold the names of the parent nodes, so every
        # test under tests/unit/gpu/ would count as a GPU test and be skipped.
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
