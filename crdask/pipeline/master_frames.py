"""Master frames: combining, normalising flats, bad-pixel masks (layer 4).

Used by :mod:`crdask.pipeline.calibration` (which builds the night's
masters from the catalogue); the decisions are written down there and, for
setups and spectroscopic flats, in :mod:`crdask.pipeline.spectro_masters`.

Example
-------
>>> central((8, 8))
(slice(2, 6, None), slice(2, 6, None))
"""

from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from ..calib.combine import combine
from ..io.sections import parse_section
from .spectro_masters import dispersion_axis, frame_mode, response_flat
from .threads import thread_map

__all__ = ["FrameRejected", "Master", "where", "central", "flat_region", "combine_frames",
           "master_flat", "bad_pixel_mask", "hot_pixels", "setup_bad_pixels", "nanmedian",
           "per_frame"]


def nanmedian(a):
    """Median of the non-NaN pixels of a 2-D numpy (a number) or
    Dask array (a lazy 0-d array: the whole array in one block, as
    ``np.nanmedian`` needs it); the same value either way.

    Example
    -------
    >>> a = np.array([[1.0, np.nan], [3.0, 4.0]], np.float32)
    >>> float(nanmedian(a)), float(nanmedian(da.from_array(a, chunks=1)).compute())
    (3.0, 3.0)
    """
    if isinstance(a, da.Array):
        return da.nanmedian(a.rechunk(-1), axis=(0, 1))
    return np.nanmedian(a)


def per_frame(fn, items, arrays, compute=False):
    """``[fn(x) for x in items]``: side by side on this process's threads
    (:func:`crdask.pipeline.threads.thread_map`) when every array of
    ``arrays`` is in memory (numpy arithmetic releases the GIL), else one
    after another (Dask arrays: only graphs are built), then, with
    ``compute``, computed together in one ``dask.compute``."""
    if any(isinstance(a, da.Array) for a in arrays):
        out = [fn(x) for x in items]
        return list(dask.compute(*out)) if compute else out
    return thread_map(fn, items)


class FrameRejected(Exception):
    """A frame that cannot be used; the message is one line naming the file."""


def where(path, setup, header=None):
    """``FILE[HDU]`` of the HDU actually read (a merged header knows it)."""
    where = getattr(header, "where", None)
    return where or f"{path}[{0 if setup.hdu is None else setup.hdu}]"


