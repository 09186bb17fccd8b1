"""FLOPs per image, counted on the meta device, against the reference counts of the real architectures."""

from __future__ import annotations

import pytest

from sdbench.pipelines.flops import WorkCount, count_work
from sdbench.spec.models import TINY_MODELS

G = 1e9
REL = 1e-3


def test_sd15_at_512_with_cfg() -> None:
    w = count_work("sd-v1.5", 512, 512, 1, True)
    assert w.unet_flop_per_eval / G == pytest.approx(1606.5, rel=REL)
    assert w.vae_decode_flop / G == pytest.approx(2514.5, rel=REL)
    assert w.text_encode_flop / G == pytest.approx(26.6, rel=REL)  # CLIP-L, prompt and negative prompt


def test_sd21_at_768_with_cfg() -> None:
    w = count_work("sd-v2.1", 768, 768, 1, True)
    assert w.unet_flop_per_eval / G == pytest.approx(4298.2, rel=REL)


def test_sdxl_at_1024_with_cfg() -> None:
    w = count_work("sdxl", 1024, 1024, 1, True)
    assert w.unet_flop_per_eval / G == pytest.approx(13522.5, rel=REL)
    assert w.vae_decode_flop / G == pytest.approx(10470.4, rel=REL)
    # CLIP-L (26.6) plus bigG (195.7)
    assert w.text_encode_flop / G == pytest.approx(26.6 + 195.7, rel=REL)


@pytest.mark.parametrize(("model", "side"), [("sd-v1.5", 512), ("sdxl", 1024), ("tiny-sdxl", 64)])
def test_no_cfg_halves_unet_and_text_work_but_not_the_decode(model: str, side: int) -> None:
    cfg = count_work(model, side, side, 1, True)
    plain = count_work(model, side, side, 1, False)
    assert plain.unet_flop_per_eval == pytest.approx(cfg.unet_flop_per_eval / 2, rel=1e-9)
    assert plain.text_encode_flop == pytest.approx(cfg.text_encode_flop / 2, rel=1e-9)
    assert plain.vae_decode_flop == cfg.vae_decode_flop


def test_work_grows_with_batch_and_pixels() -> None:
    one = count_work("sd-v1.5", 512, 512, 1, True)
    two = count_work("sd-v1.5", 512, 512, 2, True)
    assert two.unet_flop_per_eval == pytest.approx(2 * one.unet_flop_per_eval, rel=1e-9)
    assert two.vae_decode_flop == pytest.approx(2 * one.vae_decode_flop, rel=1e-9)
    bigger = count_work("sd-v1.5", 768, 512, 1, True)
    assert bigger.unet_flop_per_eval > 1.5 * one.unet_flop_per_eval
    # mostly convolutions (linear in pixels) plus one mid-block attention (quadratic)
    assert 1.5 * one.vae_decode_flop < bigger.vae_decode_flop < 1.55 * one.vae_decode_flop
    assert bigger.text_encode_flop == one.text_encode_flop


def test_distilled_variants_share_the_base_architecture() -> None:
    # same architecture, so the same work: turbo's savings come from steps and CFG only
    from sdbench.spec.models import get_model

    for distilled, base in (("sdxl-turbo", "sdxl"), ("sdxl-lightning", "sdxl"), ("sd-turbo", "sd-v2.1-base")):
        d, b = get_model(distilled), get_model(base)
        assert dict(d.unet) == dict(b.unet) and dict(d.vae) == dict(b.vae) and d.text_encoders == b.text_encoders


def test_refiner_counts_only_its_bigg_encoder() -> None:
    w = count_work("sdxl-refiner", 1024, 1024, 1, True)
    assert w.text_encode_flop / G == pytest.approx(195.7, rel=REL)
    assert w.unet_flop_per_eval > 0


@pytest.mark.parametrize("model", TINY_MODELS)
def test_tiny_models_have_a_small_positive_count(model: str) -> None:
    w = count_work(model, 64, 64, 1, True)
    assert 0 < w.unet_flop_per_eval < 1e10
    assert 0 < w.vae_decode_flop < 1e10
    assert 0 < w.text_encode_flop < 1e9


def test_per_image_arithmetic() -> None:
    w = WorkCount(unet_flop_per_eval=100.0, vae_decode_flop=40.0, text_encode_flop=6.0)
    p = w.per_image(batch_size=2, unet_evals=5)
    assert p == {
        "flop_unet_per_step_per_image": 50.0,
        "flop_unet_per_image": 250.0,
        "flop_vae_decode_per_image": 20.0,
        "flop_text_encode_per_image": 3.0,
        "flop_per_image": (500.0 + 40.0 + 6.0) / 2,
    }
    flops = {k: v for k, v in w.as_dict().items() if k.endswith("_flop") or k == "unet_flop_per_eval"}
    assert flops == {"unet_flop_per_eval": 100.0, "vae_decode_flop": 40.0, "text_encode_flop": 6.0}
    # Bytes and kernels (the simulated GPU's work model) default to none.
    assert {k: v for k, v in w.as_dict().items() if k not in flops} == {
        "unet_bytes_per_eval": 0.0, "vae_decode_bytes": 0.0, "text_encode_bytes": 0.0,
        "unet_kernels_per_eval": 0, "vae_decode_kernels": 0, "text_encode_kernels": 0}
