"""Work per image, counted with FlopCounterMode on the meta device (no memory, no time, exact shapes).

Counting on the meta device matters: on real CPU tensors SDPA dispatches to a fused kernel that
FlopCounterMode does not see, so attention would go uncounted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from sdbench.spec.models import ModelSpec, get_model

MAX_SEQ = 77


@dataclass(frozen=True)
class WorkCount:
    """FLOPs of one pipeline call's components, for `batch_size` images, and (for the simulated GPU's
    model) the bytes each reads and writes and the kernels it launches, in eager fp32 as counted on meta."""

    unet_flop_per_eval: float  # one UNet evaluation of the whole (CFG-doubled) batch
    vae_decode_flop: float
    text_encode_flop: float
    unet_bytes_per_eval: float = 0.0
    vae_decode_bytes: float = 0.0
    text_encode_bytes: float = 0.0
    unet_kernels_per_eval: int = 0
    vae_decode_kernels: int = 0
    text_encode_kernels: int = 0

    def per_image(self, *, batch_size: int, unet_evals: int) -> dict[str, float]:
        total = self.unet_flop_per_eval * unet_evals + self.vae_decode_flop + self.text_encode_flop
        return {
            "flop_unet_per_step_per_image": self.unet_flop_per_eval / batch_size,
            "flop_unet_per_image": self.unet_flop_per_eval * unet_evals / batch_size,
            "flop_vae_decode_per_image": self.vae_decode_flop / batch_size,
            "flop_text_encode_per_image": self.text_encode_flop / batch_size,
            "flop_per_image": total / batch_size,
        }

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class _TrafficCounter(TorchDispatchMode):
    """Counts the kernels an eager run launches and the bytes they read and write (inputs + outputs of
    every op that is not a view or an allocation): the memory traffic of the unfused eager graph."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.__name__
        if getattr(func, "is_view", False) or name.startswith(("empty", "detach", "alias", "lift")):
            return out
        self.kernels += 1
        leaves, _ = tree_flatten((args, kwargs or {}, out))
        self.bytes += sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))
        return out


def _count(fn: Any) -> float:
    return _count_all(fn)[0]


def _count_all(fn: Any) -> tuple[float, int, int]:
    """(FLOPs, bytes, kernels) of one run of ``fn``."""
    with FlopCounterMode(display=False) as counter, _TrafficCounter() as traffic:
        fn()
    return float(counter.get_total_flops()), traffic.bytes, traffic.kernels


@lru_cache(maxsize=64)
def count_work(model: str, height: int, width: int, batch_size: int, cfg: bool) -> WorkCount:
    """FLOPs of `model`'s UNet (one evaluation), VAE decode and text encoding at this shape."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sdbench.pipelines.build import _text_encoder

    spec: ModelSpec = get_model(model)
    factor = spec.vae_scale_factor
    lat_h, lat_w = height // factor, width // factor
    unet_batch = batch_size * (2 if cfg else 1)
    meta = torch.device("meta")
    with torch.device(meta):
        unet = UNet2DConditionModel.from_config(dict(spec.unet))
        vae = AutoencoderKL.from_config(dict(spec.vae))
        encoders = [None if te is None else _text_encoder(dict(te.config), te.with_projection) for te in spec.text_encoders]
    with torch.device(meta), torch.no_grad():
        sample = torch.empty(unet_batch, spec.unet["in_channels"], lat_h, lat_w)
        hidden = torch.empty(unet_batch, MAX_SEQ, spec.unet["cross_attention_dim"])
        added = None
        if spec.unet.get("addition_embed_type") == "text_time":
            n_ids = (spec.unet["projection_class_embeddings_input_dim"]
                     - encoders[-1].config.projection_dim) // spec.unet["addition_time_embed_dim"]
            added = {"text_embeds": torch.empty(unet_batch, encoders[-1].config.projection_dim),
                     "time_ids": torch.empty(unet_batch, n_ids)}
        t = torch.empty(unet_batch)
        unet_flop, unet_bytes, unet_kernels = _count_all(
            lambda: unet(sample, t, encoder_hidden_states=hidden, added_cond_kwargs=added))
        latents = torch.empty(batch_size, spec.vae["latent_channels"], lat_h, lat_w)
        vae_flop, vae_bytes, vae_kernels = _count_all(lambda: vae.decode(latents))
        ids = torch.zeros(unet_batch, MAX_SEQ, dtype=torch.long)
        text = [_count_all(lambda enc=enc: enc(ids)) for enc in encoders if enc is not None]
    return WorkCount(unet_flop, vae_flop, sum(x[0] for x in text), unet_bytes_per_eval=float(unet_bytes),
                     vae_decode_bytes=float(vae_bytes), text_encode_bytes=float(sum(x[1] for x in text)),
                     unet_kernels_per_eval=unet_kernels, vae_decode_kernels=vae_kernels,
                     text_encode_kernels=sum(x[2] for x in text))
