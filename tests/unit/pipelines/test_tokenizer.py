"""The offline CLIP tokenizer gives exactly CLIP's token ids.

The reference is a faithful re-implementation of OpenAI CLIP's ``SimpleTokenizer`` (``clip/simple_tokenizer.py``)
below, reading the same BPE file. One step is skipped: ftfy is not installed, so ``ftfy.fix_text`` is
not applied; every prompt here is one where it is a no-op (already NFC, no mojibake, no control
characters), which ``test_prompts_are_ftfy_no_ops`` guards as far as it can without ftfy.
"""

from __future__ import annotations

import gzip
import html
import shutil
import string
import unicodedata
from functools import lru_cache
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from sdbench.errors import ConfigError, SdbenchError
from sdbench.files import ENV_CACHE_DIR, cache_root
from sdbench.pipelines import tokenizer as sdtok

CONTEXT_LENGTH = 77


# --- Reference: CLIP's SimpleTokenizer, re-implemented --------------------------------------------------


def _ref_bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _ref_get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


def _ref_basic_clean(text: str) -> str:
    # CLIP: text = ftfy.fix_text(text) first -- skipped (ftfy not installed; prompts are no-ops for it).
    text = html.unescape(html.unescape(text))
    return text.strip()


def _ref_whitespace_clean(text: str) -> str:
    text = regex.sub(r"\s+", " ", text)
    return text.strip()


class RefSimpleTokenizer:
    """CLIP's original BPE tokenizer algorithm."""

    def __init__(self, bpe_path: Path) -> None:
        self.byte_encoder = _ref_bytes_to_unicode()
        merges_lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges_lines = merges_lines[1 : 49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges_lines]
        vocab = list(_ref_bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab]
        for merge in merges:
            vocab.append("".join(merge))
        vocab.extend(["<|startoftext|>", "<|endoftext|>"])
        self.encoder = dict(zip(vocab, range(len(vocab)), strict=True))
        self.bpe_ranks = dict(zip(merges, range(len(merges)), strict=True))
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot = self.encoder["<|startoftext|>"]
        self.eot = self.encoder["<|endoftext|>"]

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _ref_get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _ref_get_pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        bpe_tokens: list[int] = []
        text = _ref_whitespace_clean(_ref_basic_clean(text)).lower()
        for token in regex.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            bpe_tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return bpe_tokens

    def tokenize(self, text: str, context_length: int = CONTEXT_LENGTH) -> list[int]:
        """CLIP's ``clip.tokenize`` with ``truncate=True``, without the zero padding."""
        tokens = [self.sot] + self.encode(text) + [self.eot]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = self.eot
        return tokens


# --- Fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Build the tokenizer folder in a temporary cache, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_CACHE_DIR, str(tmp_path_factory.mktemp("sdbench-cache")))
        mp.delenv(sdtok.ENV_BPE_PATH, raising=False)
        sdtok.clip_tokenizer_dir.cache_clear()
        sdtok.build_clip_tokenizer.cache_clear()
        yield
    sdtok.clip_tokenizer_dir.cache_clear()
    sdtok.build_clip_tokenizer.cache_clear()


@lru_cache(maxsize=1)
def _reference() -> RefSimpleTokenizer:
    return RefSimpleTokenizer(sdtok.find_clip_vocab_file())


@pytest.fixture(scope="module")
def ref() -> RefSimpleTokenizer:
    return _reference()


@pytest.fixture(scope="module")
def tok():
    return sdtok.build_clip_tokenizer()


LONG_PROMPT = (
    "a highly detailed matte painting of a medieval castle on a hill at sunset, dramatic clouds, "
    "volumetric light, golden hour, trending on artstation, by greg rutkowski and alphonse mucha, "
    "intricate, elegant, sharp focus, octane render, unreal engine 5, 8k, ultra realistic, "
    "cinematic composition, wide angle lens, rule of thirds, vibrant colors, masterpiece, best quality"
)

