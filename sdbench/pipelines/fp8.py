"""FP8 (e4m3) matmuls for the UNet's transformer blocks, through `torch._scaled_mm`.

Weights are quantised once, activations dynamically at every call (under torch.compile the amax
and the cast fuse into the neighbouring kernels), with one of two scalings:
- per tensor (default): one scale per operand; the product comes out in the pipeline's dtype;
- row-wise: one scale per activation row (token) and per weight row (output channel): the amax is a
  reduction along each row, which fuses into the producer of the row; cuBLAS/CUTLASS returns bf16
  here, cast back to the pipeline's dtype.
The product accumulates on the tensor cores with "fast accumulation", as inference recipes use. Only linears that see the image tokens are converted: the
cross-attention keys and values (77 text tokens), the time embedding and anything not a multiple
of 16 wide stay in the pipeline's dtype, where fp8 buys nothing or cannot run.

Needs compute capability 8.9 or newer on a GPU (Ada, Hopper); the CPU build of torch runs the same
op, slowly, which serves the tests.

:func:`convert_unet_torchao` does the same conversion through torchao's float8 inference path
(``Float8DynamicActivationFloat8WeightConfig``: weights quantised once into torchao's ``Float8Tensor``,
activations dynamically at every call, the quantisation fused into its producer by inductor) on the same
linears, so that the two implementations can be measured side by side (profile ``fp8-torchao``). torchao
is an optional dependency (``sdbench[fp8]``) and its kernels assert a CUDA GPU of compute capability 8.9+.
"""

from __future__ import annotations

from typing import Any

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
_EPS = 1e-12
# Linears that read the text tokens (M = 77 per prompt): too small to gain from fp8.
_SKIP_SUFFIXES = ("attn2.to_k", "attn2.to_v", "attn2.to_kv")


def quantize(t: torch.Tensor, rowwise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 quantisation of a 2-D tensor: (values, fp32 scale) with t ~= values * scale; the scale is a
    scalar, or with `rowwise` one per row (shape (rows, 1))."""
    amax = t.abs().amax(dim=-1, keepdim=True) if rowwise else t.abs().amax()
    scale = torch.clamp(amax.float(), min=_EPS) / E4M3_MAX
    q = (t.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, scale


class Fp8Linear(torch.nn.Module):
    """A drop-in for nn.Linear holding e4m3 weights; computes in fp8 and returns the input's dtype."""

    def __init__(self, linear: torch.nn.Linear, rowwise: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rowwise = rowwise
        w_q, w_scale = quantize(linear.weight.detach(), rowwise)
        # _scaled_mm wants its second operand column-major: keep (out, in) row-major and pass its transpose.
        self.register_buffer("weight_q", w_q.contiguous())
        self.register_buffer("weight_scale", w_scale.reshape(1, -1) if rowwise else w_scale)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight (for inspection; the forward pass never builds it)."""
        return self.weight_q.float() * self.weight_scale.reshape(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        x_q, x_scale = quantize(x2, self.rowwise)
        out_dtype = torch.bfloat16 if self.rowwise else x.dtype  # row-wise kernels write bf16
        bias = None if self.bias is None else self.bias.to(out_dtype)
        y = torch._scaled_mm(x_q, self.weight_q.t(), scale_a=x_scale, scale_b=self.weight_scale, bias=bias,
                             out_dtype=out_dtype, use_fast_accum=True)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        scaling = "row-wise" if self.rowwise else "per-tensor"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, e4m3 {scaling}"


def convertible(name: str, module: torch.nn.Module) -> bool:
    in_attention = ".transformer_blocks." in f".{name}" or name.endswith((".proj_in", ".proj_out"))
    return (isinstance(module, torch.nn.Linear) and in_attention and not name.endswith(_SKIP_SUFFIXES)
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def convert_unet(unet: torch.nn.Module, rowwise: bool = False) -> int:
    """Replace the UNet's transformer-block linears with Fp8Linear, in place; returns how many."""
    targets = [(name, m) for name, m in unet.named_modules() if convertible(name, m)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent: Any = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, Fp8Linear(linear, rowwise))
    return len(targets)


def convert_unet_torchao(unet: torch.nn.Module, rowwise: bool = False) -> tuple[int, str]:
    """Quantise the same linears as :func:`convert_unet` with torchao's float8 inference config, in place;
    returns (how many, torchao's version). Inductor's settings are left as they are (``set_inductor_config``
    off), so that the comparison with :func:`convert_unet` differs in the fp8 implementation alone."""
    try:
        import torchao
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            PerTensor,
            quantize_,
        )
    except ImportError as exc:
        from sdbench.errors import ConfigError

        raise ConfigError("fp8_torchao", "on", "off, or install torchao (pip install 'sdbench[fp8]')",
                          reason=f"torchao is not importable here ({exc})") from None
    names = {name for name, m in unet.named_modules() if convertible(name, m)}
    granularity = PerRow() if rowwise else PerTensor()
    config = Float8DynamicActivationFloat8WeightConfig(granularity=granularity, set_inductor_config=False)
    quantize_(unet, config, filter_fn=lambda module, fqn: fqn in names)
    return len(names), str(getattr(torchao, "__version__", "unknown"))
