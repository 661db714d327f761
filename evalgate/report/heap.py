"""Hand memory the report freed back to the operating system between its phases.

The statistics allocate a few blocks of tens of MiB (bootstrap counts and draws) and free
them. glibc's malloc, after the first such block is freed, raises its mmap threshold to
that size (up to 32 MiB), so later blocks come from the heap, and freed heap memory is
kept for reuse (up to twice that threshold) instead of returned. The report's next phase
(the HTML page, made of small objects) then grows the process on top of it: the run's
peak RSS. ``malloc_trim`` returns what is free now; elsewhere (musl, macOS, Windows, a
Python built without ctypes) nothing happens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # imported here: a Python without ctypes still writes its report
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if name is None:
            return None
        trim = ctypes.CDLL(name).malloc_trim
    except (ImportError, OSError, AttributeError):  # no ctypes, no libc, not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Returns the process's free heap memory to the OS; False where it cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
