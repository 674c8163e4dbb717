"""`model.prefetch`: the weight files read into the page cache beside a load, only where that pays.

Real files in a temporary directory; the page cache is emptied for them with `posix_fadvise` and
asked about with `mincore` (where the filesystem keeps its pages anyway the tests that need an empty
cache skip).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kimi_cli.model import prefetch

MB = 1 << 20


@pytest.fixture(autouse=True)
def _any_machine(monkeypatch):
    """CI machines have 2 CPUs, where the read-ahead stays off (`MIN_CPUS`); these tests are about
    the reading itself."""
    monkeypatch.setattr(prefetch, "MIN_CPUS", 1)


def _write(folder: Path, sizes: list[int]) -> list[Path]:
    files = []
    for i, size in enumerate(sizes):
        f = folder / f"model-{i:05d}.safetensors"
        f.write_bytes(os.urandom(size))
        files.append(f)
    return files


def _evicted(files: list[Path]) -> list[Path]:
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here")
    prefetch.evict(files)
    missing = prefetch.uncached_fraction(files)
    if missing is None or missing < 0.9:
        pytest.skip(f"this filesystem keeps the pages cached (uncached fraction {missing})")
    return files


def test_a_cold_checkpoint_is_read_into_the_page_cache(tmp_path):
    files = _evicted(_write(tmp_path, [20 * MB, 9 * MB + 123]))
    job = prefetch.start(tmp_path)
    assert job is not None
    assert job.join(timeout=60) == sum(f.stat().st_size for f in files)
    assert prefetch.uncached_fraction(files) < 0.05


def test_a_cached_checkpoint_is_left_alone(tmp_path, monkeypatch):
    files = _write(tmp_path, [4 * MB])
    for f in files:
        f.read_bytes()
    assert prefetch.uncached_fraction(files) < prefetch.MIN_MISSING
    assert prefetch.start(tmp_path) is None
    _evicted(files)
    monkeypatch.setattr(prefetch, "ENABLED", False)
    assert prefetch.start(tmp_path) is None
    monkeypatch.setattr(prefetch, "ENABLED", True)
    monkeypatch.setattr(prefetch, "MIN_CPUS", prefetch.usable_cpus() + 1)
    assert prefetch.start(tmp_path) is None  # too few CPUs
    monkeypatch.setattr(prefetch, "MIN_CPUS", 1)
    assert prefetch.start(tmp_path / "nothing-here") is None
    assert prefetch.start(None) is None


def test_reads_stay_within_the_budget_and_stop_when_asked(tmp_path):
    files = _write(tmp_path, [3 * prefetch.BLOCK + 5, 2 * prefetch.BLOCK])
    budget = prefetch.BLOCK + prefetch.BLOCK // 2
    assert prefetch.Prefetch(files, budget).start().join(timeout=60) == budget
    stopped = prefetch.Prefetch(files, 10**12)
    stopped._stop.set()  # asked to stop before the first block
    assert stopped.start().stop() == 0
    assert not any(t.is_alive() for t in stopped._threads)


def test_a_file_that_goes_away_ends_the_reading_quietly(tmp_path):
    files = _write(tmp_path, [prefetch.BLOCK * 2])
    job = prefetch.Prefetch([*files, tmp_path / "gone.safetensors"], 10**12)
    files[0].unlink()  # both are gone by the time the readers reach them: nothing read, nothing raised
    assert job.start().join(timeout=60) == 0


def test_the_load_adopts_readers_begun_early(tmp_path):
    _evicted(_write(tmp_path, [6 * MB]))
    first = prefetch.begin(tmp_path)
    assert first is not None and prefetch.begin(tmp_path) is first
    with prefetch.warming(tmp_path) as job:
        assert job is first
    assert not any(t.is_alive() for t in first._threads)
    with prefetch.warming(tmp_path) as again:  # the finished readers are forgotten
        assert again is not first


def test_a_refusal_is_asked_once_per_load(tmp_path, monkeypatch):
    """The app's `warming` and the load's inside it ask the page cache once, not twice."""
    _write(tmp_path, [MB])[0].read_bytes()  # cached: `start` declines
    asked = []
    real_start = prefetch.start
    monkeypatch.setattr(prefetch, "start", lambda d: asked.append(d) or real_start(d))
    with prefetch.warming(tmp_path) as outer, prefetch.warming(tmp_path) as inner:
        assert outer is inner is None
    assert len(asked) == 1
    with prefetch.warming(tmp_path):  # a later load asks again
        pass
    assert len(asked) == 2
