"""Tokenizer tests: parity with a plain tiktoken Encoding, special ids, streaming, errors, synth files."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import pytest
import regex
import tiktoken

from kimi_cli.errors import EXIT_MODEL, ModelLoadError
from kimi_cli.model.facts import NAMED_SPECIAL_OFFSETS, NUM_RESERVED_SPECIAL
from kimi_cli.model.synth_tokenizer import TINY_CORPUS, pad_ranks, train_tiny_bpe, write_tokenizer_files
from kimi_cli.model.tokenizer import (
    KIMI_PAT_STR,
    KimiTokenizer,
    StreamDecoder,
    default_added_tokens,
    load_tokenizer,
    read_tiktoken_ranks,
)

FULL_BASE = 163584
TINY_VOCAB = 1000

CORPUS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock.",
    "chinese": "今天天气很好，我们去公园散步吧。这张图片里有一只猫。",
    "japanese": "東京タワーは赤と白の塔です。カタカナとひらがな、ありがとう！",
    "camelcase": "HelloWorld getNumTokens XMLHttpRequest iPhone MoonViT DeepSeekV3",
    "code": "def f(x: int) -> dict:\n\treturn {'a': x[0] ** 2}  # why\n\nif (a && b) { c(); }\n",
    "emoji": "Great job 😀🎉 family 👨‍👩‍👧 flag 🇯🇵 heart ❤️!",
    "digits": "1234567 and 3.14159, 0x1F600, 2025-06-21 12:30:45",
    "whitespace": "  leading\t\ttabs\n\n\n  trailing   \r\nx \u3000y\u00a0z    ",
    "think": "◁think▷Let me look at the picture.◁/think▷The answer is 42.",
    "specials": "<|im_user|>user<|im_middle|>hi<|im_end|><|media_start|>image<|media_content|>"
    "<|media_pad|><|media_pad|><|media_end|>[EOS][BOS]",
    "specials_in_text": "text<|im_end|>more text <|media_pad|> tail",
    "contractions": "don't DON'T I'LL we're They've you'd I'M",
    "mixed": "我用Python写了一个script来处理PDF文件, 日本語とEnglishのmixed文章です。",
    "not_special": "<|im_endx|> <|nope|> [BOS <|im_end| <|reserved_token_1|>",
    "empty": "",
}
NO_SPECIALS = [k for k, v in CORPUS.items() if "<|" not in v and "[" not in v]


def _make_checkpoint(path: Path, ranks: dict[bytes, int]) -> Path:
    write_tokenizer_files(path, ranks, chat_template="{{ messages }}")
    return path


@pytest.fixture(scope="module")
def tiny_ranks() -> dict[bytes, int]:
    return train_tiny_bpe(TINY_CORPUS, TINY_VOCAB)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_ranks: dict[bytes, int]) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("tiny"), tiny_ranks)


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory: pytest.TempPathFactory, tiny_ranks: dict[bytes, int]) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("full"), pad_ranks(tiny_ranks, FULL_BASE, seed=7))


@pytest.fixture(scope="module", params=["tiny", "full"])
def checkpoint(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"{request.param}_dir")


@pytest.fixture(scope="module")
def tok(checkpoint: Path) -> KimiTokenizer:
    return load_tokenizer(checkpoint)


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> tiktoken.Encoding:
    """What the official tokenizer builds: plain tiktoken, Kimi's pattern, specials by id."""
    ranks = read_tiktoken_ranks(checkpoint / "tiktoken.model")
    specials = {name: i for i, name in default_added_tokens(len(ranks)).items()}
    return tiktoken.Encoding("ref", pat_str=KIMI_PAT_STR, mergeable_ranks=ranks, special_tokens=specials)


@pytest.mark.parametrize("name", CORPUS)
def test_encode_matches_tiktoken(tok: KimiTokenizer, reference: tiktoken.Encoding, name: str) -> None:
    text = CORPUS[name]
    assert tok.encode(text) == reference.encode(text, allowed_special="all")


@pytest.mark.parametrize("name", CORPUS)
def test_round_trip(tok: KimiTokenizer, name: str) -> None:
    assert tok.decode(tok.encode(CORPUS[name])) == CORPUS[name]


def _python_bpe(text: str, ranks: dict[bytes, int]) -> list[int]:
    """Independent reference: `regex` (V1) pre-split + lowest-rank-first merging, as tiktoken does."""
    ids: list[int] = []
    for piece in regex.findall(KIMI_PAT_STR, text, flags=regex.V1):
        raw = piece.encode("utf-8")
        if raw in ranks:
            ids.append(ranks[raw])
            continue
        parts = [bytes([b]) for b in raw]
        while True:
            candidates = [
                (ranks[a + b], i)
                for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))
                if a + b in ranks
            ]
            if not candidates:
                break
            _, i = min(candidates)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids.extend(ranks[p] for p in parts)
    return ids


