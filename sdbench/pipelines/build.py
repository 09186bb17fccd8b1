"""Turn a model variant into a real diffusers pipeline, with no network, and keep pipelines warm."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdbench.errors import ConfigError, SdbenchError
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

# Third-party messages that tell a benchmark's user nothing, each silenced only where it arises.
# diffusers' ModelMixin.to(dtype) logs this even when the list of such modules is empty ("...: []"); it
# comes from casting a model (SDXL's fp16 VAE upcast in every call, loading with a dtype).
FP32_MODULES_MESSAGE = "that should be kept in float32"
FP32_MODULES_LOGGER = "diffusers.models.modeling_utils"
# The pipelines' encode_prompt logs the cut words of a prompt over CLIP's 77 tokens, per encoder and per
# call; the record says it instead (prompt_tokens, prompt_truncated).
CLIP_TRUNCATION_MESSAGE = "was truncated because CLIP can only handle"
# transformers says so once per tokenizer when a prompt is tokenised without truncation.
TOKEN_LENGTH_MESSAGE = "Token indices sequence length is longer than the specified maximum"
TOKEN_LENGTH_LOGGER = "transformers.tokenization_utils_base"
# SDXL's __call__ runs its deprecated upcast_vae() whenever an fp16 VAE must decode in fp32 (the fix it
# names is what it does itself); and the warning is diffusers' to fix, not the user's.
UPCAST_VAE_WARNING = r"`upcast_vae` is deprecated"


class _DropMessages(logging.Filter):
    """A logging filter that drops records whose message contains any of `fragments`."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


@contextlib.contextmanager
def drop_log_messages(logger_names: Iterable[str], *fragments: str) -> Iterator[None]:
    """Drop log records containing `fragments` from exactly these loggers, only inside the block.

    A logger's filter sees only the records logged on that logger (not its children's), so the names
    must be the modules that log. Every other message of those loggers still gets through.
    """
    drop = _DropMessages(tuple(fragments))
    loggers = [logging.getLogger(name) for name in dict.fromkeys(logger_names)]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _pipeline_loggers(pipe: Any) -> list[str]:
    """The diffusers module loggers of `pipe`'s class and its bases (whose methods log for it)."""
    return [cls.__module__ for cls in type(pipe).__mro__ if cls.__module__.startswith("diffusers.")]


def quiet_call_context(pipe: Any, inner: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
                       ignore_warnings: Iterable[tuple[str, type[Warning]]] = ()
                       ) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of the context a pipeline call runs in: `inner()` with the calls' third-party noise silenced.

    Dropped: the CLIP truncation message (per encoder and call), diffusers' float32-modules message and
    the `upcast_vae` FutureWarning (SDXL's fp16 VAE upcast), plus `ignore_warnings` (message regex,
    category). Scoped to the call: the same messages outside a pipeline call still show.
    """
    loggers = [*_pipeline_loggers(pipe), FP32_MODULES_LOGGER, TOKEN_LENGTH_LOGGER]
    warning_filters = [(UPCAST_VAE_WARNING, FutureWarning), *ignore_warnings]

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        with drop_log_messages(loggers, CLIP_TRUNCATION_MESSAGE, FP32_MODULES_MESSAGE, TOKEN_LENGTH_MESSAGE), \
                warnings.catch_warnings():
            for message, category in warning_filters:
                warnings.filterwarnings("ignore", message=message, category=category)
            with inner():
                yield

    return context


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
