"""The real CLIP BPE tokenizer, built offline from the BPE file that CLIP's pip packages ship.

Stable Diffusion's text encoders are CLIP text models with a 49,408-token vocabulary. No PyPI package
ships the Hugging Face ``vocab.json``/``merges.txt`` and there is no model hub here, but the original
``bpe_simple_vocab_16e6.txt.gz`` is in the open_clip_torch, openai-clip and clip-anytorch wheels. We
rebuild the vocabulary and merges from it exactly as CLIP's ``SimpleTokenizer`` does and hand them to
``transformers.CLIPTokenizer``.

In transformers 5, ``CLIPTokenizer`` *is* the fast, ``tokenizers``-backed tokenizer
(``CLIPTokenizerFast`` is an alias of it), so there is only one class to build.

Known, deliberate difference from CLIP's ``SimpleTokenizer``: CLIP runs ``ftfy.fix_text`` and
``html.unescape`` before tokenising; the Hugging Face tokenizer does only NFC normalisation,
whitespace collapsing and lower-casing. For ordinary prompts (no mojibake, HTML entities or control
characters) the ids are identical, which ``tests/unit/pipelines/test_tokenizer.py`` checks against a
re-implementation of CLIP's algorithm.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdbench.errors import ConfigError, SdbenchError
from sdbench.files import cache_root

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

logger = logging.getLogger(__name__)

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
ENV_BPE_PATH = "SDBENCH_CLIP_BPE"

# Packages whose wheels carry the identical BPE file, in the order we look at them.
# clip-anytorch installs its module as ``clip``; ``clip_anytorch`` is listed in case a build differs.
BPE_PACKAGES: tuple[str, ...] = ("open_clip", "clip", "clip_anytorch")

CLIP_VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
# SD 1.x and SDXL's first tokenizer pad with <|endoftext|>; SD 2.x and SDXL's second with "!" (id 0).
PAD_TOKENS: tuple[str, ...] = (EOS_TOKEN, "!")

# CLIP's SimpleTokenizer keeps merges[1 : 49152 - 256 - 2 + 1]: 48,894 merges, which with the 512
# byte tokens and the 2 special tokens make the 49,408-token vocabulary.
_N_MERGES = 49152 - 256 - 2


def _package_dirs(name: str) -> list[Path]:
    """Folders of an installed package (several for a namespace package), found without importing it.

    Importing open_clip pulls torchvision (absent here, and a CUDA torch elsewhere), so only the
    import machinery's spec is consulted.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        # A broken or half-installed package: treat it as absent and keep looking.
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def find_clip_vocab_file() -> Path:
    """Locate CLIP's ``bpe_simple_vocab_16e6.txt.gz``.

    Looks at, in order: the path in env ``SDBENCH_CLIP_BPE``; the installed ``open_clip`` package
    folder; the ``clip`` (openai-clip / clip-anytorch) and ``clip_anytorch`` package folders. No
    package is imported.

    Raises:
        ConfigError: ``SDBENCH_CLIP_BPE`` is set but names no file.
        SdbenchError: the file is nowhere; the message says how to get it.
    """
    env_path = os.environ.get(ENV_BPE_PATH)
    if env_path:
        path = Path(env_path).expanduser()
        if not path.is_file():
            # An explicit setting that is wrong is an error, not a reason to silently use another file.
            raise ConfigError(ENV_BPE_PATH, env_path, reason="no such file; it must name " + BPE_FILE_NAME)
        return path
    for package in BPE_PACKAGES:
        for folder in _package_dirs(package):
            candidate = folder / BPE_FILE_NAME
            if candidate.is_file():
                return candidate
    raise SdbenchError(
        f"CLIP's BPE vocabulary ({BPE_FILE_NAME}) was not found: looked at env {ENV_BPE_PATH} and the "
        f"package folders of {', '.join(BPE_PACKAGES)}. Install it without its dependencies (which would "
        f"pull torchvision and a CUDA torch): `pip install --no-deps open_clip_torch`, "
        f"or set {ENV_BPE_PATH}=/path/to/{BPE_FILE_NAME}."
    )


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def load_clip_bpe(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read the BPE file and build ``(vocab, merges)`` exactly as CLIP's ``SimpleTokenizer`` does.

    Returns the token -> id mapping (49,408 entries) and the ranked merges as pairs.
    """
    try:
        lines = gzip.open(path).read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SdbenchError(f"cannot read CLIP BPE file {path}: {exc}") from exc
    # Line 0 is a header ("#version: 0.2"); SimpleTokenizer skips it.
    raw_merges = lines[1 : _N_MERGES + 1]
    merges: list[tuple[str, str]] = []
    for line in raw_merges:
        parts = line.split()
        if len(parts) != 2:
            raise SdbenchError(f"CLIP BPE file {path} is malformed: merge line {line!r} is not a pair")
        merges.append((parts[0], parts[1]))
    if len(merges) != _N_MERGES:
        raise SdbenchError(f"CLIP BPE file {path} has {len(merges)} merges, expected {_N_MERGES}")
    tokens = list(bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise SdbenchError(f"CLIP BPE file {path} gives {len(vocab)} distinct tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _write_tokenizer_folder(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """Write vocab.json + merges.txt into ``folder`` atomically (another process may race us)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        # mkdtemp makes the folder private (0700); the cache may be shared, and the files are public data.
        tmp.chmod(0o755)
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        # The "#version" header is what Hugging Face merges files carry; the loader skips it.
        body = "\n".join(f"{a} {b}" for a, b in merges)
        (tmp / "merges.txt").write_text("#version: 0.2\n" + body + "\n", encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:
            # A concurrent writer won the race (replacing a non-empty folder fails): keep theirs.
            if not (folder / "vocab.json").is_file():
                raise
    finally:
        if tmp.exists():
            # Only our own leftover temp folder; failing to tidy it must not hide the real outcome.
            shutil.rmtree(tmp, ignore_errors=True)


@lru_cache(maxsize=1)
def clip_tokenizer_dir() -> Path:
    """Folder holding ``vocab.json`` and ``merges.txt`` of the CLIP tokenizer, built on first use.

    It is ``<cache_root()>/clip-tokenizer/bpe-<sha256 prefix of the BPE file>/``, so a different
    BPE file never reuses a stale folder. Memoised per process.

    Raises:
        OSError: the cache folder cannot be written.
        SdbenchError: the BPE file is missing or malformed.
    """
    bpe_path = find_clip_vocab_file()
    folder = cache_root() / "clip-tokenizer" / f"bpe-{_file_digest(bpe_path)}"
    if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        vocab, merges = load_clip_bpe(bpe_path)
        _write_tokenizer_folder(folder, vocab, merges)
    return folder


def _check_tokenizer(tokenizer: object, source: str) -> None:
    # transformers has silently built a 2-token vocabulary from ignored arguments before
    # (see PITFALLS.md); a wrong tokenizer would make every benchmark quietly meaningless.
    size = len(tokenizer)  # type: ignore[arg-type]
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    if size != CLIP_VOCAB_SIZE or bos != BOS_TOKEN_ID or eos != EOS_TOKEN_ID:
        raise SdbenchError(
            f"CLIP tokenizer built from {source} is wrong: vocabulary size {size} (expected {CLIP_VOCAB_SIZE}), "
            f"bos id {bos} (expected {BOS_TOKEN_ID}), eos id {eos} (expected {EOS_TOKEN_ID})"
        )


@lru_cache(maxsize=8)
def build_clip_tokenizer(pad_token: str = EOS_TOKEN, model_max_length: int = 77) -> CLIPTokenizer:
    """The real CLIP tokenizer (a ``transformers.CLIPTokenizer``, tokenizers-backed, i.e. fast).

    Args:
        pad_token: ``"<|endoftext|>"`` (id 49407) for SD 1.x and SDXL's first tokenizer; ``"!"``
            (id 0) for SD 2.x and SDXL's second tokenizer.
        model_max_length: context length; CLIP's text models use 77.

    bos is ``<|startoftext|>`` (49406), eos ``<|endoftext|>`` (49407), vocabulary size 49,408. The
    result can be ``save_pretrained``-ed and reloaded with ``CLIPTokenizer.from_pretrained``.

    Memoised per (pad_token, model_max_length): callers get the *same* instance, so treat it as
    read-only (``copy.deepcopy`` it before adding tokens or changing settings).

    Raises:
        ConfigError: bad ``pad_token`` or ``model_max_length``.
        SdbenchError: the BPE file is missing or malformed, or the built tokenizer is wrong.
    """
    # Heavy import, done only when a tokenizer is really wanted.
    from transformers import CLIPTokenizer

    if pad_token not in PAD_TOKENS:
        # Any other string would be added as a new token, changing the vocabulary size.
        raise ConfigError("pad_token", pad_token, allowed=PAD_TOKENS, reason="Stable Diffusion pads with one of these")
    if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length < 2:
        raise ConfigError("model_max_length", model_max_length, reason="an integer >= 2 (room for bos and eos)")
    try:
        folder = clip_tokenizer_dir()
    except OSError as exc:
        # A read-only home or cache must not stop a benchmark: build in memory instead (about 70 ms).
        logger.warning("cannot write the CLIP tokenizer cache (%s); building it in memory", exc)
        folder = None
    if folder is not None:
        tokenizer = CLIPTokenizer.from_pretrained(
            str(folder), pad_token=pad_token, model_max_length=model_max_length
        )
        source = str(folder)
    else:
        bpe_path = find_clip_vocab_file()
        vocab, merges = load_clip_bpe(bpe_path)
        # vocab=dict, merges=list of pairs: the file-path arguments are ignored in transformers 5.
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=model_max_length)
        source = str(bpe_path)
    _check_tokenizer(tokenizer, source)
    return tokenizer


def prompt_token_fields(pipe: Any, prompt: str) -> dict[str, Any]:
    """How long `prompt` is in the tokens of `pipe`'s own tokenizer, and whether CLIP's context cuts it.

    Record fields: `prompt_tokens` (the count before truncation, start and end tokens included, as the
    context counts them), `prompt_max_tokens` (the context, 77 for CLIP), `prompt_truncated` and
    `prompt_tokens_dropped`. The text encoders see only the first `prompt_max_tokens`: the rest costs no
    compute and changes no image. SDXL's two tokenizers share one vocabulary and context; the refiner
    has only the second. Without a tokenizer the fields are None with `prompt_tokens_reason`.
    """
    from sdbench.pipelines.quiet import TOKEN_LENGTH_LOGGER, TOKEN_LENGTH_MESSAGE, drop_log_messages

    tokenizer = getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)
    if tokenizer is None:
        return {"prompt_tokens": None, "prompt_max_tokens": None, "prompt_truncated": None,
                "prompt_tokens_dropped": None, "prompt_tokens_reason": "the pipeline has no tokenizer"}
    # Counting the whole prompt is what makes transformers warn about a sequence longer than the model's.
    with drop_log_messages([TOKEN_LENGTH_LOGGER], TOKEN_LENGTH_MESSAGE):
        n_tokens = len(tokenizer(prompt, truncation=False).input_ids)
    max_tokens = int(tokenizer.model_max_length)
    return {"prompt_tokens": n_tokens, "prompt_max_tokens": max_tokens, "prompt_truncated": n_tokens > max_tokens,
            "prompt_tokens_dropped": max(0, n_tokens - max_tokens)}
