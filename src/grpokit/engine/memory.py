"""Handing freed heap memory back to the operating system between the phases of a step.

glibc keeps memory freed by small and medium allocations in its heap, so after the
first backward pass a training process stays at the high-water mark of every phase
(activations, logit chunks, KV caches) even though that memory is free. `malloc_trim`
returns it: resident memory then peaks at the largest single phase instead of the sum
of what each phase left behind. Trimming costs the call plus the page faults of
re-touching the memory later: on W2 it saved 50-140 MiB of peak RSS and cost 0.3-0.8 s
of a 7.3 s step; on W1 it cost 35 ms of a 0.21 s step for nothing. So it is opt-in
(`run.release_memory`) and skipped when little of the heap is free.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache

MIN_FREE_BYTES = 128 * 2**20  # trim only when at least this much of the heap is free


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


@lru_cache(maxsize=1)
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # a C library without malloc_trim (e.g. musl)
        return None
    if hasattr(libc, "mallinfo2"):  # glibc >= 2.33
        libc.mallinfo2.restype = _MallInfo2
    return libc


def heap_free_bytes() -> int | None:
    """Free bytes held in the malloc heap (all arenas), or None where unknown."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    return int(libc.mallinfo2().fordblks)


def release_free_memory(min_free: int = MIN_FREE_BYTES) -> bool:
    """Return free heap pages to the OS when at least min_free bytes are free (or when
    that cannot be known); True when memory was released."""
    libc = _libc()
    if libc is None:
        return False
    free = heap_free_bytes()
    if free is not None and free < min_free:
        return False
    return bool(libc.malloc_trim(0))
