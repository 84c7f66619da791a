"""The Dask graph of L.A.Cosmic: blocks, halos and the image-wide values.

Stages (all lazy, all Dask arrays -- no ``Delayed`` objects, which Dask would
copy into every consumer and compute more than once):

1. ``bad``: the bad-pixel/saturated-star mask, from blocks overlapping by the
   mask's own reach (``step_radii(p)['mask']``). Exact everywhere.
2. Two histogram passes over (electrons, variance, ``bad``), block by block,
   summed: the exact image-wide lower medians that the cleaners fall back on
   (``crdask.kernels.select``). Each pass ends in a single small array that
   is handed whole to every block of the next stage (``_globals``).
3. For ``cleantype='median'`` only: a pass that records, per block, which
   iterations find CRs in the block's interior; their OR over the frame gives
   the iteration at which the whole frame stops (astroscrappy's ``break``).
4. The main pass: every block (data, masks, and the exact ``bad`` with a halo
   of ``overlap_depth`` pixels) runs the full iteration loop and returns its
   interior, cleaned data and CR mask stacked.
"""

import dask.array as da
import numpy as np
from dask.array.overlap import ensure_minimum_chunksize

from ..kernels.lacosmic_steps import electrons_plain
from ..kernels.select import histogram_high, histogram_low, key_to_float, locate_rank
from . import lacosmic_core as core



def edge_trim(block_info, depth, shape):
    """Slices that drop the halo of an overlapped block (none at frame edges,
    where ``boundary='none'`` added nothing)."""
    info = block_info[0]
    sl = []
    for ax in range(2):
        loc = info["chunk-location"][ax]
        n = info["num-chunks"][ax]
        lo = depth if loc > 0 else 0
        hi = shape[ax] - (depth if loc < n - 1 else 0)
        sl.append(slice(lo, hi))
    return tuple(sl)


def blockwise_2d(fn, arrays, whole=(), *, chunks=None, new_axis=None, dtype=np.float32,
                 **kwargs):
    """Apply ``fn(*blocks, *whole_arrays, block_info=..., **kwargs)`` per block.

    ``arrays`` (some may be None, passed to ``fn`` as None) share one 2-D
    chunking; each array in ``whole`` is a small single-chunk 2-D array that
    Dask broadcasts, complete, to every call (how image-wide values reach
    the blocks). ``chunks``/``new_axis`` describe the output as for
    ``dask.array.map_blocks`` (e.g. the interior chunks when ``fn`` removes
    a halo).
    """
    present = [a is not None for a in arrays]

    def call(*blocks, block_info=None):
        it = iter(blocks)
        full = [next(it) if m else None for m in present]
        return fn(*full, *it, block_info=block_info, **kwargs)

    call.__name__ = fn.__name__
    ndim = 2 + (len(new_axis) if new_axis else 0)
    return da.map_blocks(call, *[a for a in arrays if a is not None], *whole,
                         chunks=chunks, new_axis=new_axis, dtype=dtype,
                         meta=np.empty((0,) * ndim, dtype))


# ---------------------------------------------------------------------------
# Block functions.
# ---------------------------------------------------------------------------

def electrons(data, inbkg, invar, p):
    """Pointwise part of a block: (clean e- minus background, background e-,
    variance e-^2, electrons before background subtraction, non-finite input
    pixels or None). Non-finite pixels are set to 0 so that they cannot
    poison the medians; they are masked as bad pixels."""
    if plain_input(data, inbkg, invar):
        clean = np.empty(data.shape, np.float32)
        var = np.empty(data.shape, np.float32)
        if electrons_plain(data, p.gain, readnoise_var(p), clean, var):
            return clean, None, var, clean, None
    bad_input = ~np.isfinite(data)
    if inbkg is not None:
        bad_input |= ~np.isfinite(inbkg)
    if invar is not None:
        bad_input |= ~np.isfinite(invar)
    any_bad = bool(bad_input.any())
    if any_bad:
        data = np.where(bad_input, 0, data)
        inbkg = None if inbkg is None else np.where(bad_input, 0, inbkg)
        invar = None if invar is None else np.where(bad_input, 0, invar)
    raw = core.to_electrons(data, p.gain)
    bkg = None if inbkg is None else core.to_electrons(inbkg, p.gain)
    var = core.initial_variance(raw, bkg, invar, p)
    clean = raw if bkg is None else raw - bkg
    return clean, bkg, var, raw, (bad_input if any_bad else None)


