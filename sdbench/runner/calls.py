"""One pipeline call: the diffusers arguments of a case (the one place they are written), the zero-argument
call the Runner times, and the marks around prompt encoding and VAE decoding."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from sdbench.case import Case
from sdbench.pipelines.build import BuiltPipeline
from sdbench.pipelines.optimize import Applied
from sdbench.runner.timing import CallEvents


def make_call(case: Case, built: BuiltPipeline, applied: Applied | None, events: CallEvents | None = None,
              per_step: bool = False) -> Callable[[], Any]:
    """The zero-argument function one measured pipeline call runs (:meth:`sdbench.runner.Runner.make_call`).

    Its marks go to ``events`` (none are taken without one); ``per_step`` adds a mark at the end of each step."""
    events = events if events is not None else CallEvents()
    pipe = built.pipe
    device = case.compute_device
    gen_device = "cpu" if device == "cpu" else device
    generator = torch.Generator(device=gen_device)
    kwargs = pipeline_call_kwargs(case, gen_device)
    if per_step:
        def on_step_end(_pipe: Any, _i: int, _t: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
            events.emit("step")
            return {}
        kwargs["callback_on_step_end"] = on_step_end
    ctx = applied.call_context if applied else contextlib.nullcontext

    def call() -> Any:
        generator.manual_seed(case.seed)
        events.emit("start")
        with ctx():
            out = pipe(generator=generator, **kwargs)
        events.emit("end")
        return out.images

    return call


@contextlib.contextmanager
def phase_hooks(pipe: Any, events: CallEvents, per_phase: bool = True) -> Iterator[None]:
    """Marks around prompt encoding and VAE decoding, by wrapping the pipeline's own entry points
    (`encode_prompt`, `vae.decode`) on the instance: diffusers is untouched, and compiled modules
    see no hooks (a hook inside a compiled region would force a graph break or a recompile).
    Without ``per_phase`` nothing is wrapped."""
    if not per_phase:
        yield
        return
    wrapped = [(pipe, "encode_prompt", "text_start", "text_end"), (pipe.vae, "decode", "decode_start", "decode_end")]
    saved = []
    for obj, attr, begin, finish in wrapped:
        had_instance_attr = attr in obj.__dict__
        original = getattr(obj, attr)
        saved.append((obj, attr, had_instance_attr, original))
        setattr(obj, attr, _marking(original, events, begin, finish))
    try:
        yield
    finally:
        for obj, attr, had_instance_attr, original in saved:
            if had_instance_attr:
                setattr(obj, attr, original)
            else:
                delattr(obj, attr)


def _marking(fn: Callable[..., Any], events: CallEvents, begin: str, finish: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        events.emit(begin)
        out = fn(*args, **kwargs)
        events.emit(finish)
        return out
    return wrapper


def pipeline_call_kwargs(case: Case, device: str) -> dict[str, Any]:
    """The diffusers call arguments of `case` (images come back as tensors in [0, 1], output_type "pt").

    The one place they are written: the Runner, image saving and fidelity checks all call this.
    """
    kwargs: dict[str, Any] = dict(
        prompt=[case.prompt] * case.batch_size,
        negative_prompt=[case.negative_prompt] * case.batch_size if case.negative_prompt else None,
        num_inference_steps=case.steps,
        guidance_scale=case.guidance_scale,
        output_type="pt",
    )
    if case.spec.img2img:
        kwargs.update(image=synthetic_init_image(case, device=device), strength=case.strength)
    else:
        kwargs.update(height=case.height, width=case.width)
    return kwargs


def synthetic_init_image(case: Case, device: str) -> torch.Tensor:
    """A seeded random input image for img2img models (the refiner), in [0, 1]."""
    g = torch.Generator(device="cpu").manual_seed(case.seed + 7)
    img = torch.rand(case.batch_size, 3, case.height, case.width, generator=g)
    return img.to(device)
