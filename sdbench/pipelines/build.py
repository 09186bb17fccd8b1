"""Turn a model variant into a real diffusers pipeline, with no network, and keep pipelines warm."""

from __future__ import annotations

import functools
import gc
import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdbench.errors import ConfigError, SdbenchError
from sdbench.pipelines.quiet import (
    FP32_MODULES_LOGGER,
    FP32_MODULES_MESSAGE,
    drop_log_messages,
)
from sdbench.spec.models import ModelSpec, get_model
from sdbench.spec.schedulers import (
    SCHEDULERS,
    check_available,
    get_scheduler_spec,
    make_scheduler,
    model_scheduler_config,
)
from sdbench.spec.weights import WeightSource, fill_synthetic_, hub_file, resolve_auto, resolve_hub_snapshot

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError("dtype", name, sorted(DTYPES)) from None


def _pipeline_class(spec: ModelSpec) -> type:
    import diffusers

    return getattr(diffusers, spec.pipeline_class)


def _text_encoder(te_config: dict[str, Any], with_projection: bool) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(CLIPTextConfig(**te_config))


def build_synthetic_components(spec: ModelSpec, dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> dict[str, Any]:
    """Every component of `spec`'s pipeline, in its real architecture, with seeded synthetic weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sdbench.pipelines.tokenizer import build_clip_tokenizer

    device = torch.device(device)
    with torch.device("meta"):
        modules: dict[str, torch.nn.Module | None] = {
            "unet": UNet2DConditionModel.from_config(dict(spec.unet)),
            "vae": AutoencoderKL.from_config(dict(spec.vae)),
        }
        for slot, te in zip(("text_encoder", "text_encoder_2"), spec.text_encoders):
            modules[slot] = None if te is None else _text_encoder(dict(te.config), te.with_projection)
    components: dict[str, Any] = {}
    for name, module in modules.items():
        if module is None:
            components[name] = None
            continue
        # Materialise and fill in fp32 on the target device, then cast: the same seed gives the same
        # weights (up to rounding) in every dtype, which the fidelity checks rely on.
        module = module.to_empty(device=device)
        fill_synthetic_(module, seed=seed + _component_offset(name))
        # nn.Module.to, not the diffusers override that warns about fp32-only modules (none here)
        components[name] = torch.nn.Module.to(module, dtype=dtype).eval().requires_grad_(False)
    for slot, te in zip(("tokenizer", "tokenizer_2"), spec.text_encoders):
        components[slot] = None if te is None else build_clip_tokenizer(pad_token=te.pad_token)
    if len(spec.text_encoders) == 1:
        components.pop("text_encoder_2", None)
    components["scheduler"] = make_scheduler(spec.default_scheduler, spec.scheduler_config)
    return components


def _component_offset(name: str) -> int:
    return {"unet": 0, "vae": 1_000, "text_encoder": 2_000, "text_encoder_2": 3_000}[name]


def assemble_pipeline(spec: ModelSpec, components: dict[str, Any]) -> Any:
    """Build the diffusers pipeline object of `spec` from its components."""
    cls = _pipeline_class(spec)
    kwargs = dict(components)
    if spec.pipeline_class == "StableDiffusionPipeline":
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    elif spec.family == "sdxl-refiner":
        kwargs.update(requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    else:
        kwargs.update(force_zeros_for_empty_prompt=True)
    pipe = cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_pretrained(spec: ModelSpec, path: Path, dtype: torch.dtype, *, allow_pickle: bool = False) -> Any:
    cls = _pipeline_class(spec)
    # `dtype`, not the deprecated `torch_dtype` (diffusers 0.42 warns about the old name on every load).
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": not allow_pickle}
    if spec.pipeline_class == "StableDiffusionPipeline":
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(str(path), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class BuiltPipeline:
    """A ready pipeline plus how it was made (recorded with every measurement)."""

    pipe: Any
    model: str
    weights: str  # synthetic | hub:<repo> | local:<path>
    dtype: str
    device: str
    build_s: float
    scheduler_prebuild_s: float = 0.0  # the pipeline cache builds every scheduler with the pipeline


def build_pipeline(model: str | ModelSpec, *, weights: str | WeightSource = "auto", dtype: str = "fp16",
                   device: str = "cpu", seed: int = 0, steps: int | None = None, allow_pickle: bool = False) -> BuiltPipeline:
    """Build `model`'s pipeline on `device` in `dtype` from the requested weight source."""
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    source = weights if isinstance(weights, WeightSource) else WeightSource.parse(weights)
    source = resolve_auto(spec, source)
    tdtype = torch_dtype(dtype)
    with drop_log_messages([FP32_MODULES_LOGGER], FP32_MODULES_MESSAGE):
        return _build(spec, source, tdtype, dtype, device, seed, steps, allow_pickle)


def _build(spec: ModelSpec, source: WeightSource, tdtype: torch.dtype, dtype: str, device: str, seed: int,
           steps: int | None, allow_pickle: bool) -> BuiltPipeline:
    t0 = time.perf_counter()
    if source.kind == "synthetic":
        pipe = assemble_pipeline(spec, build_synthetic_components(spec, tdtype, device, seed))
        label = "synthetic"
    elif source.kind == "local":
        assert source.path is not None
        pipe = _load_pretrained(spec, source.path, tdtype, allow_pickle=allow_pickle)
        label = f"local:{source.path}"
    else:
        if spec.repo_id is None:
            raise ConfigError("weights", "hub", "synthetic", reason=f"{spec.key} has no hub repository")
        base = spec.base_repo_id or spec.repo_id
        pipe = _load_pretrained(spec, resolve_hub_snapshot(base), tdtype, allow_pickle=allow_pickle)
        if spec.unet_file_template:
            _load_unet_file(pipe, hub_file(spec.repo_id, spec.unet_file_template.format(steps=steps or spec.default_steps)))
        label = f"hub:{spec.repo_id}"
        pipe.scheduler = make_scheduler(spec.default_scheduler, {**dict(pipe.scheduler.config), **spec.scheduler_config})
    pipe = pipe.to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return BuiltPipeline(pipe, spec.key, label, dtype, device, time.perf_counter() - t0)


def _load_unet_file(pipe: Any, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing, unexpected = pipe.unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError("weights", str(path), reason=f"UNet file does not match: {len(missing)} missing, {len(unexpected)} unexpected keys")


# The model's own scheduler settings per live pipeline, captured before any swap, so that one case's
# override (say trailing spacing) never leaks into the next case on the same warm pipeline.
_MODEL_SCHEDULER_CONFIGS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


# Schedulers already built for a live pipeline: some constructors are slow (KDPM2 precomputes its
# sigmas for all 1,000 training steps, ~80 ms), and a pipeline call resets a scheduler's state through
# set_timesteps, so one object per (key, overrides) serves every case that asks for it.
_BUILT_SCHEDULERS: weakref.WeakKeyDictionary[Any, dict[tuple[str, tuple[tuple[str, Any], ...]], Any]] = (
    weakref.WeakKeyDictionary())


def set_scheduler(pipe: Any, key: str, overrides: dict[str, Any] | None = None) -> Any:
    """Swap the pipeline's scheduler for `key`, keeping the model's own noise schedule settings."""
    base = _MODEL_SCHEDULER_CONFIGS.get(pipe)
    if base is None:
        base = _MODEL_SCHEDULER_CONFIGS[pipe] = model_scheduler_config(pipe.scheduler)
    check_available(get_scheduler_spec(key))  # also for a cached one: its dependency may be gone
    built = _BUILT_SCHEDULERS.setdefault(pipe, {})
    cache_key = (key, tuple(sorted((overrides or {}).items())))
    if cache_key not in built:
        built[cache_key] = make_scheduler(key, base, overrides)
    pipe.scheduler = built[cache_key]
    return pipe.scheduler


def prebuild_schedulers(pipe: Any) -> list[str]:
    """Build every available scheduler for `pipe` now, so that each later change is a lookup.

    A first swap would otherwise pay the scheduler's constructor (KDPM2: ~80 ms, it precomputes sigmas
    for all 1,000 training steps) inside a sweep over schedulers. Returns the keys built; keys whose
    optional dependency is missing are left for set_scheduler to refuse with its reason.
    """
    current = pipe.scheduler
    built = []
    for key in SCHEDULERS:
        try:
            set_scheduler(pipe, key)
        except SdbenchError:
            continue
        built.append(key)
    pipe.scheduler = current
    return built


@dataclass(frozen=True)
class PipelineKey:
    """What forces a rebuild. A scheduler change does not: it is a swap."""

    model: str
    weights: str
    dtype: str
    device: str
    profile: str = "eager"


def pipeline_weight_bytes(model: str, dtype: str) -> int:
    """Bytes the model's weights take in `dtype` (counted on the meta device: nothing is allocated)."""
    return _parameter_count(model) * torch.tensor([], dtype=torch_dtype(dtype)).element_size()


@functools.lru_cache(maxsize=32)
def _parameter_count(model: str) -> int:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    spec = get_model(model)
    with torch.device("meta"):
        modules = [UNet2DConditionModel.from_config(dict(spec.unet)), AutoencoderKL.from_config(dict(spec.vae))]
        modules += [_text_encoder(dict(te.config), te.with_projection) for te in spec.text_encoders if te is not None]
    return sum(p.numel() for m in modules for p in m.parameters())


class PipelineCache:
    """Warm pipelines, keyed by what forces a rebuild; least recently used evicted first.

    A pipeline is evicted only to make room: past `max_pipelines`, or, with a `vram_budget_bytes`, when
    the weights of the pipeline about to be built would push the cached weights past the budget.
    Memory is freed only on eviction, so consecutive cases on the same model never reload it.
    """

    def __init__(self, max_pipelines: int = 2, vram_budget_bytes: int | None = None, prebuild: bool = True) -> None:
        self.max_pipelines = max_pipelines
        self.prebuild = prebuild  # build every scheduler with the pipeline: every change is then a swap
        self.vram_budget_bytes = vram_budget_bytes
        self._items: OrderedDict[PipelineKey, BuiltPipeline] = OrderedDict()
        self._bytes: dict[PipelineKey, int] = {}
        self.builds = 0
        self.hits = 0
        self.evictions = 0

    @property
    def cached_bytes(self) -> int:
        return sum(self._bytes.values())

    def get(self, key: PipelineKey, builder: Any) -> BuiltPipeline:
        """Return the warm pipeline for `key`, building it with `builder()` when absent."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        need = pipeline_weight_bytes(key.model, key.dtype) if self.vram_budget_bytes is not None else 0
        while self._items and (len(self._items) >= self.max_pipelines or (
                self.vram_budget_bytes is not None and self.cached_bytes + need > self.vram_budget_bytes)):
            self.evict_oldest()
        built = builder()
        if self.prebuild:
            t0 = time.perf_counter()
            prebuild_schedulers(built.pipe)
            built.scheduler_prebuild_s = time.perf_counter() - t0
        self.builds += 1
        self._items[key] = built
        self._bytes[key] = need
        return built

    def evict_oldest(self) -> None:
        key, built = self._items.popitem(last=False)
        self._bytes.pop(key, None)
        self.evictions += 1
        del built
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def clear(self) -> None:
        while self._items:
            self.evict_oldest()

    def __len__(self) -> int:
        return len(self._items)