def plain_input(data, inbkg, invar):
    """Whether :func:`electrons` may take the one-pass kernel
    (``kernels.lacosmic_steps.electrons_plain``): a float32/float64 frame
    without background or variance."""
    return inbkg is None and invar is None and data.dtype in (np.float32, np.float64)


def readnoise_var(p):
    """``readnoise**2`` (e-^2) as float32, as :func:`initial_variance` adds it."""
    return np.float32(p.readnoise * p.readnoise)


def _bad_block(data, inmask, inbkg, invar, p, depth, block_info=None):
    _, _, _, raw, bad_input = electrons(data, inbkg, invar, p)
    given = np.zeros(data.shape, bool) if inmask is None else np.asarray(inmask, bool)
    if bad_input is not None:
        given = given | bad_input
    bad = core.bad_pixel_mask(raw, np.ascontiguousarray(given), p)
    return bad[edge_trim(block_info, depth, data.shape)]


def _hist_block(data, inbkg, invar, bad, *picked, p, block_info=None):
    # Histograms of electrons and variance over this block's good pixels:
    # top 16 key bits, or (with ``picked``) the low bits within the top bin.
    clean, _, var, _, _ = electrons(data, inbkg, invar, p)
    if not picked:
        h = (histogram_high(clean, bad), histogram_high(var, bad))
    else:
        pk = picked[0]
        h = (histogram_low(clean, bad, pk[0, 0]), histogram_low(var, bad, pk[1, 0]))
    return np.stack(h)[None, None]


