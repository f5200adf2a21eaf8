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


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
