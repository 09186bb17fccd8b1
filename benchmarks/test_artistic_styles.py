"""Artistic styles: the seed's style prompts through one model (prompt content does not change the work)."""

import pytest

from sdbench.spec.prompts import ARTISTIC_STYLE_PROMPTS

pytestmark = [pytest.mark.artistic_styles, pytest.mark.sd_matrix(prompts=list(ARTISTIC_STYLE_PROMPTS), batch_sizes=[1])]


def test_artistic_style(sd_case, sd_measure):
    record = sd_measure(sd_case)
    assert record["prompt"] == sd_case.prompt
