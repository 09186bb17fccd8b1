"""Optimisation profiles: the named sets of knobs (channels_last, fused QKV, torch.compile modes, fp8...) and
the parser for ``--knobs name=value,...`` overrides. No torch import: a Case validates its profile and knobs
without it; :mod:`sdbench.pipelines.optimize` applies them to a pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from types import MappingProxyType
from typing import Any

from sdbench.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
@dataclass(frozen=True)
class Knobs:
    """Every optimisation sdbench can apply; a profile is a named set of them."""

    channels_last: bool = False
    fuse_qkv: bool = False
    compile_unet: str | None = None  # torch.compile mode, or None for eager
    compile_vae: str | None = None  # compiles vae.decode
    compile_text: str | None = None  # the text encoder(s)
    fullgraph: bool = False
    vae_upcast: bool | None = None  # None: diffusers' default (SDXL's VAE decodes in fp32); False: decode in the pipeline dtype
    vae_slicing: bool = False
    vae_tiling: bool = False
    inductor_tuning: bool = False  # coordinate-descent tuning, 1x1 convs as matmuls (diffusers' SDXL recipe)
    cudnn_benchmark: bool = False
    freezing: bool = False  # inductor freezing: compiled modules' weights become constants of their graphs
    fp8_unet: bool = False  # e4m3 matmuls in the UNet's transformer blocks (compute capability 8.9+)
    fp8_rowwise: bool = False  # with fp8_unet: one scale per token and per output channel, not per tensor
    fp8_torchao: bool = False  # with fp8_unet: torchao's float8 inference path instead of sdbench's own (sdbench[fp8])

    def changed(self) -> dict[str, Any]:
        """Only the knobs that differ from eager (for ids and records)."""
        base = Knobs()
        return {k: v for k, v in asdict(self).items() if getattr(base, k) != v}


PROFILES: Mapping[str, Knobs] = MappingProxyType(
    {
        "eager": Knobs(),
        "channels-last": Knobs(channels_last=True, fuse_qkv=True),
        "compile": Knobs(compile_unet="default", compile_vae="default"),
        # The well-known combination (torch.compile with CUDA graphs, fused QKV, channels_last,
        # compiled VAE decode): the bar that `max` has to clear.
        "reduce-overhead": Knobs(channels_last=True, fuse_qkv=True, compile_unet="reduce-overhead", compile_vae="default"),
        # The fastest correct combination known to sdbench: BENCHMARKS.md shows what each part buys.
        "max": Knobs(channels_last=True, fuse_qkv=True, compile_unet="reduce-overhead", compile_vae="default",
                     compile_text="reduce-overhead", vae_upcast=False),
        # `max` with the UNet's transformer-block matmuls in fp8 (e4m3): changes the output beyond fp16
        # rounding, so its fidelity is reported beside its speed.
        "fp8": Knobs(channels_last=True, fuse_qkv=True, compile_unet="reduce-overhead", compile_vae="default",
                     compile_text="reduce-overhead", vae_upcast=False, fp8_unet=True),
        # `fp8` through torchao's float8 inference path (Float8DynamicActivationFloat8WeightConfig: dynamic
        # activation scales, the quantisation fused by inductor into its producer) on the same linears: the
        # two fp8 implementations side by side. Needs torchao (pip install 'sdbench[fp8]') and a CUDA GPU 8.9+.
        "fp8-torchao": Knobs(channels_last=True, fuse_qkv=True, compile_unet="reduce-overhead", compile_vae="default",
                             compile_text="reduce-overhead", vae_upcast=False, fp8_unet=True, fp8_torchao=True),
    }
)

_MODE_KNOBS = {"compile_unet", "compile_vae", "compile_text"}
_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def parse_knobs(text: str) -> dict[str, Any]:
    """Parse `name=value,...` knob overrides (e.g. `channels_last=on,compile_unet=max-autotune`)."""
    out: dict[str, Any] = {}
    names = sorted(f.name for f in fields(Knobs))
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip().replace("-", "_"), value.strip().lower()
        if name not in names:
            raise ConfigError("knob", name, names)
        if not sep:
            value = "on"
        if name in _MODE_KNOBS:
            if value in _FALSE or value == "none":
                out[name] = None
            elif value in COMPILE_MODES:
                out[name] = value
            else:
                raise ConfigError(name, value, ("none",) + COMPILE_MODES)
        elif value in _TRUE:
            out[name] = True
        elif value in _FALSE:
            out[name] = False
        elif name == "vae_upcast" and value in ("default", "auto", "none"):
            out[name] = None
        else:
            raise ConfigError(name, value, "on, off" + (", default" if name == "vae_upcast" else ""))
    return out


def canonical_knobs(text: str) -> str:
    """The knob overrides in a stable order (so equal settings give equal case ids and hashes)."""
    parsed = parse_knobs(text)
    return ",".join(f"{k}={_fmt(v)}" for k, v in sorted(parsed.items()))


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def resolve_knobs(profile: str, knobs: str = "") -> Knobs:
    """The profile's knobs with the case's overrides applied."""
    if profile not in PROFILES:
        raise ConfigError("profile", profile, sorted(PROFILES))
    return replace(PROFILES[profile], **parse_knobs(knobs)) if knobs else PROFILES[profile]
