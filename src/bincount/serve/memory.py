"""Memory and the collector: freed memory back to the system after a burst; start-up objects frozen.

Why: a burst leaves the server's resident memory hundreds of MB above its idle level (+185 MB after 10 s of
8 clients, +590 MB after 128, EfficientNet-Lite0 on 2 cores) although every tensor of it has been freed:
glibc keeps freed heap and arena pages for reuse, and the many decoding threads each have an arena.
Lowering glibc's mmap threshold (``MALLOC_MMAP_THRESHOLD_``) gave the memory back but cost two thirds of
the throughput (a system call and fresh page faults for every tensor); ``MALLOC_ARENA_MAX=2`` did not help.
``malloc_trim(0)`` once the server has been idle for a moment returns it at no cost while serving.
No library wraps it; it is one ctypes call, and a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Ask the C allocator to return freed pages to the system; whether it could be asked."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive (torch, timm, the model: ~545,000 of them) out of the
    cyclic collector's reach; returns how many were frozen.

    Why: a full collection walked them all, 275 ms on a 2-core AMD EPYC, and the allocations of a busy
    server trigger one every so often; those pauses were ``/ping``'s worst times under load (210-280 ms
    with 128 clients). Objects made later, per request, are still collected as before."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
