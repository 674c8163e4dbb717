"""Kimi-VL's tokenizer: tiktoken BPE ranks + Kimi's pre-tokenizer regex + 256 reserved special ids.

The checkpoint ships `tiktoken.model` (`base64(token bytes) rank` per line) and a
`tokenizer_config.json` whose `added_tokens_decoder` names the special ids after the base vocabulary.
The official `tokenization_moonshot.py` needs remote code and does not import on transformers 5.x,
and transformers' native tiktoken converter drops Kimi's `pat_str` (ids differ on CJK and CamelCase).

Choice: wrap `tiktoken.Encoding` directly, as the official code does. Same Rust BPE and the same
fancy-regex engine (`\\p{Han}`, `&&` class intersection), so ids match the official tokenizer by
construction instead of through a conversion to keep verifying; a 4096-placeholder image prompt
encodes in milliseconds. `tiktoken.model` is parsed here rather than by `load_tiktoken_bpe`, which
caches contents under a key made from the *path* (a rewritten synthetic checkpoint would load stale
ranks) and cannot say which line is corrupt.

Long inputs are cut as the official `encode` cuts them (400 000-character chunks; runs of more than
25 000 whitespace or non-whitespace characters) once special tokens are split off, as transformers'
added-token trie does first. tiktoken no longer needs the cuts; they only keep the ids identical.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimi_cli.errors import ModelLoadError
from kimi_cli.model.facts import (
    BOS,
    EOS,
    IM_END,
    MEDIA_CONTENT,
    MEDIA_END,
    MEDIA_PAD,
    MEDIA_START,
    NAMED_SPECIAL_OFFSETS,
    NUM_RESERVED_SPECIAL,
    PAD,
    stop_token_ids,
)
from kimi_cli.textsafe import json_loads

if TYPE_CHECKING:
    import tiktoken

#: Kimi's pre-tokenizer pattern (`pat_str`), shared by the Moonlight / Kimi-VL / Kimi-K2 tokenizers.
#: It needs a regex engine with `\p{Han}` and `&&` class intersection: tiktoken's fancy-regex, or the
#: `regex` module in V1 mode (in V0 mode `regex` silently misreads the nested classes).
KIMI_PAT_STR = "|".join(
    (
        r"[\p{Han}]+",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    )
)

TIKTOKEN_FILE = "tiktoken.model"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# The official encode() feeds tiktoken at most this many characters at a time, and never a run of
# more than _MAX_RUN_CHARS whitespace / non-whitespace characters (old tiktoken was slow on those).
_MAX_ENCODE_CHARS = 400_000
_MAX_RUN_CHARS = 25_000
# Python's \s (str patterns) is exactly str.isspace, which is what the official splitter tests.
_LONG_RUN = re.compile(rf"\s{{{_MAX_RUN_CHARS + 1},}}|\S{{{_MAX_RUN_CHARS + 1},}}")

# Roles whose special token must exist; bos/eos/pad names come from the config instead.
_REQUIRED_SPECIALS = {
    "im_end": IM_END,
    "media_pad": MEDIA_PAD,
    "media_start": MEDIA_START,
    "media_content": MEDIA_CONTENT,
    "media_end": MEDIA_END,
}

_HINT = "The checkpoint must hold Kimi-VL's tokenizer files; re-download it or run `kimi synth`."


def reserved_token_name(token_id: int) -> str:
    """The name the official tokenizer gives an unnamed reserved special id."""
    return f"<|reserved_token_{token_id}|>"


def default_added_tokens(first_special_id: int) -> dict[int, str]:
    """All 256 special tokens by id, in the official layout starting at `first_special_id`."""
    by_offset = {offset: name for name, offset in NAMED_SPECIAL_OFFSETS.items()}
    return {
        first_special_id + k: by_offset.get(k, reserved_token_name(first_special_id + k))
        for k in range(NUM_RESERVED_SPECIAL)
    }


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken ranks file, checking that ranks are dense and cover all 256 single bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read tokenizer file {path}: {exc.strerror or exc}", _HINT) from exc
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as exc:
            raise ModelLoadError(f"corrupt tokenizer file {path}: bad line {lineno}", _HINT) from exc
    _check_ranks(ranks, path)
    return ranks


def _check_ranks(ranks: dict[bytes, int], path: Path) -> None:
    """Reject rank tables that tiktoken would reject or that would make encode() panic."""
    if set(ranks.values()) != set(range(len(ranks))):  # also rules out duplicate ranks
        raise ModelLoadError(f"corrupt tokenizer file {path}: ranks are not 0..N-1, each once", _HINT)
    # Byte-level BPE falls back to single bytes; a missing one would crash tiktoken mid-encode.
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ModelLoadError(f"corrupt tokenizer file {path}: no token for byte {missing[0]:#04x}", _HINT)


def read_tokenizer_config(path: Path) -> dict[str, Any]:
    """Load `tokenizer_config.json`; an absent file means the default layout (an empty config)."""
    if not path.exists():
        return {}
    try:
        config = json_loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot parse {path}: {exc}", _HINT) from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"cannot parse {path}: expected a JSON object", _HINT)
    return config


def special_tokens_from_config(config: dict[str, Any], first_special_id: int) -> dict[int, str]:
    """The 256 special tokens by id: names from `added_tokens_decoder`, reserved names for the rest.

    The first special id is the size of the base vocabulary, as in the official tokenizer; the
    config only names ids in the block that follows it, it never moves the block. A config with
    no `added_tokens_decoder` at all (or no config file) gets the default Kimi names.
    """
    decoder = config.get("added_tokens_decoder")
    if not decoder:
        return default_added_tokens(first_special_id)
    if not isinstance(decoder, dict):
        raise ModelLoadError(f"{TOKENIZER_CONFIG_FILE}: added_tokens_decoder must be an object", _HINT)
    specials = {
        i: reserved_token_name(i) for i in range(first_special_id, first_special_id + NUM_RESERVED_SPECIAL)
    }
    for key, entry in decoder.items():
        content = entry.get("content") if isinstance(entry, dict) else entry
        if not str(key).isdigit() or not isinstance(content, str):
            raise ModelLoadError(f"{TOKENIZER_CONFIG_FILE}: bad added_tokens_decoder entry {key!r}", _HINT)
        # Like the official tokenizer, ids outside the reserved block are ignored: the block's
        # position comes from the ranks file, and the real config is not verified to be tidy.
        if int(key) in specials:
            specials[int(key)] = content
    if len(set(specials.values())) != len(specials):
        raise ModelLoadError(f"{TOKENIZER_CONFIG_FILE}: two special ids share one name", _HINT)
    return specials


def _config_token(config: dict[str, Any], key: str, default: str) -> str:
    """`bos_token` & co. are either a string or an AddedToken dict in HF configs."""
    value = config.get(key) or default
    return value.get("content", default) if isinstance(value, dict) else str(value)


def load_tokenizer(checkpoint_dir: Path) -> KimiTokenizer:
    """Build the tokenizer from a checkpoint's `tiktoken.model` and `tokenizer_config.json`."""
    checkpoint_dir = Path(checkpoint_dir)
    ranks = read_tiktoken_ranks(checkpoint_dir / TIKTOKEN_FILE)
    config = read_tokenizer_config(checkpoint_dir / TOKENIZER_CONFIG_FILE)
    specials = special_tokens_from_config(config, len(ranks))
    return KimiTokenizer(
        ranks,
        specials,
        bos_token=_config_token(config, "bos_token", BOS),
        eos_token=_config_token(config, "eos_token", EOS),
        pad_token=_config_token(config, "pad_token", PAD),
    )


