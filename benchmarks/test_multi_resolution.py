"""Multi-resolution: each model at half, 1x and 1.5x its native side (--sd-resolutions overrides)."""

import pytest

pytestmark = [pytest.mark.multi_resolution, pytest.mark.sd_matrix(resolutions=["x0.5", "default", "x1.5"], batch_sizes=[1])]


def test_resolution(sd_case, sd_measure):
    record = sd_measure(sd_case)
    assert record["pixels"] == sd_case.width * sd_case.height
    assert record["flop_per_image"] > 0
