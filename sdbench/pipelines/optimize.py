"""Optimisation profiles and knobs, applied to a built pipeline (and recorded as applied).

A profile is a named set of knobs. What was applied is read back from the pipeline and returned,
so a record never claims an optimisation that did not take effect.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sdbench.errors import ConfigError, SdbenchError
from sdbench.pipelines.capability import FP8_MIN_CAPABILITY, _cc
from sdbench.pipelines.quiet import quiet_call_context
from sdbench.spec.profiles import (
    _CUDA_GRAPH_MODES,
    resolve_knobs,
)

# Inductor's notice at the first compile on a TF32-capable GPU. Enabling TF32 as it suggests would change
# the numbers of every fp32 case (a 10-bit mantissa in the matmuls) behind the dtype the record names, so
# the notice is silenced in the pipeline calls (where compilation happens) and fp32 stays fp32.
TF32_NOTICE = "TensorFloat32 tensor cores for float32 matrix multiplication available but not enabled"



def compute_capability(device: str) -> tuple[int, int] | None:
    """torch's compute capability of a CUDA device string; None for anything else (apply()'s last check)."""
    if not device.startswith("cuda"):
        return None
    return torch.cuda.get_device_capability(torch.device(device))


def _check_fp8(device: str) -> None:
    cc = compute_capability(device)
    if cc is not None and cc < FP8_MIN_CAPABILITY:
        raise ConfigError("fp8_unet", "on", "off", reason=f"fp8 matmuls need compute capability "
                          f"{_cc(FP8_MIN_CAPABILITY)}+, this GPU has {_cc(cc)}")


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


def compile_cache_dir() -> Path:
    """Where compiled artefacts persist across runs: $SDBENCH_CACHE_DIR/inductor (default ~/.cache/sdbench/inductor).

    A TORCHINDUCTOR_CACHE_DIR the user set (before sdbench was imported) wins, so a site can share one
    cache between tools; torch's own default (a per-user folder under /tmp) does not.
    """
    from sdbench import USER_INDUCTOR_CACHE_DIR
    from sdbench.files import cache_root

    return Path(USER_INDUCTOR_CACHE_DIR or cache_root() / "inductor")


def _enable_compile_cache(attention: str = "sdpa") -> Path:
    path = compile_cache_dir()
    if attention in _SDPA_BACKENDS:
        # A pinned SDPA backend is chosen while tracing, outside what the caches key on: keep its
        # compiled graphs apart, or a graph traced with another backend could be reused.
        path = path / f"sdpa-{attention}"
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return path


def apply(pipe: Any, *, profile: str, attention: str, offload: str, device: str, knobs: str = "") -> Applied:
    """Apply a profile (plus knob overrides), an attention backend and an offload mode to `pipe`, in place."""
    k = resolve_knobs(profile, knobs)
    notes: list[str] = []
    if attention == "sliced":
        pipe.enable_attention_slicing()
    elif attention == "xformers":
        ok, why = xformers_status()
        if not ok:
            raise SdbenchError(f"attention backend 'xformers' is unavailable: {why}; use --attention sdpa")
        pipe.enable_xformers_memory_efficient_attention()
    if k.fuse_qkv:
        pipe.fuse_qkv_projections()
    if k.fp8_unet:
        from sdbench.pipelines import fp8

        _check_fp8(device)
        scaling = "row-wise" if k.fp8_rowwise else "per-tensor"
        if k.fp8_torchao:
            n, version = fp8.convert_unet_torchao(pipe.unet, k.fp8_rowwise)
            notes.append(f"fp8 (e4m3, {scaling} dynamic scales) through torchao {version}'s "
                         f"Float8DynamicActivationFloat8WeightConfig in {n} UNet linears")
        else:
            notes.append(f"fp8 (e4m3, {scaling} scales) in {fp8.convert_unet(pipe.unet, k.fp8_rowwise)} UNet linears")
    if k.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if k.vae_slicing:
        pipe.vae.enable_slicing()
    if k.vae_tiling:
        pipe.vae.enable_tiling()
    if k.vae_upcast is not None and "force_upcast" in pipe.vae.config:
        pipe.vae.register_to_config(force_upcast=k.vae_upcast)
        if not k.vae_upcast:
            notes.append("VAE decodes in the pipeline dtype (with real SDXL weights use an fp16-safe VAE such as the fp16-fix one)")
    if k.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if k.compile_unet or k.compile_vae or k.compile_text:
        notes.append(f"compile cache: {_enable_compile_cache(attention)}")
        _forget_graphs_compiled_otherwise({"attention": attention, "freezing": k.freezing}, notes)
        if k.inductor_tuning:
            import torch._inductor.config as inductor_config

            inductor_config.conv_1x1_as_mm = True
            inductor_config.coordinate_descent_tuning = True
            inductor_config.coordinate_descent_check_all_directions = True
            inductor_config.epilogue_fusion = False
        if k.freezing:
            notes.append("inductor freezing: the compiled modules' weights are constants of their graphs "
                         "(folded copies kept beside the parameters; a new pipeline recompiles)")
    if k.compile_unet in _CUDA_GRAPH_MODES or (k.compile_unet and k.freezing):
        _compile_forward(pipe.unet, k.compile_unet, k.fullgraph, copy_outputs=False, freezing=k.freezing)
    elif k.compile_unet:
        # Module.compile keeps the module's type and attributes, which diffusers reads.
        _static_shapes()
        pipe.unet.compile(mode=k.compile_unet, fullgraph=k.fullgraph, dynamic=False)
    if k.compile_vae:
        pipe.vae.decode = _compiled(pipe.vae.decode, k.compile_vae, k.fullgraph, k.freezing)
    if k.compile_text:
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                _compile_forward(getattr(pipe, name), k.compile_text, k.fullgraph, copy_outputs=True,
                                 freezing=k.freezing)
    if attention in _SDPA_BACKENDS:
        # The pin is for the UNet's attention. CLIP passes a causal mask, which flash cannot take, and
        # the VAE's one attention layer has a single 512-wide head, beyond flash and cuDNN: both keep
        # torch's own choice. The wrapper sits outside any compiled function, so graphs are traced
        # under the backends that really run.
        kept = [name for name in ("text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None]
        for name in kept:
            _run_with_default_sdpa(getattr(pipe, name), "forward")
        for method in ("decode", "encode"):
            _run_with_default_sdpa(pipe.vae, method)
        notes.append(f"SDPA pinned to {attention} in the UNet; {', '.join(kept + ['vae'])} keep torch's default choice")
    # Offload last: accelerate's hooks keep the forward they found and put it back each time diffusers
    # re-arms them after a call, so wrappers installed before them survive (ones installed after would not).
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    processor = _attention_processor_name(pipe)
    call_context = quiet_call_context(pipe, attention_context(attention), ignore_warnings=[(TF32_NOTICE, UserWarning)])
    return Applied(profile, attention, processor, offload, asdict(k), call_context, notes)


_compiled_with: dict[str, Any] | None = None  # the settings of this process's compiled graphs


def _forget_graphs_compiled_otherwise(settings: dict[str, Any], notes: list[str]) -> None:
    """Drop this process's compiled graphs when a setting they were traced under changes.

    Dynamo reuses a compiled graph for another module instance of the same shapes (parameters are
    inputs, not guards), and what was fixed when that graph was traced goes with it: the SDPA backend
    (a pipeline pinned to another backend would silently run the old one), and whether the weights were
    frozen (a frozen pipeline would run the unfrozen graph of the pipeline before, and be measured as
    frozen). Dynamo's guards check neither."""
    global _compiled_with
    if _compiled_with is not None and _compiled_with != settings:
        torch._dynamo.reset()
        was = ", ".join(f"{k}={v}" for k, v in _compiled_with.items())
        now = ", ".join(f"{k}={v}" for k, v in settings.items())
        notes.append(f"compiled graphs of {was} dropped (recompiled for {now})")
    _compiled_with = dict(settings)


