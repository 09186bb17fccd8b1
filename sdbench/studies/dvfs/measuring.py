"""Measuring one sweep point at its settings: the :func:`cooldown` before it, the :class:`ClockLockHook` that locks
the point's clocks and power limit, measures, verifies the lock and retries a drifted or throttled point, and
the outermost hook that turns a permission refusal into the end of the whole sweep."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sdbench.case import Case
from sdbench.errors import SdbenchError
from sdbench.gpu.base import GpuDevice, GpuNoPermission, GpuNotSupported
from sdbench.gpu.clock import WALL_CLOCK
from sdbench.gpu.dcgm import ActivityMonitor
from sdbench.measure.clocks import ClockController, ClockVerification, ReadOnlyClockError

if TYPE_CHECKING:
    from sdbench.session import Measured, MeasureFn, Progress

__all__ = ["RETRY_STATUSES", "ClockLockHook", "cooldown"]

# The package's name, as before the split: log lines name the sweep, not this submodule.
log = logging.getLogger("sdbench.studies.dvfs")

#: Verification outcomes that get a second measurement.
RETRY_STATUSES = frozenset({"drift", "throttled"})


def cooldown(device: GpuDevice, max_temperature_c: float, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """Wait, idle, until the GPU is at or below ``max_temperature_c`` (or ``timeout_s`` passes).

    Time is the device's own clock (``device.clock``): the wall clock for a real GPU, the simulated
    GPU's virtual clock for it, so a simulated cooldown takes no host time and does not depend on
    the host's load. Returns the record fields ``cooldown_s`` (device seconds),
    ``cooldown_start_temperature_c``, ``cooldown_end_temperature_c``, ``cooldown_timed_out`` (or
    ``cooldown_status`` if the temperature cannot be read).
    """
    # A stand-in device without a clock (a test double) runs on the host's.
    clock = getattr(device, "clock", None) or WALL_CLOCK
    try:
        start_c = float(device.temperature_c())
    except GpuNotSupported as exc:
        return {"cooldown_status": f"unavailable: {exc}", "cooldown_s": 0.0}
    t0 = clock.now_s()
    temp_c = start_c
    timed_out = False
    while temp_c > max_temperature_c:
        if clock.now_s() - t0 >= timeout_s:
            timed_out = True
            break
        clock.sleep(poll_s)
        temp_c = float(device.temperature_c())
    return {"cooldown_status": "timed-out" if timed_out else "ok", "cooldown_s": clock.now_s() - t0,
            "cooldown_target_c": max_temperature_c, "cooldown_start_temperature_c": start_c,
            "cooldown_end_temperature_c": temp_c, "cooldown_timed_out": timed_out}


class ClockLockHook:
    """A :class:`~sdbench.session.PointHook` that runs each case at the case's clock and power settings.

    For each attempt: lock the settings (``controller.apply``), measure (the Bench's one measurement path),
    verify the lock with the telemetry in the record (``telemetry_sm_clock_mhz_mean``,
    ``telemetry_throttle_reasons``) and with each measured window's own telemetry
    (``clock_window_verified``). A ``drift`` or ``throttled`` result is measured again up to ``retries``
    times (``before_retry`` runs first: a cooldown); the final record carries the last verification
    (``clock_verified`` ...) and the first one's status, so a point that never verified is flagged rather
    than silently kept. With an ``activity`` monitor, the ``activity_*`` means cover the measured windows only.

    Install it on the Bench that measures (``with bench.hooked(ClockLockHook(controller)): ...``); the sweep
    and the DVFS suite's fixture both do.
    """

    def __init__(self, controller: ClockController, *, retries: int = 1,
                 activity: ActivityMonitor | None = None, before_retry: Callable[[], Any] | None = None) -> None:
        self.controller = controller
        self.retries = retries
        self.activity = activity
        self.before_retry = before_retry

    def _expected_reasons(self, case: Case) -> set[str]:
        # A power-limit point asks for the power cap; hitting it is the point, not a fault.
        return {"sw_power_cap"} if case.power_limit_w is not None else set()

    def _verify(self, case: Case, record: dict[str, Any], windows: Sequence[Any]) -> tuple[ClockVerification, list[str]]:
        """The point's verdict: the whole measurement's telemetry (the record) and each window's.

        Any throttled window makes the point throttled; else any drifted window makes it drift; a
        window without telemetry samples (shorter than the sampling period) does not count.
        """
        expected = self._expected_reasons(case)
        overall = self.controller.verify(record, case.sm_clock_mhz, mem_clock_mhz=case.mem_clock_mhz,
                                         expected_reasons=expected)
        per_window = [self.controller.verify(w.telemetry, case.sm_clock_mhz, mem_clock_mhz=case.mem_clock_mhz,
                                             expected_reasons=expected) for w in windows if getattr(w, "telemetry", None)]
        for status in ("throttled", "drift"):
            worst = [v for v in [overall, *per_window] if v.status == status]
            if worst:
                return worst[0], [v.status for v in per_window]
        return overall, [v.status for v in per_window]

    def measure(self, case: Case, measure: MeasureFn, progress: Progress | None) -> Measured:
        """Lock, measure, verify (retrying a wrong point); the record gets the clock fields."""
        attempts: list[ClockVerification] = []
        record: dict[str, Any] = {}
        measurement: Any = None
        window_statuses: list[str] = []
        activity_fields: dict[str, Any] = {}
        for attempt in range(1 + self.retries):
            if attempt and self.before_retry is not None:
                self.before_retry()
            self.controller.apply(case.sm_clock_mhz, case.mem_clock_mhz, case.power_limit_w)
            hook = progress
            if self.activity is not None:
                self.activity.start()
                hook = _chain(self.activity.progress_hook, progress)
            windows: list[Any] = []
            try:
                record, measurement = measure(case, hook)
                windows = list(measurement.windows)
            finally:
                if self.activity is not None:
                    bounds = [(w.t0_s, w.t1_s) for w in windows]
                    activity_fields = self.activity.stop(bounds).as_record_fields()
            verification, window_statuses = self._verify(case, record, windows)
            attempts.append(verification)
            if verification.status not in RETRY_STATUSES:
                break
            log.warning("%s: %s (attempt %d of %d)", case.case_id, verification.message, attempt + 1, 1 + self.retries)
        final = attempts[-1]
        record.update(final.as_record_fields())
        record.update(
            clock_window_verified=window_statuses,
            clock_attempts=len(attempts),
            clock_first_attempt_verified=attempts[0].status,
            clock_first_attempt_error_mhz=attempts[0].error_mhz,
            clock_control=self.controller.mode,
            sm_clock_mhz_setting=case.sm_clock_mhz,
            mem_clock_mhz_setting=case.mem_clock_mhz,
            power_limit_w_setting=case.power_limit_w,
            is_default_clock=case.sm_clock_mhz is None and case.mem_clock_mhz is None and case.power_limit_w is None,
        )
        if self.activity is not None:
            record.update(activity_fields)
        return record, measurement


def _chain(first: Callable[[str], None], second: Callable[[str], None] | None) -> Callable[[str], None]:
    def both(message: str) -> None:
        first(message)
        if second is not None:
            second(message)
    return both


class _SweepAborted(Exception):  # noqa: N818 - internal control flow, never shown
    """Carries an error that must stop the whole sweep through `plan.execute`.

    Deliberately not an SdbenchError or RuntimeError: `execute` records those as a failed point and
    goes on, which for a refused clock lock would repeat the refusal at every point.
    """

    def __init__(self, cause: SdbenchError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _AbortOnRefusal:
    """The sweep's outermost hook: a permission refusal (from the clock lock inside it) stops the whole sweep."""

    def measure(self, case: Case, measure: MeasureFn, progress: Progress | None) -> Measured:
        try:
            return measure(case, progress)
        except (GpuNoPermission, ReadOnlyClockError) as exc:
            raise _SweepAborted(exc) from exc
