"""Typed errors. Every user-facing failure is one of these, so front doors can print one clear line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class SdbenchError(Exception):
    """Base class of every error sdbench raises on purpose."""


class ConfigError(SdbenchError, ValueError):
    """A bad input: names the field, the value and what is allowed."""

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


class DeviceUnavailableError(SdbenchError):
    """The requested device (GPU, NVML, simulated GPU) cannot be used here."""
