"""Clock and power-limit control for DVFS studies: lock, verify, and always restore.

:class:`ClockController` changes a GPU's settings through the device layer only:

* SM clocks with ``nvmlDeviceSetGpuLockedClocks`` (:meth:`GpuDevice.set_locked_sm_clocks`),
* memory clocks with ``nvmlDeviceSetMemoryLockedClocks``,
* the board power limit with ``nvmlDeviceSetPowerManagementLimit``.

Application clocks are never used: they are a ceiling rather than a lock, and deprecated since
CUDA 13. Every requested value is checked against what the device reports it supports
(``nvmlDeviceGetSupportedGraphicsClocks`` and friends) before anything is changed, so a typo
fails with a :class:`~sdbench.errors.ConfigError` that names the field, the value and the
nearest allowed values; no clock table is hard-coded.

Whatever was changed is put back: on leaving the ``with`` block (normally or by an exception),
and on SIGINT and SIGTERM, whose handlers restore the settings first and then end the program
the conventional way (``KeyboardInterrupt`` for SIGINT, exit status 128 + signal number, i.e.
143, for SIGTERM). The previous handlers are reinstated afterwards.

Privileged helper protocol (``clock_command``)
-----------------------------------------------
Sites that grant clock rights through a helper (a setuid program, a ``sudo`` rule) pass its
command as an argv list, e.g. ``["sudo", "-n", "/usr/local/sbin/gpu-clocks"]``. The controller
runs it with ``subprocess.run(argv, shell=False)``, appending one verb, the GPU's NVML index and
validated integers only::

    HELPER lock-sm    GPU_INDEX MIN_MHZ MAX_MHZ     lock the SM clock into [MIN, MAX]
    HELPER reset-sm   GPU_INDEX                     remove the SM clock lock
    HELPER lock-mem   GPU_INDEX MIN_MHZ MAX_MHZ     lock the memory clock
    HELPER reset-mem  GPU_INDEX                     remove the memory clock lock
    HELPER power-limit GPU_INDEX WATTS              set the power limit (whole watts)

``GPU_INDEX`` is NVML's index (PCI order, independent of ``CUDA_VISIBLE_DEVICES``, which a
``sudo`` rule usually drops). Exit status 0 means done; 77 (``EX_NOPERM``) means the caller is not
allowed; anything else is a failure, reported with the helper's stderr. A helper typically maps
the verbs to ``nvidia-smi -i GPU_INDEX --lock-gpu-clocks=MIN,MAX`` / ``--reset-gpu-clocks`` /
``--lock-memory-clocks=MIN,MAX`` / ``--reset-memory-clocks`` / ``--power-limit=WATTS``.
Queries (grids, telemetry for verification) still go through NVML, which needs no rights.

Read-only mode
--------------
``read_only=True`` is for machines whose settings must never change (shared servers, CI runners,
the project's own H100): queries, planning and :meth:`ClockController.verify` work, and every
call that would change something raises :class:`ReadOnlyClockError` before touching the GPU.
"""

from __future__ import annotations

import bisect
import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

from sdbench.errors import EXIT_ENVIRONMENT, ConfigError, SdbenchError
from sdbench.gpu.base import THROTTLE_REASONS, GpuDevice, GpuError, GpuNoPermission, GpuNotSupported
from sdbench.measure.telemetry import TelemetrySample, TelemetrySummary, summarise_samples

__all__ = [
    "CLOCK_COMMAND_VERBS",
    "HELPER_EXIT_NOPERM",
    "VERIFY_STATUSES",
    "ClockCommandError",
    "ClockController",
    "ClockPermissionError",
    "ClockRestoreError",
    "ClockSettings",
    "ClockVerification",
    "ReadOnlyClockError",
    "bin_width_mhz",
    "current_settings",
    "nearest_clocks_mhz",
    "validate_clock_mhz",
    "verify_clock",
]

log = logging.getLogger(__name__)

