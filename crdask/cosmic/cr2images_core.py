"""The pieces of :func:`crdask.cosmic.cr2images.cr2images` (layer 2).

* :func:`overlap_slices` -- where two exposures overlap for integer offsets;
* :func:`diff_stats` / :func:`diff_stats_dask` -- the median and the robust
  standard deviation ``0.7413 * (q75 - q25)`` of the difference, computed
  from exact order statistics (:mod:`crdask.kernels.select`) and combined
  exactly as ``numpy.median`` and ``numpy.percentile`` (linear) combine
  them, so they equal teareduce's ``np.median``/``robust_std`` and do not
  depend on chunking;
* :func:`cr_mask` / :func:`cr_mask_dask` -- tail components seeded by a
  useful peak and no larger than ``maxsize``. Chunks need no overlap:
  each block labels its own tail pixels, labels touching across a block
  border are joined by union-find over the border pixels (4-connectivity
  only links direct neighbours), and the joined components' sizes and
  seeds decide for every block, so chunked == whole bit for bit;
* :func:`medfilt_dask` -- the single-mode companion, a mirrored-edge median
  filter on overlapping blocks (depth ``size // 2`` per axis).

Example
-------
>>> import numpy as np
>>> overlap_slices((4, 5), ioffx=2, ioffy=-1)
((slice(0, 3, None), slice(2, 5, None)), (slice(1, 4, None), slice(0, 3, None)))
>>> d = np.arange(10, dtype=np.float32)
>>> bool(diff_stats(d.reshape(2, 5))[0] == np.median(d))
True
"""

import dask
import dask.array as da
import numpy as np
from dask.array.overlap import ensure_minimum_chunksize

from ..kernels.components import medfilt_rect, tail_components, union_pairs
from ..kernels.select import histogram_high, histogram_low, key_to_float, locate_rank

__all__ = ["overlap_slices", "diff_stats", "diff_stats_dask", "stats_from_ranks",
           "needed_ranks", "thresholds", "cr_mask", "cr_mask_dask", "medfilt_dask"]


def overlap_slices(shape, ioffx, ioffy):
    """Slices ``(in data1, in data2)`` of the overlap: ``data1[y, x]`` lies
    on ``data2[y - ioffy, x - ioffx]`` (teareduce's convention). Offsets
    must be smaller than the image (checked by the caller)."""
    ny, nx = shape

    def axis(off, n):
        return (slice(0, n + off), slice(-off, n)) if off <= 0 else \
            (slice(off, n), slice(0, n - off))
    (y1, y2), (x1, x2) = axis(ioffy, ny), axis(ioffx, nx)
    return (y1, x1), (y2, x2)


# ---------------------------------------------------------------------------
# Robust statistics of the difference.
# ---------------------------------------------------------------------------

_QUARTILES = np.true_divide([25, 75], 100)   # as numpy.percentile forms them


