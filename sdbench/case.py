"""A benchmark case: everything that determines what one measurement runs. Validated on construction."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sdbench import settings
from sdbench.errors import ConfigError
from sdbench.settings import (
    ATTENTION_BACKENDS,
    DEVICES_HELP,
    MAX_BATCH,
    MAX_SIDE_PX,
    MAX_STEPS,
    MIN_SIDE_PX,
    OFFLOAD_MODES,
)
from sdbench.spec.devices import is_simulated_device, parse_simulated_device
from sdbench.spec.models import MODELS, get_model
from sdbench.spec.schedulers import SCHEDULERS, get_scheduler_spec
from sdbench.spec.weights import WeightSource

__all__ = ["ATTENTION_BACKENDS", "DEFAULT_PROMPT", "DEVICES_HELP", "MAX_BATCH", "MAX_SIDE_PX", "MAX_STEPS",
           "MIN_SIDE_PX", "OFFLOAD_MODES", "Case", "is_simulated_device", "resolve_device"]

DEFAULT_PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed, 8k"
# The Case fields whose allowed values are one row of the settings table each, checked in this order
# (model and scheduler are checked first, by their own registries; the rest below need the model or device).
_TABLE_FIELDS = ("dtype", "profile", "knobs", "attention", "offload", "height", "width", "steps", "batch_size",
                 "guidance_scale", "timestep_spacing", "sm_clock_mhz", "mem_clock_mhz", "power_limit_w", "seed",
                 "weights")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resolve_device(value: str) -> str:
    """`auto` becomes `cuda:0` when a CUDA GPU is visible, else `cpu`; bad values raise ConfigError."""
    import torch

    if value == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return value
    if is_simulated_device(value):
        parse_simulated_device(value)  # a bad card or option is an error now, naming what is allowed
        return value
    if value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError("device", value, "cpu, simulated (this machine has no CUDA GPU)",
                              reason="no CUDA GPU is visible to torch")
        index = 0 if value == "cuda" else int(value[5:])
        if index >= torch.cuda.device_count():
            raise ConfigError("device", value, [f"cuda:{i}" for i in range(torch.cuda.device_count())])
        return f"cuda:{index}"
    raise ConfigError("device", value, DEVICES_HELP)


@dataclass(frozen=True)
class Case:
    """One configuration to measure. Build with `Case.create(model, ...)`, which fills model defaults."""

    model: str
    scheduler: str
    steps: int
    height: int
    width: int
    guidance_scale: float
    batch_size: int = 1
    dtype: str = "fp16"
    profile: str = "eager"
    knobs: str = ""  # overrides on the profile, e.g. "channels_last=on,compile_unet=max-autotune"
    attention: str = "sdpa"
    offload: str = "none"
    weights: str = "auto"
    seed: int = 0
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None
    device: str = "cpu"
    strength: float | None = None
    timestep_spacing: str | None = None  # override of the model's default spacing
    sm_clock_mhz: int | None = None  # requested SM clock lock (None: the card as found)
    mem_clock_mhz: int | None = None
    power_limit_w: int | None = None
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def create(cls, model: str, **kwargs: Any) -> Case:
        """A case for `model` with its defaults; keyword arguments given as None keep the default."""
        spec = get_model(model)
        known = {f.name for f in fields(cls)} | {"resolution"}
        unknown = set(kwargs) - known
        if unknown:
            raise ConfigError("case field", sorted(unknown)[0], sorted(known))
        given = {k: v for k, v in kwargs.items() if v is not None}
        side = given.pop("resolution", None)
        values: dict[str, Any] = {
            "scheduler": spec.default_scheduler,
            "steps": spec.default_steps,
            "height": side or spec.default_resolution,
            "width": side or spec.default_resolution,
            "guidance_scale": spec.default_guidance,
            "strength": spec.default_strength,
        }
        values.update(given)
        return cls(model=model, **values)

    def validate(self) -> None:
        """Check every field (one ConfigError naming the field, the value and what is allowed).

        Each field's own range or choices are its row in the settings table (`sdbench.settings`); the rules
        that join fields (a distilled model's step counts, img2img strength, fp16 on the CPU) are here."""
        spec = get_model(self.model)
        get_scheduler_spec(self.scheduler)
        for name in _TABLE_FIELDS:
            settings.check(f"case.{name}", getattr(self, name))
        from sdbench.spec.profiles import canonical_knobs

        if self.knobs != canonical_knobs(self.knobs):
            # frozen dataclass: store the canonical spelling so equal settings give equal ids
            object.__setattr__(self, "knobs", canonical_knobs(self.knobs))
        if spec.allowed_steps and self.steps not in spec.allowed_steps:
            raise ConfigError("steps", self.steps, spec.allowed_steps,
                              reason=f"{spec.key} is distilled for these step counts")
        if spec.img2img:
            if not _is_number(self.strength) or not 0 < self.strength <= 1:
                raise ConfigError("strength", self.strength, "a number in (0, 1]")
        elif self.strength is not None:
            raise ConfigError("strength", self.strength, "unset", reason=f"{spec.key} is text-to-image")
        if not isinstance(self.device, str) or not (re.fullmatch(r"cpu|cuda:\d+", self.device)
                                                     or is_simulated_device(self.device)):
            raise ConfigError("device", self.device, "cpu, simulated[:CARD], cuda:N")
        if self.dtype == "fp16" and (self.device == "cpu" or is_simulated_device(self.device)):
            # CPU fp16 kernels are partial and slow; refuse rather than measure something odd.
            raise ConfigError("dtype", self.dtype, "fp32, bf16", reason="fp16 is a GPU dtype; on the CPU use fp32")
        WeightSource.parse(self.weights)  # a missing local folder is an error now, not at build time

    # --- derived -------------------------------------------------------------------------------
    @property
    def spec(self):  # noqa: ANN201 - ModelSpec, kept light to avoid an import cycle in annotations
        return MODELS[self.model]

    @property
    def uses_cfg(self) -> bool:
        """Classifier-free guidance doubles the UNet batch; turbo/lightning run without it."""
        return self.guidance_scale > 1.0

    @property
    def unet_evaluations_per_step(self) -> int:
        return SCHEDULERS[self.scheduler].order

    @property
    def compute_device(self) -> str:
        return "cpu" if is_simulated_device(self.device) else self.device

    def with_(self, **changes: Any) -> Case:
        return replace(self, **changes)

    def features(self) -> dict[str, Any]:
        """The case as flat, JSON-ready columns (feeds records, exports and the power-model table)."""
        d = asdict(self)
        d["tags"] = list(self.tags)
        d["resolution"] = f"{self.width}x{self.height}"
        d["pixels"] = self.width * self.height
        d["cfg"] = self.uses_cfg
        d["family"] = self.spec.family
        d["prediction_type"] = self.spec.prediction_type
        d["case_id"] = self.case_id
        d["case_hash"] = self.case_hash
        return d

    @property
    def case_id(self) -> str:
        """A short readable id (pytest parameter ids, file names)."""
        parts = [self.model, self.scheduler, f"{self.width}x{self.height}", f"b{self.batch_size}",
                 f"{self.steps}st", self.dtype, self.profile]
        if self.knobs:
            parts.append(self.knobs.replace("=", "-").replace(",", "+"))
        if self.attention != "sdpa":
            parts.append(self.attention)
        if self.offload != "none":
            parts.append(f"offload-{self.offload}")
        if self.sm_clock_mhz:
            parts.append(f"sm{self.sm_clock_mhz}")
        if self.mem_clock_mhz:
            parts.append(f"mem{self.mem_clock_mhz}")
        if self.power_limit_w:
            parts.append(f"pl{self.power_limit_w}")
        return "-".join(parts)

    @property
    def case_hash(self) -> str:
        """Hash of what is measured (asv-style): results of a changed case are never compared with old ones."""
        d = asdict(self)
        d.pop("tags")
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]
