"""The scheduler registry: a key per sampler, mapped to its diffusers class and settings.

A scheduler is always built from the pipeline's own scheduler config (betas, prediction type and the
model's timestep spacing), so swapping one never touches the models, and per-model defaults such as
v-prediction or trailing spacing survive the swap unless the user overrides them.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sdbench.errors import ConfigError, SdbenchError

# Several k-diffusion schedulers hand torch tensors to NumPy 2, which warns on every set_timesteps
# (attributed to numpy's own frames); silence exactly those two messages.
for _message in (r"__array_wrap__ must accept context", r"__array__ implementation doesn't accept a copy keyword"):
    warnings.filterwarnings("ignore", message=_message, category=DeprecationWarning)


@dataclass(frozen=True)
class SchedulerSpec:
    key: str
    class_name: str
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # importable modules the class needs at run time
    # How many UNet evaluations one "step" costs (Heun and KDPM2 are second-order: two per step
    # except the last), so per-step energy is comparable across samplers.
    order: int = 1


def _spec(key: str, cls: str, desc: str, order: int = 1, requires: tuple[str, ...] = (), **settings: Any) -> SchedulerSpec:
    return SchedulerSpec(key, cls, desc, MappingProxyType(settings), requires, order)


SCHEDULERS: Mapping[str, SchedulerSpec] = MappingProxyType(
    {
        s.key: s
        for s in [
            _spec("dpm++", "DPMSolverMultistepScheduler", "DPM-Solver++ 2M: high quality, fast convergence",
                  algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=False),
            _spec("dpm++-karras", "DPMSolverMultistepScheduler", "DPM-Solver++ 2M with Karras sigmas",
                  algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True),
            _spec("dpm++-sde", "DPMSolverMultistepScheduler", "DPM-Solver++ 2M SDE (stochastic), Karras sigmas",
                  algorithm_type="sde-dpmsolver++", solver_order=2, use_karras_sigmas=True),
            _spec("euler", "EulerDiscreteScheduler", "Euler: simple, reliable, good balance"),
            _spec("euler-ancestral", "EulerAncestralDiscreteScheduler", "Euler ancestral (stochastic)"),
            _spec("ddim", "DDIMScheduler", "DDIM: deterministic, fast, consistent"),
            _spec("ddpm", "DDPMScheduler", "DDPM: the original ancestral sampler (needs many steps)"),
            _spec("lms", "LMSDiscreteScheduler", "Linear multistep (k-diffusion LMS)", requires=("scipy",)),
            _spec("heun", "HeunDiscreteScheduler", "Heun: second order, more accurate, two UNet calls per step", order=2),
            _spec("dpm-sde", "DPMSolverSDEScheduler", "DPM-Solver SDE (k-diffusion), Brownian-tree noise", order=2,
                  requires=("torchsde",)),
            _spec("kdpm2", "KDPM2DiscreteScheduler", "KDPM2 (k-diffusion DPM2), second order", order=2),
            _spec("kdpm2-ancestral", "KDPM2AncestralDiscreteScheduler", "KDPM2 ancestral", order=2),
            _spec("unipc", "UniPCMultistepScheduler", "UniPC: unified predictor-corrector, very fast"),
            _spec("deis", "DEISMultistepScheduler", "DEIS multistep"),
            _spec("pndm", "PNDMScheduler", "PNDM (PLMS): the SD 1.x checkpoints' own default"),
        ]
    }
)

# Keys of the scheduler config that describe the model rather than the sampler: they are kept
# from the model's config on every swap.
MODEL_SCHEDULER_KEYS = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
    "prediction_type", "timestep_spacing", "steps_offset",
    # sampler flags that the checkpoints' own scheduler configs set (PNDM without PRK steps,
    # DDIM without clipping): kept so a swap back to those samplers behaves as the repo ships it
    "clip_sample", "set_alpha_to_one", "skip_prk_steps",
)


def get_scheduler_spec(key: str) -> SchedulerSpec:
    try:
        return SCHEDULERS[key]
    except KeyError:
        raise ConfigError("scheduler", key, sorted(SCHEDULERS)) from None


def check_available(spec: SchedulerSpec) -> None:
    """Raise a clear error if a scheduler's run-time dependency is missing."""
    for module in spec.requires:
        if importlib.util.find_spec(module) is None:
            raise SdbenchError(
                f"scheduler {spec.key!r} ({spec.class_name}) needs the Python package {module!r}, "
                f"which is not installed: pip install {module}"
            )


#: NumPy 2's notices when diffusers' schedulers hand torch tensors to NumPy (their sigma tables, at
#: construction and at every set_timesteps): ``np.array(tensor)`` ("... doesn't accept a copy keyword") and
#: ``np.log(np.maximum(tensor, ...))`` in the KDPM2 schedulers ("__array_wrap__ must accept context ...").
#: Diffusers' code, nothing the user can change, thousands of times per suite (24,000 in one quality suite on
#: a GPU host). One pattern for both (a warnings filter's message is a regex matched at the start), silenced
#: where schedulers are built and inside pipeline calls (sdbench.pipelines.quiet).
NUMPY_TENSOR_NOTICES = r"(__array__ implementation doesn't accept a copy keyword|__array_wrap__ must accept context)"


def make_scheduler(key: str, model_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Any:
    """Build scheduler `key` from a model's scheduler config, plus the user's overrides."""
    import diffusers

    spec = get_scheduler_spec(key)
    check_available(spec)
    cls = getattr(diffusers, spec.class_name)
    config = {k: v for k, v in dict(model_config).items() if not k.startswith("_")}
    config.update(spec.settings)
    if overrides:
        config.update(overrides)
    # from_config drops keys the class does not take, so one model config serves every class.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NUMPY_TENSOR_NOTICES, category=DeprecationWarning)
        return cls.from_config(config)


def model_scheduler_config(scheduler: Any) -> dict[str, Any]:
    """The model-describing part of a live scheduler's config (kept across swaps)."""
    cfg = dict(scheduler.config)
    return {k: cfg[k] for k in MODEL_SCHEDULER_KEYS if k in cfg}


def scheduler_key_of(scheduler: Any) -> str:
    """Identify which registry key a live scheduler object is, read from the object itself."""
    cls_name = type(scheduler).__name__
    cfg = scheduler.config
    candidates = [s for s in SCHEDULERS.values() if s.class_name == cls_name]
    for s in candidates:
        if all(cfg.get(k) == v for k, v in s.settings.items()):
            return s.key
    return candidates[0].key if candidates else f"custom:{cls_name}"


def describe_scheduler(scheduler: Any) -> dict[str, Any]:
    """What actually runs: class, key and the settings that matter, read from the live object."""
    cfg = scheduler.config
    return {
        "scheduler": scheduler_key_of(scheduler),
        "scheduler_class": type(scheduler).__name__,
        "prediction_type": cfg.get("prediction_type"),
        "timestep_spacing": cfg.get("timestep_spacing"),
        "use_karras_sigmas": cfg.get("use_karras_sigmas"),
        "algorithm_type": cfg.get("algorithm_type"),
    }
