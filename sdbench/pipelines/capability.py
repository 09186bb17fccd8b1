"""What the device a run uses can do, and the rules that refuse a case it cannot run, before anything is built.

A :class:`DeviceCapability` describes the device a case runs on: its compute capability, its memory, its
name, whether it is simulated, and where its kernels execute. It comes from the device itself
(:func:`device_capability`): ``gpu.info()`` of the NVML device or of a :class:`~sdbench.gpu.SimulatedGpu`
the run measures with, torch's view of a CUDA device without NVML, a simulated card's published figures
(:data:`sdbench.gpu.simulated.CARDS`) from the device string alone, or the CPU. Every rule is then a pure
function of that description and the case, so "bf16 on a V100 is refused" is tested on any machine
(``simulated:v100``), and a plan or a sweep that names its card can be checked when it is made.

The rules (:func:`check_case`; the knob rules are :func:`check_supported`):

=====================================  ===================================================================
what                                   refused when
=====================================  ===================================================================
``--dtype bf16``                       compute capability < 8.0 (V100: no bf16 tensor cores)
fp8 (profile ``fp8``, knobs            compute capability < 8.9 (e4m3 tensor cores: Ada, Hopper)
``fp8_unet``/``fp8_rowwise``)
``--attention flash`` / ``cudnn``      compute capability < 8.0, or on the CPU; ``cudnn`` also on a
                                       simulated card (its kernels run on the CPU, which has none)
``--attention efficient``              kernels that are not CUDA (the CPU, a simulated card)
``--offload model|sequential``         kernels that are not CUDA; or with a CUDA-graph profile
memory                                 a lower bound of the case's peak memory exceeds the card's total
                                       (:func:`memory_lower_bound`); raised as :class:`WillNotFit`
=====================================  ===================================================================

On a simulated card the dtype, attention and fp8 rules are the simulated card's (the dtype is what that
card would run), while the tiny models' real computation runs on the CPU: CPU-only limits apply as
well (no fp16 there, see :class:`sdbench.case.Case`; no memory-efficient SDPA; no offload). A rule that
needs a figure the device does not report (a CUDA device this machine cannot see) is not applied; the
run checks again on the machine that has the card.

Memory is refused only when the case certainly cannot fit: :func:`memory_lower_bound` counts the
weights on the meta device (nothing is allocated) and only the activations that must exist at once,
so the real peak is always above it (see its docstring). A case that passes may still run out of memory
at run time, which is then recorded as out of memory as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdbench.errors import ConfigError, OutOfMemory
from sdbench.spec.profiles import _CUDA_GRAPH_MODES, PROFILES, Knobs, parse_knobs, resolve_knobs

if TYPE_CHECKING:
    from sdbench.case import Case

__all__ = [
    "BF16_MIN_CAPABILITY",
    "CPU",
    "FLASH_MIN_CAPABILITY",
    "FP8_MIN_CAPABILITY",
    "DeviceCapability",
    "MemoryEstimate",
    "WillNotFit",
    "check_case",
    "check_memory",
    "device_capability",
    "memory_lower_bound",
]

BF16_MIN_CAPABILITY = (8, 0)  # bf16 tensor cores: Ampere and newer
FP8_MIN_CAPABILITY = (8, 9)  # e4m3 tensor cores: Ada and Hopper
FLASH_MIN_CAPABILITY = (8, 0)  # FlashAttention-2 kernels (and cuDNN attention): Ampere and newer

_GIB = 2**30
_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class DeviceCapability:
    """What the device a case runs on can do. ``None`` means the device does not report the figure.

    ``kernels`` is where the case's kernels execute: ``"cuda"`` on a real GPU, ``"cpu"`` on the CPU and
    on a simulated card (whose figures are those of the card, its computation the CPU's). ``source``
    says where the figures were read (``NVML``, ``torch.cuda``, ``simulated card``, ``cpu``).
    """

    device: str
    name: str
    compute_capability: tuple[int, int] | None
    memory_total_bytes: int | None
    simulated: bool
    kernels: str
    source: str

    @property
    def is_gpu(self) -> bool:
        """A GPU, real or simulated (the CPU is not)."""
        return self.simulated or self.kernels == "cuda"

    @property
    def cc_text(self) -> str:
        """``"7.0"``, or ``"unknown"``."""
        cc = self.compute_capability
        return "unknown" if cc is None else f"{cc[0]}.{cc[1]}"

    def describe(self) -> str:
        """``Tesla V100-SXM2-32GB (simulated) (compute capability 7.0, 31.7 GiB)``, for messages."""
        parts = []
        if self.compute_capability is not None:
            parts.append(f"compute capability {self.cc_text}")
        if self.memory_total_bytes is not None:
            parts.append(f"{self.memory_total_bytes / _GIB:.1f} GiB")
        return f"{self.name} ({', '.join(parts)})" if parts else self.name

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the compute capability as a list)."""
        return {"device": self.device, "name": self.name,
                "compute_capability": None if self.compute_capability is None else list(self.compute_capability),
                "memory_total_bytes": self.memory_total_bytes, "simulated": self.simulated, "kernels": self.kernels,
                "source": self.source}


#: The CPU: no compute capability, no card memory (host RAM is not what these rules are about).
CPU = DeviceCapability("cpu", "CPU", None, None, False, "cpu", "cpu")


def _from_info(device: str, info: Any, simulated: bool, source: str) -> DeviceCapability:
    cc = info.compute_capability
    return DeviceCapability(device, str(info.name), None if cc is None else (int(cc[0]), int(cc[1])),
                            None if info.memory_total_bytes is None else int(info.memory_total_bytes),
                            bool(simulated), "cpu" if simulated else "cuda", source)


def _from_card(device: str, card: Any) -> DeviceCapability:
    return DeviceCapability(device, card.name, tuple(card.compute_capability), int(card.memory_total_bytes), True,
                            "cpu", f"simulated card {card.key!r} (sdbench.gpu.simulated.CARDS)")


def device_capability(device: str, gpu: Any = None) -> DeviceCapability:
    """The capability of ``device`` (a case's device string), read from the device the run uses.

    ``gpu``: the NVML or simulated device that measures the run (``Bench.gpu``), when there is one; its
    ``info()`` wins (a simulated card with overridden memory reports that memory). Without it a simulated
    device string gives its card's published figures and a CUDA device torch's view of it (a CUDA device
    this machine cannot see gives a capability with unknown figures, whose rules are then not applied).
    """
    from sdbench.case import is_simulated_device

    if device == "cpu":
        return CPU
    if is_simulated_device(device):
        if gpu is not None and getattr(gpu, "simulated", False):
            from sdbench.gpu.base import GpuError

            try:
                return _from_info(device, gpu.info(), True, "simulated GPU info()")
            except GpuError:
                card = getattr(gpu, "card", None)  # info() switched off by an injected fault: its card is known
                if card is not None:
                    return _from_card(device, card)
        from sdbench.gpu.simulated import CARDS, parse_simulated_device

        key, _options = parse_simulated_device(device)
        return _from_card(device, CARDS[key])
    if device == "cuda" or device.startswith("cuda:"):
        if gpu is not None and not getattr(gpu, "simulated", False):
            from sdbench.gpu.base import GpuError

            try:
                cap = _from_info(device, gpu.info(), False, "NVML")
            except GpuError:
                cap = None
            if cap is not None and cap.compute_capability is not None and cap.memory_total_bytes is not None:
                return cap
        return _torch_capability(device)
    raise ConfigError("device", device, "cpu, cuda:N, simulated[:CARD]")


def _torch_capability(device: str) -> DeviceCapability:
    import torch

    if not torch.cuda.is_available():
        return DeviceCapability(device, f"{device} (not visible on this machine)", None, None, False, "cuda", "unknown")
    props = torch.cuda.get_device_properties(torch.device(device))
    return DeviceCapability(device, str(props.name), (int(props.major), int(props.minor)), int(props.total_memory),
                            False, "cuda", "torch.cuda")


# --- memory --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryEstimate:
    """A lower bound of a case's peak device memory: resident weights plus the activations that must
    coexist in the larger of the UNet step and the VAE decode. Bytes; ``detail`` says what was counted."""

    weights_bytes: int
    unet_activation_bytes: int
    vae_activation_bytes: int
    detail: str

    @property
    def activation_bytes(self) -> int:
        return max(self.unet_activation_bytes, self.vae_activation_bytes)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes


def _tile_side(vae_config: Any, side: int) -> int:
    """The side a tiled VAE decode works on: diffusers tiles at ``vae.config.sample_size`` pixels."""
    size = vae_config.get("sample_size", side)
    if isinstance(size, (list, tuple)):
        size = max(size)
    return min(side, int(size))


def memory_lower_bound(model: str, height: int, width: int, batch_size: int, cfg: bool, dtype: str,
                       offload: str = "none", vae_slicing: bool = False, vae_tiling: bool = False,
                       vae_upcast: bool | None = None, fp8_unet: bool = False) -> MemoryEstimate:
    """Bytes the case needs at least on the device, whatever the kernels do.

    * weights: every parameter of the pipeline in ``dtype`` (counted on the meta device by
      :func:`sdbench.pipelines.build.pipeline_weight_bytes`); 1 byte each with fp8 (no weight is smaller);
      none with CPU offload (the resident part is not counted).
    * UNet step: its first ResNet block holds its input (``block_out_channels[0]`` channels at latent
      resolution, for the UNet batch: twice the images with CFG) while its first convolution writes
      an output of the same size: two such tensors.
    * VAE decode: the last up block's first ResNet holds its input (at least ``block_out_channels[0]``
      channels at full resolution, for every image decoded at once: 1 with ``vae_slicing``; a tile of
      ``vae.config.sample_size`` pixels with ``vae_tiling``) while writing its first convolution's output
      of ``block_out_channels[0]`` channels: two such tensors, in fp32 where diffusers upcasts an fp16
      VAE (``force_upcast``, unless ``vae_upcast`` is off).

    Not counted, so the real peak lies above: every other live tensor, attention scores, the CUDA
    context and allocator fragmentation, the text encoders' activations.
    """
    from sdbench.pipelines.build import pipeline_weight_bytes
    from sdbench.spec.models import get_model

    spec = get_model(model)
    element = _DTYPE_BYTES[dtype]
    if offload != "none":
        weights, weights_text = 0, "weights not counted (CPU offload)"
    elif fp8_unet:
        weights = pipeline_weight_bytes(model, dtype) // element  # one byte per parameter at least
        weights_text = f"weights {weights / _GIB:.2f} GiB (fp8: counted at 1 byte per parameter)"
    else:
        weights = pipeline_weight_bytes(model, dtype)
        weights_text = f"weights {weights / _GIB:.2f} GiB ({dtype})"
    factor = spec.vae_scale_factor
    unet_batch = batch_size * (2 if cfg else 1)
    unet_c0 = int(spec.unet["block_out_channels"][0])
    unet = 2 * unet_batch * unet_c0 * (height // factor) * (width // factor) * element
    vae_c0 = int(spec.vae["block_out_channels"][0])
    upcast = dtype == "fp16" and bool(spec.vae.get("force_upcast")) and vae_upcast is not False
    vae_element = 4 if upcast else element
    images = 1 if vae_slicing else batch_size
    h, w = (_tile_side(spec.vae, height), _tile_side(spec.vae, width)) if vae_tiling else (height, width)
    vae = 2 * images * vae_c0 * h * w * vae_element
    detail = (f"{weights_text} + the larger of UNet step activations {unet / _GIB:.2f} GiB (2 x {unet_batch} x "
              f"{unet_c0} ch x {height // factor}x{width // factor}) and VAE decode activations {vae / _GIB:.2f} GiB "
              f"(2 x {images} x {vae_c0} ch x {h}x{w}{', fp32 upcast' if upcast else ''})")
    return MemoryEstimate(int(weights), int(unet), int(vae), detail)


class WillNotFit(OutOfMemory):
    """The case certainly does not fit in the card's memory (a lower bound of its peak is above the total).

    An :class:`~sdbench.errors.OutOfMemory` (exit code 4), raised before anything is built; ``estimate``
    and ``capability`` say what was counted and against which card.
    """

    def __init__(self, message: str, *, estimate: MemoryEstimate, capability: DeviceCapability,
                 field: str, value: Any, allowed: str) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.capability = capability
        self.field = field
        self.value = value
        self.allowed = allowed


def _memory_remedies(case: Case, k: Any, cap: DeviceCapability) -> list[str]:
    """What else lowers the bound, among what this card can run."""
    out = [flag for flag, on in (("--vae-slicing", k.vae_slicing), ("--vae-tiling", k.vae_tiling)) if not on]
    if case.dtype == "fp32":
        out += [f"--dtype {d}" for d in ("fp16", "bf16") if _dtype_problem(d, cap) is None]
    if case.offload == "none" and cap.kernels == "cuda":
        out.append("--offload model")
    return out


def check_memory(case: Case, capability: DeviceCapability) -> MemoryEstimate | None:
    """Raise :class:`WillNotFit` when ``case`` certainly does not fit in ``capability``'s memory.

    Returns the estimate (None when the device reports no memory total: the CPU, an unseen GPU).
    """
    total = capability.memory_total_bytes
    if total is None:
        return None
    k = resolve_knobs(case.profile, case.knobs)

    def bound(batch: int) -> MemoryEstimate:
        return memory_lower_bound(case.model, case.height, case.width, batch, case.uses_cfg, case.dtype,
                                  case.offload, k.vae_slicing, k.vae_tiling, k.vae_upcast, k.fp8_unet)

    est = bound(case.batch_size)
    if est.total_bytes <= total:
        return est
    one = bound(1)
    if one.total_bytes > total:
        field, value = ("height", case.height) if case.height >= case.width else ("width", case.width)
        allowed = ", ".join(["a smaller resolution", *_memory_remedies(case, k, capability)]) + (
            f" (even batch 1 needs at least {one.total_bytes / _GIB:.1f} GiB)")
    else:
        # The bound grows with the batch: bisect for the largest batch it does not rule out.
        lo, hi = 1, case.batch_size  # bound(lo) fits, bound(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if bound(mid).total_bytes <= total else (lo, mid)
        field, value = "batch_size", case.batch_size
        allowed = ", ".join([f"batch_size <= {lo} (not ruled out by this bound)", *_memory_remedies(case, k, capability)])
    message = (f"invalid {field}: {value!r} (case {case.case_id} will not fit on {capability.describe()}: it needs at "
               f"least {est.total_bytes / _GIB:.1f} GiB, a lower bound: {est.detail}); allowed: {allowed}")
    raise WillNotFit(message, estimate=est, capability=capability, field=field, value=value, allowed=allowed)


# --- dtype, attention, offload and fp8 rules ----------------------------------------------------------------
_DTYPE_NAMES = ("fp32", "fp16", "bf16")
_ATTENTION_NAMES = ("sdpa", "flash", "efficient", "math", "cudnn", "sliced", "xformers")  # sdbench.case.ATTENTION_BACKENDS


def _cc(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def _dtype_problem(dtype: str, cap: DeviceCapability) -> str | None:
    cc = cap.compute_capability
    if dtype == "bf16" and cc is not None and cc < BF16_MIN_CAPABILITY:
        return (f"{cap.name} has compute capability {_cc(cc)}; bf16 needs {_cc(BF16_MIN_CAPABILITY)}+ "
                "(no bf16 tensor cores before Ampere)")
    if dtype == "fp16" and cap.kernels == "cpu":
        return "fp16 is a GPU dtype; on the CPU (and on a simulated card, whose kernels run on it) use fp32"
    return None


def _attention_problem(attention: str, cap: DeviceCapability) -> str | None:
    cc = cap.compute_capability
    if attention in ("flash", "cudnn"):
        if not cap.is_gpu:
            return f"needs an Ampere-or-newer CUDA GPU (compute capability {_cc(FLASH_MIN_CAPABILITY)}+); this run is on the CPU"
        if cc is not None and cc < FLASH_MIN_CAPABILITY:
            return f"{cap.name} has compute capability {_cc(cc)}; {attention} attention needs {_cc(FLASH_MIN_CAPABILITY)}+"
        if attention == "cudnn" and cap.kernels == "cpu":
            return f"{cap.name} runs its kernels on the CPU, which has no cuDNN attention"
    if attention == "efficient" and cap.kernels != "cuda":
        where = f"{cap.name} runs its kernels on the CPU" if cap.simulated else "this run is on the CPU"
        return f"memory-efficient SDPA needs a CUDA GPU; {where}"
    if attention == "xformers" and cap.kernels != "cuda":
        return "xformers needs a CUDA GPU"
    return None


def _allowed(names: tuple[str, ...], problem: Callable[[str, DeviceCapability], str | None], cap: DeviceCapability) -> str:
    return ", ".join(n for n in names if problem(n, cap) is None)


def check_supported(dtype: str, attention: str, offload: str, capability: DeviceCapability | None = None,
                    profile: str = "eager", knobs: str = "") -> None:
    """Refuse, with one clear error and before anything is built, what the device cannot run.

    A pure function of the case's settings and ``capability`` (the device the run uses, real or simulated:
    :func:`device_capability`; None: the CPU). Refused: bf16 below compute capability
    8.0, fp8 (profile ``fp8``, knobs ``fp8_unet``/``fp8_rowwise``) below 8.9, flash or cuDNN attention below
    8.0 or without a GPU, memory-efficient SDPA, xformers and CPU offload without CUDA kernels, and CPU
    offload with a CUDA-graph profile. Each :class:`ConfigError` names the field, the value, the card and
    what is allowed there. Memory is :func:`check_memory`'s.
    """
    cap = capability if capability is not None else CPU
    k = resolve_knobs(profile, knobs)
    graphs = [name for name in ("compile_unet", "compile_vae", "compile_text") if getattr(k, name) in _CUDA_GRAPH_MODES]
    if offload != "none" and graphs:
        raise ConfigError("offload", offload, "none", reason=f"{', '.join(graphs)} use CUDA graphs (profile {profile!r}), "
                          "which need the weights at fixed GPU addresses; offload moves them. Use a profile "
                          "without CUDA graphs (eager, channels-last, compile) or --offload none")
    cc = cap.compute_capability
    if (k.fp8_unet or k.fp8_rowwise) and cc is not None and cc < FP8_MIN_CAPABILITY:
        # Name what the user set: the profile when it brought fp8, else the knob.
        overrides = parse_knobs(knobs) if knobs else {}
        knob = "fp8_unet" if k.fp8_unet else "fp8_rowwise"
        field, value = (knob, "on") if knob in overrides else ("profile", profile)
        allowed = "off" if field != "profile" else ", ".join(p for p in PROFILES if not PROFILES[p].fp8_unet)
        raise ConfigError(field, value, allowed, reason=f"fp8 matmuls need compute capability {_cc(FP8_MIN_CAPABILITY)}+ "
                          f"(e4m3 tensor cores: Ada, Hopper); {cap.name} has {_cc(cc)}")
    if k.fp8_torchao:
        _check_torchao_fp8(k, dtype, cap, profile, knobs)
    if k.freezing and not (k.compile_unet or k.compile_vae or k.compile_text):
        # A record must not claim frozen weights that nothing compiled could hold.
        raise ConfigError("freezing", "on", "off, or a compiled profile (compile, reduce-overhead, max, fp8) or "
                          "compile_* knob with it", reason="freezing folds the weights of compiled modules, and "
                          f"profile {profile!r} compiles none")
    why = _dtype_problem(dtype, cap)
    if why and dtype == "bf16":  # fp16 on the CPU is the Case's own rule, with its own message
        raise ConfigError("dtype", dtype, _allowed(_DTYPE_NAMES, _dtype_problem, cap), reason=why)
    why = _attention_problem(attention, cap)
    if why:
        raise ConfigError("attention", attention, _allowed(_ATTENTION_NAMES, _attention_problem, cap), reason=why)
    if offload != "none" and cap.kernels != "cuda":
        where = f"{cap.name} runs its kernels on the CPU" if cap.simulated else "this run is on the CPU"
        raise ConfigError("offload", offload, "none", reason=f"CPU offload moves weights between a GPU and the CPU; {where}")


def _check_torchao_fp8(k: Knobs, dtype: str, cap: DeviceCapability, profile: str, knobs: str) -> None:
    """torchao's float8 inference path: only with fp8_unet, only on CUDA kernels (torchao asserts a GPU of
    compute capability 8.9+, so the CPU and simulated cards cannot run it), row-wise scales only in bf16."""
    field, value = ("fp8_torchao", "on") if "fp8_torchao" in (parse_knobs(knobs) if knobs else {}) else ("profile", profile)
    if not k.fp8_unet:
        raise ConfigError(field, value, "fp8_unet=on with it, or fp8_torchao=off",
                          reason="fp8_torchao picks the implementation of fp8_unet, which is off")
    if cap.kernels != "cuda":
        where = f"{cap.name} runs its kernels on the CPU" if cap.simulated else "this run is on the CPU"
        allowed = "off (sdbench's own fp8 runs anywhere)" if field != "profile" else "fp8 (sdbench's own fp8 path)"
        raise ConfigError(field, value, allowed, reason=f"torchao's float8 kernels need a CUDA GPU of compute "
                          f"capability {_cc(FP8_MIN_CAPABILITY)}+; {where}")
    if k.fp8_rowwise and dtype != "bf16":
        raise ConfigError("dtype", dtype, "bf16", reason="torchao's row-wise float8 scaling quantises bf16 weights only")


# --- every rule -------------------------------------------------------------------------------------------
def check_case(case: Case, capability: DeviceCapability | None = None, *, gpu: Any = None) -> DeviceCapability:
    """Refuse ``case`` with one clear error if the device it runs on cannot run it; returns the capability.

    ``capability`` (default: :func:`device_capability` of ``case.device``, read from ``gpu`` when given).
    A :class:`~sdbench.errors.ConfigError` names the field, the value, the card and what is allowed;
    memory that certainly does not fit raises :class:`WillNotFit` (exit code 4). Called by
    ``Bench.pipeline`` before anything is built, and usable wherever a case and its card are known.
    """
    cap = capability if capability is not None else device_capability(case.device, gpu)
    check_supported(case.dtype, case.attention, case.offload, cap, case.profile, case.knobs)
    check_memory(case, cap)
    return cap
