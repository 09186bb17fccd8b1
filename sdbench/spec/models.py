"""The model registry: every supported Stable Diffusion variant with its real architecture and defaults.

The architecture configs are those of the published checkpoints (same layer shapes, so the same
parameter count, FLOPs and memory); `sdbench.spec.weights` fills them with synthetic weights when the real
ones are absent. Tiny variants of each architecture family serve CPU tests and the embedded default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sdbench.errors import ConfigError

# Betas of every SD checkpoint's noise schedule (they all share it).
_SD_BETAS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "skip_prk_steps": True,
}

_SD1_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
}

_SD2_UNET: dict[str, Any] = {
    **_SD1_UNET,
    "sample_size": 96,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}

_SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    # 1280 (pooled bigG text embedding) + 6 x 256 (size and crop conditioning)
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

_SDXL_REFINER_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [384, 768, 1536, 1536],
    "layers_per_block": 2,
    "transformer_layers_per_block": 4,
    "attention_head_dim": [6, 12, 24, 24],
    "cross_attention_dim": 1280,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    # 1280 (pooled bigG) + 5 x 256 (size, crop and aesthetic-score conditioning)
    "projection_class_embeddings_input_dim": 2560,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}


def _vae(sample_size: int, scaling_factor: float, force_upcast: bool) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
        "force_upcast": force_upcast,
    }


def _clip_text(hidden: int, intermediate: int, layers: int, heads: int, act: str, projection_dim: int) -> dict[str, Any]:
    return {
        "vocab_size": 49408,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": projection_dim,
        "bos_token_id": 49406,
        # 49407, never the stale 2 of old configs, which switches transformers to a legacy pooling path
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder and the tokenizer that feeds it."""

    config: Mapping[str, Any]
    with_projection: bool
    pad_token: str  # "<|endoftext|>" for SD 1.x and SDXL's first, "!" for SD 2.x and SDXL's second


CLIP_L = TextEncoderSpec(MappingProxyType(_clip_text(768, 3072, 12, 12, "quick_gelu", 768)), False, "<|endoftext|>")
OPENCLIP_H = TextEncoderSpec(MappingProxyType(_clip_text(1024, 4096, 23, 16, "gelu", 512)), False, "!")
OPENCLIP_BIGG = TextEncoderSpec(MappingProxyType(_clip_text(1280, 5120, 32, 20, "gelu", 1280)), True, "!")


@dataclass(frozen=True)
class ModelSpec:
    """A model variant: architecture, defaults and where its real weights live."""

    key: str
    family: str  # sd1 | sd2 | sdxl | sdxl-refiner
    description: str
    pipeline_class: str
    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    # One entry per text_encoder slot of the pipeline; None where the pipeline has no encoder there
    # (the SDXL refiner has only text_encoder_2).
    text_encoders: tuple[TextEncoderSpec | None, ...]
    default_resolution: int
    default_steps: int
    default_guidance: float
    default_scheduler: str
    scheduler_config: Mapping[str, Any]
    repo_id: str | None = None
    allowed_steps: tuple[int, ...] | None = None
    tiny: bool = False
    tiny_variant: str | None = None
    # SDXL-Lightning ships UNet files on top of the SDXL base repository.
    base_repo_id: str | None = None
    unet_file_template: str | None = None
    img2img: bool = False
    default_strength: float | None = None
    published_parameters: Mapping[str, int] = field(default_factory=dict)

    @property
    def uses_cfg_by_default(self) -> bool:
        return self.default_guidance > 1.0

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    def summary(self) -> dict[str, Any]:
        """A flat description for listings and records."""
        return {
            "model": self.key,
            "family": self.family,
            "pipeline": self.pipeline_class,
            "resolution": self.default_resolution,
            "steps": self.default_steps,
            "allowed_steps": list(self.allowed_steps) if self.allowed_steps else None,
            "guidance": self.default_guidance,
            "scheduler": self.default_scheduler,
            "prediction_type": self.prediction_type,
            "timestep_spacing": self.scheduler_config.get("timestep_spacing", "leading"),
            "repo_id": self.repo_id,
            "tiny": self.tiny,
            "description": self.description,
        }


