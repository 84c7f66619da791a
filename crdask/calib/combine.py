"""Stack combination with rejection, as a Dask reduction over frames (layer 2).

``combine(frames, method=..., ...)`` is ``ccdproc.combine`` for numpy or Dask
arrays: the same parameter names and meanings where they exist, computed per
pixel by the Numba kernel :func:`crdask.kernels.combine.combine_block` on
blocks that hold all N frames of a few rows (the stack is chunked only in y/x,
never along the frame axis), so memory stays bounded for any number of frames
and a chunked result equals the whole-frame result bit for bit.

::

    res = combine(bias_frames, method="average", sigma_clip=True)
    master, nused = res             # CombineResult(data, count)

Per pixel, in this order (see the kernel's docstring for the details):

1. drop masked values (``mask``), non-finite values (NaN/inf, treated as
   masked, as astropy does) and, with ``minmax_clip``, values below
   ``minmax_clip_min`` / above ``minmax_clip_max`` (unscaled values, strict
   comparisons, as ccdproc and IRAF's thresholds);
2. multiply each frame by its ``scale`` factor;
3. ``clip_extrema``: drop the ``nlow`` lowest and ``nhigh`` highest remaining
   values;
4. ``sigma_clip``: astropy's ``sigma_clip(axis=0, cenfunc=sigma_clip_func,
   stdfunc=sigma_clip_dev_func, maxiters=maxiters)`` on the remaining values
   (bit-exact bounds; ``maxiters=None`` iterates until nothing changes);
5. ``method``: ``'average'`` (weighted by ``weights`` if given), ``'median'``
   or ``'sum'`` (weighted) of what is left. ``count`` is the number of frames
   used; a pixel with none left is NaN with count 0.

Results are float32 (accumulated in float64, rounded once); inputs are read
as float32 (crdask images are float32; integer data up to 2**24 is exact).

Where this differs from ``ccdproc.combine`` on purpose (all documented
ccdproc behaviour is kept otherwise; parity tests in ``tests/test_combine.py``):

* Rejection is sequential: each step sees only the values the previous steps
  kept (IRAF's order). ccdproc computes extrema and sigma clipping on *all*
  values, masked ones included, and ORs the masks, so e.g. a saturated value
  already removed by ``minmax_clip`` still inflates ccdproc's standard
  deviation.
* ``scale`` is applied before extrema and sigma clipping (as IRAF
  ``imcombine``); ccdproc clips the unscaled values and scales afterwards,
  which rejects whole frames when flats of different levels are combined.
* A weighted average divides by the sum of the weights of the frames *kept*
  at that pixel; ccdproc divides by the sum of all weights.
* Defaults: ``sigma_clip_func='median'`` (ccdproc: ``ma.mean``; the median is
  the robust centre its own ``Combiner.sigma_clipping`` docstring describes),
  ``maxiters=1`` (what ``ccdproc.combine`` always uses). A threshold of
  ``None`` rejects nothing on that side (as ccdproc documents; astropy, and
  so ccdproc, actually falls back to 3).
* ``weights`` and ``scale`` are one number per frame (ccdproc also accepts
  per-pixel weights). ``sigma_clip_func``/``sigma_clip_dev_func`` are
  ``'median'``/``'mean'`` and ``'std'``/``'mad_std'``; numpy's and
  ``numpy.ma``'s mean/median/std functions (and ``astropy.stats.mad_std``)
  are accepted as those names.
* Pixels where every frame is rejected are NaN (count 0); ccdproc returns a
  mask there (and 0 for ``'sum'``).
* Weights are ignored by ``'median'`` (as in ccdproc).

Inputs and outputs:

* ``frames``: a list of 2-D numpy or Dask arrays, or a 3-D ``(N, y, x)``
  numpy or Dask array. All numpy -> numpy results (computed with Dask's
  threaded scheduler on row strips); any Dask array -> lazy Dask results.
  FITS files are opened in the io layer: ``crdask.io.raw.open_stack(paths)``
  gives the lazy frames, in strips of :func:`strip_rows` rows.
* ``chunks``: the y/x chunking of the computation. ``None``: Dask inputs keep
  their y/x chunks (a task then holds N input blocks: open files with
  ``open_lazy(path, chunks=(strip_rows(N, shape), -1))``, as ``open_stack``
  does, so that reading and combining share blocks and Dask fuses the reads
  into the combining tasks); numpy inputs use full-width
  row strips of about :data:`TARGET_BLOCK_BYTES` for the N frames
  (:func:`strip_rows`; for numpy also at least one strip per core).
  ``'auto'``: those row strips for any input. Otherwise anything
  :meth:`dask.array.Array.rechunk` takes for a 2-D array (an int is rows per
  strip). Rechunking a lazy input to smaller blocks does not lower its
  memory use: every source block stays in memory until all its pieces are
  combined.
"""