@pytest.mark.parametrize("name", NO_SPECIALS)
def test_encode_matches_python_regex_bpe(tiny_dir: Path, tiny_ranks: dict[bytes, int], name: str) -> None:
    # The synth trainer pre-splits with `regex`; this proves it splits where tiktoken does.
    assert load_tokenizer(tiny_dir).encode(CORPUS[name]) == _python_bpe(CORPUS[name], tiny_ranks)


def test_full_size_special_ids(full_dir: Path) -> None:
    tok = load_tokenizer(full_dir)
    assert tok.vocab_size == 163840
    assert tok.num_base_tokens == FULL_BASE
    assert (tok.bos_id, tok.eos_id, tok.im_end_id) == (163584, 163585, 163586)
    assert (tok.media_start_id, tok.media_content_id, tok.media_end_id, tok.media_pad_id) == (
        163602,
        163603,
        163604,
        163605,
    )
    assert tok.pad_id == 163839
    assert tok.stop_ids == (163586, 163585)
    assert tok.token_id("<|im_middle|>") == 163601
    assert tok.token_id("<|im_system|>") == 163594
    assert tok.token_id("<|reserved_token_163700|>") == 163700
    assert tok.encode("<|media_pad|>x<|im_end|>")[::2] == [163605, 163586]


def test_tiny_specials_follow_its_vocabulary(tiny_dir: Path) -> None:
    tok = load_tokenizer(tiny_dir)
    assert tok.vocab_size == TINY_VOCAB + NUM_RESERVED_SPECIAL
    assert tok.im_end_id == TINY_VOCAB + 2
    assert tok.media_pad_id == TINY_VOCAB + 21
    assert tok.encode("a<|im_end|>") == [tok.token_id("a"), TINY_VOCAB + 2]


def test_default_added_tokens_layout() -> None:
    table = default_added_tokens(FULL_BASE)
    assert len(table) == NUM_RESERVED_SPECIAL
    assert min(table) == FULL_BASE and max(table) == FULL_BASE + 255
    for name, offset in NAMED_SPECIAL_OFFSETS.items():
        assert table[FULL_BASE + offset] == name
    assert table[FULL_BASE + 5] == "<|reserved_token_163589|>"
    assert table[163838] == "[UNK]" and table[163839] == "[PAD]"


def test_special_names_come_from_config(tmp_path: Path, tiny_ranks: dict[bytes, int]) -> None:
    _make_checkpoint(tmp_path, tiny_ranks)
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["added_tokens_decoder"][str(TINY_VOCAB + 5)]["content"] = "<|custom|>"
    config_path.write_text(json.dumps(config))
    tok = load_tokenizer(tmp_path)
    assert tok.encode("<|custom|>") == [TINY_VOCAB + 5]
    assert tok.decode([TINY_VOCAB + 5]) == "<|custom|>"


def test_decode_skip_special(tok: KimiTokenizer) -> None:
    ids = tok.encode("<|im_user|>hello<|im_end|>")
    assert tok.decode(ids) == "<|im_user|>hello<|im_end|>"
    assert tok.decode(ids, skip_special=True) == "hello"


def test_token_id_errors(tok: KimiTokenizer) -> None:
    with pytest.raises(ValueError, match="not a single token"):
        tok.token_id("definitely not one token 你好")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_long_text_is_cut_like_the_official_encode(tok: KimiTokenizer, reference: tiktoken.Encoding) -> None:
    # Ordinary long text (no run over 25 000 characters): no cuts, plain tiktoken ids.
    text = " ".join(CORPUS.values()) * 80
    assert len(text) > 25_000
    assert tok.encode(text) == reference.encode(text, allowed_special="all")
    # A 30 000-character run is cut after 25 000 characters; a run of specials is never cut.
    run = "a" * 30_000
    pads = "<|media_pad|>" * 4096
    expected = reference.encode(run[:25_000]) + reference.encode(run[25_000:]) + [tok.media_pad_id] * 4096
    assert tok.encode(run + pads) == expected


@pytest.mark.parametrize("name", CORPUS)
def test_stream_decoder_never_splits_characters(tok: KimiTokenizer, name: str) -> None:
    text = CORPUS[name]
    ids = tok.encode(text)
    stream = StreamDecoder(tok, skip_special=False)
    chunks = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(chunks) == text
    assert not any("\ufffd" in chunk for chunk in chunks)
    skipping = StreamDecoder(tok)
    assert "".join([skipping.push(i) for i in ids] + [skipping.flush()]) == tok.decode(ids, skip_special=True)


def test_stream_decoder_holds_partial_character(tiny_dir: Path) -> None:
    tok = load_tokenizer(tiny_dir)
    ids = tok.encode("你")
    assert len(ids) > 1  # the tiny vocabulary splits this character's three bytes
    stream = StreamDecoder(tok)
    assert stream.push(ids[0]) == "" and stream.pending
    assert "".join(stream.push(i) for i in ids[1:]) == "你"
    assert stream.pending == b"" and stream.flush() == ""


