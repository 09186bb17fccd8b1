"""Speed: the model x scheduler x resolution x batch matrix (options --sd-models, --sd-schedulers, ...)."""

import pytest

pytestmark = pytest.mark.speed


def test_speed(sd_case, sd_measure):
    record = sd_measure(sd_case)
    assert record["time_per_image_s_median"] > 0
    assert record["scheduler"] == sd_case.scheduler  # the sampler that ran is the one asked for
