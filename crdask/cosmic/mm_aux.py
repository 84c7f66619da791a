"""Median-Minimum helpers that work on whole frames (layer 2): the auxiliary
L.A.Cosmic with numina's ``la_*`` parameters, the flux factors and the
offsets measured by cross-correlation.

Example
-------
>>> import numpy as np
>>> from crdask.cosmic.mm_params import PARAMS
>>> p = PARAMS.validate({"la_sigclip": [5, 3]})
>>> LACosmicAux(p, gain=1.0, rnoise=3.0, num_threads=1).two
True
"""

from __future__ import annotations

import numpy as np

from ..kernels.mm_stack import keep_touching
from .lacosmic import lacosmic
from .params import ParamError

__all__ = ["LACosmicAux", "flux_factors", "measure_offsets"]


def _fail(name, problem, allowed=None):
    raise ParamError(name, problem, allowed)


class LACosmicAux:
    """crdask's L.A.Cosmic with numina's la_* parameters (two passes when a
    pair is given, pass-2 groups kept where they touch a pass-1 pixel)."""

    def __init__(self, p, gain, rnoise, num_threads):
        def pick(v, k):
            return v[k] if isinstance(v, list) else v
        sat = 65536.0 if p["la_satlevel"] is None else p["la_satlevel"] * gain
        base = dict(gain=gain, readnoise=rnoise * gain, satlevel=sat, niter=p["la_niter"],
                    sepmed=p["la_sepmed"], cleantype=p["la_cleantype"],
                    fsmode=p["la_fsmode"], psfsize=p["la_psfsize"], psfbeta=p["la_psfbeta"],
                    num_threads=num_threads)
        model = p["la_psfmodel"]
        fx, fy = p["la_psffwhm_x"], p["la_psffwhm_y"]
        if model in ("gauss", "moffat"):
            base.update(psfmodel=model, psffwhm=(fx + fy) / 2.0)
        elif model == "gaussx":
            base.update(psfmodel=model, psffwhm=fx)
        elif model == "gaussy":
            base.update(psfmodel=model, psffwhm=fy)
        else:
            base.update(psfmodel="gaussxy", psffwhm_x=fx, psffwhm_y=fy)
        self.runs = []
        for k in (0, 1):
            self.runs.append({**base, "sigclip": pick(p["la_sigclip"], k),
                              "sigfrac": pick(p["la_sigfrac"], k),
                              "objlim": pick(p["la_objlim"], k)})
        self.two = self.runs[0] != self.runs[1]
        self.pad = p["la_padwidth"]

    def __call__(self, image, cleanable):
        img = np.ascontiguousarray(image, dtype=np.float32)
        w = self.pad
        if w:
            img = np.pad(img, w, mode="reflect")
        m1, c1 = lacosmic(img, **self.runs[0])
        if self.two:
            m2, c1 = lacosmic(img, **self.runs[1])
            m1 = keep_touching(np.ascontiguousarray(m2), np.ascontiguousarray(m1))
        if w:
            m1, c1 = m1[w:-w, w:-w], c1[w:-w, w:-w]
        return np.asarray(c1, np.float32), np.logical_and(m1, cleanable)

    def map(self, images, cleanable, concurrent=2):
        """``[self(im, cleanable) for im in images]``, ``concurrent`` runs
        at a time on threads: each run's image-wide passes (the exact
        medians L.A.Cosmic needs) leave cores idle that the other run fills.
        Each run is the same computation as alone (same results)."""
        if concurrent <= 1 or len(images) <= 1:
            return [self(im, cleanable) for im in images]
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=concurrent) as pool:
            return list(pool.map(lambda im: self(im, cleanable), images))


def flux_factors(stack, median, p, n):
    ff = p["flux_factor"]
    if ff is None:
        if p["flux_factor_regions"] is not None:
            _fail("flux_factor_regions", "given with flux_factor none", "flux_factor: auto")
        return np.ones(n)
    if isinstance(ff, float):
        return np.full(n, ff)
    if isinstance(ff, list):
        if len(ff) != n:
            _fail("flux_factor", f"{len(ff)} values for {n} exposures")
        return np.array(ff)
    # auto: the median ratio of each exposure to the median where the
    # median is clearly above zero (crdask's robust estimate; numina fits
    # the mode of a ratio histogram interactively).
    region = np.zeros(median.shape, bool)
    for x1, x2, y1, y2 in p["flux_factor_regions"] or [[1, median.shape[1], 1, median.shape[0]]]:
        region[y1 - 1:y2, x1 - 1:x2] = True
    good = region & (median > np.percentile(median[region], 50)) & (median > 0)
    if n > 7 or not good.any():
        return np.ones(n)
    return np.round([float(np.median(stack[i][good] / median[good])) for i in range(n)], 6)


def measure_offsets(median, singles, region):
    # Phase-free cross-correlation of each cleaned exposure with the median
    # in the region, peak refined by a parabola per axis: the shift that
    # moves the median onto the exposure.
    x1, x2, y1, y2 = region
    ref = median[y1 - 1:y2, x1 - 1:x2].astype(float)
    if ref.size < 100:
        _fail("mm_crosscorr_region", f"{region} has {ref.size} pixels; at least 100 needed")
    out = []
    for s in singles:
        mov = s[y1 - 1:y2, x1 - 1:x2].astype(float)
        c = np.fft.ifft2(np.conj(np.fft.fft2(ref - ref.mean())) * np.fft.fft2(mov - mov.mean())).real
        j, i = np.unravel_index(np.argmax(c), c.shape)
        sh = []
        for idx, axis in ((i, 1), (j, 0)):
            n = c.shape[axis]
            take = (lambda k: c[j, k % n]) if axis == 1 else (lambda k: c[k % n, i])
            a, b, cc = take(idx - 1), take(idx), take(idx + 1)
            den = a - 2 * b + cc
            d = 0.5 * (a - cc) / den if den != 0 else 0.0
            v = idx + d
            sh.append(v - n if v > n / 2 else v)
        out.append((float(sh[0]), float(sh[1])))
    return out