import numbers
import os
from typing import Any, NamedTuple

import numpy as np

from ..kernels.combine import combine_block
from .combine_params import check_params, per_frame

__all__ = ["combine", "CombineResult", "strip_rows", "TARGET_BLOCK_BYTES"]

#: Bytes of the N float32 frame blocks that one task combines (the kernel
#: reads them in place; with two threads a 100-frame 2048x2048 combine from
#: files peaks near 0.5 GB of process RSS). Larger blocks mean fewer Dask
#: tasks: the per-task overhead of 100 fused reads is a few ms.
TARGET_BLOCK_BYTES = 96 * 2**20

#: Largest number of frames (``count`` is uint16).
MAX_FRAMES = 65535


class CombineResult(NamedTuple):
    """Result of :func:`combine`: ``data`` (float32 (y, x), NaN where no frame
    was used) and ``count`` (uint16 (y, x), frames used per pixel)."""

    data: Any
    count: Any


def strip_rows(nframes, shape, target_bytes=TARGET_BLOCK_BYTES):
    """Rows per full-width strip so that ``nframes`` float32 strips take
    about ``target_bytes`` (at least 1 row, at most the frame)."""
    ny, nx = shape
    rows = int(target_bytes // max(1, nframes * nx * 4))
    return max(1, min(int(ny), rows))


# ---------------------------------------------------------------------------
# Parameter checks: one line naming the parameter.


def _is_path(x):
    return isinstance(x, (str, bytes, os.PathLike))


def _as_frame(label, arr):
    """Check one 2-D real array (numpy or Dask); numpy becomes an ndarray."""
    import dask.array as da
    if not isinstance(arr, da.Array):
        arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{label} must be a 2-D array (y, x), got {arr.ndim}-D "
                         f"with shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{label} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _frames_list(frames):
    """(list of 2-D arrays, lazy?, stack) from ``frames``; ``stack`` is a 3-D
    array given as such (else None)."""
    import dask.array as da
    if isinstance(frames, (np.ndarray, da.Array)) and frames.ndim == 3:
        if frames.shape[0] == 0:
            raise ValueError("frames is empty (no frames to combine)")
        if frames.dtype.kind not in "biuf":
            raise TypeError(f"frames must hold real numbers, got dtype {frames.dtype}")
        return None, isinstance(frames, da.Array), frames
    if isinstance(frames, (np.ndarray, da.Array)) or _is_path(frames):
        raise TypeError("frames must be a list of 2-D arrays, or a 3-D "
                        f"(frame, y, x) array; got {type(frames).__name__}"
                        + (f" with shape {frames.shape}" if hasattr(frames, "shape")
                           else ""))
    try:
        items = list(frames)
    except TypeError:
        raise TypeError("frames must be a list of 2-D arrays, or a 3-D "
                        f"(frame, y, x) array; got {type(frames).__name__}") from None
    if not items:
        raise ValueError("frames is empty (no frames to combine)")
    if any(_is_path(f) for f in items):
        # FITS text belongs to the io layer (DESIGN.md: calib may not import io)
        raise TypeError("frames: open FITS files with crdask.io.raw.open_stack(paths) "
                        "and pass the arrays it returns")
    out = [_as_frame(f"frames[{i}]", f) for i, f in enumerate(items)]
    shape0 = tuple(out[0].shape)
    for i, f in enumerate(out[1:], 1):
        if tuple(f.shape) != shape0:
            raise ValueError(f"frames[{i}] has shape {tuple(f.shape)} but frames[0] has "
                             f"shape {shape0}")
    lazy = any(isinstance(f, da.Array) for f in out)
    return out, lazy, None


def _masks_list(mask, n, shape, stack_given):
    """None, or a list of n 2-D bool-able arrays (None entries allowed), or a
    3-D array when the frames came as a 3-D stack."""
    import dask.array as da
    if mask is None:
        return None
    if isinstance(mask, (np.ndarray, da.Array)):
        if mask.ndim == 3:
            if tuple(mask.shape) != (n,) + tuple(shape):
                raise ValueError(f"mask has shape {tuple(mask.shape)} but the stack of "
                                 f"frames has shape {(n,) + tuple(shape)}")
            return mask if stack_given else [mask[i] for i in range(n)]
        raise ValueError(f"mask must be a 3-D (frame, y, x) array or a list of {n} 2-D "
                         f"masks, got {mask.ndim}-D with shape {tuple(mask.shape)}")
    try:
        items = list(mask)
    except TypeError:
        raise TypeError(f"mask must be None, a list of {n} 2-D masks or a 3-D array; "
                        f"got {type(mask).__name__}") from None
    if len(items) != n:
        raise ValueError(f"mask must have one entry per frame: {n}, got {len(items)}")
    out = []
    for i, m in enumerate(items):
        if m is None:
            out.append(None)
            continue
        m = _as_frame(f"mask[{i}]", m)
        if tuple(m.shape) != tuple(shape):
            raise ValueError(f"mask[{i}] has shape {tuple(m.shape)} but frames[{i}] has "
                             f"shape {tuple(shape)}")
        out.append(m)
    if all(m is None for m in out):
        return None
    if stack_given:
        import dask.array as da
        zeros = np.zeros(tuple(shape), bool)
        filled = [zeros if m is None else m for m in out]
        if any(isinstance(m, da.Array) for m in filled):
            return da.stack([da.asarray(m) for m in filled])
        return np.stack([np.asarray(m, bool) for m in filled])
    return out


def _scale_vector(scale, frames, stack, n):
    """numpy float64 (n,), a lazy dask (n,) vector, or None."""
    import dask.array as da
    if scale is None:
        return None
    if isinstance(scale, str):
        raise TypeError("scale must be a callable or one number per frame, got "
                        f"{scale!r}")
    if not callable(scale):
        if isinstance(scale, da.Array):
            if scale.ndim != 1 or scale.shape[0] != n:
                raise ValueError(f"scale must be one number per frame: shape ({n},), got "
                                 f"shape {scale.shape}")
            return scale.astype(np.float64).map_blocks(_check_scale_block,
                                                       dtype=np.float64)
        return per_frame("scale", scale, n)
    values = []
    for i in range(n):
        frame = frames[i] if stack is None else stack[i]
        values.append(scale(frame))
    if any(isinstance(v, da.Array) for v in values):
        vec = da.stack([da.asarray(v, dtype=np.float64).reshape(()) for v in values])
        return vec.rechunk(-1).map_blocks(_check_scale_block, dtype=np.float64)
    try:
        return per_frame("scale", [float(np.asarray(v)) for v in values], n)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{e} (values returned by the scale callable)") from None


def _check_scale_block(vec):
    vec = np.asarray(vec, np.float64)
    bad = np.flatnonzero(~(np.isfinite(vec) & (vec > 0)))
    if bad.size:
        raise ValueError(f"scale values must be finite and > 0, got {vec[bad[0]]!r}")
    return vec


def _y_x_chunks(chunks, n, shape, current):
    """The 2-D chunking to use (None: keep ``current``)."""
    rows = strip_rows(n, shape)
    if chunks is None:
        if current is None:
            # in-memory input: also at least one strip per core when possible
            cores = os.cpu_count() or 1
            return (max(1, min(rows, -(-shape[0] // cores))), -1)
        # Lazy inputs keep their chunks: rechunking a lazy source to smaller
        # strips does not bound memory (each source block stays in memory
        # until all its pieces are used) and stops Dask from fusing the reads
        # into the combining tasks. Open files with strip_rows() instead.
        return None
    if isinstance(chunks, str):
        if chunks != "auto":
            raise ValueError(f"chunks must be None, 'auto', an int or a (y, x) chunk "
                             f"specification; got {chunks!r}")
        return (rows, -1)
    if isinstance(chunks, numbers.Integral) and not isinstance(chunks, bool):
        if chunks < 1 and chunks != -1:
            raise ValueError(f"chunks must be >= 1 (rows per strip) or -1, got {chunks}")
        return (int(chunks), -1)
    if isinstance(chunks, (tuple, list)) and len(chunks) == 2:
        return tuple(chunks)
    raise ValueError(f"chunks must be None, 'auto', an int or a (y, x) chunk "
                     f"specification; got {chunks!r}")


# ---------------------------------------------------------------------------
# Block functions.


def _run_kernel(stack, mask, scale, weights, p):
    by, bx = stack[0].shape
    out = np.empty((2, by, bx), np.float32)
    count = np.empty((by, bx), np.uint16)
    combine_block(stack, mask, method=p["method"], scale=scale, weights=weights,
                  vmin=p["vmin"], vmax=p["vmax"], nlow=p["nlow"], nhigh=p["nhigh"],
                  sigma_clip=p["sigma"], sigma_lower=p["slo"], sigma_upper=p["shi"],
                  cen_median=p["cen_median"], dev_mad=p["dev_mad"],
                  maxiters=p["maxiters"], out=out[0], count=count)
    out[1] = count
    return out


def _block_from_frames(*blocks, nf, mask_present, p, weights, scale=None, has_lazy_scale):
    # The frames' blocks go to the kernel as they are (no stacked copy).
    if has_lazy_scale:
        scale = blocks[-1]
        blocks = blocks[:-1]
    frames = list(blocks[:nf])
    masks = None
    if any(mask_present):
        it = iter(blocks[nf:])
        masks = [next(it) if present else None for present in mask_present]
    return _run_kernel(frames, masks, scale, weights, p)


def _block_from_stack(stack, *rest, has_mask, p, weights, scale=None, has_lazy_scale):
    rest = list(rest)
    if has_lazy_scale:
        scale = rest.pop()
    mask = np.ascontiguousarray(rest[0], np.bool_) if has_mask else None
    stack = np.ascontiguousarray(stack, np.float32)
    return _run_kernel(stack, mask, scale, weights, p)


def _combine_in_memory(frames, masks, scale, weights, p, rows):
    """All-numpy frames: row strips of views straight into the kernel, on a
    thread per core (``dask.array.from_array`` would copy every frame first:
    ~0.9 s for the 34 frames of a 2048x2048 night's masters). Same strips
    and kernel as the Dask path, so the same result bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    ny, nx = frames[0].shape
    data = np.empty((ny, nx), np.float32)
    count = np.empty((ny, nx), np.uint16)
    frames = [np.asarray(f) for f in frames]
    rows = ny if rows == -1 else int(rows)

    def strip(y0):
        sl = slice(y0, min(ny, y0 + rows))
        blocks = [f[sl] for f in frames]
        mk = None if masks is None else [None if m is None else np.asarray(m)[sl]
                                          for m in masks]
        out = _run_kernel(blocks, mk, scale, weights, p)
        data[sl] = out[0]
        count[sl] = out[1]

    starts = range(0, ny, rows)
    with ThreadPoolExecutor(max_workers=max(1, min(len(starts), os.cpu_count() or 1))) as ex:
        list(ex.map(strip, starts))
    return CombineResult(data, count)


# ---------------------------------------------------------------------------
# The public function.


def combine(frames, method="average", *, weights=None, scale=None, mask=None,
            minmax_clip=False, minmax_clip_min=None, minmax_clip_max=None,
            clip_extrema=False, nlow=1, nhigh=1,
            sigma_clip=False, sigma_clip_low_thresh=3, sigma_clip_high_thresh=3,
            sigma_clip_func="median", sigma_clip_dev_func="std", maxiters=1,
            chunks=None):
    """Combine a stack of frames pixel by pixel, with optional rejection.

    Parameters (ccdproc.combine's names and meanings; see the module
    docstring for the order of the steps and the deliberate differences)
    ----------
    frames : list of 2-D numpy/Dask arrays or FITS paths, or a 3-D array
        ``(N, y, x)``. All numpy -> numpy results; otherwise lazy Dask.
    method : ``'average'`` | ``'median'`` | ``'sum'``.
    weights : one positive number per frame, or None (average and sum only).
    scale : one positive factor per frame (array-like or Dask), or a callable
        ``scale(frame) -> factor`` called on each frame as given (numpy or
        Dask; it may return a lazy Dask scalar). Frames are multiplied by it.
    mask : None, a list of N 2-D masks (None entries = nothing masked), or a
        3-D array; True/non-zero = do not use that value.
    minmax_clip, minmax_clip_min, minmax_clip_max : drop values ``< min`` or
        ``> max`` (unscaled; None = no limit on that side).
    clip_extrema, nlow, nhigh : drop the ``nlow`` lowest and ``nhigh`` highest
        values of each pixel (None counts as 0).
    sigma_clip, sigma_clip_low_thresh, sigma_clip_high_thresh : astropy sigma
        clipping with these ``sigma_lower``/``sigma_upper`` (> 0, or None for
        no rejection on that side).
    sigma_clip_func : ``'median'`` (default) or ``'mean'``: the centre.
    sigma_clip_dev_func : ``'std'`` (default) or ``'mad_std'``: the spread.
    maxiters : clipping iterations (>= 1; default 1, as ccdproc.combine), or
        None to iterate until nothing more is rejected (astropy default: 5).
    chunks : y/x chunking of the computation (see the module docstring).

    Returns
    -------
    CombineResult(data, count): float32 combined image (NaN where no frame
    was left) and uint16 number of frames used per pixel. Lazy results share
    one graph: compute them together (``dask.compute(res.data, res.count)``)
    or the stack is read and combined twice.
    """
    import dask
    import dask.array as da

    p = check_params(method, minmax_clip, minmax_clip_min, minmax_clip_max, clip_extrema,
                     nlow, nhigh, sigma_clip, sigma_clip_low_thresh,
                     sigma_clip_high_thresh, sigma_clip_func, sigma_clip_dev_func,
                     maxiters)
    flist, lazy, stack = _frames_list(frames)
    n = stack.shape[0] if stack is not None else len(flist)
    shape = tuple(stack.shape[1:]) if stack is not None else tuple(flist[0].shape)
    if n > MAX_FRAMES:
        raise ValueError(f"frames: at most {MAX_FRAMES} frames can be combined, got {n}")
    if 0 in shape:
        raise ValueError(f"frames are empty (shape {shape})")
    if weights is not None:
        if isinstance(weights, da.Array):
            weights = weights.compute()
        weights = per_frame("weights", weights, n)
    masks = _masks_list(mask, n, shape, stack is not None)
    if masks is not None and not lazy:
        lazy = (isinstance(masks, da.Array)
                or any(isinstance(m, da.Array) for m in masks if m is not None))
    scale_vec = _scale_vector(scale, flist, stack, n)
    lazy_scale = isinstance(scale_vec, da.Array)
    if lazy_scale:
        lazy = True

    current = None
    if stack is not None and isinstance(stack, da.Array):
        current = stack.chunks[1:]
    elif flist is not None:
        dk = [f for f in flist if isinstance(f, da.Array)]
        if dk:
            current = dk[0].chunks
    target = _y_x_chunks(chunks, n, shape, current)

    if not lazy and flist is not None and chunks is None:
        return _combine_in_memory(flist, masks, scale_vec, weights, p, target[0])
    kw = {"p": p, "weights": weights, "has_lazy_scale": lazy_scale}
    if not lazy_scale:
        kw["scale"] = scale_vec
    meta = np.empty((0, 0, 0), np.float32)
    if stack is not None:
        if isinstance(stack, da.Array):
            st = stack.rechunk({0: -1} if target is None else (-1,) + tuple(target))
        else:
            st = da.from_array(stack, chunks=(-1,) + tuple(target), name=False)
        args = [st, "kyx"]
        if masks is not None:
            if isinstance(masks, da.Array):
                mk = masks.rechunk(st.chunks)
            else:
                mk = da.from_array(np.asarray(masks), chunks=st.chunks, name=False)
            args += [mk, "kyx"]
        if lazy_scale:
            args += [scale_vec, "k"]
        out = da.blockwise(_block_from_stack, "cyx", *args, new_axes={"c": 2},
                           concatenate=True, dtype=np.float32, meta=meta,
                           has_mask=masks is not None, **kw)
    else:
        def as_dask(a):
            if isinstance(a, da.Array):
                return a if target is None else a.rechunk(target)
            return da.from_array(a, chunks=target if target is not None
                                 else current, name=False)
        args = []
        for f in flist:
            args += [as_dask(f), "yx"]
        present = [False] * n if masks is None else [m is not None for m in masks]
        if masks is not None:
            for m in masks:
                if m is not None:
                    args += [as_dask(m), "yx"]
        if lazy_scale:
            args += [scale_vec, "k"]
        out = da.blockwise(_block_from_frames, "cyx", *args, new_axes={"c": 2},
                           concatenate=True, dtype=np.float32, meta=meta,
                           nf=n, mask_present=present, **kw)
    data = out[0]
    count = out[1].astype(np.uint16)
    if lazy:
        return CombineResult(data, count)
    data, count = dask.compute(data, count, scheduler="threads")
    return CombineResult(np.ascontiguousarray(data), np.ascontiguousarray(count))