def test_stream_decoder_matches_decode_on_random_ids(full_dir: Path) -> None:
    # Random ids make invalid UTF-8 too: streaming must agree with one-shot decoding, U+FFFD included.
    tok = load_tokenizer(full_dir)
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(1, 40))]
        stream = StreamDecoder(tok)
        assert "".join([stream.push(i) for i in ids] + [stream.flush()]) == tok.decode(ids, skip_special=True)


def test_missing_tiktoken_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="tiktoken.model") as info:
        load_tokenizer(tmp_path)
    assert info.value.exit_code == EXIT_MODEL and info.value.hint


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not-base64!! 0\n", "bad line 1"),
        (b"QQ== zero\n", "bad line 1"),
        (b"QQ== 0\nQg== 5\n", "ranks are not"),
        (b"".join(b"%s %d\n" % (base64.b64encode(bytes([b])), b) for b in range(255)), "byte 0xff"),
    ],
)
def test_corrupt_tiktoken_model(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "tiktoken.model").write_bytes(content)
    with pytest.raises(ModelLoadError, match=match) as info:
        load_tokenizer(tmp_path)
    assert "tiktoken.model" in info.value.message


def test_bad_tokenizer_config(tmp_path: Path, tiny_ranks: dict[bytes, int]) -> None:
    _make_checkpoint(tmp_path, tiny_ranks)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="tokenizer_config.json"):
        load_tokenizer(tmp_path)
    config = {"added_tokens_decoder": {str(TINY_VOCAB + 21): {"content": "<|image|>"}}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="media_pad"):
        load_tokenizer(tmp_path)


def test_missing_config_falls_back_to_default_layout(tmp_path: Path, tiny_ranks: dict[bytes, int]) -> None:
    _make_checkpoint(tmp_path, tiny_ranks)
    (tmp_path / "tokenizer_config.json").unlink()
    assert load_tokenizer(tmp_path).media_pad_id == TINY_VOCAB + 21


def test_full_size_load_is_fast(full_dir: Path) -> None:
    start = time.perf_counter()
    load_tokenizer(full_dir)
    assert time.perf_counter() - start < 3.0


def test_train_tiny_bpe(tiny_ranks: dict[bytes, int]) -> None:
    assert len(tiny_ranks) == TINY_VOCAB
    assert sorted(tiny_ranks.values()) == list(range(TINY_VOCAB))
    assert all(tiny_ranks[bytes([b])] == b for b in range(256))
    assert train_tiny_bpe(TINY_CORPUS, TINY_VOCAB) == tiny_ranks  # deterministic
    assert b"the" in tiny_ranks or b" the" in tiny_ranks  # it learned real merges
    with pytest.raises(ValueError):
        train_tiny_bpe(TINY_CORPUS, 100)


def test_tiny_vocabulary_behaves_like_a_real_one(tiny_dir: Path) -> None:
    tok = load_tokenizer(tiny_dir)
    assert len(tok.encode("◁think▷")) > 1 and len(tok.encode("◁/think▷")) > 1
    assert len(tok.encode("Photosynthesis")) > 1
    pieces = [tok.token_bytes(i) for i in tok.encode("猫咪")]
    assert any(_is_partial_utf8(p) for p in pieces)  # CJK bytes straddle tokens


def _is_partial_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_pad_ranks(tiny_ranks: dict[bytes, int]) -> None:
    padded = pad_ranks(tiny_ranks, 5000, seed=3)
    assert len(padded) == 5000 and sorted(padded.values()) == list(range(5000))
    assert all(padded[token] == rank for token, rank in tiny_ranks.items())
    assert all(len(token) > 1 for token, rank in padded.items() if rank >= TINY_VOCAB)
    assert pad_ranks(tiny_ranks, 5000, seed=3) == padded
    with pytest.raises(ValueError):
        pad_ranks(tiny_ranks, 10)


def test_written_config_layout(tiny_dir: Path) -> None:
    config = json.loads((tiny_dir / "tokenizer_config.json").read_text())
    decoder = config["added_tokens_decoder"]
    assert len(decoder) == NUM_RESERVED_SPECIAL
    assert decoder[str(TINY_VOCAB + 21)]["content"] == "<|media_pad|>"
    assert decoder[str(TINY_VOCAB + 21)]["special"] is True
    assert config["auto_map"] == {"AutoTokenizer": ["tokenization_moonshot.TikTokenTokenizer", None]}
    assert (config["bos_token"], config["eos_token"], config["pad_token"], config["unk_token"]) == (
        "[BOS]",
        "[EOS]",
        "[PAD]",
        "[UNK]",
    )
    assert config["chat_template"] == "{{ messages }}"
    assert isinstance(config["model_max_length"], int)
    lines = (tiny_dir / "tiktoken.model").read_text().splitlines()
    assert len(lines) == TINY_VOCAB and lines[65] == "QQ== 65"


def test_write_returns_first_special_id(tmp_path: Path, tiny_ranks: dict[bytes, int]) -> None:
    assert write_tokenizer_files(tmp_path, tiny_ranks, None) == TINY_VOCAB
    assert "chat_template" not in json.loads((tmp_path / "tokenizer_config.json").read_text())
