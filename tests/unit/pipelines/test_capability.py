"""Capability rules against the device a run uses, tested on simulated cards (no GPU needed): bf16 below compute
capability 8.0, fp8 below 8.9, flash attention below 8.0, and memory that certainly does not fit, each refused
with one error naming the field, the value, the card and what is allowed, before anything is built.

The memory rule is a lower bound: a test checks it stays below the peak a real (CPU) call of the tiny models
reaches, and that it refuses SDXL fp32 at batch 64 on a 32 GB V100 but not on a 141 GB H200.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from testsupport import invoke

from sdbench.case import Case
from sdbench.errors import EXIT_OUT_OF_MEMORY, EXIT_USAGE, ConfigError
from sdbench.gpu.base import GpuInfo
from sdbench.gpu.simulated import CARDS, SimulatedGpu
from sdbench.pipelines.capability import (
    CPU,
    DeviceCapability,
    WillNotFit,
    check_case,
    check_supported,
    device_capability,
    memory_lower_bound,
)
from sdbench.runner import RunnerConfig
from sdbench.session import Bench

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CARD_KEYS = ("v100", "a100", "h100", "h200")


def case_on(device: str, **kw: Any) -> Case:
    kw.setdefault("dtype", "fp32")
    return Case.create(kw.pop("model", "tiny-sd"), device=device, **kw)


# --- the capability comes from the device ------------------------------------------------------------------
@pytest.mark.parametrize("key", CARD_KEYS)
def test_the_capability_is_the_simulated_cards_own(key: str) -> None:
    gpu = SimulatedGpu(card=key)
    from_device = device_capability(f"simulated:{key}", gpu)
    from_string = device_capability(f"simulated:{key}")
    info = gpu.info()
    assert from_device.compute_capability == info.compute_capability == CARDS[key].compute_capability
    assert from_device.memory_total_bytes == info.memory_total_bytes == CARDS[key].memory_total_bytes
    assert from_device.name == info.name and from_device.simulated and from_device.kernels == "cpu"
    assert dataclasses.replace(from_string, source="") == dataclasses.replace(from_device, source="")


def test_the_v100_is_compute_capability_7_0() -> None:
    assert SimulatedGpu(card="v100").info().compute_capability == (7, 0)
    assert device_capability("simulated:v100").compute_capability == (7, 0)


def test_a_measuring_device_with_other_figures_wins_over_the_card_table() -> None:
    """The rules read the device the run uses: a simulated card with 8 GiB is an 8 GiB card."""
    small = SimulatedGpu(card="h100", memory_total_bytes=8 * 2**30)
    assert device_capability("simulated:h100", small).memory_total_bytes == 8 * 2**30


class FakeNvmlDevice:
    """A real card as NVML reports it (a V100 here), without NVML."""

    simulated = False

    def info(self) -> GpuInfo:
        return GpuInfo(index=0, name="Tesla V100-PCIE-16GB", uuid="GPU-1", driver_version="535.104", cuda_driver_version="12.2",
                       memory_total_bytes=16 * 2**30, power_limit_w=250.0, default_power_limit_w=250.0,
                       min_power_limit_w=100.0, max_power_limit_w=250.0, default_sm_clock_mhz=1380,
                       max_sm_clock_mhz=1380, compute_capability=(7, 0), simulated=False)


def test_a_real_card_is_read_through_its_nvml_info() -> None:
    cap = device_capability("cuda:0", FakeNvmlDevice())
    assert (cap.name, cap.compute_capability, cap.kernels, cap.source) == ("Tesla V100-PCIE-16GB", (7, 0), "cuda", "NVML")
    with pytest.raises(ConfigError, match=r"invalid dtype: 'bf16' \(Tesla V100-PCIE-16GB has compute capability 7\.0.*"
                                          r"allowed: fp32, fp16$"):
        check_supported("bf16", "sdpa", "none", cap)
    check_supported("fp16", "efficient", "model", cap)  # a real GPU runs memory-efficient SDPA and offload


def test_a_card_this_machine_cannot_see_is_not_judged_on_figures_it_does_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan made on a machine without the GPU: rules that need the compute capability wait for the run."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cap = device_capability("cuda:0")
    assert cap.compute_capability is None and cap.memory_total_bytes is None and cap.kernels == "cuda"
    check_case(case_on("cuda:0", dtype="bf16", attention="flash"), cap)


# --- the rules, card by card -------------------------------------------------------------------------------
#: (setting, the cards that refuse it, the field the error names, its value)
RULES = [
    ({"dtype": "bf16"}, {"v100"}, "dtype", "bf16"),
    ({"profile": "fp8"}, {"v100", "a100"}, "profile", "fp8"),
    ({"knobs": "fp8_unet=on"}, {"v100", "a100"}, "fp8_unet", "on"),
    ({"knobs": "fp8_rowwise=on"}, {"v100", "a100"}, "fp8_rowwise", "on"),
    # torchao's float8 kernels: refused below 8.9, and on every simulated card (its kernels run on the CPU)
    ({"profile": "fp8-torchao"}, set(CARD_KEYS), "profile", "fp8-torchao"),
    ({"attention": "flash"}, {"v100"}, "attention", "flash"),
    ({"attention": "cudnn"}, set(CARD_KEYS), "attention", "cudnn"),  # its kernels run on the CPU: no cuDNN there
    ({"attention": "efficient"}, set(CARD_KEYS), "attention", "efficient"),
    ({"offload": "model"}, set(CARD_KEYS), "offload", "model"),
]


@pytest.mark.parametrize("key", CARD_KEYS)
@pytest.mark.parametrize(("setting", "refused_on", "field", "value"), RULES,
                         ids=[next(iter(r[0].values())) for r in RULES])
def test_each_rule_on_each_simulated_card(key: str, setting: dict[str, Any], refused_on: set[str], field: str,
                                          value: str) -> None:
    case = case_on(f"simulated:{key}", **setting)
    if key not in refused_on:
        check_case(case)
        return
    with pytest.raises(ConfigError) as info:
        check_case(case)
    err = info.value
    text = str(err)
    assert (err.field, err.value) == (field, value)
    assert text.startswith(f"invalid {field}: {value!r} (") and CARDS[key].name in text  # the field, value and card
    assert err.allowed and value not in err.allowed.split(", ")  # what is allowed, and it is not the refused value
    assert "\n" not in text


def test_what_is_allowed_is_what_the_card_runs() -> None:
    with pytest.raises(ConfigError) as info:
        check_case(case_on("simulated:v100", attention="flash"))
    assert info.value.allowed == "sdpa, math, sliced"
    with pytest.raises(ConfigError) as info:
        check_case(case_on("simulated:a100", attention="efficient"))
    assert info.value.allowed == "sdpa, flash, math, sliced"  # the A100 runs flash attention
    with pytest.raises(ConfigError) as info:
        check_case(case_on("simulated:a100", profile="fp8"))
    assert info.value.allowed == "eager, channels-last, compile, reduce-overhead, max"


H100_CUDA = DeviceCapability(device="cuda:0", name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
                             memory_total_bytes=80 * 2**30, simulated=False, kernels="cuda", source="NVML")


def test_freezing_needs_something_compiled() -> None:
    """A record must not say knob_freezing=true when no module was compiled to hold frozen weights."""
    check_supported("fp32", "sdpa", "none", CPU, "compile", "freezing=on")
    check_supported("fp16", "sdpa", "none", H100_CUDA, "max", "freezing=on")
    check_supported("fp32", "sdpa", "none", CPU, "eager", "compile_vae=default,freezing=on")
    with pytest.raises(ConfigError, match=r"invalid freezing: 'on' \(freezing folds the weights of compiled modules, "
                                          r"and profile 'eager' compiles none\); allowed: off, or a compiled profile"):
        check_supported("fp32", "sdpa", "none", CPU, "eager", "freezing=on")
    with pytest.raises(ConfigError, match=r"profile 'max' compiles none"):
        check_supported("fp16", "sdpa", "none", H100_CUDA, "max",
                        "freezing=on,compile_unet=none,compile_vae=none,compile_text=none")


def test_torchao_fp8_needs_cuda_kernels_fp8_unet_and_bf16_for_rowwise() -> None:
    check_supported("fp16", "sdpa", "none", H100_CUDA, "fp8-torchao")  # a real Hopper runs it
    check_supported("bf16", "sdpa", "none", H100_CUDA, "fp8-torchao", "fp8_rowwise=on")
    with pytest.raises(ConfigError, match=r"invalid profile: 'fp8-torchao' \(torchao's float8 kernels need a CUDA GPU.*"
                                          r"this run is on the CPU\); allowed: fp8"):
        check_supported("fp32", "sdpa", "none", CPU, "fp8-torchao")
    with pytest.raises(ConfigError, match=r"invalid fp8_torchao: 'on' \(fp8_torchao picks the implementation of fp8_unet"):
        check_supported("fp16", "sdpa", "none", H100_CUDA, "eager", "fp8_torchao=on")
    with pytest.raises(ConfigError, match=r"invalid dtype: 'fp16' \(torchao's row-wise float8 scaling quantises bf16"):
        check_supported("fp16", "sdpa", "none", H100_CUDA, "fp8-torchao", "fp8_rowwise=on")


def test_the_cpu_keeps_its_rules() -> None:
    check_case(case_on("cpu", dtype="bf16"), CPU)  # bf16 on the CPU is allowed
    check_case(case_on("cpu", profile="fp8"), CPU)  # fp8 is emulated on the CPU (no compute capability to refuse on)
    for setting in ({"attention": "flash"}, {"attention": "efficient"}, {"offload": "model"}):
        with pytest.raises(ConfigError, match="this run is on the CPU"):
            check_case(case_on("cpu", **setting), CPU)


def test_cuda_graphs_with_offload_are_refused_on_any_card() -> None:
    cap = DeviceCapability("cuda:0", "NVIDIA H100 80GB HBM3", (9, 0), 80 * 2**30, False, "cuda", "NVML")
    with pytest.raises(ConfigError, match=r"invalid offload: 'model' \(compile_unet, compile_text use CUDA graphs"):
        check_supported("fp16", "sdpa", "model", cap, "max")


# --- through the bench and the command line: refused before anything is built -----------------------------
@pytest.fixture(scope="module")
def v100_bench() -> Any:
    bench = Bench(device="simulated:v100", runner_config=RunnerConfig(idle_s=0.0, warmup_min_s=0.0))
    yield bench
    bench.close()


def test_bench_refuses_bf16_on_a_simulated_v100_before_building(v100_bench: Bench) -> None:
    with pytest.raises(ConfigError, match=r"dtype: 'bf16' \(Tesla V100-SXM2-32GB \(simulated\) has compute capability "
                                          r"7\.0; bf16 needs 8\.0\+.*allowed: fp32$"):
        v100_bench.pipeline(v100_bench.case("tiny-sd", dtype="bf16"))
    assert v100_bench.cache.builds == 0


def test_bench_refuses_sdxl_fp32_at_batch_64_on_a_32gb_v100_before_building(v100_bench: Bench) -> None:
    case = v100_bench.case("sdxl", dtype="fp32", batch_size=64)
    with pytest.raises(WillNotFit) as info:
        v100_bench.pipeline(case)
    err = info.value
    assert err.exit_code == EXIT_OUT_OF_MEMORY and err.field == "batch_size" and err.value == 64
    text = str(err)
    assert text.startswith("invalid batch_size: 64 (case sdxl-euler-1024x1024-b64-30st-fp32-eager will not fit on "
                           "Tesla V100-SXM2-32GB (simulated)")
    largest = int(re.search(r"allowed: batch_size <= (\d+)", text).group(1))  # type: ignore[union-attr]
    assert 1 <= largest < 64
    check_case(case.with_(batch_size=largest))  # the largest batch the bound leaves open passes it
    with pytest.raises(WillNotFit):
        check_case(case.with_(batch_size=largest + 1))
    assert v100_bench.cache.builds == 0


def test_the_same_case_is_not_refused_on_a_141gb_h200() -> None:
    case = case_on("simulated:h200", model="sdxl", batch_size=64)
    estimate = memory_lower_bound("sdxl", 1024, 1024, 64, True, "fp32")
    assert CARDS["v100"].memory_total_bytes < estimate.total_bytes < CARDS["h200"].memory_total_bytes
    check_case(case)


def test_decoding_one_image_at_a_time_lowers_the_bound() -> None:
    full = memory_lower_bound("sdxl", 1024, 1024, 64, True, "fp32")
    sliced = memory_lower_bound("sdxl", 1024, 1024, 64, True, "fp32", vae_slicing=True)
    assert sliced.vae_activation_bytes * 64 == full.vae_activation_bytes
    check_case(case_on("simulated:v100", model="sdxl", batch_size=64, knobs="vae_slicing=on"))


@pytest.mark.parametrize(("model", "batch", "knobs"), [("tiny-sd", 1, ""), ("tiny-sd", 4, ""), ("tiny-sdxl", 2, ""),
                                                       ("tiny-sd", 4, "vae_slicing=on")])
def test_the_memory_bound_stays_below_a_real_calls_peak(v100_bench: Bench, model: str, batch: int, knobs: str) -> None:
    """The bound is a lower bound: the pipeline's weights plus the live-tensor peak of a real call on the CPU
    (what sdbench's batch search measures there) is above it."""
    from sdbench.studies.batching.probe import PipelineProbe

    case = v100_bench.case(model, batch_size=batch, steps=2, knobs=knobs)
    peak = PipelineProbe(v100_bench, case)(batch).peak_bytes
    k = dict(p.split("=") for p in knobs.split(",") if p)
    bound = memory_lower_bound(model, case.height, case.width, batch, case.uses_cfg, case.dtype,
                               vae_slicing=k.get("vae_slicing") == "on")
    assert peak is not None and 0 < bound.total_bytes <= peak


def test_generate_refuses_bf16_on_a_simulated_v100_in_one_line() -> None:
    res = invoke(["generate", "--model-variant", "tiny-sd", "--device", "simulated:v100", "--dtype", "bf16",
                  "--no-save-images", "--quiet"])
    assert res.code == EXIT_USAGE
    lines = res.err.strip().splitlines()
    assert lines == ["sdbench: error: invalid dtype: 'bf16' (Tesla V100-SXM2-32GB (simulated) has compute capability "
                     "7.0; bf16 needs 8.0+ (no bf16 tensor cores before Ampere)); allowed: fp32"]


def test_generate_refuses_a_case_that_cannot_fit_with_the_out_of_memory_exit_code() -> None:
    res = invoke(["generate", "--model-variant", "sdxl", "--device", "simulated:v100", "--dtype", "fp32",
                  "--batch-size", "64", "--no-save-images", "--quiet"])
    assert res.code == EXIT_OUT_OF_MEMORY
    line = res.err.strip()
    assert "\n" not in line and line.startswith("sdbench: error: invalid batch_size: 64 (")
    assert "Tesla V100-SXM2-32GB (simulated)" in line and "allowed: batch_size <=" in line
