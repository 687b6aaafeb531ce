"""Freed memory is reused between batches while a volume is segmented, and handed back afterwards (glibc)."""

import ctypes
import resource

import pytest

from LegSegNetLib.segmenting import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="malloc tuning needs glibc")

BLOCK_PAGES = 16384  # a 64 MB block, above glibc's largest automatic mmap threshold (32 MB)


def faults_to_fill_a_block() -> int:
    """Minor page faults of malloc + writing every page + free (plain malloc: numpy would ask for huge pages)."""
    libc = heap._glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(BLOCK_PAGES * 4096)
    ctypes.memset(block, 1, BLOCK_PAGES * 4096)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    libc.free(block)
    return after - before


def test_a_freed_block_is_reused_inside_and_returned_outside():
    with heap.freed_memory_kept():
        faults_to_fill_a_block()  # the first block may need fresh pages
        reused = faults_to_fill_a_block()
    after = [faults_to_fill_a_block() for _ in range(2)]
    assert reused < BLOCK_PAGES // 10
    assert min(after) > BLOCK_PAGES // 2  # defaults back: each large block is mapped afresh and given back


def resident_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize()


def test_memory_a_thread_freed_is_handed_back():
    """A thread's freed blocks between blocks still in use stay resident in its own arena until released."""
    import threading

    libc = heap._glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    block_bytes, pairs, resident = 100 * 1024, 640, {}  # below the mmap threshold: from the thread's arena

    def fragment_then_release():
        blocks = [libc.malloc(block_bytes) for _ in range(2 * pairs)]
        for block in blocks:
            ctypes.memset(block, 1, block_bytes)
        for block in blocks[::2]:  # every other one: holes the arena cannot trim from its top
            libc.free(block)
        resident["holes"] = resident_bytes()
        heap.release_freed_memory()
        resident["released"] = resident_bytes()
        for block in blocks[1::2]:
            libc.free(block)

    worker = threading.Thread(target=fragment_then_release)
    worker.start()
    worker.join()
    assert resident["holes"] - resident["released"] > pairs * block_bytes // 2