#: Verbs a privileged helper must understand (see the module docstring).
CLOCK_COMMAND_VERBS: tuple[str, ...] = ("lock-sm", "reset-sm", "lock-mem", "reset-mem", "power-limit")
#: Exit status by which a helper says "not allowed" (sysexits.h EX_NOPERM).
HELPER_EXIT_NOPERM = 77
#: Outcomes of :func:`verify_clock`. ``unverified``: no telemetry to judge by (never taken as ok).
VERIFY_STATUSES: tuple[str, ...] = ("ok", "drift", "throttled", "read-only", "unverified")

_RIGHTS_HELP = (
    "locking GPU clocks and setting the power limit need root (CAP_SYS_ADMIN) on the GPU's host. "
    "Ask the administrators for a privileged helper and pass it with --clock-command "
    "(clock_command=[...]), run as root, or use read-only mode (--read-only) / the simulated GPU "
    "(--device simulated). Nothing was changed."
)


class ReadOnlyClockError(SdbenchError):
    """A change was requested from a controller in read-only mode; the GPU was not touched."""


class ClockPermissionError(GpuNoPermission):
    """Changing a setting was refused for lack of rights; says which rights are needed.

    An environment error (exit 3): this machine does not grant what the run needs."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, operation: str, detail: str = "") -> None:
        super().__init__(operation, detail)
        self.args = (f"{self.args[0]}. {_RIGHTS_HELP}",)

    def __str__(self) -> str:
        return str(self.args[0])


class ClockCommandError(GpuError):
    """The privileged helper (``clock_command``) failed for a reason other than permission."""


class ClockRestoreError(GpuError):
    """Putting the original settings back failed for at least one setting (all were attempted)."""


@dataclass(frozen=True)
class ClockSettings:
    """GPU settings a user can change. ``None`` means "not locked" (clocks) or "not known" (limit)."""

    locked_sm_clocks_mhz: tuple[int, int] | None
    locked_mem_clocks_mhz: tuple[int, int] | None
    power_limit_w: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form (ranges become lists)."""
        out = asdict(self)
        for key in ("locked_sm_clocks_mhz", "locked_mem_clocks_mhz"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


@dataclass(frozen=True)
class ClockVerification:
    """Whether a measured window ran at the requested SM clock, and if not, why.

    ``status``: ``ok`` (mean within one supported-clock bin of the target, no unexpected throttle
    reason), ``drift`` (mean off by more than a bin), ``throttled`` (power or thermal throttling
    that the point did not ask for; wins over drift, which it explains), ``read-only`` (nothing
    was locked, only observed), ``unverified`` (no telemetry).
    """

    status: str
    target_mhz: int | None
    measured_mean_mhz: float | None
    error_mhz: float | None
    tolerance_mhz: float | None
    throttle_reasons: tuple[str, ...] = ()
    reasons_seen: tuple[str, ...] = ()
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_record_fields(self, prefix: str = "clock_") -> dict[str, Any]:
        """The record columns: ``clock_verified``, ``clock_error_mhz`` and the evidence."""
        return {
            f"{prefix}verified": self.status,
            f"{prefix}error_mhz": self.error_mhz,
            f"{prefix}target_mhz": self.target_mhz,
            f"{prefix}measured_mhz_mean": self.measured_mean_mhz,
            f"{prefix}tolerance_mhz": self.tolerance_mhz,
            f"{prefix}throttle_reasons": list(self.throttle_reasons),
            f"{prefix}verify_message": self.message,
        }


# ---- grids -------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def nearest_clocks_mhz(grid: Sequence[int], value: float, count: int = 3) -> list[int]:
    """The ``count`` grid clocks closest to ``value``, ascending (for error messages)."""
    ranked = sorted(grid, key=lambda f: (abs(f - value), f))[:count]
    return sorted(ranked)


def validate_clock_mhz(field_name: str, value: Any, grid: Sequence[int]) -> int:
    """``value`` as an int if it is exactly one of ``grid``; else a ConfigError naming nearby clocks.

    Only real integers pass: strings (``"1410; rm -rf /"``), floats and bools are refused, so
    nothing but a number taken from the device's own list can reach a control call or a helper.
    """
    if not grid:
        raise ConfigError(field_name, value, reason="the device lists no supported clocks")
    if not _is_int(value):
        raise ConfigError(field_name, value, allowed=f"a whole number of MHz from the device's grid "
                          f"({min(grid)}..{max(grid)} MHz, {len(grid)} clocks)")
    if value not in set(grid):
        near = ", ".join(str(f) for f in nearest_clocks_mhz(grid, value))
        raise ConfigError(field_name, value, allowed=f"nearest supported: {near} (the device supports {len(grid)} "
                          f"clocks from {min(grid)} to {max(grid)} MHz)", reason="not a supported clock")
    return int(value)


def bin_width_mhz(grid: Sequence[int], target_mhz: float) -> float:
    """Width of the supported-clock bin at ``target_mhz``: the larger gap to its grid neighbours.

    The larger gap is used so that a grid whose last step is irregular (NVML lists e.g. 360 then
    345) does not make the tolerance at the edge tighter than the grid itself.
    """
    clocks = sorted(set(grid))
    if len(clocks) < 2:
        return 0.0
    i = bisect.bisect_left(clocks, target_mhz)
    i = min(max(i, 0), len(clocks) - 1)
    if i > 0 and abs(clocks[i - 1] - target_mhz) < abs(clocks[i] - target_mhz):
        i -= 1
    gaps = []
    if i > 0:
        gaps.append(clocks[i] - clocks[i - 1])
    if i < len(clocks) - 1:
        gaps.append(clocks[i + 1] - clocks[i])
    return float(max(gaps))


# ---- verification ------------------------------------------------------------------------------
def _observed(observed: Any) -> tuple[float | None, tuple[str, ...], tuple[str, ...], str | None]:
    """(mean SM clock, throttle reasons, all reasons, why unavailable) from any accepted form."""
    if isinstance(observed, TelemetrySummary):
        why = None if observed.available else (observed.reason or "telemetry unavailable")
        return (observed.sm_clock_mhz_mean, tuple(observed.throttle_reasons), tuple(observed.clock_event_reasons), why)
    if isinstance(observed, Mapping):
        # A TelemetrySummary.as_dict() or a Runner record, whose telemetry columns carry a prefix.
        prefix = "telemetry_" if "telemetry_sm_clock_mhz_mean" in observed or "telemetry_available" in observed else ""
        mean = observed.get(f"{prefix}sm_clock_mhz_mean")
        throttle = tuple(observed.get(f"{prefix}throttle_reasons") or ())
        seen = tuple(observed.get(f"{prefix}clock_event_reasons") or ())
        why = None
        if mean is None:
            why = observed.get(f"{prefix}reason") or observed.get(f"{prefix}telemetry") or "no SM clock telemetry"
        return (None if mean is None else float(mean), throttle, seen, why)
    if isinstance(observed, Sequence) and all(isinstance(s, TelemetrySample) for s in observed):
        return _observed(summarise_samples(list(observed)))
    raise ConfigError("observed", type(observed).__name__,
                      allowed="a TelemetrySummary, its dict, a Runner record, or a list of TelemetrySample")


def verify_clock(observed: Any, target_mhz: int | None, grid: Sequence[int], *,
                 expected_reasons: Iterable[str] = (), read_only: bool = False) -> ClockVerification:
    """Judge a measured window against the requested SM clock (see :class:`ClockVerification`).

    ``observed``: a :class:`TelemetrySummary`, its ``as_dict()``, a Runner record (``telemetry_*``
    columns) or a list of :class:`TelemetrySample`. ``target_mhz=None`` (the card as found) checks
    throttling only. ``expected_reasons``: throttle reasons the point asked for (``sw_power_cap``
    in a power-limit sweep), which are reported but do not fail it.
    """
    mean, throttle, seen, why = _observed(observed)
    expected = set(expected_reasons)
    unexpected = tuple(r for r in throttle if r in THROTTLE_REASONS and r not in expected)
    tolerance = bin_width_mhz(grid, target_mhz) if target_mhz is not None else None
    error = None if (mean is None or target_mhz is None) else float(mean - target_mhz)
    if mean is None and not unexpected:
        return ClockVerification("unverified", target_mhz, None, None, tolerance, unexpected, seen,
                                 f"no SM clock telemetry: {why}")
    if unexpected:
        status = "throttled"
        msg = "throttled by " + ", ".join(unexpected)
        if error is not None:
            msg += f" (mean {mean:.0f} MHz vs target {target_mhz} MHz)"
    elif error is not None and tolerance is not None and abs(error) > tolerance:
        status = "drift"
        msg = (f"mean SM clock {mean:.0f} MHz is {error:+.0f} MHz from the target {target_mhz} MHz "
               f"(tolerance: one supported-clock bin, {tolerance:.0f} MHz)")
    else:
        status = "ok"
        msg = "no throttling" if target_mhz is None else f"mean SM clock {mean:.0f} MHz within {tolerance:.0f} MHz of {target_mhz} MHz"
    if read_only:
        # Nothing was locked: report what was seen, under its own status so nobody mistakes the
        # point for a verified lock; a throttled read-only window still says so in the message.
        status = "read-only"
        msg = "read-only (nothing locked): " + msg
    return ClockVerification(status, target_mhz, mean, error, tolerance, unexpected, seen, msg)


# ---- the controller ----------------------------------------------------------------------------
def _read_locked(device: GpuDevice, which: str) -> tuple[int, int] | None:
    """The lock in force, where the backend can tell. NVML has no getter for locked clocks: the
    NVML backend remembers what this process set (``requested_*``), so a lock set by someone else
    earlier reads as "not locked" and restoring resets it to the driver default."""
    state = getattr(device, "state", None)
    if callable(state):
        value = getattr(state(), f"locked_{which}_clocks_mhz", None)
        return None if value is None else (int(value[0]), int(value[1]))
    value = getattr(device, f"requested_{which}_clocks_mhz", None)
    return None if value is None else (int(value[0]), int(value[1]))


def current_settings(device: GpuDevice) -> ClockSettings:
    """The device's changeable settings now (locks as far as the backend can tell; see above)."""
    try:
        limit_w: float | None = float(device.power_limit_w())
    except GpuNotSupported:
        limit_w = None
    return ClockSettings(_read_locked(device, "sm"), _read_locked(device, "mem"), limit_w)


class ClockController:
    """Locks SM/memory clocks and the power limit of one GPU, verifies them, and restores them.

    Use as a context manager: entering records the original settings and installs SIGINT/SIGTERM
    handlers (main thread only); leaving, by any route, restores what was changed::

        with ClockController(device) as clocks:
            clocks.apply(sm_clock_mhz=1410)
            ...  # measure
            result = clocks.verify(record, 1410)

    ``clock_command``: run this privileged helper (argv list, no shell) instead of calling NVML's
    setters; see the module docstring for its protocol. ``read_only``: never change anything.
    """

    def __init__(self, device: GpuDevice, *, clock_command: Sequence[str] | None = None, read_only: bool = False,
                 handle_signals: bool = True, command_timeout_s: float = 60.0) -> None:
        if device is None:
            raise ConfigError("device", None, allowed="a GPU (NVML or simulated)",
                              reason="clock control needs a GPU")
        if clock_command is not None:
            if isinstance(clock_command, str) or not clock_command or not all(isinstance(a, str) and a for a in clock_command):
                raise ConfigError("clock_command", clock_command,
                                  allowed="a non-empty list of program arguments, e.g. ['sudo', '-n', '/usr/local/sbin/gpu-clocks']")
        self.device = device
        self.clock_command: list[str] | None = list(clock_command) if clock_command is not None else None
        self.read_only = bool(read_only)
        self.handle_signals = handle_signals
        self.command_timeout_s = float(command_timeout_s)
        self.original: ClockSettings | None = None
        #: What this controller changed and has not yet put back: "sm", "mem", "power".
        self._changed: set[str] = set()
        self._grid_cache: dict[int, list[int]] = {}
        self._mem_grid: list[int] | None = None
        self._lock = threading.RLock()
        self._previous_handlers: dict[int, Any] = {}
        self._entered = False
        #: Settings just before the last restore, and the name of the signal that caused it (if any).
        self.last_restore: dict[str, Any] | None = None

    # ---- queries --------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """How settings are changed: ``nvml``, ``command`` or ``read-only``."""
        if self.read_only:
            return "read-only"
        return "command" if self.clock_command is not None else "nvml"

    def supported_mem_clocks_mhz(self) -> list[int]:
        """Memory clocks the device supports, descending (NVML's list)."""
        if self._mem_grid is None:
            self._mem_grid = sorted({int(c) for c in self.device.supported_memory_clocks_mhz()}, reverse=True)
        return list(self._mem_grid)

    def default_mem_clock_mhz(self) -> int:
        """The top memory clock: the one the card runs at when nothing is locked."""
        mem = self.supported_mem_clocks_mhz()
        if not mem:
            raise GpuNotSupported("the device lists no supported memory clocks")
        return mem[0]

    def supported_sm_clocks_mhz(self, mem_clock_mhz: int | None = None) -> list[int]:
        """SM clocks supported at ``mem_clock_mhz`` (default: the top memory clock), descending."""
        mem = self.default_mem_clock_mhz() if mem_clock_mhz is None else mem_clock_mhz
        if mem not in self._grid_cache:
            self._grid_cache[mem] = sorted({int(c) for c in self.device.supported_sm_clocks_mhz(mem)}, reverse=True)
        return list(self._grid_cache[mem])

    def validate_sm_clock(self, value: Any, mem_clock_mhz: int | None = None, field_name: str = "sm_clock_mhz") -> int:
        """``value`` if it is a supported SM clock (at that memory clock), else a ConfigError."""
        return validate_clock_mhz(field_name, value, self.supported_sm_clocks_mhz(mem_clock_mhz))

    def validate_mem_clock(self, value: Any, field_name: str = "mem_clock_mhz") -> int:
        """``value`` if it is a supported memory clock, else a ConfigError."""
        return validate_clock_mhz(field_name, value, self.supported_mem_clocks_mhz())

    def power_limit_range_w(self) -> tuple[float, float]:
        """(min, max) power limit the device accepts, in watts."""
        info = self.device.info()
        if info.min_power_limit_w is None or info.max_power_limit_w is None:
            raise GpuNotSupported("the device does not report its power-limit constraints")
        return float(info.min_power_limit_w), float(info.max_power_limit_w)

    def validate_power_limit(self, value: Any, field_name: str = "power_limit_w") -> int:
        """``value`` (whole watts) if within the device's constraints, else a ConfigError."""
        lo, hi = self.power_limit_range_w()
        allowed = f"a whole number of watts from {lo:g} to {hi:g}"
        if not _is_int(value):
            raise ConfigError(field_name, value, allowed=allowed)
        if not lo <= value <= hi:
            raise ConfigError(field_name, value, allowed=allowed, reason="outside the device's power-limit range")
        return int(value)

    def settings(self) -> ClockSettings:
        """The device's changeable settings now."""
        return current_settings(self.device)

    def verify(self, observed: Any, target_mhz: int | None, *, mem_clock_mhz: int | None = None,
               expected_reasons: Iterable[str] = ()) -> ClockVerification:
        """Did the window described by ``observed`` run at ``target_mhz``? See :func:`verify_clock`.

        In read-only mode the status is ``read-only`` (nothing was locked), with what was seen.
        """
        grid = self.supported_sm_clocks_mhz(mem_clock_mhz)
        return verify_clock(observed, target_mhz, grid, expected_reasons=expected_reasons, read_only=self.read_only)

    # ---- changes --------------------------------------------------------------------------------
    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyClockError(
                f"read-only mode: refusing to {what} on GPU {getattr(self.device, 'index', '?')}; this controller "
                "only queries, plans and verifies (the machine's GPU settings must not change)")

    def _capture_original(self) -> None:
        if self.original is None:
            self.original = current_settings(self.device)

    def _nvml_index(self) -> int:
        info = self.device.info()
        return int(info.physical_index if info.physical_index is not None else info.index)

    def _run_helper(self, verb: str, *values: int) -> None:
        """Run the privileged helper with a fixed verb, the GPU index and validated integers."""
        assert self.clock_command is not None
        if verb not in CLOCK_COMMAND_VERBS:
            raise ConfigError("clock command verb", verb, allowed=CLOCK_COMMAND_VERBS)
        for v in values:
            if not _is_int(v):  # a last guard: only integers ever follow the verb
                raise ConfigError("clock command argument", v, allowed="whole numbers")
        argv = [*self.clock_command, verb, str(self._nvml_index()), *(str(int(v)) for v in values)]
        try:
            done = subprocess.run(argv, shell=False, capture_output=True, text=True, timeout=self.command_timeout_s,
                                  check=False)
        except FileNotFoundError as exc:
            raise ClockCommandError(f"clock command not found: {argv[0]!r} ({exc})") from exc
        except subprocess.TimeoutExpired as exc:
            raise ClockCommandError(f"clock command {argv!r} did not finish within {self.command_timeout_s:g} s") from exc
        if done.returncode == HELPER_EXIT_NOPERM:
            raise ClockPermissionError(f"clock command {verb}", (done.stderr or "").strip() or "helper exit status 77")
        if done.returncode != 0:
            raise ClockCommandError(f"clock command {argv!r} failed with exit status {done.returncode}: "
                                    f"{(done.stderr or '').strip() or '(no message)'}")

    def _lock_sm(self, lo: int, hi: int) -> None:
        if self.clock_command is not None:
            self._run_helper("lock-sm", lo, hi)
        else:
            self.device.set_locked_sm_clocks(lo, hi)

    def _reset_sm(self) -> None:
        if self.clock_command is not None:
            self._run_helper("reset-sm")
        else:
            self.device.reset_locked_sm_clocks()

    def _lock_mem(self, lo: int, hi: int) -> None:
        if self.clock_command is not None:
            self._run_helper("lock-mem", lo, hi)
        else:
            self.device.set_locked_mem_clocks(lo, hi)

    def _reset_mem(self) -> None:
        if self.clock_command is not None:
            self._run_helper("reset-mem")
        else:
            self.device.reset_locked_mem_clocks()

    def _set_power(self, watts: float) -> None:
        if self.clock_command is not None:
            self._run_helper("power-limit", int(round(watts)))
        else:
            self.device.set_power_limit_w(watts)

    def _change(self, name: str, operation: str, fn: Callable[[], None]) -> None:
        """Run one control call for setting ``name``; a permission refusal becomes a
        ClockPermissionError that says which rights are needed.

        The setting is marked changed *before* the call, so that a signal arriving while the call
        runs still restores it; a call that fails unmarks it (nothing changed).
        """
        had = name in self._changed
        self._changed.add(name)
        try:
            fn()
        except BaseException as exc:
            if not had:
                self._changed.discard(name)
            if isinstance(exc, GpuNoPermission) and not isinstance(exc, ClockPermissionError):
                raise ClockPermissionError(operation, str(exc)) from exc
            raise

    def lock_sm_clocks(self, min_mhz: Any, max_mhz: Any = None, *, mem_clock_mhz: int | None = None) -> None:
        """Lock the SM clock into ``[min_mhz, max_mhz]`` (both supported clocks; max defaults to min)."""
        max_mhz = min_mhz if max_mhz is None else max_mhz
        lo = self.validate_sm_clock(min_mhz, mem_clock_mhz, "sm_clock_mhz")
        hi = self.validate_sm_clock(max_mhz, mem_clock_mhz, "sm_clock_mhz (max)")
        if lo > hi:
            raise ConfigError("sm_clock_mhz", lo, reason=f"the lower end exceeds the upper end {hi}")
        self._refuse_if_read_only(f"lock the SM clock at {lo}-{hi} MHz")
        with self._lock:
            self._capture_original()
            self._change("sm", f"locking SM clocks at {lo}-{hi} MHz", lambda: self._lock_sm(lo, hi))

    def lock_mem_clocks(self, min_mhz: Any, max_mhz: Any = None) -> None:
        """Lock the memory clock into ``[min_mhz, max_mhz]`` (supported memory clocks)."""
        max_mhz = min_mhz if max_mhz is None else max_mhz
        lo = self.validate_mem_clock(min_mhz)
        hi = self.validate_mem_clock(max_mhz, "mem_clock_mhz (max)")
        if lo > hi:
            raise ConfigError("mem_clock_mhz", lo, reason=f"the lower end exceeds the upper end {hi}")
        self._refuse_if_read_only(f"lock the memory clock at {lo}-{hi} MHz")
        with self._lock:
            self._capture_original()
            self._change("mem", f"locking memory clocks at {lo}-{hi} MHz", lambda: self._lock_mem(lo, hi))

    def set_power_limit_w(self, watts: Any) -> None:
        """Set the board power limit (whole watts within the device's range)."""
        w = self.validate_power_limit(watts)
        self._refuse_if_read_only(f"set the power limit to {w} W")
        with self._lock:
            self._capture_original()
            self._change("power", f"setting the power limit to {w} W", lambda: self._set_power(float(w)))

    def apply(self, sm_clock_mhz: Any = None, mem_clock_mhz: Any = None, power_limit_w: Any = None) -> None:
        """Put the GPU at one sweep point: each setting given is locked/set, each ``None`` is put
        back to the original (if this controller had changed it).

        Every value is validated before anything changes. If a change is refused, the changes this
        call already made are undone and :class:`ClockPermissionError` explains the rights needed.
        """
        if mem_clock_mhz is not None:
            mem_clock_mhz = self.validate_mem_clock(mem_clock_mhz)
        if sm_clock_mhz is not None:
            sm_clock_mhz = self.validate_sm_clock(sm_clock_mhz, mem_clock_mhz)
        if power_limit_w is not None:
            power_limit_w = self.validate_power_limit(power_limit_w)
        wanted = [v for v in (sm_clock_mhz, mem_clock_mhz, power_limit_w) if v is not None]
        if wanted:
            self._refuse_if_read_only(
                "apply " + ", ".join(f"{n}={v}" for n, v in (("sm_clock_mhz", sm_clock_mhz), ("mem_clock_mhz", mem_clock_mhz),
                                                              ("power_limit_w", power_limit_w)) if v is not None))
        with self._lock:
            before_changed = set(self._changed)
            self._capture_original()
            try:
                # Memory first: the SM grid can depend on the memory clock.
                if mem_clock_mhz is not None:
                    self.lock_mem_clocks(mem_clock_mhz)
                if sm_clock_mhz is not None:
                    self.lock_sm_clocks(sm_clock_mhz, mem_clock_mhz=mem_clock_mhz)
                if power_limit_w is not None:
                    self.set_power_limit_w(power_limit_w)
                to_restore = {name for name, v in (("sm", sm_clock_mhz), ("mem", mem_clock_mhz), ("power", power_limit_w))
                              if v is None and name in self._changed}
                if to_restore:
                    self._restore(to_restore)
            except GpuNoPermission:
                # Undo what this call changed so that a refusal leaves the GPU as it was before the call.
                newly = self._changed - before_changed
                if newly:
                    self._restore(newly)
                raise

    def probe_permission(self, *, sm: bool = True, mem: bool = False, power: bool = False) -> None:
        """Find out now, before anything is measured, whether this process may change what a sweep will change.

        Each setting asked for is changed to something that leaves the card as it runs and then put back: the SM
        (memory) clock is locked to its whole supported range, which bounds nothing, then reset; the power limit
        is set to its current value. Through ``clock_command`` the helper runs the same verbs. A refusal raises
        :class:`ClockPermissionError` (exit 3) saying what to do (``--read-only``, root, ``--clock-command``);
        the GPU is left as it was. Read-only controllers change nothing and are not probed.
        """
        if self.read_only:
            return
        probes: list[tuple[str, str, Callable[[], None]]] = []
        if mem:
            grid = self.supported_mem_clocks_mhz()
            probes.append(("mem", f"locking memory clocks at {grid[-1]}-{grid[0]} MHz (a permission probe)",
                           lambda: self._lock_mem(grid[-1], grid[0])))
        if sm:
            sm_grid = self.supported_sm_clocks_mhz()
            probes.append(("sm", f"locking SM clocks at {sm_grid[-1]}-{sm_grid[0]} MHz (a permission probe)",
                           lambda: self._lock_sm(sm_grid[-1], sm_grid[0])))
        if power:
            limit_w = float(self.device.power_limit_w())
            probes.append(("power", f"setting the power limit to its current {limit_w:g} W (a permission probe)",
                           lambda: self._set_power(limit_w)))
        with self._lock:
            self._capture_original()
            for name, operation, change in probes:
                had = name in self._changed
                try:
                    self._change(name, operation, change)
                finally:
                    if not had and name in self._changed:
                        self._restore({name})

    def _restore(self, which: set[str]) -> None:
        """Put the named settings back to the original; every one is attempted, failures raised together."""
        assert self.original is not None
        orig = self.original
        failures: list[str] = []
        steps: list[tuple[str, Callable[[], None]]] = []
        if "mem" in which:
            mem = orig.locked_mem_clocks_mhz
            steps.append(("mem", (lambda: self._lock_mem(*mem)) if mem is not None else self._reset_mem))
        if "sm" in which:
            sm = orig.locked_sm_clocks_mhz
            steps.append(("sm", (lambda: self._lock_sm(*sm)) if sm is not None else self._reset_sm))
        if "power" in which and orig.power_limit_w is not None:
            steps.append(("power", lambda: self._set_power(orig.power_limit_w)))  # type: ignore[arg-type]
        elif "power" in which:
            failures.append("power limit: the original limit was not known, so it cannot be put back")
        for name, step in steps:
            try:
                step()
                self._changed.discard(name)
            except (GpuError, ConfigError) as exc:
                failures.append(f"{name}: {exc}")
                log.error("restoring %s failed: %s", name, exc)
        if failures:
            raise ClockRestoreError("could not restore every GPU setting: " + "; ".join(failures))

    def restore(self, reason: str = "restore") -> ClockSettings | None:
        """Put back everything this controller changed; returns the settings now (None if nothing changed).

        Idempotent: a second call, or a call after nothing was changed, does nothing.
        """
        with self._lock:
            if not self._changed or self.original is None:
                return None
            before = current_settings(self.device)
            self._restore(set(self._changed))
            after = current_settings(self.device)
            self.last_restore = {"reason": reason, "before": before.as_dict(), "after": after.as_dict(),
                                 "original": self.original.as_dict()}
            log.info("GPU settings restored (%s): %s", reason, after)
            return after

    @property
    def changed(self) -> frozenset[str]:
        """Settings changed and not yet restored (``sm``, ``mem``, ``power``)."""
        return frozenset(self._changed)

    # ---- lifetime -------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            # signal.signal only works in the main thread; elsewhere the with-block still restores.
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # the program chose to ignore it: keep ignoring
            self._previous_handlers[signum] = previous
            signal.signal(signum, self._on_signal)

    def _uninstall_signal_handlers(self) -> None:
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Restore first, then end the way the signal would have: the previous handler if it was a
        Python one (SIGINT's raises KeyboardInterrupt), else exit status 128 + signum (143 for SIGTERM)."""
        name = signal.Signals(signum).name
        log.warning("%s received: restoring GPU settings before exiting", name)
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        try:
            self.restore(reason=name)
        except GpuError as exc:
            # Still end the program as the signal asked; the failure is in the log and the exception chain.
            log.error("GPU settings could not all be restored after %s: %s", name, exc)
        finally:
            self._uninstall_signal_handlers()
        if callable(previous):
            previous(signum, frame)
            return
        raise SystemExit(128 + signum)

    def __enter__(self) -> ClockController:
        if self._entered:
            raise SdbenchError("ClockController is already in use (not re-entrant)")
        self._entered = True
        self._capture_original()
        self._install_signal_handlers()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.restore(reason="exit" if exc_info[0] is None else f"exception {getattr(exc_info[0], '__name__', '?')}")
        finally:
            self._uninstall_signal_handlers()
            self._entered = False