PROMPTS = [
    "a photo of a cat",
    "Hello, world!!! ...",
    "café naïve 日本語 🙂",
    "",
    LONG_PROMPT,
    "  A   PHOTO\tof a\n CAT  ",
    "It's the cat's toy; we'll see, won't we? I'd've said 'yes'.",
    "1024x768 at cfg=7.5, 50 steps (DPM++ 2M Karras) #sd_1.5 @home $100 100%",
    "an astronaut riding a horse on mars, 4k",
    "straße über señor façade",
    "<|startoftext|>embedded special<|endoftext|>",
]


def test_prompts_are_ftfy_no_ops() -> None:
    """The reference skips ftfy; keep prompts where it would change nothing."""
    for prompt in PROMPTS:
        assert unicodedata.normalize("NFC", prompt) == prompt
        assert all(unicodedata.category(c) != "Cc" or c in "\t\n" for c in prompt)


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_ids_match_clip_reference(tok, ref: RefSimpleTokenizer, prompt: str) -> None:
    expected = ref.tokenize(prompt)
    got = tok(prompt, truncation=True, max_length=CONTEXT_LENGTH).input_ids
    assert got == expected


def test_known_ids(tok, ref: RefSimpleTokenizer) -> None:
    known = {
        "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
        "": [49406, 49407],
    }
    for prompt, ids in known.items():
        assert ref.tokenize(prompt) == ids  # the reference agrees with CLIP's published ids
        assert tok(prompt).input_ids == ids


def test_long_prompt_truncated_with_eos_last(tok, ref: RefSimpleTokenizer) -> None:
    assert len(ref.encode(LONG_PROMPT)) + 2 > CONTEXT_LENGTH  # really longer than the context
    ids = tok(LONG_PROMPT, truncation=True, max_length=CONTEXT_LENGTH).input_ids
    assert len(ids) == CONTEXT_LENGTH
    assert ids[0] == sdtok.BOS_TOKEN_ID
    assert ids[-1] == sdtok.EOS_TOKEN_ID
    # model_max_length is 77, so truncation alone (as diffusers calls it) stops there too.
    assert tok(LONG_PROMPT, truncation=True).input_ids == ids


def test_case_and_whitespace_normalised(tok) -> None:
    assert tok("  A   PHOTO\tof a\n CAT  ").input_ids == tok("a photo of a cat").input_ids


# Printable ASCII without '&': CLIP html-unescapes and the HF tokenizer does not (documented difference).
_ASCII_TEXT = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation.replace("&", "") + " \t\n", max_size=60
)


@settings(deadline=None, max_examples=150)
@given(text=_ASCII_TEXT)
def test_random_ascii_matches_reference(text: str) -> None:
    tok = sdtok.build_clip_tokenizer()
    assert tok(text, truncation=True, max_length=CONTEXT_LENGTH).input_ids == _reference().tokenize(text)


def test_vocab_size_and_special_ids(tok) -> None:
    assert len(tok) == 49408
    assert tok.vocab_size == 49408
    assert tok.bos_token_id == 49406
    assert tok.eos_token_id == 49407
    assert tok.model_max_length == 77
    assert tok.is_fast


@pytest.mark.parametrize(("pad_token", "pad_id"), [("<|endoftext|>", 49407), ("!", 0)])
def test_padding(pad_token: str, pad_id: int) -> None:
    tok = sdtok.build_clip_tokenizer(pad_token=pad_token)
    assert tok.pad_token == pad_token
    assert tok.pad_token_id == pad_id
    enc = tok("a photo of a cat", padding="max_length", max_length=tok.model_max_length, truncation=True)
    ids = enc.input_ids
    assert len(ids) == 77
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[7:] == [pad_id] * 70
    assert enc.attention_mask == [1] * 7 + [0] * 70


def test_memoised() -> None:
    assert sdtok.build_clip_tokenizer() is sdtok.build_clip_tokenizer()
    assert sdtok.build_clip_tokenizer("!") is not sdtok.build_clip_tokenizer()


def test_cache_folder_written() -> None:
    folder = sdtok.clip_tokenizer_dir()
    assert folder.parent.parent == cache_root()
    assert (folder / "vocab.json").is_file()
    assert (folder / "merges.txt").is_file()


