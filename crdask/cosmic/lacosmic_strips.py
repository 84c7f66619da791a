"""L.A.Cosmic on an in-memory frame: row strips on a pool of threads.

The same stages as the Dask graph (``crdask.cosmic.lacosmic_graph``), run
directly on numpy row strips: without the graph, and with the pointwise part
(electrons, variance) computed once per pixel and shared by every stage
instead of once per stage and block. Per strip of rows ``[a, b)``:

1. electrons of the strip's own rows, into frame-wide arrays;
2. the bad-pixel mask of rows ``[a, b)`` from rows ``[a - r, b + r)``
   (``r = step_radii(p)['mask']``), then the strip's histograms: the
   frame-wide background and variance levels are their sums (exact);
3. for ``cleantype='median'``, the iterations that find CRs in the strip;
4. the iterations on a copy of rows ``[a - d, b + d)``
   (``d = overlap_depth(p)``), keeping rows ``[a, b)``.

Every halo is at least the reach of what it feeds, so the result equals one
whole-frame block (``lacosmic_whole``) bit for bit, for any number of strips.

Example
-------
>>> crmask, clean = lacosmic_strips(arr, None, None, None, p, 2, 2)  # doctest: +SKIP
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..kernels.select import histogram_high, histogram_low
from . import lacosmic_core as core
from ..kernels.lacosmic_steps import electrons_plain
from .lacosmic_graph import (electrons, finish_levels, first_quiet_iteration, pick_high,
                             plain_input, readnoise_var)


class _Frame:
    """Frame-wide electrons (filled strip by strip) and the strips' rows."""

    def __init__(self, data, inmask, inbkg, invar, p, nstrips):
        self.data, self.inmask, self.inbkg, self.invar, self.p = data, inmask, inbkg, invar, p
        ny, nx = data.shape
        rows = -(-ny // nstrips)
        self.bounds = [(a, min(a + rows, ny)) for a in range(0, ny, rows)]
        self.clean = np.empty((ny, nx), np.float32)
        self.var = np.empty((ny, nx), np.float32)
        self.bkg = None if inbkg is None else np.empty((ny, nx), np.float32)
        # with no background, raw electrons are ``clean`` itself (as in electrons())
        self.raw = self.clean if inbkg is None else np.empty((ny, nx), np.float32)
        self.bad_input = [None] * len(self.bounds)
        self.bad = np.empty((ny, nx), np.bool_)

    def window(self, a, b, reach):
        """Rows ``[a - reach, b + reach)`` clipped to the frame, and the slice
        of that window that holds rows ``[a, b)``."""
        lo, hi = max(a - reach, 0), min(b + reach, self.data.shape[0])
        return slice(lo, hi), slice(a - lo, b - lo)

    def given(self, rows):
        """The input mask (and non-finite input pixels) over ``rows``."""
        ny, nx = self.data.shape
        g = (np.zeros((rows.stop - rows.start, nx), bool) if self.inmask is None
             else np.array(self.inmask[rows], bool))
        for (a, b), bi in zip(self.bounds, self.bad_input):
            lo, hi = max(a, rows.start), min(b, rows.stop)
            if bi is not None and lo < hi:
                g[lo - rows.start:hi - rows.start] |= bi[lo - a:hi - a]
        return np.ascontiguousarray(g)


def _electrons(fr, k):
    a, b = fr.bounds[k]
    s = slice(a, b)
    p = fr.p
    if plain_input(fr.data, fr.inbkg, fr.invar) and electrons_plain(
            fr.data[s], p.gain, readnoise_var(p), fr.clean[s], fr.var[s]):
        return  # straight into the frame's arrays: no copies
    clean, bkg, var, raw, bad_input = electrons(
        fr.data[s], None if fr.inbkg is None else fr.inbkg[s],
        None if fr.invar is None else fr.invar[s], fr.p)
    fr.clean[s] = clean
    fr.var[s] = var
    if bkg is not None:
        fr.bkg[s] = bkg
        fr.raw[s] = raw
    fr.bad_input[k] = bad_input


def _bad_and_high(fr, k):
    a, b = fr.bounds[k]
    rows, inner = fr.window(a, b, core.step_radii(fr.p)["mask"])
    fr.bad[a:b] = core.bad_pixel_mask(fr.raw[rows], fr.given(rows), fr.p)[inner]
    return np.stack((histogram_high(fr.clean[a:b], fr.bad[a:b]),
                     histogram_high(fr.var[a:b], fr.bad[a:b])))


def _low(fr, k, picked):
    a, b = fr.bounds[k]
    return np.stack((histogram_low(fr.clean[a:b], fr.bad[a:b], picked[0, 0]),
                     histogram_low(fr.var[a:b], fr.bad[a:b], picked[1, 0])))


def _halo_copies(fr, rows):
    bkg = None if fr.bkg is None else np.ascontiguousarray(fr.bkg[rows])
    return fr.clean[rows].copy(), fr.var[rows].copy(), bkg, np.ascontiguousarray(fr.bad[rows])


def _flags(fr, k, levels):
    a, b = fr.bounds[k]
    rows, inner = fr.window(a, b, core.overlap_depth(fr.p))
    clean, var, bkg, bad = _halo_copies(fr, rows)
    _, bits = core.iterate(clean, var, bkg, bad, fr.p, levels[0, 0], levels[0, 1],
                           fr.p.niter, stop_when_clean=False, count_region=(inner, slice(None)))
    return np.array([[(bits >> i) & 1 for i in range(fr.p.niter)]], dtype=np.int64)


def _main(fr, k, levels, n_iter, crmask, out):
    a, b = fr.bounds[k]
    p = fr.p
    rows, inner = fr.window(a, b, core.overlap_depth(p))
    if len(fr.bounds) == 1:  # the last reader of the frame's arrays: no copies
        clean, var, bkg, bad = fr.clean, fr.var, fr.bkg, fr.bad
    else:
        clean, var, bkg, bad = _halo_copies(fr, rows)
    cr, _ = core.iterate(clean, var, bkg, bad, p, levels[0, 0], levels[0, 1], n_iter,
                         stop_when_clean=p.cleantype in core.IDEMPOTENT_CLEANTYPES)
    res = clean[inner]
    if bkg is not None:
        res += bkg[inner]
    res /= p.gain
    bi = fr.bad_input[k]
    if bi is not None:
        res[bi] = np.asarray(fr.data[a:b], dtype=np.float32)[bi]
    out[a:b] = res
    crmask[a:b] = cr[inner]


def lacosmic_strips(data, inmask, inbkg, invar, p, nstrips, threads):
    """``(crmask, cleanarr)`` of an in-memory frame, now, on row strips.

    Parameters
    ----------
    data : 2-D numpy array, ADU; inmask, inbkg, invar : same shape, or None.
    p : :class:`~crdask.cosmic.lacosmic_core.LACosmicParams`.
    nstrips : int >= 1, row strips (fewer when the frame has fewer rows).
    threads : int >= 1, threads running the strips (1: this thread only).

    Returns
    -------
    crmask : bool (ny, nx); cleanarr : float32 (ny, nx), ADU. Identical to
    :func:`~crdask.cosmic.lacosmic_graph.lacosmic_whole` for any ``nstrips``.

    Example
    -------
    >>> crmask, clean = lacosmic_strips(arr, None, None, None, p, 2, 2)  # doctest: +SKIP
    """
    fr = _Frame(data, inmask, inbkg, invar, p, nstrips)
    ks = range(len(fr.bounds))
    pool = ThreadPoolExecutor(threads) if threads > 1 and len(ks) > 1 else None

    def each(fn, *args):
        if pool is None:
            return [fn(fr, k, *args) for k in ks]
        return list(pool.map(lambda k: fn(fr, k, *args), ks))

    try:
        each(_electrons)  # every strip's electrons before any halo reads them
        picked = pick_high(np.sum(each(_bad_and_high), axis=0))
        levels = finish_levels(picked, np.sum(each(_low, picked), axis=0))
        if p.cleantype in core.IDEMPOTENT_CLEANTYPES or p.niter == 0:
            n_iter = p.niter
        else:
            flags = np.max(each(_flags, levels), axis=0)
            n_iter = int(first_quiet_iteration(flags, p.niter)[0, 0])
        crmask = np.empty(data.shape, np.bool_)
        out = np.empty(data.shape, np.float32)
        each(_main, levels, n_iter, crmask, out)
    finally:
        if pool is not None:
            pool.shutdown()
    return crmask, out
