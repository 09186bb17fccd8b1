"""Scheduler comparison: one model with every scheduler at the same step count."""

import pytest

pytestmark = [pytest.mark.scheduler_comparison, pytest.mark.sd_matrix(schedulers=["all"], batch_sizes=[1])]


def test_scheduler(sd_case, sd_measure):
    record = sd_measure(sd_case)
    assert record["scheduler"] == sd_case.scheduler
    # second-order samplers (Heun, KDPM2, DPM-SDE) evaluate the UNet about twice per step
    assert record["unet_evaluations"] >= sd_case.steps
