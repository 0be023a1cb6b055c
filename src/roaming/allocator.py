"""glibc malloc set up for training: large activations reused, not page-faulted afresh each step.

By default glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB)
with a fresh ``mmap`` and returns it to the kernel on ``free``, and trims the heap's top when
more than 128 KiB is free. A training step allocates and frees the same activations every step,
many far above 32 MiB (a fused CelebA pass at T·B = 2048 holds gigabytes), so every step faults
all of those pages in again: millions of minor page faults and seconds of kernel time per step.
:func:`tune` keeps freed memory in the process instead (no mmap for allocations, no trimming,
1 GiB of extra top padding), so the next step reuses it; the process's resident memory stays
at its peak. It is what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>
MALLOC_TOP_PAD_=1GiB`` would do, set from inside the ``roaming`` command. CUDA memory is
PyTorch's caching allocator and is not affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_TOP_PAD = 1 << 30
# M_TRIM_THRESHOLD -1: never trim (mallopt(3)).
_NEVER = -1
# Set to 0 to keep glibc's defaults (e.g. to measure what the tuning saves).
ENVIRONMENT = "ROAMING_MALLOC_TUNING"


def tune() -> bool:
    """Set the malloc parameters above for this process; False where there is no glibc (other
    platforms, musl) or ``ROAMING_MALLOC_TUNING=0``. Call before the large allocations."""
    if os.environ.get(ENVIRONMENT, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER), (_M_TOP_PAD, _TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)
