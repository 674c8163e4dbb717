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
