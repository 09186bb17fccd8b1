"""Optimisation profiles and knobs, applied to a built pipeline (and recorded as applied).

A profile is a named set of knobs. What was applied is read back from the pipeline and returned,
so a record never claims an optimisation that did not take effect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import torch

from sdbench.errors import ConfigError, SdbenchError


@dataclass(frozen=True)
class Knobs:
    channels_last: bool = False
    fuse_qkv: bool = False
    compile_unet: str | None = None  # torch.compile mode, or None for eager
    compile_vae: str | None = None
    compile_fullgraph: bool = False


PROFILES: Mapping[str, Knobs] = MappingProxyType(
    {
        "eager": Knobs(),
        "channels-last": Knobs(channels_last=True, fuse_qkv=True),
        "compile": Knobs(compile_unet="default", compile_vae="default"),
        # The fastest correct combination known to sdbench: see BENCHMARKS.md for what each part buys.
        "max": Knobs(channels_last=True, fuse_qkv=True, compile_unet="max-autotune-no-cudagraphs",
                     compile_vae="max-autotune-no-cudagraphs", compile_fullgraph=True),
    }
)


def compute_capability(device: str) -> tuple[int, int] | None:
    if not device.startswith("cuda"):
        return None
    return torch.cuda.get_device_capability(torch.device(device))


def check_supported(dtype: str, attention: str, offload: str, device: str) -> None:
    """Refuse, with a clear error, a knob the device cannot run (V100: no bf16, no flash attention)."""
    cc = compute_capability(device)
    on_gpu = cc is not None
    if dtype == "bf16" and on_gpu and cc < (8, 0):
        raise ConfigError("dtype", dtype, "fp16, fp32", reason=f"compute capability {cc[0]}.{cc[1]} has no bf16")
    if attention in ("flash", "cudnn") and (not on_gpu or cc < (8, 0)):
        raise ConfigError("attention", attention, "sdpa, efficient, math, sliced",
                          reason="needs an Ampere-or-newer CUDA GPU (compute capability 8.0+)")
    if attention == "efficient" and not on_gpu:
        raise ConfigError("attention", attention, "sdpa, math, sliced", reason="memory-efficient SDPA needs a CUDA GPU")
    if offload != "none" and not on_gpu:
        raise ConfigError("offload", offload, "none", reason="CPU offload moves weights between a GPU and the CPU")


def xformers_status() -> tuple[bool, str]:
    """Whether xformers can run here, and why not: it imports on mismatched torch builds and then has no kernels."""
    try:
        import xformers.ops as xops  # noqa: F401
    except ImportError as exc:
        return False, f"xformers is not installed ({exc})"
    if not torch.cuda.is_available():
        return False, "xformers needs a CUDA GPU"
    try:
        q = torch.randn(1, 8, 1, 64, device="cuda", dtype=torch.float16)
        xops.memory_efficient_attention(q, q, q)
    except (RuntimeError, NotImplementedError) as exc:
        return False, f"xformers has no kernel for this torch/CUDA build ({str(exc).splitlines()[0]})"
    return True, "ok"


_SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH", "cudnn": "CUDNN_ATTENTION"}


def attention_context(attention: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of the context every pipeline call runs in (pins the SDPA backend when asked)."""
    if attention not in _SDPA_BACKENDS:
        return contextlib.nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, _SDPA_BACKENDS[attention])
    return lambda: sdpa_kernel([backend])


@dataclass
class Applied:
    """What was really done to the pipeline; goes into every record."""

    profile: str
    attention: str
    attention_processor: str
    offload: str
    knobs: dict[str, Any]
    call_context: Callable[[], contextlib.AbstractContextManager[Any]]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "attention_backend": self.attention,
            "attention_processor": self.attention_processor,
            "offload": self.offload,
            **{f"knob_{k}": v for k, v in self.knobs.items()},
            "optimization_notes": "; ".join(self.notes),
        }


def apply(pipe: Any, *, profile: str, attention: str, offload: str, device: str) -> Applied:
    """Apply a profile, an attention backend and an offload mode to `pipe` (in place)."""
    if profile not in PROFILES:
        raise ConfigError("profile", profile, sorted(PROFILES))
    knobs = PROFILES[profile]
    notes: list[str] = []
    if attention == "sliced":
        pipe.enable_attention_slicing()
    elif attention == "xformers":
        ok, why = xformers_status()
        if not ok:
            raise SdbenchError(f"attention backend 'xformers' is unavailable: {why}; use --attention sdpa")
        pipe.enable_xformers_memory_efficient_attention()
    if knobs.fuse_qkv:
        pipe.fuse_qkv_projections()
    if knobs.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    if knobs.compile_unet:
        pipe.unet = torch.compile(pipe.unet, mode=knobs.compile_unet, fullgraph=knobs.compile_fullgraph)
    if knobs.compile_vae:
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=knobs.compile_vae, fullgraph=knobs.compile_fullgraph)
    processor = _attention_processor_name(pipe)
    return Applied(profile, attention, processor, offload, asdict(knobs), attention_context(attention), notes)


def _attention_processor_name(pipe: Any) -> str:
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    names = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    return ",".join(names)
