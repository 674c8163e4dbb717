"""model/stream.py: safetensors shards read in large chunks give exactly the tensors safetensors gives."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from kimi_cli.errors import ModelLoadError
from kimi_cli.model.stream import Entry, chunks, read_header, stream_tensors


@pytest.fixture
def shard(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "a.bf16": torch.randn(37, 11, generator=gen).to(torch.bfloat16),
        "b.odd_bytes": torch.randint(0, 255, (7,), generator=gen, dtype=torch.uint8),  # leaves the next unaligned
        "c.f32": torch.randn(5, 3, generator=gen),
        "d.int8": torch.randint(-127, 127, (64, 9), generator=gen, dtype=torch.int8),
        "e.fp8": torch.randn(16, 16, generator=gen).to(torch.float8_e4m3fn),
        "f.scalar": torch.tensor(3.5),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("limit", [1, 64, 1 << 20])  # a chunk per tensor, a few, one for all
def test_streamed_tensors_equal_safetensors_own(shard, limit):
    want = load_file(str(shard))
    got = {name: t.clone() for name, t in stream_tensors(shard, None, "cpu", limit=limit)}
    assert list(got) == [e.name for e in read_header(shard)]  # file order
    assert set(got) == set(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape
        assert torch.equal(got[name].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8)), name


def test_only_the_wanted_tensors_are_read(shard):
    got = [name for name, _ in stream_tensors(shard, {"c.f32", "e.fp8"}, "cpu", limit=8)]
    assert got == ["c.f32", "e.fp8"]


def test_chunks_keep_file_order_and_split_on_size_and_gaps():
    def e(name, begin, end):
        return Entry(name, torch.uint8, (end - begin,), begin, end)

    runs = chunks([e("a", 0, 10), e("b", 10, 20), e("c", 20, 45), e("d", 1000, 1010)], limit=30, gap=100)
    assert [[x.name for x in run] for run in runs] == [["a", "b"], ["c"], ["d"]]
    runs = chunks([e("a", 0, 10), e("b", 500, 510)], limit=1 << 20, gap=100)
    assert [[x.name for x in run] for run in runs] == [["a"], ["b"]]


@pytest.mark.parametrize("change", [
    lambda h: h["a"].update(data_offsets=[0, 10**12]),  # past the end of the file
    lambda h: h["a"].update(dtype="Q7"),
    lambda h: h["a"].update(shape=[1, 2, 3]),  # size does not match the bytes
    lambda h: h["a"].update(shape="x"),
])
def test_a_bad_header_entry_is_one_error_naming_the_file(tmp_path, change):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    change(header)
    raw = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(ModelLoadError, match="bad.safetensors"):
        list(stream_tensors(path, None, "cpu"))


def test_a_tensor_at_an_unaligned_offset_is_read_right(tmp_path):
    """safetensors writers align tensors, but the format does not promise it: a bf16 tensor at an odd
    byte offset must still come out with its values."""
    values = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
    header = {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
              "b": {"dtype": "BF16", "shape": [2], "data_offsets": [1, 5]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x07" + values.view(torch.uint8).numpy().tobytes())
    got = dict(stream_tensors(path, None, "cpu"))
    assert got["a"].tolist() == [7] and torch.equal(got["b"], values)


def test_a_load_reads_each_header_once_and_a_changed_file_again(shard, tmp_path):
    """Inside `reading_once` the header is parsed once per file identity: the same read-only entries
    come back; a file rewritten with other tensors is read again; outside the block every call reads."""
    from kimi_cli.model.validate import read_safetensors_header, reading_once

    with reading_once():
        first = read_safetensors_header(shard)
        assert read_safetensors_header(shard)[0] is first[0]
        assert [e.name for e in read_header(shard)] == [e.name for e in read_header(shard)]
        with pytest.raises(TypeError):
            first[0]["a.bf16"] = {}  # the memo cannot be changed through what it hands out
        save_file({"z": torch.zeros(3)}, str(shard))
        again = read_safetensors_header(shard)
        assert list(again[0]) == ["z"] and again[0] is not first[0]
    assert read_safetensors_header(shard)[0] is not read_safetensors_header(shard)[0]


def test_a_bad_header_inside_a_load_is_reported_each_time(tmp_path):
    """Errors are not remembered: every ask of a corrupt file is its own one-line error."""
    from kimi_cli.model.validate import check_safetensors_header, reading_once

    path = tmp_path / "bad.safetensors"
    raw = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))  # 8 of the 16 bytes
    with reading_once():
        for _ in range(2):
            with pytest.raises(ModelLoadError, match="bad.safetensors"):
                check_safetensors_header(path)


def test_load_model_parses_each_shard_header_once(tiny_checkpoint, monkeypatch):
    """The load's steps (layout check, size check, the stream's plan) share one parse per shard."""
    import kimi_cli.model.validate as validate
    from kimi_cli.model.checkpoint import load_model

    parsed = []
    real = validate._parse_header
    monkeypatch.setattr(validate, "_parse_header", lambda p: parsed.append(p.name) or real(p))
    load_model(str(tiny_checkpoint), device="cpu")
    shards = sorted(p.name for p in tiny_checkpoint.glob("*.safetensors"))
    assert sorted(parsed) == shards


def test_the_memo_is_the_loading_threads_own(shard):
    """A load in another thread neither shares this one's memo nor leaves one behind."""
    import threading

    from kimi_cli.model.validate import read_safetensors_header, reading_once

    seen = []

    def other():
        seen.append(read_safetensors_header(shard)[0] is read_safetensors_header(shard)[0])
        with reading_once():
            seen.append(read_safetensors_header(shard)[0] is read_safetensors_header(shard)[0])

    with reading_once():
        mine = read_safetensors_header(shard)[0]
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert read_safetensors_header(shard)[0] is mine
    assert seen == [False, True]
    assert read_safetensors_header(shard)[0] is not read_safetensors_header(shard)[0]
