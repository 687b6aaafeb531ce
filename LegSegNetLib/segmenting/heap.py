"""Freed memory kept in the process while a volume streams through an engine (glibc only; elsewhere a no-op).

Every network pass allocates and frees the same large activation buffers. glibc returns each block above its
mmap threshold (32 MB at most) to the kernel when it is freed, so the next pass faults the same pages in again:
4.7 million page faults and 11 s of system time per 100 slices on the 2-core test machine (Testing/BENCHMARK.md).
While slices are segmented, large blocks come from the heap and freed memory stays there for the next batch;
afterwards glibc's default thresholds are set back and the heap is trimmed, so a host process (Slicer) gets the
memory back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator, Optional

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # both thresholds' documented defaults (mallopt(3))
KEEP_THRESHOLD = 1 << 30  # larger than any block a batch allocates


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    libc = _glibc()
    if libc is None or not libc.mallopt(M_MMAP_THRESHOLD, KEEP_THRESHOLD):
        yield
        return
    libc.mallopt(M_TRIM_THRESHOLD, KEEP_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        libc.malloc_trim(0)


def release_freed_memory() -> None:
    """Hands the memory freed in every malloc arena back to the kernel. Memory a worker thread freed stays in that
    thread's own arena, where other threads never reuse it."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@lru_cache(maxsize=1)
def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        return libc if hasattr(libc, "gnu_get_libc_version") else None  # musl has no such tuning
    except (OSError, AttributeError):
        return None