@pytest.mark.parametrize("pad_token", ["<|endoftext|>", "!"])
def test_save_and_reload(tmp_path: Path, pad_token: str) -> None:
    from transformers import CLIPTokenizer

    tok = sdtok.build_clip_tokenizer(pad_token=pad_token)
    tok.save_pretrained(tmp_path / "tokenizer")
    again = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert len(again) == 49408
    assert again.pad_token == pad_token
    assert again.model_max_length == 77
    for prompt in PROMPTS:
        kwargs = {"padding": "max_length", "max_length": 77, "truncation": True}
        assert again(prompt, **kwargs).input_ids == tok(prompt, **kwargs).input_ids


def test_in_memory_fallback_when_cache_unwritable(monkeypatch: pytest.MonkeyPatch) -> None:
    def unwritable() -> Path:
        raise PermissionError("read-only cache")

    monkeypatch.setattr(sdtok, "clip_tokenizer_dir", unwritable)
    # Call the undecorated function so neither the memo nor other tests are affected.
    tok = sdtok.build_clip_tokenizer.__wrapped__(pad_token="!")
    assert len(tok) == 49408
    assert tok.pad_token_id == 0
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="pad_token"):
        sdtok.build_clip_tokenizer(pad_token="<pad>")
    with pytest.raises(ConfigError, match="model_max_length"):
        sdtok.build_clip_tokenizer(model_max_length=1)


def test_env_path_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / sdtok.BPE_FILE_NAME
    shutil.copyfile(sdtok.find_clip_vocab_file(), copy)
    monkeypatch.setenv(sdtok.ENV_BPE_PATH, str(copy))
    assert sdtok.find_clip_vocab_file() == copy


def test_env_path_missing_is_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sdtok.ENV_BPE_PATH, str(tmp_path / "nope.txt.gz"))
    with pytest.raises(ConfigError, match=sdtok.ENV_BPE_PATH):
        sdtok.find_clip_vocab_file()


def test_missing_file_error_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sdtok.ENV_BPE_PATH, raising=False)
    monkeypatch.setattr(sdtok, "_package_dirs", lambda name: [])
    with pytest.raises(SdbenchError) as info:
        sdtok.find_clip_vocab_file()
    message = str(info.value)
    assert "pip install --no-deps open_clip_torch" in message
    assert sdtok.ENV_BPE_PATH in message


def test_package_found_without_import() -> None:
    import sys

    folders = sdtok._package_dirs("open_clip")
    assert any((folder / sdtok.BPE_FILE_NAME).is_file() for folder in folders)
    # Importing open_clip would pull torchvision; finding its folder must not import it.
    assert "open_clip" not in sys.modules
    assert sdtok._package_dirs("surely_not_an_installed_package_xyz") == []


# --- prompt length as record fields -------------------------------------------------------------------


def test_prompt_token_fields_count_before_truncation(tok, ref: RefSimpleTokenizer) -> None:
    from types import SimpleNamespace

    pipe = SimpleNamespace(tokenizer=tok, tokenizer_2=None)
    long = sdtok.prompt_token_fields(pipe, LONG_PROMPT)
    n = len(ref.encode(LONG_PROMPT)) + 2  # start and end tokens count against the context too
    assert n > CONTEXT_LENGTH
    assert long == {"prompt_tokens": n, "prompt_max_tokens": CONTEXT_LENGTH, "prompt_truncated": True,
                    "prompt_tokens_dropped": n - CONTEXT_LENGTH}
    short = sdtok.prompt_token_fields(pipe, "a photo of a cat")
    assert short["prompt_tokens"] == len(ref.encode("a photo of a cat")) + 2 and short["prompt_truncated"] is False


def test_prompt_token_fields_of_a_refiner_and_of_no_tokenizer(tok) -> None:
    from types import SimpleNamespace

    refiner = SimpleNamespace(tokenizer=None, tokenizer_2=tok)  # the refiner has only the second encoder
    assert sdtok.prompt_token_fields(refiner, "a cat")["prompt_tokens"] == 4
    none = sdtok.prompt_token_fields(SimpleNamespace(), "a cat")
    assert none["prompt_tokens"] is None and none["prompt_truncated"] is None and none["prompt_tokens_reason"]
