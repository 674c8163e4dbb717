"""`engine.fast.patching.Swap`: replacements in place inside the block, originals back after the
outermost block (also after an error), and `original` giving the replaced attribute meanwhile."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kimi_cli.engine.fast.patching import Swap


def test_a_swap_is_re_entrant_and_restored():
    owner = SimpleNamespace(f="theirs", g="kept")
    made = []
    swap = Swap(lambda: made.append(1) or [(owner, "f", "ours")])
    assert swap.original(owner, "f") == "theirs"
    with swap.active():
        assert owner.f == "ours" and swap.original(owner, "f") == "theirs"
        with swap.active():
            assert owner.f == "ours"
        assert owner.f == "ours"  # the inner block does not undo the outer one
    assert owner.f == "theirs" and owner.g == "kept" and made == [1]


def test_an_error_inside_restores_the_original():
    owner = SimpleNamespace(f="theirs")
    swap = Swap(lambda: [(owner, "f", "ours")])
    with pytest.raises(RuntimeError), swap.active():
        raise RuntimeError("boom")
    assert owner.f == "theirs"
    with swap.active():  # and it can be entered again
        assert owner.f == "ours"
