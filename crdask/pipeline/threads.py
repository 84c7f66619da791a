"""Side-by-side work on this process's cores, for numpy and hashing (layer 4).

:func:`thread_map` runs a function over a few dozen items (frames in memory,
files to hash) on threads: numpy's reductions and partitions and hashlib
release the GIL, so on a machine with several cores they no longer run one
after another while the other cores idle. Not for Dask graphs (those go
through the active scheduler) and not for Python-heavy work (the GIL).

Example
-------
>>> thread_map(len, ["ab", "c"])
[2, 1]
"""

import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["thread_map"]


def thread_map(fn, items):
    """``[fn(x) for x in items]``, on up to ``os.cpu_count()`` threads;
    same results, same order, the first exception raised as it would be
    in the loop."""
    items = list(items)
    cores = os.cpu_count() or 1
    if cores < 2 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(cores, len(items)), thread_name_prefix="crdask-map") as pool:
        return list(pool.map(fn, items))