def _freeze(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


_SD1_SCHED = _freeze({**_SD_BETAS, "prediction_type": "epsilon"})
_SD2_V_SCHED = _freeze({**_SD_BETAS, "prediction_type": "v_prediction"})
_SDXL_SCHED = _freeze({**_SD_BETAS, "prediction_type": "epsilon", "timestep_spacing": "leading"})
_TRAILING_SCHED = _freeze({**_SD_BETAS, "prediction_type": "epsilon", "timestep_spacing": "trailing"})

_SD1_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
_SD2_PARAMS = {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}
_SDXL_PARAMS = {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840}

# --- tiny variants: the same block types at toy widths, with the real 49,408-token vocabulary ---
_TINY_TEXT = TextEncoderSpec(MappingProxyType(_clip_text(32, 37, 2, 4, "quick_gelu", 32)), False, "<|endoftext|>")
_TINY_TEXT_SD2 = TextEncoderSpec(MappingProxyType(_clip_text(32, 37, 2, 4, "gelu", 32)), False, "!")
_TINY_TEXT_PROJ = TextEncoderSpec(MappingProxyType(_clip_text(32, 37, 2, 4, "gelu", 32)), True, "!")
_TINY_VAE = {
    **_vae(64, 0.18215, False),
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
}
_TINY_UNET_SD1 = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 32,
}
_TINY_UNET_SD2 = {**_TINY_UNET_SD1, "attention_head_dim": [2, 4], "use_linear_projection": True}
_TINY_UNET_SDXL = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "transformer_layers_per_block": [1, 2],
    "attention_head_dim": [2, 4],
    "cross_attention_dim": 64,  # 32 + 32: both text encoders' hidden states, concatenated
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,
    "norm_num_groups": 32,
}