# Shapes one process may compile each function for (Dynamo's default is 8, and 256 over all functions): a
# batch sweep or a largest-batch search compiles a graph per batch size, and the pipelines of a suite's
# matrix (models, resolutions, batches) share their classes' forward entries.
RECOMPILE_LIMIT = 256


def _static_shapes() -> None:
    """Compile one graph per shape, and fail loudly past the recompile limit.

    ``dynamic=False`` at each compile: by default Dynamo recompiles a function with a symbolic batch
    dimension the second time the batch changes, so in one process a batch sweep would measure batch 1
    with a graph specialised to it and every later batch with a dynamic-shape graph (other kernels, other
    autotuning), and a batch's number would depend on what ran before it. Each batch now gets the graph a
    fresh process at that batch would compile. Past the recompile limit Dynamo silently runs the function
    eagerly; a case measured that way would be labelled compiled, so the limit is raised and hitting it
    is made an error (the case fails with Dynamo's message instead)."""
    dynamo_config = torch._dynamo.config
    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
    if hasattr(dynamo_config, "accumulated_recompile_limit"):
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit,
                                                        4 * RECOMPILE_LIMIT)
    if hasattr(dynamo_config, "fail_on_recompile_limit_hit"):
        dynamo_config.fail_on_recompile_limit_hit = True