def central(shape):
    """Slices of the central half of a (ny, nx) frame in each axis."""
    ny, nx = shape
    return slice(ny // 4, ny - ny // 4 or None), slice(nx // 4, nx - nx // 4 or None)


def flat_region(setup, shape):
    """Slices where flats are normalised: ``setup.flat_region`` (FITS
    section of trimmed pixels) or the central half."""
    if setup.flat_region is None:
        return central(shape)
    return parse_section(setup.flat_region, shape=shape, where="flat_region").slices


@dataclass
class Master:
    """A master frame (lazy or computed) with its modelled variance."""

    kind: str
    data: object
    variance: object
    count: object
    inputs: list
    params: dict
    header: dict = field(default_factory=dict)
    bad: object = None   # a response flat's own bad pixels (spectroscopy)


def combine_frames(frames, setup, kind, scale=None):
    """Combine lazy frames with the setup's settings for ``kind``; (data, count)."""
    kw = {**setup.combine_kw, **setup.combine_by_kind.get(kind, {})}
    res = combine(list(frames), scale=scale, **kw)
    return res.data, res.count


def master_flat(preps, setup, bias, dark, filt, *, label=None, setup_name=None):
    """Normalised master flat of one setup from bias- and dark-corrected flats.

    Imaging (or ``flat_norm`` median | mode): one number normalises it.
    Spectroscopy with ``flat_norm: response``: the flat is divided by its
    smooth response along the dispersion axis and keeps its own bad pixels
    (:func:`crdask.pipeline.spectro_masters.response_flat`).
    """
    def corrected(p):
        f = p.data if bias is None else p.data - bias.data
        if dark is not None:
            f = f - dark.data * np.float32(p.exptime)
        return f
    frames = per_frame(corrected, preps, [p.data for p in preps]
                       + [m.data for m in (bias, dark) if m is not None])
    region = flat_region(setup, frames[0].shape)
    levels = per_frame(lambda f: nanmedian(f[region]), frames, frames, compute=True)
    bad = [(p, lv) for p, lv in zip(preps, levels) if not lv > 0]
    if bad:
        raise FrameRejected(f"{bad[0][0].path}: flat level {bad[0][1]:.3g} e- is not positive")
    mode = frame_mode(preps[0].header, setup)
    norm_kind = setup.flat_norm
    if norm_kind == "response" and mode != "spectroscopy":
        norm_kind = "median"     # imaging setups of a mixed night
    axis = None
    if norm_kind == "response":
        try:
            axis = dispersion_axis(preps[0].header, setup,
                                   where(preps[0].path, setup, preps[0].header))
        except ValueError as e:
            raise FrameRejected(str(e)) from None
    scale = [np.float32(1.0 / lv) for lv in levels]
    data, count = combine_frames(frames, setup, "flat", scale=scale)
    level = float(np.median(levels))
    own_bad = None
    if norm_kind == "response":
        as_dask = (lambda a: a if isinstance(a, da.Array) else da.from_array(a, chunks=-1))
        data, var, own_bad = response_flat(as_dask(data), as_dask(count), level, setup, axis)
    else:
        sub = data[region]
        if norm_kind == "mode":   # dask's nanmean, whatever the kind of array
            norm = 3 * nanmedian(sub) - 2 * da.nanmean(
                sub if isinstance(sub, da.Array) else da.from_array(sub, chunks=-1))
            norm = norm if isinstance(data, da.Array) else norm.compute(scheduler="sync")
        else:
            norm = nanmedian(sub)
        data = (data / norm).astype(np.float32)
        var = (da.maximum(data, 0) / (np.float32(level) * da.maximum(count, 1))
               ).astype(np.float32)
    label = filt if label is None else label
    params = {"n": len(preps), "filter": filt, "label": label, "setup": setup_name,
              "mode": mode, "norm": norm_kind, **setup.combine_kw,
              **setup.combine_by_kind.get("flat", {})}
    header = {"BUNIT": "", "FILTER": filt, "SETUP": setup_name or "-",
              "OBSMODE": mode, "FLATNORM": norm_kind}
    if axis is not None:
        params.update(dispaxis=axis, **setup.response)
        header["DISPAXIS"] = axis
    return Master("flat", data, var, count, [p.path for p in preps], params, header,
                  bad=own_bad)


def bad_pixel_mask(dark, flats, setup):
    """bool mask: hot dark-current pixels, low-response or invalid flat pixels.

    Only imaging flats (normalised by one number) enter: a response-
    normalised spectroscopic flat has its own mask (:func:`setup_bad_pixels`).
    """
    bad = hot_pixels(dark, setup)
    for f in flats.values():
        if f.bad is not None:
            continue
        low = (f.data < np.float32(setup.low_flat)) | ~da.isfinite(f.data)
        bad = low if bad is None else bad | low
    return bad


def hot_pixels(dark, setup):
    """bool: dark-current pixels above median + hot_sigma robust sigma and
    above hot_floor e-/s (or not finite); None without a dark."""
    if dark is None:
        return None
    d = dark.data
    med = nanmedian(d)
    sigma = 1.4826 * nanmedian(abs(d - med))
    return ((d > med + np.float32(setup.hot_sigma) * sigma) & (d > setup.hot_floor)) | \
        ~da.isfinite(d)


def setup_bad_pixels(dark, flat, setup):
    """bool mask of a spectroscopic setup: hot dark-current pixels and the
    bad pixels of its response-normalised flat (``flat.bad``)."""
    hot = hot_pixels(dark, setup)
    return flat.bad if hot is None else hot | flat.bad
