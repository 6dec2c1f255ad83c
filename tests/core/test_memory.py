"""Free heap memory goes back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import time

import pytest

from pilotboat.adapters.memory import Trimmer, malloc_trim

pytestmark = pytest.mark.core


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def test_memory_freed_inside_the_heap_is_returned_by_a_trim() -> None:
    # 1,000-byte objects come from glibc's heap (above pymalloc's 512 bytes); every 100th
    # stays alive, so free() alone cannot shrink the heap below them.
    blocks = [bytes(1000) for _ in range(150_000)]
    kept = blocks[::100]
    high = _rss_mib()
    del blocks
    freed = _rss_mib()
    assert malloc_trim()
    trimmed = _rss_mib()
    assert high - freed < 60, (high, freed)  # free() alone kept most of the pages
    assert freed - trimmed > 60, (high, freed, trimmed)
    assert len(kept) == 1500


def test_the_trimmer_trims_at_once_and_stops() -> None:
    blocks = [bytes(1000) for _ in range(150_000)]
    kept = blocks[::100]
    del blocks
    freed = _rss_mib()
    trimmer = Trimmer(interval=3600)
    trimmer.start()
    try:
        deadline = time.monotonic() + 5
        while freed - _rss_mib() < 60:
            assert time.monotonic() < deadline, (freed, _rss_mib())
            time.sleep(0.05)
    finally:
        trimmer.stop()
    assert len(kept) == 1500