def _specs() -> dict[str, ModelSpec]:
    sd1_vae = _freeze(_vae(512, 0.18215, False))
    sd2_vae_768 = _freeze(_vae(768, 0.18215, False))
    sdxl_vae = _freeze(_vae(1024, 0.13025, True))
    sd1 = dict(
        family="sd1",
        pipeline_class="StableDiffusionPipeline",
        unet=_freeze(_SD1_UNET),
        vae=sd1_vae,
        text_encoders=(CLIP_L,),
        default_resolution=512,
        default_steps=50,
        default_guidance=7.5,
        default_scheduler="pndm",
        scheduler_config=_SD1_SCHED,
        tiny_variant="tiny-sd",
        published_parameters=_SD1_PARAMS,
    )
    sd2 = dict(
        family="sd2",
        pipeline_class="StableDiffusionPipeline",
        unet=_freeze(_SD2_UNET),
        vae=sd2_vae_768,
        text_encoders=(OPENCLIP_H,),
        default_resolution=768,
        default_steps=50,
        default_guidance=7.5,
        default_scheduler="ddim",
        scheduler_config=_SD2_V_SCHED,
        tiny_variant="tiny-sd2",
        published_parameters=_SD2_PARAMS,
    )
    sd2_base = {
        **sd2,
        "unet": _freeze({**_SD2_UNET, "sample_size": 64}),
        "vae": sd1_vae,
        "default_resolution": 512,
        "default_scheduler": "pndm",
        "scheduler_config": _SD1_SCHED,
    }
    sdxl = dict(
        family="sdxl",
        pipeline_class="StableDiffusionXLPipeline",
        unet=_freeze(_SDXL_UNET),
        vae=sdxl_vae,
        text_encoders=(CLIP_L, OPENCLIP_BIGG),
        default_resolution=1024,
        default_steps=30,
        default_guidance=5.0,
        default_scheduler="euler",
        scheduler_config=_SDXL_SCHED,
        tiny_variant="tiny-sdxl",
        published_parameters=_SDXL_PARAMS,
    )
    tiny = dict(vae=_freeze(_TINY_VAE), default_resolution=64, default_steps=4, tiny=True, tiny_variant=None,
                published_parameters={})
    specs = [
        ModelSpec(key="sd-v1.4", description="Stable Diffusion v1.4 (512, CLIP ViT-L)", repo_id="CompVis/stable-diffusion-v1-4", **sd1),
        ModelSpec(key="sd-v1.5", description="Stable Diffusion v1.5 (512, CLIP ViT-L)", repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5", **sd1),
        ModelSpec(key="sd-v2.0", description="Stable Diffusion 2.0 (768, v-prediction, OpenCLIP-H)", repo_id="stabilityai/stable-diffusion-2", **sd2),
        ModelSpec(key="sd-v2.1", description="Stable Diffusion 2.1 (768, v-prediction, OpenCLIP-H)", repo_id="stabilityai/stable-diffusion-2-1", **sd2),
        ModelSpec(key="sd-v2.0-base", description="Stable Diffusion 2.0 base (512, epsilon)", repo_id="stabilityai/stable-diffusion-2-base", **sd2_base),
        ModelSpec(key="sd-v2.1-base", description="Stable Diffusion 2.1 base (512, epsilon)", repo_id="stabilityai/stable-diffusion-2-1-base", **sd2_base),
        ModelSpec(key="sdxl", description="Stable Diffusion XL base 1.0 (1024, two text encoders)", repo_id="stabilityai/stable-diffusion-xl-base-1.0", **sdxl),
        ModelSpec(
            key="sdxl-refiner",
            description="SDXL refiner 1.0: img2img on an SDXL image (bigG text encoder only)",
            repo_id="stabilityai/stable-diffusion-xl-refiner-1.0",
            family="sdxl-refiner",
            pipeline_class="StableDiffusionXLImg2ImgPipeline",
            unet=_freeze(_SDXL_REFINER_UNET),
            vae=sdxl_vae,
            text_encoders=(None, OPENCLIP_BIGG),
            default_resolution=1024,
            default_steps=30,
            default_guidance=5.0,
            default_scheduler="euler",
            scheduler_config=_SDXL_SCHED,
            tiny_variant="tiny-sdxl",
            img2img=True,
            default_strength=0.3,
            published_parameters={"vae": 83_653_863, "text_encoder_2": 694_659_840},
        ),
        ModelSpec(
            key="sd-turbo",
            description="SD-Turbo: adversarially distilled SD 2.1 (512, 1-4 steps, no CFG)",
            repo_id="stabilityai/sd-turbo",
            **{**sd2_base, "default_steps": 1, "default_guidance": 0.0, "default_scheduler": "euler",
               "scheduler_config": _TRAILING_SCHED},
            allowed_steps=(1, 2, 3, 4),
        ),
        ModelSpec(
            key="sdxl-turbo",
            description="SDXL-Turbo: adversarially distilled SDXL (512, 1-4 steps, no CFG)",
            repo_id="stabilityai/sdxl-turbo",
            **{**sdxl, "default_resolution": 512, "default_steps": 1, "default_guidance": 0.0,
               "default_scheduler": "euler-ancestral", "scheduler_config": _TRAILING_SCHED},
            allowed_steps=(1, 2, 3, 4),
        ),
        ModelSpec(
            key="sdxl-lightning",
            description="SDXL-Lightning: progressive adversarial distillation of SDXL (1024, 2/4/8 steps, Euler trailing, no CFG)",
            repo_id="ByteDance/SDXL-Lightning",
            base_repo_id="stabilityai/stable-diffusion-xl-base-1.0",
            unet_file_template="sdxl_lightning_{steps}step_unet.safetensors",
            **{**sdxl, "default_steps": 4, "default_guidance": 0.0, "default_scheduler": "euler",
               "scheduler_config": _TRAILING_SCHED},
            allowed_steps=(2, 4, 8),
        ),
        # Tiny variants: the family's own pipeline, scheduler settings and guidance at toy widths.
        ModelSpec(key="tiny-sd", description="Tiny SD 1.x architecture (toy widths, real vocabulary) for CPU tests",
                  **{**sd1, **tiny, "unet": _freeze(_TINY_UNET_SD1), "text_encoders": (_TINY_TEXT,)}),
        ModelSpec(key="tiny-sd2", description="Tiny SD 2.x architecture (linear projections, v-prediction) for CPU tests",
                  **{**sd2, **tiny, "unet": _freeze(_TINY_UNET_SD2), "text_encoders": (_TINY_TEXT_SD2,)}),
        ModelSpec(key="tiny-sdxl",
                  description="Tiny SDXL architecture (two text encoders, text-time conditioning) for CPU tests",
                  **{**sdxl, **tiny, "unet": _freeze(_TINY_UNET_SDXL), "text_encoders": (_TINY_TEXT, _TINY_TEXT_PROJ),
                     "vae": _freeze({**_TINY_VAE, "scaling_factor": 0.13025})}),
    ]
    return {s.key: s for s in specs}


MODELS: Mapping[str, ModelSpec] = MappingProxyType(_specs())
TINY_MODELS: tuple[str, ...] = tuple(k for k, s in MODELS.items() if s.tiny)


def get_model(key: str) -> ModelSpec:
    """Return the spec of a model variant, or a ConfigError listing the choices."""
    try:
        return MODELS[key]
    except KeyError:
        raise ConfigError("model_variant", key, sorted(MODELS)) from None