def needed_ranks(n):
    """0-based ranks of the sorted finite values the statistics use."""
    ranks = {(n - 1) // 2, n // 2}
    for v in (n - 1) * _QUARTILES:
        if v >= n - 1:
            ranks.add(n - 1)
        else:
            k = int(np.floor(v))
            ranks.update((k, k + 1))
    return sorted(ranks)


def stats_from_ranks(n, value):
    """``(median, std)`` from ``value[rank]`` (float32 order statistics).

    ``median`` is a Python float equal to ``float(numpy.median(x))`` (the
    float32 mean of the two middle values for even ``n``); ``std`` is the
    float64 ``0.7413 * (q75 - q25)`` with numpy's linear percentiles
    (``a + (b - a) * g``, or ``b - (b - a) * (1 - g)`` for ``g >= 0.5``).
    """
    if n % 2:
        median = float(np.float32(value[(n - 1) // 2]))
    else:
        pair = np.float32(0) + np.float32(value[n // 2 - 1]) + np.float32(value[n // 2])
        median = float(np.float32(pair / np.float32(2)))
    q = []
    for v in (n - 1) * _QUARTILES:
        if v >= n - 1:
            q.append(np.float64(value[n - 1]))
            continue
        k = np.floor(v)
        g = v - k
        a, b = np.float32(value[int(k)]), np.float32(value[int(k) + 1])
        d = np.float64(b - a)
        q.append(np.float64(b) - d * (1 - g) if g >= 0.5 else np.float64(a) + d * g)
    return median, 0.7413 * (q[1] - q[0])


def _hist_high(block):
    x = np.ascontiguousarray(block, dtype=np.float32)
    return histogram_high(x, ~np.isfinite(x))


def _hist_low(block, highs):
    x = np.ascontiguousarray(block, dtype=np.float32)
    bad = ~np.isfinite(x)
    return np.stack([histogram_low(x, bad, h) for h in highs]) if highs else \
        np.zeros((0, 65536), np.int64)


def _plan(high):
    n = int(high.sum())
    if n == 0:
        raise ValueError("data1 - data2 has no finite pixel in the overlap")
    ranks = needed_ranks(n)
    where = {r: locate_rank(high, r) for r in ranks}
    return n, ranks, where, sorted({b for b, _ in where.values()})


def _finish(plan, low):
    n, ranks, where, highs = plan
    value = {}
    for r in ranks:
        b, within = where[r]
        lo, _ = locate_rank(low[highs.index(b)], within)
        value[r] = key_to_float((b << 16) | lo)
    return stats_from_ranks(n, value)


def diff_stats(diff):
    """``(median, std)`` of the finite pixels of a numpy ``diff`` (see
    :func:`stats_from_ranks`); ``ValueError`` if none is finite."""
    plan = _plan(_hist_high(diff))
    return _finish(plan, _hist_low(diff, plan[3]))


def diff_stats_dask(diff):
    """:func:`diff_stats` of a Dask ``diff`` as one delayed ``(median, std)``:
    two histogram passes over the blocks, summed."""
    blocks = diff.to_delayed().ravel()
    high = dask.delayed(sum)([dask.delayed(_hist_high, pure=True)(b) for b in blocks])
    plan = dask.delayed(_plan, pure=True)(high)
    highs = plan[3]
    low = dask.delayed(sum)([dask.delayed(_hist_low, pure=True)(b, highs) for b in blocks])
    return dask.delayed(_finish, pure=True)(plan, low)


def thresholds(stats, tsigma_peak, tsigma_tail):
    """Thresholds as teareduce writes them: ``median +- tsigma * std``
    (float64), keyed ``(positive, kind)``."""
    median, std = stats
    return {(True, "tail"): median + tsigma_tail * std,
            (True, "peak"): median + tsigma_peak * std,
            (False, "tail"): median - tsigma_tail * std,
            (False, "peak"): median - tsigma_peak * std}


# ---------------------------------------------------------------------------
# Cosmic-ray components.
# ---------------------------------------------------------------------------

def _lut(seeded, size, maxsize):
    keep = seeded.copy()
    if maxsize is not None:
        keep &= size <= maxsize
    keep[0] = False
    return keep


def cr_mask(diff, useful, thr, positive, maxsize):
    """Bool mask of the tail components (``thr`` from :func:`thresholds`)
    holding a useful peak, at most ``maxsize`` pixels each."""
    labels, _, seeded, size = tail_components(
        np.ascontiguousarray(diff, dtype=np.float32), np.ascontiguousarray(useful, bool),
        thr[(positive, "tail")], thr[(positive, "peak")], positive)
    return _lut(seeded, size, maxsize)[labels]


def _summary(diff, useful, thr, positive):
    labels, n, seeded, size = tail_components(
        np.ascontiguousarray(diff, dtype=np.float32), np.ascontiguousarray(useful, bool),
        thr[(positive, "tail")], thr[(positive, "peak")], positive)
    return (n, seeded, size, labels[0].copy(), labels[-1].copy(),
            labels[:, 0].copy(), labels[:, -1].copy())


def _merge(grid, maxsize):
    """Per-block lookup tables (local label -> CR) from block summaries."""
    nby, nbx = len(grid), len(grid[0])
    offset = np.zeros((nby, nbx), np.int64)
    total = 1                                   # global label 0 = background
    for by in range(nby):
        for bx in range(nbx):
            offset[by, bx] = total - 1          # local k -> global offset + k
            total += grid[by][bx][0]
    seeded = np.zeros(total, bool)
    size = np.zeros(total, np.int64)
    pa, pb = [], []
    for by in range(nby):
        for bx in range(nbx):
            n, s, z, top, bottom, left, right = grid[by][bx]
            o = offset[by, bx]
            seeded[o + 1:o + n + 1] = s[1:]
            size[o + 1:o + n + 1] = z[1:]
            for other, mine, theirs in (((by + 1, bx), bottom, 3), ((by, bx + 1), right, 5)):
                if other[0] >= nby or other[1] >= nbx:
                    continue
                their = grid[other[0]][other[1]][theirs]
                both = (mine > 0) & (their > 0)
                pa.append(o + mine[both].astype(np.int64))
                pb.append(offset[other] + their[both].astype(np.int64))
    a = np.concatenate(pa) if pa else np.zeros(0, np.int64)
    b = np.concatenate(pb) if pb else np.zeros(0, np.int64)
    root = union_pairs(total, a, b)
    size_root = np.bincount(root, weights=size, minlength=total).astype(np.int64)
    seed_root = np.bincount(root, weights=seeded, minlength=total) > 0
    keep = _lut(seed_root[root], size_root[root], maxsize)
    out = []
    for by in range(nby):
        row = []
        for bx in range(nbx):
            o, n = offset[by, bx], grid[by][bx][0]
            lut = np.zeros(n + 1, bool)
            lut[1:] = keep[o + 1:o + n + 1]
            row.append(lut)
        out.append(row)
    return out


def _mask_block(diff, useful, thr=None, positive=True, luts=None, block_info=None):
    by, bx = block_info[0]["chunk-location"]
    labels, _, _, _ = tail_components(
        np.ascontiguousarray(diff, dtype=np.float32), np.ascontiguousarray(useful, bool),
        thr[(positive, "tail")], thr[(positive, "peak")], positive)
    return luts[by][bx][labels]


def cr_mask_dask(diff, useful, thr, positive, maxsize):
    """:func:`cr_mask` of Dask ``diff``/``useful`` (same chunks) with
    delayed ``thr``: a lazy bool array, equal to the whole-frame mask."""
    d_blocks = diff.to_delayed()
    u_blocks = useful.to_delayed()
    grid = [[dask.delayed(_summary, pure=True)(d_blocks[by, bx], u_blocks[by, bx], thr,
                                              positive)
             for bx in range(d_blocks.shape[1])] for by in range(d_blocks.shape[0])]
    luts = dask.delayed(_merge, pure=True)(grid, maxsize)
    return da.map_blocks(_mask_block, diff, useful, thr=thr, positive=positive, luts=luts,
                         dtype=bool, meta=np.empty((0, 0), bool))


# ---------------------------------------------------------------------------
# Single-mode companion.
# ---------------------------------------------------------------------------

def _medfilt_block(x, sy=1, sx=1):
    return medfilt_rect(np.ascontiguousarray(x, dtype=np.float32), sy, sx)


def medfilt_dask(data, size):
    """``medfilt_rect(data, *size)`` of a Dask image, block by block.

    Blocks overlap by ``size // 2`` per axis (the farthest a window reaches);
    ``boundary='none'`` leaves the frame edges to the kernel's own mirror,
    and an axis shorter than twice the depth is kept in one block (the
    mirror may then fold more than once)."""
    sy, sx = size
    depth = (sy // 2, sx // 2)
    chunks = []
    for ax, c in enumerate(data.chunks):
        d = depth[ax]
        if d == 0:
            chunks.append(c)
        elif sum(c) <= 2 * d:
            chunks.append((sum(c),))
        else:
            chunks.append(ensure_minimum_chunksize(d, c))
    data = data.rechunk(tuple(chunks))
    dep = {ax: (depth[ax] if len(data.chunks[ax]) > 1 else 0) for ax in (0, 1)}
    return da.map_overlap(_medfilt_block, data, depth=dep, boundary="none", trim=True,
                          dtype=np.float32, sy=sy, sx=sx,
                          meta=np.empty((0, 0), np.float32))
