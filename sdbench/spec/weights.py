"""Where a pipeline's weights come from: synthetic (seeded random), a local folder, or the Hugging Face hub.

Synthetic weights keep the real architecture (shapes, FLOPs, memory, time and energy per step) and
are built fast: modules are made on the meta device, materialised with `to_empty` directly on the
target device, then filled deterministically, parameter by parameter, from a seed and the
parameter's name, so a model's weights do not depend on the device order of initialisation and an
fp32 reference and an fp16 run share the same weights up to rounding.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sdbench.errors import ConfigError, WeightsNotFoundError
from sdbench.spec.models import ModelSpec

WEIGHT_KINDS = ("auto", "synthetic", "hub", "local")


@dataclass(frozen=True)
class WeightSource:
    """A parsed `--weights` value: `auto`, `synthetic`, `hub`, `local:PATH` or a folder path."""

    kind: str  # synthetic | hub | local | auto
    path: Path | None = None

    @classmethod
    def parse(cls, value: str) -> WeightSource:
        if value in ("auto", "synthetic", "hub"):
            return cls(value)
        raw = value[len("local:"):] if value.startswith("local:") else value
        if value.startswith("local:") or "/" in value or value.startswith("."):
            path = Path(raw).expanduser()
            if not path.is_dir():
                raise ConfigError("weights", value, "auto, synthetic, hub, local:PATH (an existing diffusers folder)",
                                  reason="folder not found")
            check_safetensors(path)
            return cls("local", path)
        raise ConfigError("weights", value, "auto, synthetic, hub, local:PATH")

    def __str__(self) -> str:
        return f"local:{self.path}" if self.kind == "local" else self.kind


#: Weight files that are Python pickles: loading one runs code from the file, so sdbench reads safetensors only.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class PickleOnlyWeightsError(ConfigError):
    """A local weights folder (or one of its component folders) holds weights only as pickle files."""

    def __init__(self, folder: Path, pickles: list[str]) -> None:
        super().__init__("weights", f"local:{folder.parent if folder.name in _COMPONENTS else folder}",
                         "a diffusers folder with .safetensors weights", reason="pickle files only")
        self.folder = folder
        self.pickles = pickles
        # One line a user can act on (the usual ConfigError wording would bury the folder's name).
        self.args = (f"safetensors required: {folder} has only {', '.join(pickles)} (pickle)",)

    def __str__(self) -> str:
        return str(self.args[0])


_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def check_safetensors(path: Path) -> None:
    """Refuse a diffusers folder whose weights (the folder itself or a component's subfolder) are pickle files only.

    Pipelines load with ``use_safetensors=True``; such a folder would fail deep inside diffusers with a
    traceback. Raises :class:`PickleOnlyWeightsError` (exit 2) naming the folder and its files.
    """
    for folder in (path, *(path / name for name in _COMPONENTS)):
        if not folder.is_dir():
            continue
        files = [p for p in folder.iterdir() if p.is_file()]
        pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
        if pickles and not any(p.suffix == ".safetensors" for p in files):
            raise PickleOnlyWeightsError(folder, pickles)


def _param_seed(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@torch.no_grad()
def fill_synthetic_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter of `module` in place with seeded, scale-preserving random values.

    Linear and convolution weights get N(0, 1/fan_in) (activations keep their scale through the
    depth of the network, so fp16 stays finite), norms start at identity, embeddings and other
    parameters get N(0, 0.02^2), biases N(0, 0.01^2). Random numbers are drawn in fp32 on the
    parameter's own device and then cast, so only rounding separates dtypes.
    """
    for mod_name, mod in module.named_modules():
        for p_name, param in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(mod, (nn.GroupNorm, nn.LayerNorm)):
                param.fill_(1.0 if p_name == "weight" else 0.0)
                continue
            if p_name == "bias":
                std = 0.01
            elif isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and param.dim() >= 2:
                fan_in = param[0].numel()
                std = 1.0 / math.sqrt(fan_in)
            else:
                std = 0.02
            gen = torch.Generator(device=param.device).manual_seed(_param_seed(seed, full))
            values = torch.randn(param.shape, generator=gen, device=param.device, dtype=torch.float32)
            param.copy_(values.mul_(std))
    _refill_buffers_(module)
    return module


@torch.no_grad()
def _refill_buffers_(module: nn.Module) -> None:
    # After to_empty, non-persistent buffers hold garbage. CLIP's position_ids is the only one in
    # the supported architectures; anything else is an error rather than silently random.
    for name, buf in module.named_buffers():
        if name.endswith("position_ids"):
            buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))
        else:
            raise RuntimeError(f"synthetic weights: no rule to initialise buffer {name!r}")


def hf_cache_dir() -> Path:
    """The user's Hugging Face hub cache (honours HF_HUB_CACHE and HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


_WEIGHT_PATTERNS = ["*.json", "*.txt", "*.safetensors", "tokenizer*/*", "*/*.json", "*/*.txt", "*/*.safetensors"]


def resolve_hub_snapshot(repo_id: str, *, local_only: bool | None = None, allow_patterns: list[str] | None = None) -> Path:
    """Return the local snapshot folder of `repo_id`, downloading only when the network is allowed.

    Uses the user's cache and stored token (gated repositories need `huggingface-cli login`).
    With HF_HUB_OFFLINE set (or `local_only`), only the cache is consulted.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if local_only is None:
        local_only = _hub_offline()
    try:
        path = snapshot_download(repo_id, allow_patterns=allow_patterns or _WEIGHT_PATTERNS, local_files_only=local_only)
    except GatedRepoError as exc:
        raise WeightsNotFoundError(
            f"{repo_id} is gated: accept its licence on the hub and log in (`huggingface-cli login`), then retry"
        ) from exc
    except (LocalEntryNotFoundError, RepositoryNotFoundError, OSError) as exc:
        raise WeightsNotFoundError(
            f"real weights for {repo_id!r} are not in the Hugging Face cache ({hf_cache_dir()})"
            + (" and HF_HUB_OFFLINE is set" if local_only else " and could not be downloaded")
            + ". Provide them with one of: `huggingface-cli download "
            + repo_id
            + "` on a machine with network access (then copy the cache), `--weights local:PATH` pointing at a "
            "diffusers folder, or use `--weights synthetic` to benchmark the architecture with random weights."
        ) from exc
    return Path(path)


def hub_file(repo_id: str, filename: str) -> Path:
    """One file of a hub repository, from the cache (or downloaded when allowed)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=_hub_offline()))
    except OSError as exc:
        raise WeightsNotFoundError(
            f"{filename} of {repo_id} is not in the Hugging Face cache ({hf_cache_dir()}); download it with "
            f"`huggingface-cli download {repo_id} {filename}` or use `--weights synthetic`"
        ) from exc


def hub_weights_present(spec: ModelSpec) -> bool:
    """True when the model's real weights are already in the local cache (no network used)."""
    repo = spec.base_repo_id or spec.repo_id
    if repo is None:
        return False
    try:
        resolve_hub_snapshot(repo, local_only=True, allow_patterns=["model_index.json"])
    except WeightsNotFoundError:
        return False
    return True


def resolve_auto(spec: ModelSpec, source: WeightSource) -> WeightSource:
    """`auto` means the real weights when the cache holds them, synthetic otherwise."""
    if source.kind != "auto":
        return source
    if spec.tiny or os.environ.get("SDBENCH_FORCE_SYNTHETIC") == "1":
        return WeightSource("synthetic")
    return WeightSource("hub") if hub_weights_present(spec) else WeightSource("synthetic")
