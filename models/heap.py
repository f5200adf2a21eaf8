"""Giving freed memory back to the system."""
from __future__ import annotations

import functools


def trim_heap() -> None:
    """glibc's malloc_trim(0): the C heap's free pages back to the system. Freeing and reallocating tensors of many
    sizes (decode chunks, evicted cache entries) otherwise leaves the resident memory high as fragmented heap
    (measured: +100 MB from 17 to 65 decoded frames at 64 px, flat with it). A no-op off glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


M_MMAP_THRESHOLD = -3          # glibc's mallopt parameter number (malloc.h)


def map_big_allocations(threshold: int = 1 << 20) -> bool:
    """glibc's mallopt(M_MMAP_THRESHOLD, threshold), process-wide: allocations of `threshold` bytes or more get
    their own memory map, given back to the system the moment they are freed. By default glibc raises this
    threshold up to 32 MB each time a big block is freed, after which the same sizes come from the heap and stay
    there: fp8 storage's per-layer upcasts (2-28 MB each on Wan 1.3B) then grew the heap by 0.2-0.7 GB while
    sampling on the CPU (bench/wan_speed.py). Costs a page fault per 4 KB of each such allocation. Returns whether
    it was set (False off glibc)."""
    try:
        import ctypes
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
