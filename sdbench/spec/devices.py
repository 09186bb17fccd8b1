"""Device strings a user may type: ``cpu``, ``cuda:N``, ``auto`` and ``simulated[:CARD][:key=value...]``.

Parsing lives here, below the device layer, so that a Case can refuse a bad simulated card or option at
construction without importing the simulation; :mod:`sdbench.gpu.simulated` checks at import that its
cards and options are the ones named here.
"""

from __future__ import annotations

from typing import Any

from sdbench.errors import ConfigError

#: The simulated cards (:data:`sdbench.gpu.simulated.CARDS` holds their figures).
SIMULATED_CARD_KEYS: tuple[str, ...] = ("v100", "a100", "h100", "h200")
DEFAULT_SIMULATED_CARD = "h100"

#: Options a device string may carry: ``simulated:a100:noise_cv=0.05:noise_seed=3``.
SIMULATED_DEVICE_OPTIONS: dict[str, type] = {
    "noise_cv": float, "power_noise_cv": float, "noise_seed": int, "outlier_probability": float,
    "outlier_factor": float, "slowdown_rel_per_s": float, "clock_drift_mhz": int, "power_report_lag_s": float,
}


def is_simulated_device(value: Any) -> bool:
    """``simulated`` or ``simulated:CARD[:key=value...]``: CPU compute measured on a simulated GPU."""
    return isinstance(value, str) and (value == "simulated" or value.startswith("simulated:"))


def parse_simulated_device(text: str) -> tuple[str, dict[str, Any]]:
    """``simulated[:CARD][:key=value...]`` -> (card key, SimulatedGpu keyword options).

    Raises :class:`ConfigError` naming the part that is wrong and what is allowed.
    """
    parts = str(text).split(":")
    if parts[0] != "simulated":
        raise ConfigError("device", text, allowed="simulated[:CARD][:key=value...]")
    card = DEFAULT_SIMULATED_CARD
    options: dict[str, Any] = {}
    for i, part in enumerate(parts[1:]):
        if "=" not in part:
            if i != 0:
                raise ConfigError("device", text, reason=f"{part!r}: the card comes first, options are key=value")
            if part not in SIMULATED_CARD_KEYS:
                raise ConfigError("simulated card", part, allowed=sorted(SIMULATED_CARD_KEYS))
            card = part
            continue
        key, _, raw = part.partition("=")
        if key not in SIMULATED_DEVICE_OPTIONS:
            raise ConfigError("simulated device option", key, allowed=sorted(SIMULATED_DEVICE_OPTIONS))
        try:
            options[key] = SIMULATED_DEVICE_OPTIONS[key](raw)
        except ValueError:
            raise ConfigError(f"simulated device option {key}", raw,
                              reason=f"not a valid {SIMULATED_DEVICE_OPTIONS[key].__name__}") from None
    return card, options