def _compiled(fn: Callable[..., Any], mode: str, fullgraph: bool, freezing: bool) -> Callable[..., Any]:
    """torch.compile of `fn`; with `freezing`, each call runs under inductor's freezing.

    Freezing makes the weights constants of the compiled graph (no parameter inputs to pass or check at
    each call, and weight-side work folded at compile time). It is set around the call, where Dynamo
    traces and inductor compiles, not process-wide: Dynamo reads the global setting while tracing to guard
    on the parameters' addresses, so another module instance recompiles instead of reusing a graph with
    the first one's weights folded in; a global switch would also reach every later compile. It applies
    only without autograd (sdbench's calls run under inference mode).
    """
    _static_shapes()
    compiled = torch.compile(fn, mode=mode, fullgraph=fullgraph, dynamic=False)
    if not freezing:
        return compiled
    import torch._inductor.config as inductor_config

    def frozen(*args: Any, **kwargs: Any) -> Any:
        # Set and put back directly: this runs at every UNet call, inside the measured window, and
        # config.patch() costs about three times as much (27 against 10 us a call on the 2-core host).
        was = inductor_config.freezing
        inductor_config.freezing = True
        try:
            return compiled(*args, **kwargs)
        finally:
            inductor_config.freezing = was

    return frozen


def _compile_forward(module: Any, mode: str, fullgraph: bool, copy_outputs: bool, freezing: bool = False) -> None:
    """Compile `module.forward` (the module keeps its type and attributes, which diffusers reads); under
    CUDA graphs every call starts a graph step of its own, and hands back copies if `copy_outputs`.

    CUDA-graph trees record a graph per path through the compiled functions of one step, and a replay
    overwrites the previous replay's outputs. The UNet: after text encoders under CUDA graphs, its first
    call of a pipeline call would be recorded again as their child (seconds of warm-up, a second copy of
    the graph); diffusers uses a UNet output before the next UNet call, so a step per call is safe. The
    text encoders: SDXL keeps the first encoder's hidden states while the second (and the negative
    prompt) run, so they hand back copies (a few hundred kilobytes per prompt).
    """
    compiled = _compiled(module.forward, mode, fullgraph, freezing)
    graphs = mode in _CUDA_GRAPH_MODES

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not graphs:
            return compiled(*args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        return _cloned(out) if copy_outputs else out

    forward.compiled_mode = mode  # type: ignore[attr-defined]
    forward.graph_safe = graphs  # type: ignore[attr-defined]
    module.forward = forward


def _run_with_default_sdpa(obj: Any, method: str) -> None:
    """Run `obj.method` with every SDPA backend allowed (torch's own choice), whatever the call pins."""
    inner = getattr(obj, method)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _default_sdpa():
            return inner(*args, **kwargs)

    wrapped.default_sdpa = True  # type: ignore[attr-defined]
    setattr(obj, method, wrapped)


def _default_sdpa() -> contextlib.AbstractContextManager[Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, b) for b in _SDPA_BACKENDS.values()])


def _cloned(out: Any) -> Any:
    """Copies of every tensor in a (nested) model output; ModelOutput is a dict and keeps its type."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_cloned(o) for o in out)
    if isinstance(out, dict):
        for key in list(out.keys()):
            out[key] = _cloned(out[key])
    return out


def _attention_processor_name(pipe: Any) -> str:
    names = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})
    return ",".join(names)
