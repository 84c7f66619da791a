"""``CCDData`` in, ``CCDData`` out for :func:`crdask.cosmic.cr2images.cr2images`.

As teareduce's ``apply_cr2images_ccddata``: the data are cleaned, CR
pixels are OR-ed into ``.mask``, and at CR pixels the uncertainty becomes
the companion pixel's (in single mode the companion's uncertainty is the
exposure's own, median-filtered with the same window). Unlike teareduce
the copy follows the offsets and touches only the new CR pixels, and the
input ``.mask`` marks bad pixels (never flagged, returned unchanged).

Example
-------
>>> import numpy as np
>>> from astropy.nddata import CCDData
>>> from crdask.cosmic.cr2images import cr2images
>>> rng = np.random.default_rng(0)
>>> a = CCDData(rng.normal(100, 1, (16, 16)).astype(np.float32), unit="electron")
>>> b = CCDData(rng.normal(100, 1, (16, 16)).astype(np.float32), unit="electron")
>>> a.data[3, 4] = 900
>>> a2, b2 = cr2images(a, b)
>>> bool(a2.mask[3, 4]), float(a2.data[3, 4]) < 200
(True, True)
"""

import numpy as np

from ..kernels.components import medfilt_rect
from .cr2images_core import overlap_slices

__all__ = ["cr2images_ccddata"]


def _work(ccd, name):
    from astropy.nddata import CCDData
    if not isinstance(ccd, CCDData):
        raise TypeError(f"{name} must be a CCDData like the other exposure, got "
                        f"{type(ccd).__name__}")
    data = np.asarray(ccd.data, dtype=np.float32)
    bad = None if ccd.mask is None else np.asarray(ccd.mask, bool)
    if bad is not None and bad.shape != data.shape:
        raise ValueError(f"{name}.mask has shape {bad.shape} but {name}.data has shape "
                         f"{data.shape}")
    work = data if bad is None else np.where(bad, np.float32(np.nan), data)
    return data, bad, work


def _unc_like(target, source):
    """``source`` uncertainty as ``target``'s class (array only)."""
    if source is None:
        return None
    if type(source) is not type(target):
        source = source.represent_as(type(target))
    return np.asarray(source.array)


def _finish(ccd, data, bad, clean, mask, other_unc, src, dst):
    out = ccd.copy()
    if bad is not None:
        clean = np.where(bad, data, clean)
        mask = mask & ~bad
    out.data = clean
    out.mask = mask if bad is None else (bad | mask)
    if out.uncertainty is not None and other_unc is not None:
        arr = np.array(out.uncertainty.array, dtype=float, copy=True)
        sub = mask[dst]
        arr[dst][sub] = other_unc[src][sub]
        out.uncertainty.array = arr
    return out, mask


def cr2images_ccddata(ccd1, ccd2, p, pair):
    """``(ccd1c, ccd2c, mask1, mask2)``; ``p`` complete parameters,
    ``pair(data1, data2, p)`` the array implementation."""
    from astropy.nddata import CCDData
    d1, bad1, w1 = _work(ccd1, "data1")
    s1, s2 = overlap_slices(d1.shape, p["ioffx"], p["ioffy"])
    if ccd2 is None:
        size = p["median_size"]
        w2 = medfilt_rect(np.ascontiguousarray(w1), *size)
        unc2 = None
        if ccd1.uncertainty is not None:
            u = np.ascontiguousarray(ccd1.uncertainty.array, dtype=np.float32)
            unc2 = medfilt_rect(u, *size).astype(float)
        ccd2 = CCDData(w2, unit=ccd1.unit, meta=ccd1.meta.copy(),
                       uncertainty=None if unc2 is None else type(ccd1.uncertainty)(unc2))
        d2, bad2 = w2, None
    else:
        d2, bad2, w2 = _work(ccd2, "data2")
    c1, c2, m1, m2 = pair(w1, w2, p)
    out1, m1 = _finish(ccd1, d1, bad1, c1, m1,
                       _unc_like(ccd1.uncertainty, ccd2.uncertainty)
                       if ccd1.uncertainty is not None else None, s2, s1)
    out2, m2 = _finish(ccd2, d2, bad2, c2, m2,
                       _unc_like(ccd2.uncertainty, ccd1.uncertainty)
                       if ccd2.uncertainty is not None else None, s1, s2)
    return out1, out2, m1, m2
