"""Energy research: energy per image with its confidence interval, gross and idle-subtracted."""

import pytest

from sdbench.spec.prompts import ENERGY_RESEARCH_PROMPTS

pytestmark = [pytest.mark.energy_research, pytest.mark.sd_matrix(prompts=list(ENERGY_RESEARCH_PROMPTS), batch_sizes=[1])]


def test_energy_per_image(sd_case, sd_measure):
    record = sd_measure(sd_case)
    if record["energy_status"] == "unavailable":
        # No invented numbers: the record says why there is no energy.
        assert record["energy_unavailable_reason"]
    else:
        assert record["energy_per_image_j_median"] > 0
        assert record["energy_per_image_j_ci95_low"] <= record["energy_per_image_j_median"] <= record["energy_per_image_j_ci95_high"]
