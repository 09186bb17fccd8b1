"""Typed errors. Every user-facing failure is one of these, so front doors can print one clear line.

Each class carries the exit code the command line ends with (`exit_code`); the table is in
`EXIT_CODES` and in `sdbench --help`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

EXIT_OK = 0
EXIT_REGRESSION = 1  # a finding, not a failure: compare --fail-on, quality --fail-on-flag, failed sweep points
EXIT_USAGE = 2  # bad input: a flag, value or file that cannot be used
EXIT_ENVIRONMENT = 3  # the device, its driver or NVML, or the weights this run needs are not available here
EXIT_OUT_OF_MEMORY = 4  # the device ran out of memory for this case
EXIT_BROKEN_PIPE = 141  # stdout was closed by its reader (`| head`): 128 + SIGPIPE, as other Unix tools end
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_REGRESSION, "a finding: compare found a significant regression beyond --fail-on (also quality "
                      "--fail-on-flag, a sweep with failed points, an incomplete workers/slurm run)"),
    (EXIT_USAGE, "usage error or bad input (one line names the flag or field, the value and what is allowed)"),
    (EXIT_ENVIRONMENT, "environment: the GPU, its driver or NVML, or the real weights asked for are not "
                       "available here (also `workers verify`: NVML and torch see different GPUs)"),
    (EXIT_OUT_OF_MEMORY, "out of memory (one line names the case, batch, free memory and what to try)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_BROKEN_PIPE, "stdout closed by its reader (e.g. `| head`); ends quietly"),
)


class SdbenchError(Exception):
    """Base class of every error sdbench raises on purpose."""

    exit_code: int = EXIT_USAGE


class ConfigError(SdbenchError, ValueError):
    """A bad input: names the field, the value and what is allowed."""

    exit_code = EXIT_USAGE

    def __init__(self, field: str, value: Any, allowed: str | Iterable[Any] | None = None, reason: str = "") -> None:
        self.field = field
        self.value = value
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(str(a) for a in allowed)
        self.allowed = allowed
        self.reason = reason
        msg = f"invalid {field}: {value!r}"
        if reason:
            msg += f" ({reason})"
        if allowed:
            msg += f"; allowed: {allowed}"
        super().__init__(msg)


class WeightsNotFoundError(SdbenchError):
    """Real weights were asked for and are not where they were looked for."""

    exit_code = EXIT_ENVIRONMENT


class DeviceUnavailableError(SdbenchError):
    """The requested device (GPU, NVML, simulated GPU) cannot be used here."""

    exit_code = EXIT_ENVIRONMENT


class OutOfMemory(SdbenchError):
    """A case did not fit in the device's memory; the message says what to try instead."""

    exit_code = EXIT_OUT_OF_MEMORY


#: What an allocator's RuntimeError says when it ran out (torch's CPU allocator, older CUDA builds).
OOM_MESSAGE_MARKERS = ("out of memory", "can't allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's OOM error (and the simulated GPU's, a subclass) and for RuntimeErrors whose message says
    the allocator ran out. torch is consulted only when it is already imported: an error raised before torch was
    needed is no torch OOM."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(marker in text for marker in OOM_MESSAGE_MARKERS)
    return False
