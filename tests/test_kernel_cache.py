"""Where Triton's kernels go (kimi's cache unless TRITON_CACHE_DIR is set) and the warm marker: pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimi_cli.cachedir import kimi_cache
from kimi_cli.engine.fast.kernel_cache import (
    ENV,
    is_warm,
    mark_warm,
    marker_key,
    triton_cache_dir,
    use_kimi_cache,
)


@pytest.mark.parametrize(("env", "want"), [
    ({"XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"}, "/x/cache/kimi"),
    ({"XDG_CACHE_HOME": "", "HOME": "/home/u"}, "/home/u/.cache/kimi"),
    ({"HOME": "/home/u"}, "/home/u/.cache/kimi"),
])
def test_kimi_cache_follows_xdg(env, want):
    assert kimi_cache(env) == Path(want)
    assert triton_cache_dir(env) == Path(want) / "triton"


@pytest.mark.parametrize(("env", "want"), [
    ({"HOME": "/home/u"}, "/home/u/.cache/kimi/triton"),  # unset: kimi's cache
    ({"HOME": "/home/u", ENV: ""}, "/home/u/.cache/kimi/triton"),  # empty counts as unset
    ({"HOME": "/home/u", ENV: "/mine"}, "/mine"),  # the user's choice stays
])
def test_use_kimi_cache_sets_the_variable_unless_the_user_did(env, want):
    assert use_kimi_cache(env) == Path(want)
    assert env[ENV] == want


@pytest.mark.parametrize(("parts", "want"), [
    (("0.9.0", "3.6.0", "NVIDIA H200", "bf16"), "0.9.0-3.6.0-NVIDIA_H200-bf16"),
    (("0.9.0", "3.6.0", "NVIDIA GeForce RTX 4090/PCIe", "int4"), "0.9.0-3.6.0-NVIDIA_GeForce_RTX_4090_PCIe-int4"),
    (("1.0+dev", "3.6.0", "a/b", "fp8"), "1.0+dev-3.6.0-a_b-fp8"),
])
def test_marker_key_is_a_safe_file_name(parts, want):
    key = marker_key(*parts)
    assert "/" not in key and " " not in key
    assert key == want


def test_marker_round_trip(tmp_path):
    key = marker_key("0.9.0", "3.6.0", "NVIDIA H200", "bf16")
    assert not is_warm(tmp_path, key)
    mark_warm(tmp_path, key)
    assert is_warm(tmp_path, key)
    assert not is_warm(tmp_path, marker_key("0.9.0", "3.6.0", "NVIDIA H200", "int8"))  # per format


def test_mark_warm_on_an_unwritable_cache_is_quiet(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    mark_warm(blocker, "key")  # a file where the directory should be: stays cold, raises nothing
    assert not is_warm(blocker, "key")
