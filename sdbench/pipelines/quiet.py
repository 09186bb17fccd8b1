"""Third-party messages that tell a benchmark's user nothing, each silenced only where it arises (a pipeline
call, a tokenizer build), so the same messages elsewhere still show."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sdbench.spec.schedulers import NUMPY_TENSOR_NOTICES

# Third-party messages that tell a benchmark's user nothing, each silenced only where it arises.
# diffusers' ModelMixin.to(dtype) logs this even when the list of such modules is empty ("...: []"); it
# comes from casting a model (SDXL's fp16 VAE upcast in every call, loading with a dtype).
FP32_MODULES_MESSAGE = "that should be kept in float32"
FP32_MODULES_LOGGER = "diffusers.models.modeling_utils"
# The pipelines' encode_prompt logs the cut words of a prompt over CLIP's 77 tokens, per encoder and per
# call; the record says it instead (prompt_tokens, prompt_truncated).
CLIP_TRUNCATION_MESSAGE = "was truncated because CLIP can only handle"
# transformers says so once per tokenizer when a prompt is tokenised without truncation.
TOKEN_LENGTH_MESSAGE = "Token indices sequence length is longer than the specified maximum"
TOKEN_LENGTH_LOGGER = "transformers.tokenization_utils_base"
# SDXL's __call__ runs its deprecated upcast_vae() whenever an fp16 VAE must decode in fp32 (the fix it
# names is what it does itself); and the warning is diffusers' to fix, not the user's.
UPCAST_VAE_WARNING = r"`upcast_vae` is deprecated"


class _DropMessages(logging.Filter):
    """A logging filter that drops records whose message contains any of `fragments`."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


@contextlib.contextmanager
def drop_log_messages(logger_names: Iterable[str], *fragments: str) -> Iterator[None]:
    """Drop log records containing `fragments` from exactly these loggers, only inside the block.

    A logger's filter sees only the records logged on that logger (not its children's), so the names
    must be the modules that log. Every other message of those loggers still gets through.
    """
    drop = _DropMessages(tuple(fragments))
    loggers = [logging.getLogger(name) for name in dict.fromkeys(logger_names)]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _pipeline_loggers(pipe: Any) -> list[str]:
    """The diffusers module loggers of `pipe`'s class and its bases (whose methods log for it)."""
    return [cls.__module__ for cls in type(pipe).__mro__ if cls.__module__.startswith("diffusers.")]


def quiet_call_context(pipe: Any, inner: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
                       ignore_warnings: Iterable[tuple[str, type[Warning]]] = ()
                       ) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of the context a pipeline call runs in: `inner()` with the calls' third-party noise silenced.

    Dropped: the CLIP truncation message (per encoder and call), diffusers' float32-modules message,
    the `upcast_vae` FutureWarning (SDXL's fp16 VAE upcast) and NumPy 2's notices from the schedulers'
    set_timesteps (copy keyword, `__array_wrap__`), plus `ignore_warnings` (message regex,
    category). Scoped to the call: the same messages outside a pipeline call still show.
    """
    loggers = [*_pipeline_loggers(pipe), FP32_MODULES_LOGGER, TOKEN_LENGTH_LOGGER]
    warning_filters = [(UPCAST_VAE_WARNING, FutureWarning), (NUMPY_TENSOR_NOTICES, DeprecationWarning), *ignore_warnings]

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        with drop_log_messages(loggers, CLIP_TRUNCATION_MESSAGE, FP32_MODULES_MESSAGE, TOKEN_LENGTH_MESSAGE), \
                warnings.catch_warnings():
            for message, category in warning_filters:
                warnings.filterwarnings("ignore", message=message, category=category)
            with inner():
                yield

    return context