def pick_high(high):
    """(2, 3) int64 rows (top bin, rank within it, number of good pixels)."""
    out = np.zeros((2, 3), np.int64)
    for k, row in enumerate(high):
        n = int(row.sum())
        b, r = locate_rank(row, (n - 1) // 2 if n else 0)
        out[k] = (b, r, n)
    return out


def finish_levels(picked, low):
    """(1, 2) float32: background level (e-) and variance level (e-^2)."""
    vals = np.zeros((1, 2), np.float32)
    for k in range(2):
        b, r, n = picked[k]
        if n:  # with nothing unmasked there is no fallback level; 0 stays
            lo, _ = locate_rank(low[k], int(r))
            vals[0, k] = key_to_float((int(b) << 16) | lo)
    return vals


def _iteration_flags_block(data, inmask, inbkg, invar, bad, levels, p, depth,
                           block_info=None):
    clean, bkg, var, _, _ = electrons(data, inbkg, invar, p)
    inner = edge_trim(block_info, depth, data.shape)
    _, bits = core.iterate(clean, var, bkg, bad, p, levels[0, 0], levels[0, 1], p.niter,
                           stop_when_clean=False, count_region=inner)
    return np.array([[(bits >> i) & 1 for i in range(p.niter)]], dtype=np.int64)


def first_quiet_iteration(flags, niter):
    """(1, 1) int64: iterations the whole frame runs (the first with no CRs)."""
    quiet = np.flatnonzero(np.asarray(flags).reshape(-1) == 0)
    return np.array([[quiet[0] if quiet.size else niter]], dtype=np.int64)


def _main_block(data, inmask, inbkg, invar, bad, levels, n_iter, p, depth, stop_when_clean,
                block_info=None):
    # Full L.A.Cosmic on an overlapped block; returns (2, y, x) float32:
    # cleaned data (ADU) and the CR mask as 0/1, halo removed.
    clean, bkg, var, _, bad_input = electrons(data, inbkg, invar, p)
    crmask, _ = core.iterate(clean, var, bkg, np.ascontiguousarray(bad), p,
                             levels[0, 0], levels[0, 1], int(n_iter[0, 0]),
                             stop_when_clean=stop_when_clean)
    if bkg is not None:
        clean += bkg
    clean /= p.gain
    if bad_input is not None:
        clean[bad_input] = np.asarray(data, dtype=np.float32)[bad_input]
    inner = edge_trim(block_info, depth, data.shape)
    sub = clean[inner]
    out = np.empty((2,) + sub.shape, np.float32)  # no temporary float mask
    out[0] = sub
    out[1] = crmask[inner]
    return out


# ---------------------------------------------------------------------------
# The graph.
# ---------------------------------------------------------------------------

def block_chunks(chunks, reach):
    """Chunks of a frame for blocks whose halos are ``reach`` pixels.

    Along an axis no longer than ``reach`` the frame is one block (it needs
    no halo, and Dask cannot take one larger than the axis): frames of any
    size >= 1x1 work. Along longer axes chunks are made at least ``reach``
    so that each halo comes from the direct neighbours.

    Parameters
    ----------
    chunks : tuple of two tuples of ints (the Dask chunks along y and x).
    reach : int >= 1, pixels.

    Returns
    -------
    tuple of two tuples of ints.

    Example
    -------
    >>> block_chunks(((10, 20), (100, 100)), 40)
    ((30,), (100, 100))
    """
    out = []
    for c in chunks:
        n = sum(c)
        out.append((n,) if n <= reach or len(c) == 1 else
                   ensure_minimum_chunksize(reach, c))
    return tuple(out)


def _overlap(a, depth):
    if a is None:
        return None
    # No halo along an axis held in one block (edge_trim then trims nothing).
    d = {ax: (depth if len(a.chunks[ax]) > 1 else 0) for ax in range(2)}
    return da.overlap.overlap(a, depth=d, boundary="none")


def _prepare(data, inmask, inbkg, invar, p):
    depth = core.overlap_depth(p)
    r_mask = core.step_radii(p)["mask"]
    chunks = block_chunks(data.chunks, max(depth, r_mask))
    arrays = tuple(None if a is None else a.rechunk(chunks)
                   for a in (data, inmask, inbkg, invar))
    bad = blockwise_2d(_bad_block, [_overlap(a, r_mask) for a in arrays],
                       chunks=chunks, dtype=bool, p=p, depth=r_mask)
    return arrays, bad, chunks, depth


def _levels_graph(data, inbkg, invar, bad, p, picked=None):
    if picked is None:
        high = _histograms((data, inbkg, invar, bad), (), p)
        picked = high.map_blocks(pick_high, dtype=np.int64, chunks=((2,), (3,)))
    low = _histograms((data, inbkg, invar, bad), (picked,), p)
    return da.map_blocks(finish_levels, picked, low, dtype=np.float32,
                         chunks=((1,), (2,)))


def _n_iter_graph(halo, levels, chunks, p, depth):
    if p.cleantype in core.IDEMPOTENT_CLEANTYPES or p.niter == 0:
        return da.from_array(np.array([[p.niter]], np.int64), chunks=1)
    flags = blockwise_2d(_iteration_flags_block, halo, whole=(levels,),
                         chunks=((1,) * len(chunks[0]), (p.niter,) * len(chunks[1])),
                         dtype=np.int64, p=p, depth=depth)
    flags = flags.max(axis=0, keepdims=True).rechunk(-1)
    flags = flags.reshape((1, -1, p.niter)).max(axis=1).rechunk(-1)
    return flags.map_blocks(first_quiet_iteration, p.niter, dtype=np.int64,
                            chunks=((1,), (1,)))


def _small(value, dtype, shape):
    return da.from_array(np.asarray(value, dtype).reshape(shape), chunks=-1)


def lacosmic_graph(data, inmask, inbkg, invar, p, levels=None, n_iter=None):
    """Lazy ``(crmask, cleanarr)`` for validated 2-D Dask arrays (inmask,
    inbkg, invar may be None) and :class:`LACosmicParams` ``p``.

    ``levels`` (the background and variance levels, e-, e-^2) and ``n_iter``
    (iterations the frame runs), as computed by :func:`frame_values`, may be
    given to skip their passes (the out-of-core path computes them first, one
    streaming pass each); by default they are part of the graph.
    """
    (data, inmask, inbkg, invar), bad, chunks, depth = _prepare(data, inmask, inbkg,
                                                                invar, p)
    if levels is None:
        levels = _levels_graph(data, inbkg, invar, bad, p)
    else:
        levels = _small(levels, np.float32, (1, 2))
    halo = [_overlap(a, depth) for a in (data, inmask, inbkg, invar, bad)]
    stop = p.cleantype in core.IDEMPOTENT_CLEANTYPES
    if n_iter is None:
        n_iter = _n_iter_graph(halo, levels, chunks, p, depth)
    else:
        n_iter = _small(n_iter, np.int64, (1, 1))
    out = blockwise_2d(_main_block, halo, whole=(levels, n_iter), chunks=((2,),) + chunks,
                       new_axis=[0], dtype=np.float32, p=p, depth=depth,
                       stop_when_clean=stop)
    return out[1] != 0, out[0]


def lacosmic_whole(data, inmask, inbkg, invar, p):
    """``(crmask, cleanarr)`` of a frame held in memory as one block, now.

    The same block functions as :func:`lacosmic_graph`, called directly on
    the frame as its only block (no halo, no Dask graph): for frames of one
    strip, where building and running the graph costs more than the work
    (tens of milliseconds per frame, paid once per frame of a night).
    Identical to :func:`lacosmic_graph` on any chunking.

    Parameters
    ----------
    data : 2-D numpy array, ADU; inmask, inbkg, invar : same shape, or None.
    p : :class:`~crdask.cosmic.lacosmic_core.LACosmicParams`.

    Returns
    -------
    crmask : bool (ny, nx); cleanarr : float32 (ny, nx), ADU.

    Example
    -------
    >>> crmask, clean = lacosmic_whole(arr, None, None, None, p)  # doctest: +SKIP
    """
    info = [{"chunk-location": (0, 0), "num-chunks": (1, 1)}]
    depth = core.overlap_depth(p)
    bad = _bad_block(data, inmask, inbkg, invar, p, core.step_radii(p)["mask"],
                     block_info=info)
    picked = pick_high(_hist_block(data, inbkg, invar, bad, p=p)[0, 0])
    low = _hist_block(data, inbkg, invar, bad, picked, p=p)[0, 0]
    levels = finish_levels(picked, low)
    if p.cleantype in core.IDEMPOTENT_CLEANTYPES or p.niter == 0:
        n_iter = np.array([[p.niter]], np.int64)
    else:
        flags = _iteration_flags_block(data, inmask, inbkg, invar, bad, levels, p, depth,
                                       block_info=info)
        n_iter = first_quiet_iteration(flags, p.niter)
    out = _main_block(data, inmask, inbkg, invar, bad, levels, n_iter, p, depth,
                      p.cleantype in core.IDEMPOTENT_CLEANTYPES, block_info=info)
    return out[1] != 0, out[0]


def frame_values(data, inmask, inbkg, invar, p, **compute_kw):
    """The image-wide values of a frame, computed now, pass after pass.

    Each pass reads the frame block by block and keeps only small results
    (histograms, flags), so a frame larger than memory (e.g. a memory-mapped
    file wrapped as a Dask array) is never held whole; the bad-pixel mask is
    recomputed in each pass rather than kept. ``compute_kw`` goes to
    ``dask.compute`` (e.g. ``scheduler='threads'``).

    Returns
    -------
    (levels, n_iter) : float32 (2,) background level (e-) and variance level
    (e-^2) the cleaners fall back on, and the int number of iterations the
    frame runs; pass both to :func:`lacosmic_graph` to get the same result as
    without them.

    Example
    -------
    >>> levels, n = frame_values(arr, None, None, None, p)  # doctest: +SKIP
    """
    import dask

    (data, inmask, inbkg, invar), bad, chunks, depth = _prepare(data, inmask, inbkg,
                                                                invar, p)
    high, = dask.compute(_histograms((data, inbkg, invar, bad), (), p), **compute_kw)
    picked = pick_high(high)
    levels, = dask.compute(_levels_graph(data, inbkg, invar, bad, p,
                                         picked=_small(picked, np.int64, (2, 3))),
                           **compute_kw)
    halo = [_overlap(a, depth) for a in (data, inmask, inbkg, invar, bad)]
    n_iter, = dask.compute(_n_iter_graph(halo, _small(levels, np.float32, (1, 2)), chunks,
                                         p, depth), **compute_kw)
    return np.asarray(levels, np.float32).reshape(2), int(np.asarray(n_iter).reshape(-1)[0])


def _histograms(arrays, whole, p):
    """Sum of the per-block (2, 65536) histograms, as one (2, 65536) chunk."""
    nby, nbx = arrays[0].numblocks
    per_block = blockwise_2d(_hist_block, arrays, whole, new_axis=[2, 3], dtype=np.int64,
                             chunks=((1,) * nby, (1,) * nbx, (2,), (65536,)), p=p)
    return per_block.sum(axis=(0, 1)).rechunk(-1)