class KimiTokenizer:
    """Encode/decode Kimi-VL text; special-token strings in the input become their ids."""

    def __init__(
        self,
        ranks: dict[bytes, int],
        specials: dict[int, str],
        *,
        bos_token: str = BOS,
        eos_token: str = EOS,
        pad_token: str = PAD,
    ) -> None:
        import tiktoken

        self._ranks = ranks
        self._num_base = len(ranks)
        self._special_ids = {name: i for i, name in specials.items()}
        self._encoding: tiktoken.Encoding = tiktoken.Encoding(
            "kimi", pat_str=KIMI_PAT_STR, mergeable_ranks=ranks, special_tokens=self._special_ids
        )
        self._id_bytes = self._bytes_table(ranks, specials)
        names = {**_REQUIRED_SPECIALS, "bos": bos_token, "eos": eos_token, "pad": pad_token}
        missing = [name for name in names.values() if name not in self._special_ids]
        if missing:
            raise ModelLoadError(f"the tokenizer has no special token {', '.join(missing)}", _HINT)
        self._ids = {role: self._special_ids[name] for role, name in names.items()}

    @staticmethod
    def _bytes_table(ranks: dict[bytes, int], specials: dict[int, str]) -> list[bytes]:
        """Bytes of every id in a list: the cheapest lookup when streaming one token at a time."""
        table = [b""] * (len(ranks) + NUM_RESERVED_SPECIAL)
        for token, rank in ranks.items():
            table[rank] = token
        for token_id, name in specials.items():
            table[token_id] = name.encode("utf-8")
        return table

    @property
    def vocab_size(self) -> int:
        """Base tokens plus the 256 reserved special ids (the embedding table's row count)."""
        return len(self._id_bytes)

    @property
    def num_base_tokens(self) -> int:
        """Size of the BPE vocabulary; also the first special id."""
        return self._num_base

    @property
    def im_end_id(self) -> int:
        """Id of `<|im_end|>` (end of turn)."""
        return self._ids["im_end"]

    @property
    def media_pad_id(self) -> int:
        """Id of `<|media_pad|>` (one image feature row)."""
        return self._ids["media_pad"]

    @property
    def media_start_id(self) -> int:
        """Id of `<|media_start|>`."""
        return self._ids["media_start"]

    @property
    def media_content_id(self) -> int:
        """Id of `<|media_content|>`."""
        return self._ids["media_content"]

    @property
    def media_end_id(self) -> int:
        """Id of `<|media_end|>`."""
        return self._ids["media_end"]

    @property
    def bos_id(self) -> int:
        """Id of the BOS token (`[BOS]`)."""
        return self._ids["bos"]

    @property
    def eos_id(self) -> int:
        """Id of the EOS token (`[EOS]`)."""
        return self._ids["eos"]

    @property
    def pad_id(self) -> int:
        """Id of the padding token (`[PAD]`)."""
        return self._ids["pad"]

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end generation: `<|im_end|>` (what the model writes) and `[EOS]`."""
        return stop_token_ids(self.im_end_id, self.eos_id)

    def is_special(self, token_id: int) -> bool:
        """Whether `token_id` is one of the 256 reserved special ids."""
        return token_id >= self._num_base

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a special token's name, UTF-8 encoded)."""
        if not 0 <= token_id < len(self._id_bytes):
            raise ValueError(f"token id {token_id} is outside the vocabulary (0..{len(self._id_bytes) - 1})")
        return self._id_bytes[token_id]

    def token_id(self, token_str: str) -> int:
        """The id of a special-token name or of a string that is exactly one base token."""
        if token_str in self._special_ids:
            return self._special_ids[token_str]
        rank = self._ranks.get(token_str.encode("utf-8"))
        if rank is None:
            raise ValueError(f"{token_str!r} is not a single token of this vocabulary")
        return rank

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, like the official `encode(text, allowed_special="all")`."""
        ids = self._encoding.encode(text, allowed_special="all")
        if len(text) <= _MAX_RUN_CHARS or (len(text) <= _MAX_ENCODE_CHARS and not _LONG_RUN.search(text)):
            return ids  # the usual case: nothing the official cuts would touch
        return self._recut(ids)

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of untrusted text: special-token strings stay plain text, never control ids.

        Used for everything a user supplies (prompts, piped text), so that a file that happens to
        contain `<|im_end|>` or `<|media_pad|>` cannot end a turn or misplace image features.
        Text without special-token strings gets the same ids as `encode`.
        """
        return [i for chunk in _long_text_chunks(text) for i in self._encoding.encode_ordinary(chunk)]

    def _recut(self, ids: list[int]) -> list[int]:
        """Re-encode the special-free stretches of `ids` that the official encode() would cut.

        Special tokens are split off first (as transformers' added-token trie does before the
        official `_tokenize`), so a run of 4096 `<|media_pad|>` is never cut, only long text is.
        """
        out: list[int] = []
        start = 0
        for end in range(len(ids) + 1):
            if end < len(ids) and ids[end] < self._num_base:
                continue
            if end > start:  # (an image's 4096 pads are 4096 empty stretches: nothing to decode)
                stretch = ids[start:end]
                text = b"".join(self._id_bytes[i] for i in stretch).decode("utf-8", errors="replace")
                chunks = _long_text_chunks(text)
                if len(chunks) == 1:
                    out.extend(stretch)
                else:
                    out.extend(i for chunk in chunks for i in self._encoding.encode_ordinary(chunk))
            out.extend(ids[end : end + 1])  # the special token that ended the stretch, if any
            start = end + 1
        return out

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`; invalid UTF-8 (a cut multi-byte character) becomes U+FFFD."""
        parts = [self.token_bytes(i) for i in ids if not (skip_special and self.is_special(i))]
        return b"".join(parts).decode("utf-8", errors="replace")


def _long_text_chunks(text: str) -> list[str]:
    """Cut text the way the official encode() does before handing it to tiktoken."""
    if len(text) <= _MAX_RUN_CHARS:
        return [text]
    chunks: list[str] = []
    for start in range(0, len(text), _MAX_ENCODE_CHARS):
        block = text[start : start + _MAX_ENCODE_CHARS]
        # A run of n > limit same-class characters is cut every `limit` characters from its start.
        cuts = [
            cut
            for m in _LONG_RUN.finditer(block)
            for cut in range(m.start() + _MAX_RUN_CHARS, m.end(), _MAX_RUN_CHARS)
        ]
        bounds = [0, *cuts, len(block)]
        chunks.extend(block[a:b] for a, b in zip(bounds, bounds[1:], strict=False))
    return chunks


class StreamDecoder:
    """Turn a stream of token ids into text without ever splitting a UTF-8 character.

    Bytes that do not yet form a complete character are held back until a later token completes
    them, so a CJK character or emoji spread over two tokens arrives whole. The concatenation of
    every `push` plus `flush` equals `tokenizer.decode(ids, skip_special=...)`.
    """

    def __init__(self, tokenizer: KimiTokenizer, skip_special: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        if self._skip_special and self._tokenizer.is_special(token_id):
            return ""
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    @property
    def pending(self) -> bytes:
        """Bytes held back because they end in an incomplete UTF-8 sequence."""
        return self._utf8.getstate()[0]

    def flush(self) -> str:
        """End of stream: return what is left (an incomplete character becomes U+FFFD)."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text
