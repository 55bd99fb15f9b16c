"""The process's memory: the C allocator kept to two arenas, so that what one thread frees another reuses."""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2


def limit_arenas() -> None:
    """glibc gives each thread that meets another in the heap an arena of its own (up to eight per core),
    and each arena keeps what was freed in it: with the export's, the import's and the users' threads
    at work, that was a quarter of `supamove migrate`'s peak RSS (198 MB against 143 MB with two arenas,
    on the bench's 1M rows). Called before any thread starts; elsewhere than glibc, it does nothing."""
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, ARENAS)
    except (OSError, AttributeError):  # not glibc: its allocator manages on its own
        pass
