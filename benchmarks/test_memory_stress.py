"""Memory stress: long prompts, high resolutions and growing batches; peak memory recorded, OOM a result.

- `test_max_batch`: per model, the largest batch that fits (doubling, then bisection; an out-of-memory
  error is caught and recovered from inside the process), then a measurement at that batch through
  `sd_measure`, with the search's `max_batch_*` fields in the record.
- `test_resolution_growth`: per model, the native side, 1.5x and 2x at batch 1. A resolution that runs
  out of memory is a recorded result (`record_type: memory_stress_oom`, with the size that failed),
  never a crash.

Every case uses `LONG_PROMPT`, longer than CLIP's 77-token context; the record says how many tokens it
had and how many CLIP dropped. CPU default: the tiny models at 64-128 px, batches up to 4. GPU default:
sd-v1.5 and sdxl at their native resolutions, batches up to 64, each fits probe at 2 steps (peak memory
does not grow with the step count; the measurement runs the case's own steps).
"""

from __future__ import annotations

from typing import Any

import pytest

from sdbench.spec.prompts import LONG_PROMPT
from sdbench.studies.batching.max_batch import find_max_batch
from sdbench.studies.batching.memory import Attempt, attempt
from sdbench.studies.batching.probe import PipelineProbe, prompt_token_fields

pytestmark = pytest.mark.memory_stress

CPU_BATCH_LIMIT = 4
GPU_BATCH_LIMIT = 64
GPU_PROBE_STEPS = 2


def _on_gpu(case: Any) -> bool:
    return case.compute_device.startswith("cuda")


def _probe_steps(case: Any) -> int | None:
    """Fewer steps per probe on a GPU (big batches are slow), where the model allows that step count."""
    if not _on_gpu(case):
        return None
    steps = min(case.steps, GPU_PROBE_STEPS)
    allowed = case.spec.allowed_steps
    return steps if not allowed or steps in allowed else None


def _keep_oom(request: pytest.FixtureRequest, sd_keep: Any, case: Any, failed: Attempt[Any],
              fields: dict[str, Any]) -> dict[str, Any]:
    """Keep an out-of-memory outcome as a record (results file, export, extra_info): a result, not a crash."""
    record = {"record_type": "memory_stress_oom", **case.features(), **fields, "oom": True,
              "oom_message": failed.message, "oom_simulated": failed.oom_simulated,
              "oom_peak_bytes": failed.peak_bytes, "memory_after_recovery_bytes": failed.memory_after_recovery_bytes,
              "test": request.node.nodeid}
    sd_keep(record)
    return record


def _assert_prompt_recorded(fields: dict[str, Any]) -> None:
    assert fields["prompt_tokens"] > fields["prompt_max_tokens"] == 77
    assert fields["prompt_truncated"] is True


@pytest.mark.sd_matrix(prompts=[LONG_PROMPT], batch_sizes=[1])
def test_max_batch(request: pytest.FixtureRequest, sd_case: Any, sd_bench: Any, sd_measure: Any, sd_keep: Any) -> None:
    limit = GPU_BATCH_LIMIT if _on_gpu(sd_case) else CPU_BATCH_LIMIT
    result = find_max_batch(sd_bench, sd_case, limit=limit, probe_steps=_probe_steps(sd_case))
    fields = {**result.as_record_fields(), **prompt_token_fields(sd_bench, sd_case)}
    _assert_prompt_recorded(fields)
    assert not result.stopped_because.startswith("error"), result.stopped_because
    assert all(p.peak_bytes for p in result.probes if p.outcome == "fits")  # peak memory of every fitting batch
    if result.largest_fitting_batch is None:
        record = _keep_oom(request, sd_keep, sd_case, _first_oom(result), fields)
        assert record["max_batch_first_failed"] == 1
        return
    best = sd_case.with_(batch_size=result.largest_fitting_batch)
    measured = attempt(lambda: sd_measure(best, **fields), best.compute_device)
    if not measured.ok:
        # The boundary batch fitted one probe call but not the Runner's rounds (fragmentation): recorded.
        _keep_oom(request, sd_keep, best, measured, fields)
        return
    record = measured.value
    assert record["batch_size"] == result.largest_fitting_batch
    assert record["max_batch_stopped_because"] in ("oom", "limit")
    if result.stopped_because == "oom":
        assert result.first_failed_batch == result.largest_fitting_batch + 1
    else:
        assert result.largest_fitting_batch == limit


def _first_oom(result: Any) -> Attempt[Any]:
    probe = next(p for p in result.probes if p.outcome == "oom")
    return Attempt("oom", None, probe.message, probe.oom_simulated, probe.peak_bytes, probe.memory_after_recovery_bytes)


@pytest.mark.sd_matrix(prompts=[LONG_PROMPT], batch_sizes=[1], resolutions=["default", "x1.5", "x2"])
def test_resolution_growth(request: pytest.FixtureRequest, sd_case: Any, sd_bench: Any, sd_measure: Any,
                           sd_keep: Any) -> None:
    device = sd_case.compute_device
    fields: dict[str, Any] = {"memory_stress": "resolution_growth", **prompt_token_fields(sd_bench, sd_case)}
    _assert_prompt_recorded(fields)
    # One probe call first: its peak is the CPU's only peak figure, and an OOM here costs one call, not a run.
    probe = PipelineProbe(sd_bench, sd_case, probe_steps=_probe_steps(sd_case))
    probed = attempt(lambda: probe(sd_case.batch_size), device)
    if not probed.ok:
        record = _keep_oom(request, sd_keep, sd_case, probed, {**fields, "failed_resolution": sd_case.width})
        assert record["oom"] and record["failed_resolution"] == sd_case.width
        return
    fields.update(probe_peak_bytes=probed.value.peak_bytes, probe_peak_source=probed.value.peak_source)
    measured = attempt(lambda: sd_measure(sd_case, **fields), device)
    if not measured.ok:
        _keep_oom(request, sd_keep, sd_case, measured, {**fields, "failed_resolution": sd_case.width})
        return
    record = measured.value
    assert record["pixels"] == sd_case.width * sd_case.height
    assert record["probe_peak_bytes"] > 0
    if _on_gpu(sd_case):
        assert record["memory_peak_allocated_bytes"] > 0
