"""The warm pipeline cache evicts only to make room: by count, or by a VRAM budget for weights."""

from __future__ import annotations

from typing import Any

from sdbench.pipelines.build import BuiltPipeline, PipelineCache, PipelineKey, pipeline_weight_bytes


def _builder(name: str) -> Any:
    return lambda: BuiltPipeline(pipe=object(), model=name, weights="synthetic", dtype="fp32", device="cpu", build_s=0.0)


def _key(model: str, profile: str = "eager") -> PipelineKey:
    return PipelineKey(model, "synthetic", "fp32", "cpu", profile)


def test_weight_bytes_follow_the_dtype() -> None:
    assert pipeline_weight_bytes("sdxl", "fp32") == 2 * pipeline_weight_bytes("sdxl", "fp16")
    # SDXL: UNet 2.567 G + VAE 83.7 M + text 123.1 M + 694.7 M parameters, two bytes each
    assert pipeline_weight_bytes("sdxl", "fp16") == 2 * (2_567_463_684 + 83_653_863 + 123_060_480 + 694_659_840)


def test_a_budget_for_one_pipeline_evicts_the_older_one() -> None:
    one = pipeline_weight_bytes("tiny-sd", "fp32")
    cache = PipelineCache(max_pipelines=10, vram_budget_bytes=int(1.5 * one), prebuild=False)
    cache.get(_key("tiny-sd"), _builder("a"))
    cache.get(_key("tiny-sd", "channels-last"), _builder("b"))
    assert len(cache) == 1 and cache.evictions == 1 and cache.cached_bytes == one
    assert cache.get(_key("tiny-sd", "channels-last"), _builder("c")).model == "b"  # the newer one stayed


def test_within_budget_nothing_is_evicted_and_a_hit_builds_nothing() -> None:
    cache = PipelineCache(max_pipelines=10, vram_budget_bytes=10 * pipeline_weight_bytes("tiny-sd", "fp32"), prebuild=False)
    first = cache.get(_key("tiny-sd"), _builder("a"))
    cache.get(_key("tiny-sdxl"), _builder("b"))
    assert cache.get(_key("tiny-sd"), _builder("c")) is first
    assert (len(cache), cache.builds, cache.hits, cache.evictions) == (2, 2, 1, 0)


def test_without_a_budget_the_count_limit_applies() -> None:
    cache = PipelineCache(max_pipelines=1, prebuild=False)
    cache.get(_key("tiny-sd"), _builder("a"))
    cache.get(_key("tiny-sdxl"), _builder("b"))
    assert len(cache) == 1 and cache.evictions == 1


def test_a_cached_pipeline_comes_with_every_scheduler_built(monkeypatch: Any) -> None:
    """Every later scheduler change is a lookup: no constructor runs (KDPM2's takes ~80 ms)."""
    import sdbench.pipelines.build as pipelines
    from sdbench.spec.schedulers import SCHEDULERS, check_available, get_scheduler_spec

    made: list[Any] = []

    def builder() -> BuiltPipeline:
        made.append(pipelines.build_pipeline("tiny-sd", weights="synthetic", dtype="fp32"))
        made.append(made[0].pipe.scheduler)
        return made[0]

    cache = PipelineCache(max_pipelines=1)
    built = cache.get(_key("tiny-sd"), builder)
    assert built.pipe.scheduler is made[1]  # the model's own scheduler is still in place
    assert built.scheduler_prebuild_s > 0

    def no_constructor(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a scheduler was built on a swap")

    monkeypatch.setattr(pipelines, "make_scheduler", no_constructor)
    available = []
    for key in SCHEDULERS:
        try:
            check_available(get_scheduler_spec(key))
        except Exception:
            continue
        available.append(key)
        assert type(pipelines.set_scheduler(built.pipe, key)).__name__ == get_scheduler_spec(key).class_name
    assert len(available) >= 10
