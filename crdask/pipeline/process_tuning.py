"""How the process that runs a night treats its memory and its garbage collector (layer 4).

A night's local cluster runs its frame tasks on threads of this process
(``execution.processes: false``), and the masters are built here too, so
this process allocates and frees arrays of a frame's size (tens of MB) a few
hundred times a night. Two defaults of the interpreter and of glibc cost
time there, and :func:`night_process` changes them for the length of a run:

* **Freed frames go back to the kernel.** glibc returns a freed block larger
  than its mmap threshold (at most 32 MiB) to the kernel at once, trims the
  top of its heaps above a threshold twice that size, and gives each thread
  its own arena, so the next frame's array is new memory: the kernel faults
  it in and zeroes it, 2 MiB huge page by huge page. On the 20-frame
  2048x2048 night of ``tests/benchmarks/bench_night.py`` that was 1,300
  huge-page faults (2.6 GB zeroed) and 7 s of kernel time in a 19 s CPU
  budget. :func:`keep_freed_memory` keeps freed memory in the process for
  reuse (one arena, blocks up to 32 MiB from the heap, no trimming below
  1 GiB): 250 huge-page faults, 1.2-1.5 s less kernel time. The price is
  resident memory: the process keeps what it freed (peak 1.00 -> 1.18 GB on
  that night) until it exits.
* **The garbage collector walks every object, often.** After importing
  astropy, Dask, distributed, Numba and Zarr the process holds ~150,000
  objects that live until it exits, and every full collection during the
  night walks them again; Dask's and astropy's many small containers start
  a young collection every 700 allocations. ``gc.freeze()`` moves the
  long-lived objects out of the collector's sight for the run and a young
  generation of 20,000 collects less often (measured on the same night:
  0.53 s -> 0.29 s of collections, all threads stopped during each);
  ``gc.unfreeze()`` and the old thresholds come back after.

Both together (the freeze, before the larger young generation), same
night, four alternating runs each (2026-12-03, quiet): 12.0 s -> 9.9 s, CPU
19.2 -> 15.8 s; the allocator alone 10.9 s.

Neither changes a result. :func:`crdask.pipeline.night.run_night` enters
:func:`night_process`, with the allocator's settings only when it makes its
own client (a caller's client keeps its process's allocator as it is);
worker processes keep Dask's settings (its nanny trims their memory on
purpose, so that its memory monitor sees what they use).

Example
-------
>>> with night_process():
...     pass
"""

import contextlib
import ctypes
import ctypes.util
import gc
import sys

__all__ = ["keep_freed_memory", "night_process"]

# glibc's mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
#: glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2)
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20

#: allocations between young collections during a night (CPython: 700)
_YOUNG = 20_000

_applied = []


def keep_freed_memory():
    """Have glibc keep freed memory in this process for reuse (see the
    module docstring); once per process, later calls do nothing.

    Returns
    -------
    bool
        True if the allocator is glibc's and took every setting (now or in
        an earlier call), False elsewhere (macOS, musl: left as it is).
    """
    if _applied:
        return _applied[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            # mallopt returns 1 on success; the mmap threshold first, since
            # setting any of these turns glibc's dynamic thresholds off
            ok = all(mallopt(param, value) == 1 for param, value in (
                (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                (_M_TOP_PAD, _TOP_PAD), (_M_ARENA_MAX, 1)))
    _applied.append(ok)
    return ok


@contextlib.contextmanager
def night_process(own_memory=True):
    """The length of a night run in this process: long-lived objects frozen
    out of the garbage collector, and with ``own_memory`` (the run's local
    cluster is its own) :func:`keep_freed_memory`."""
    if own_memory:
        keep_freed_memory()
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(_YOUNG, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
