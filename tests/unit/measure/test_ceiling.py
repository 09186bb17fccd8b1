"""The matmul ceiling MFU is taken against: measured once per card and cached, the datasheet's where it is
not measured, the simulated card's rate, and on the CPU none, with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sdbench.gpu import SimulatedGpu
from sdbench.measure import ceiling as ceiling_mod
from sdbench.measure.ceiling import datasheet_tflops, matmul_ceiling


class FakeNvml:
    simulated = False

    def __init__(self, name: str, uuid: str) -> None:
        self._info = SimpleNamespace(name=name, uuid=uuid)

    def info(self) -> SimpleNamespace:
        return self._info


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SDBENCH_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_datasheet_rates_match_the_nvml_names() -> None:
    assert datasheet_tflops("NVIDIA H200", "bf16")[0] == 989.0
    assert datasheet_tflops("NVIDIA H100 80GB HBM3", "fp16")[0] == 989.0
    assert datasheet_tflops("NVIDIA H100 NVL", "fp16")[0] == 835.0
    assert datasheet_tflops("NVIDIA A100-SXM4-40GB", "fp16")[0] == 312.0
    assert datasheet_tflops("Tesla V100-SXM2-32GB", "fp16")[0] == 125.0
    assert datasheet_tflops("Tesla V100-PCIE-16GB", "fp16")[0] == 112.0
    assert datasheet_tflops("NVIDIA H100 80GB HBM3", "fp32") is None
    assert datasheet_tflops("Some Unknown GPU", "fp16") is None


def test_measured_once_per_card_then_read_from_the_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_measure(device: str, dtype: object) -> float:
        calls.append(device)
        return 777.0

    monkeypatch.setattr(ceiling_mod, "measure_matmul_ceiling_tflops", fake_measure)
    gpu = FakeNvml("NVIDIA H200", "GPU-1234")
    first = matmul_ceiling("cuda:0", gpu, "fp16")
    second = matmul_ceiling("cuda:0", gpu, "fp16")
    assert (first.tflops, first.source) == (777.0, "measured")
    assert (second.tflops, second.source) == (777.0, "measured (cached)")
    assert calls == ["cuda:0"]
    doc = json.loads((cache_dir / "matmul-ceiling.json").read_text())
    assert any(k.startswith("GPU-1234/fp16/") for k in doc)
    # Another card is measured on its own.
    assert matmul_ceiling("cuda:0", FakeNvml("NVIDIA H200", "GPU-5678"), "fp16").source == "measured"
    assert len(calls) == 2


def test_a_failed_measurement_falls_back_to_the_datasheet(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(device: str, dtype: object) -> float:
        raise RuntimeError("CUDA error: no kernel image")

    monkeypatch.setattr(ceiling_mod, "measure_matmul_ceiling_tflops", broken)
    got = matmul_ceiling("cuda:0", FakeNvml("NVIDIA H100 80GB HBM3", "GPU-1"), "bf16")
    assert got.tflops == 989.0 and got.source.startswith("datasheet")
    unknown = matmul_ceiling("cuda:0", FakeNvml("Mystery GPU", "GPU-2"), "fp16")
    assert unknown.tflops is None and "no datasheet entry" in unknown.reason
    assert unknown.fields()["matmul_ceiling_unavailable_reason"] == unknown.reason


def test_measuring_can_be_switched_off(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDBENCH_MEASURE_CEILING", "0")
    got = matmul_ceiling("cuda:0", FakeNvml("NVIDIA A100-SXM4-80GB", "GPU-3"), "fp16")
    assert got.tflops == 312.0 and "datasheet" in got.source
    assert not (cache_dir / "matmul-ceiling.json").exists()


def test_simulated_cards_use_their_published_rates_and_the_cpu_says_why() -> None:
    assert matmul_ceiling("simulated:a100", SimulatedGpu(card="a100"), "fp16").tflops == 312.0
    no_bf16 = matmul_ceiling("simulated:v100", SimulatedGpu(card="v100"), "bf16")
    assert no_bf16.tflops is None and "bf16" in no_bf16.reason
    cpu = matmul_ceiling("cpu", None, "fp32")
    assert cpu.tflops is None and "CPU" in cpu.reason


def test_module_has_no_import_time_torch_dependency() -> None:
    assert "torch" not in ceiling_mod.__dict__
