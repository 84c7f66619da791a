"""Median-Minimum (numina-crmasks' M.M.Cosmic) for N >= 3 exposures (layer 2).

With three or more equivalent exposures a median removes every cosmic ray
(CR) except those that hit the same pixel in two of them. The
Median-Minimum diagram finds those: per pixel ``x = min2d`` (the mean after
dropping the ``mm_cr_coincidences`` highest values) and ``y = median2d -
min2d``; a boundary drawn from simulated exposures (Poisson or negative
binomial photons plus read noise) or through fixed points separates the
pixels hit more than once. L.A.Cosmic (crdask's own, ``crmethod=mm_lacosmic``
or ``lacosmic``) runs as the auxiliary single-frame method on the median, the
mean, every exposure and the masked mean, exactly where numina runs it.

Masks (numina's names): ``MEDIANCR`` (coincident hits in the median),
``MEANCRT`` (every CR in the mean, including ``MEDIANCR``), ``CRMASK1..N``
(per exposure, within ``MEANCRT``), ``MEANCR`` (residuals in the mean of the
exposures masked by ``CRMASKi``). The combinations are in
:mod:`crdask.cosmic.mm_stack`.

Units: inputs in ADU with ``gain`` (e-/ADU), ``rnoise`` (ADU) and ``bias``
(ADU) as numina takes them; the products are bias-subtracted ADU. Where
crdask deliberately differs from numina 0.40 (its bugs): L.A.Cosmic gets the
read noise in electrons (``rnoise * gain``; numina passes ADU), and the
``CRMASKi`` diagram test uses the bias-subtracted, flux-scaled exposures
(numina compares raw frames, bias included, with ``min2d``). With
``gain=1`` and ``bias=0`` the masks are numina's.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> frames = [rng.normal(100, 3, (40, 40)).astype(np.float32) for _ in range(3)]
>>> for f in frames[:2]:
...     f[20, 20] += 500.0            # the same CR in two of three exposures
>>> r = median_minimum(frames, gain=1.0, rnoise=3.0, crmethod="mmcosmic",
...                    mm_boundary_fit="piecewise",
...                    mm_fixed_points_in_boundary=[[0, 30], [1000, 30]])
>>> bool(r.masks["MEDIANCR"][20, 20]), int(r.masks["MEDIANCR"].sum())
(True, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from ..kernels.mm_sim import hist_from_codes
from ..kernels.mm_stack import keep_touching
from . import mm_boundary as mb
from .mm_aux import LACosmicAux, flux_factors, measure_offsets
from .mm_params import PARAMS
from .mm_stack import (COMBINATIONS, base_statistics, combine, diagram_flags, dilate,
                       stack_statistics)
from .params import ParamError
from .registry import CRResult, Method, register

__all__ = ["median_minimum", "MMResult", "PARAMS", "detect_group"]


@dataclass
class MMResult:
    """What :func:`median_minimum` returns.

    masks : dict name -> bool ``(ny, nx)``: MEDIANCR, MEANCRT, CRMASK1..N, MEANCR
    flags : int8 ``(ny, nx)``: numina's MEDIANCR codes (2 M.M., 3 auxiliary,
        4 both, 1 dilation only), for the feature tables
    stats : dict of the stack statistics (min2d, median2d, mean2d, max2d, ...)
    auxclean : float32 ``(ny, nx)`` L.A.Cosmic-cleaned median (or None)
    flux_factor : float array ``(N,)``
    boundary : callable x -> y (ADU) or None
    diagram : dict (bins, simulated histogram, boundary points, limits) or None
    offsets : list of (dx, dy) used for the simulations
    stack : float32 ``(N, ny, nx)``, bias-subtracted (and flux-scaled) exposures
        as the combinations use them
    params : the complete validated parameters
    threshold : mm_threshold in ADU
    """

    masks: dict
    flags: np.ndarray
    stats: dict
    auxclean: object
    flux_factor: np.ndarray
    boundary: object
    diagram: dict | None
    offsets: list
    stack: object
    params: dict
    threshold: float
    gain: float = 1.0
    rnoise: float = 0.0
    extra: dict = field(default_factory=dict)

    def combination(self, name):
        """``(data, variance, map)`` of one of numina's combinations
        (``mean``, ``median``, ``min``, ``mediancr``, ``meancrt``, ``meancr``,
        ``meancr2``), bias-subtracted ADU; Dask in, Dask out."""
        if name not in COMBINATIONS:
            raise ParamError("combination", f"{name!r} is not allowed", ", ".join(COMBINATIONS))
        base = None
        if not isinstance(self.stack, da.Array):
            if "base" not in self.extra:
                self.extra["base"] = base_statistics(self.stack)
            base = self.extra["base"]
        d, v, m = combine(self.stack, self.masks, name, aux=self.auxclean, base=base,
                          use_aux=self.params["use_auxmedian"] and self.auxclean is not None)
        rp = self.params["pixels_to_be_replaced_by_local_median"]
        if rp and name not in ("mean", "median", "min"):
            d = _replace_local_median(np.array(d), rp)
        return d, v, m


def _replace_local_median(img, pixels):
    ny, nx = img.shape
    for x, y, wx, wy in pixels:
        i, j = x - 1, y - 1
        x1, x2 = max(i - wx // 2, 0), min(i + wx // 2 + 1, nx)
        y1, y2 = max(j - wy // 2, 0), min(j + wy // 2 + 1, ny)
        box = img[y1:y2, x1:x2]
        keep = np.ones(box.shape, bool)
        if y1 <= j < y2 and x1 <= i < x2:
            keep[j - y1, i - x1] = False
        if keep.any():
            img[j, i] = np.median(box[keep])
    return img


def _fail(name, problem, allowed=None):
    raise ParamError(name, problem, allowed)


def _as_stack(frames):
    if not isinstance(frames, (list, tuple)):
        _fail("frames", f"expected a list of 2-D exposures, got {type(frames).__name__}")
    n = len(frames)
    if n < 3:
        _fail("frames", f"{n} exposure(s) given; Median-Minimum needs at least 3")
    shapes = [tuple(np.shape(f)) for f in frames]
    for i, s in enumerate(shapes):
        if len(s) != 2:
            _fail("frames", f"exposure {i + 1} has shape {s}, not 2-D")
        if s != shapes[0]:
            _fail("frames", f"exposure {i + 1} has shape {s}, exposure 1 has {shapes[0]}")
    lazy = any(isinstance(f, da.Array) for f in frames)
    if lazy:
        return da.stack([da.asarray(f).astype(np.float32) for f in frames]), True
    return np.stack([np.asarray(f, dtype=np.float32) for f in frames]), False


def _cleanable(shape, p):
    ny, nx = shape
    ok = np.ones(shape, bool)
    for x1, x2, y1, y2 in p["regions_to_be_skipped"] or ():
        ok[y1 - 1:min(y2, ny), x1 - 1:min(x2, nx)] = False
    for key, val in (("pixels_to_be_flagged_as_cr", True), ("pixels_to_be_ignored_as_cr", False),
                     ("pixels_to_be_replaced_by_local_median", False)):
        for q in p[key] or ():
            if q[0] > nx or q[1] > ny:
                _fail(key, f"pixel {q[:2]} is outside the {nx}x{ny} frame")
            ok[q[1] - 1, q[0] - 1] = val
    return ok


def median_minimum(frames, gain=1.0, rnoise=0.0, bias=0.0, *, num_threads=None, **params):
    """Find cosmic rays in N >= 3 equivalent exposures (numina-crmasks).

    Parameters
    ----------
    frames : list of N 2-D arrays ``(ny, nx)`` (numpy or Dask), ADU
        Equivalent exposures, same shape. Dask frames are reduced chunk by
        chunk (y/x) for the per-pixel work; results equal the numpy ones.
    gain : float
        e-/ADU (numina's ``gain``).
    rnoise : float
        Read noise in ADU (numina's ``rnoise``).
    bias : float or 2-D array
        ADU, subtracted from every exposure first.
    num_threads : int, optional
        Threads of each L.A.Cosmic run (default all cores).
    **params
        numina's parameters (:data:`PARAMS`: ``crmethod``, ``mm_*``, ``la_*``,
        ``flux_factor``, ``dilation``, regions and pixel lists...).

    Returns
    -------
    MMResult
        Masks, statistics, boundary, diagram; ``.combination(name)`` gives
        numina's combined images.

    Raises
    ------
    ParamError
        One line naming the parameter: fewer than 3 exposures, shapes that
        differ, ``mm_cr_coincidences >= N``, offsets that leave no overlap,
        a bad or unknown parameter.

    Example
    -------
    See the module docstring.
    """
    p = PARAMS.validate(params)
    stack, lazy = _as_stack(frames)
    n, ny, nx = stack.shape
    k = p["mm_cr_coincidences"]
    if k >= n:
        _fail("mm_cr_coincidences", f"{k} with {n} exposures; it must be below the number "
              "of exposures", f"an integer from 2 to {n - 1}")
    for key in ("gain", "rnoise"):
        v = {"gain": gain, "rnoise": rnoise}[key]
        if not np.isscalar(v) or not np.isfinite(v) or v < 0 or (key == "gain" and v == 0):
            _fail(key, f"{v!r} is not allowed", "a number > 0" if key == "gain" else "a number >= 0")
    gain, rnoise = float(gain), float(rnoise)
    if p["mm_boundary_fit"] == "piecewise" and p["crmethod"] != "lacosmic":
        if not p["mm_fixed_points_in_boundary"] or len(p["mm_fixed_points_in_boundary"]) < 2:
            _fail("mm_fixed_points_in_boundary", "piecewise needs at least two fixed points")
    if p["mm_xy_offsets"] is not None and p["mm_crosscorr_region"] is not None:
        _fail("mm_xy_offsets", "given together with mm_crosscorr_region; use one")
    if p["mm_xy_offsets"] is not None:
        if len(p["mm_xy_offsets"]) != n:
            _fail("mm_xy_offsets", f"{len(p['mm_xy_offsets'])} offsets for {n} exposures")
        for dx, dy in p["mm_xy_offsets"]:
            if abs(dx) >= nx or abs(dy) >= ny:
                _fail("mm_xy_offsets", f"offset ({dx:g}, {dy:g}) leaves no overlap with the "
                      f"{nx}x{ny} frame")
    if p["mm_synthetic"] == "single" and (p["mm_xy_offsets"] or p["mm_crosscorr_region"]):
        _fail("mm_synthetic", "single cannot be combined with offsets", "median")

    # -- per-pixel statistics (chunked when lazy) ---------------------------
    b = np.asarray(bias, dtype=np.float64) if not np.isscalar(bias) else float(bias)
    raw = stack
    stack = (raw.astype(np.float64) - b).astype(np.float32)
    med0 = np.median(np.asarray(stack), axis=0) if p["flux_factor"] == "auto" else None
    ff = flux_factors(np.asarray(stack) if med0 is not None else None, med0, p, n)
    # numina rounds twice where it detects (bias, then flux factor) and once
    # where it combines: so do we, the combinations get their own stack.
    # (numina's products are always divided by the flux factors, whatever
    # apply_flux_factor_to says; its MEANCR target only for 'original')
    comb_stack = stack
    if np.any(ff != 1.0):
        comb_stack = ((raw.astype(np.float64) - b) / ff[:, None, None]).astype(np.float32)
        if p["apply_flux_factor_to"] == "original":
            stack = (stack.astype(np.float64) / ff[:, None, None]).astype(np.float32)
    stats_lazy = stack_statistics(stack, k)
    if lazy:
        import dask
        vals = dask.compute(stack, *stats_lazy.values())
        cube, stats = vals[0], dict(zip(stats_lazy, vals[1:]))
    else:
        cube, stats = stack, stats_lazy
    min2d, median2d, mean2d, max2d = (stats[kk] for kk in ("min2d", "median2d", "mean2d", "max2d"))
    cleanable = _cleanable((ny, nx), p)
    threshold = rnoise * p["mm_threshold_rnoise"]
    y_med = median2d - min2d
    use_mm = p["crmethod"] != "lacosmic"
    use_la = p["crmethod"] != "mmcosmic"
    aux = LACosmicAux(p, gain, rnoise, num_threads) if use_la else None
    zero = np.zeros((ny, nx), bool)
    setup = _diagram_setup(p, stats, gain, rnoise, n) if use_mm else None
    early = _start_simulation(p, stats, setup, ff, gain, rnoise, n, num_threads) \
        if use_mm else None

    # -- auxiliary method on the median and on every exposure ---------------
    auxclean = None
    flag_aux = zero
    singles_clean = cube
    single_flags = [zero] * n
    flag_mean = zero
    if use_la:
        # the median, the mean and every exposure: independent runs, together
        runs = aux.map([median2d, mean2d] + [cube[i] for i in range(n)], cleanable)
        auxclean, flag_aux = runs[0]
        flag_mean = runs[1][1]
        if use_mm:
            flag_aux = keep_touching(flag_aux, np.ascontiguousarray(y_med > threshold))
        singles_clean = np.stack([c for c, _ in runs[2:]])
        single_flags = [f for _, f in runs[2:]]
        del runs

    boundary, diagram, offsets, flag_mm = None, None, [(0.0, 0.0)] * n, zero
    if use_mm:
        boundary, diagram, offsets = _boundary(p, stats, setup, flag_aux, single_flags,
                                               singles_clean, ff, gain, rnoise, n, num_threads,
                                               early)
        bvals = boundary(min2d)      # every diagram test below has x = min2d
        flag_mm = diagram_flags(min2d, y_med, max2d, bvals, threshold,
                                p["mm_minimum_max2d_rnoise"] * rnoise, np.ones_like(cleanable))
        flag_mm = dilate(flag_mm, p["mm_dilation"]) & cleanable
    flags = (2 * flag_mm.astype(np.int8) + 3 * flag_aux.astype(np.int8))
    flags[flags == 5] = 4
    any_flag = flags > 0
    if p["dilation"] > 0 and any_flag.any():
        dil = dilate(any_flag, p["dilation"]).astype(np.int8)
        dil[any_flag] = flags[any_flag]
        flags = dil
    masks = {"MEDIANCR": flags > 0}

    # -- MEANCRT, CRMASKi, MEANCR --------------------------------------------
    xs = min2d
    maxthr = p["mm_minimum_max2d_rnoise"] * rnoise

    def mm_on(target):
        if not use_mm:
            return zero, zero
        y = target - xs
        f = diagram_flags(xs, y, max2d, bvals, threshold, maxthr, cleanable)
        return dilate(f, p["mm_dilation"]), np.ascontiguousarray(y > threshold)

    def finish(fa, fm, dilation):
        f = fa | fm
        return dilate(f, dilation) if dilation > 0 else f

    fa = flag_mean
    fm, above = mm_on(mean2d)
    if use_la and use_mm:
        fa = keep_touching(fa, above)
    if fa.any():
        fa = fa | masks["MEDIANCR"]
    if fm.any():
        fm = fm | masks["MEDIANCR"]
    masks["MEANCRT"] = finish(fa, fm, p["dilation"])
    for i in range(n):
        fa = single_flags[i]
        fm, above = mm_on(cube[i])
        if use_la and use_mm:
            fa = keep_touching(fa, above)
        fa = fa & masks["MEANCRT"]
        fm = fm & masks["MEANCRT"]
        masks[f"CRMASK{i + 1}"] = finish(fa, fm, p["dilation"])
    comb_cube = np.asarray(comb_stack) if p["apply_flux_factor_to"] == "original" else cube
    base = base_statistics(comb_cube)
    meancr = combine(comb_cube, {**masks, "MEANCR": zero}, "meancr", base=base)[0]
    # the combinations of a numpy stack share these statistics
    extra = {"base": base} if comb_cube is comb_stack else {}
    masks["MEANCR"] = aux(meancr, cleanable)[1] if use_la else zero.copy()

    if lazy:
        chunks = stack.chunks[1:]
        masks = {kk: da.from_array(v, chunks=chunks) for kk, v in masks.items()}
        if auxclean is not None:
            auxclean = da.from_array(auxclean, chunks=chunks)
        stats = stats_lazy
    return MMResult(masks=masks, flags=flags, stats=stats, auxclean=auxclean, flux_factor=ff,
                    boundary=boundary, diagram=diagram, offsets=offsets, stack=comb_stack,
                    params=p, threshold=threshold, gain=gain, rnoise=rnoise, extra=extra)


def _diagram_setup(p, stats, gain, rnoise, n):
    """Seed, bins and limits of the diagram: they need the statistics only
    (not the auxiliary method), so the simulation can start early."""
    min2d = stats["min2d"]
    fixed = p["mm_fixed_points_in_boundary"]
    shift = p["mm_xy_offsets"] is not None or p["mm_crosscorr_region"] is not None
    # mm_seed None: one fresh seed for the limits and the blocks alike
    seed = p["mm_seed"] if p["mm_seed"] is not None else \
        int(np.random.SeedSequence().entropy % (2 ** 63))
    rng = np.random.default_rng(seed)
    xlo, xhi, _, yhi = mb.diagram_limits(rng, p["mm_photon_distribution"], p["mm_nbinom_shape"],
                                         gain, rnoise, np.max(min2d), n, stream=p["mm_rng"])
    xlo = min(xlo, float(np.min(min2d)))
    xhi = max(xhi, float(np.max(min2d)))
    yhi *= 4.0 if shift else 2.0
    if fixed:
        fy = max(q[1] for q in fixed)
        if fy > yhi:
            yhi = 1.05 * fy
    if p["mm_ydiag_max"]:
        yhi = p["mm_ydiag_max"]
    # Poisson photons on crdask's stream around the median: every pixel
    # that enters the histogram has lam = max(median2d, 0) whatever the
    # auxiliary method finds (the pixels it flags are left out), so the
    # simulation runs beside it (same draws whether it overlaps or not)
    early = (p["mm_rng"] != "numina" and p["mm_photon_distribution"] == "poisson"
             and p["mm_synthetic"] == "median" and not shift)
    return {"seed": seed, "rng": rng, "shift": shift, "early": early,
            "bins_x": np.linspace(xlo, xhi, mb.NBINS + 1),
            "bins_y": np.linspace(0, yhi, mb.NBINS + 1), "limits": (xlo, xhi, 0.0, yhi)}


def _lam(p, pre, ff, n, offsets=None, singles_clean=None):
    """Expected ADU of the simulated exposures, float64 ``(n, ny, nx)``."""
    ffsim = ff if p["apply_flux_factor_to"] == "simulated" else np.ones(n)
    lam = np.zeros((n,) + pre.shape)
    for i in range(n):
        if p["mm_synthetic"] == "single":
            lam[i] = singles_clean[i] / ffsim[i]
        elif offsets is not None:
            lam[i] = np.nan_to_num(mb.shift_flux(pre, *offsets[i]) / ffsim[i])
        else:
            lam[i] = pre / ffsim[i]
    lam[lam < 0] = 0.0
    return lam


def _start_simulation(p, stats, setup, ff, gain, rnoise, n, num_threads):
    """The simulated bins of every pixel (a Future), started before the
    auxiliary method when :func:`_diagram_setup` allows it, else None."""
    if not setup["early"]:
        return None
    from concurrent.futures import ThreadPoolExecutor

    pre = np.where(stats["median2d"] < 0, np.float32(0), stats["median2d"])
    lam = _lam(p, pre, ff, n)
    pool = ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(mb.simulate_codes, lam, gain, rnoise, p["mm_cr_coincidences"],
                      p["mm_nsimulations"], setup["bins_y"], setup["bins_x"], setup["seed"],
                      num_threads)
    pool.shutdown(wait=False)
    return fut


def _boundary(p, stats, setup, flag_aux, single_flags, singles_clean, ff, gain, rnoise, n,
              num_threads=None, early=None):
    """The detection boundary (and the simulated diagram) for one group;
    ``early``: the Future of :func:`_start_simulation`."""
    min2d, median2d = stats["min2d"], stats["median2d"]
    fixed = p["mm_fixed_points_in_boundary"]
    offsets = [(0.0, 0.0)] * n
    if p["mm_xy_offsets"] is not None:
        offsets = [tuple(o) for o in p["mm_xy_offsets"]]
    elif p["mm_crosscorr_region"] is not None:
        offsets = measure_offsets(median2d, singles_clean, p["mm_crosscorr_region"])
    bins_x, bins_y = setup["bins_x"], setup["bins_y"]
    used = (np.sum(single_flags, axis=0) + flag_aux).ravel() == 0
    if early is not None:
        hist = np.zeros((len(bins_y) - 1, len(bins_x) - 1), np.int64)
        hist_from_codes(early.result(), used, hist)
    else:
        pre = np.where(median2d < 0, np.float32(0), median2d)
        pre[flag_aux] = min2d[flag_aux]
        lam = _lam(p, pre, ff, n, offsets if setup["shift"] else None, singles_clean)
        hist = mb.simulate_histogram(setup["rng"], lam, gain, rnoise, p["mm_cr_coincidences"],
                                     p["mm_nsimulations"], p["mm_photon_distribution"],
                                     p["mm_nbinom_shape"], used, bins_y, bins_x,
                                     stream=p["mm_rng"], seed=setup["seed"],
                                     num_threads=num_threads)
        del lam
    hmean = mb.remove_sparse_bins(hist, p["mm_hist2d_min_neighbors"]).astype(float) \
        / p["mm_nsimulations"]
    xb, yb = mb.boundary_points(hmean, bins_x, bins_y, p["mm_nsimulations"])
    if p["mm_boundary_fit"] == "piecewise":
        boundary = mb.piecewise_boundary(fixed)
    else:
        if len(xb) < 2:
            _fail("mm_boundary_fit", "the simulated diagram has fewer than 2 boundary points",
                  "piecewise with mm_fixed_points_in_boundary")
        boundary = mb.spline_boundary(xb, yb, p["mm_knots_splfit"],
                                      p["mm_niter_boundary_extension"],
                                      p["mm_weight_boundary_extension"], fixed)
    diagram = {"bins_x": bins_x, "bins_y": bins_y, "hist": hmean, "xb": xb, "yb": yb,
               "limits": setup["limits"]}
    return boundary, diagram, offsets


def detect_group(data, params, *, bad=None, var=None, readnoise=None, num_threads=None):
    """The registry's ``group`` convention: N exposures in e- (gain 1, no
    bias), read noise per member in e- (their median is used: numina's
    model has one read noise). Members are cleaned where their
    ``CRMASKi`` is set, with the ``meancr`` value (the masked mean of the
    others); products are numina's seven combinations as
    ``(data, variance, mask)``.
    """
    rn = float(np.median(readnoise)) if readnoise is not None else 0.0
    r = median_minimum(list(data), gain=1.0, rnoise=rn, bias=0.0, num_threads=num_threads,
                       **params)
    meancr = np.asarray(r.combination("meancr")[0])
    clean, crmask = [], []
    for i, frame in enumerate(data):
        m = np.asarray(r.masks[f"CRMASK{i + 1}"])
        if bad is not None and bad[i] is not None:
            m = m & ~np.asarray(bad[i])
        c = np.array(frame, dtype=np.float32)
        c[m] = meancr[m] * np.float32(r.flux_factor[i])
        clean.append(c)
        crmask.append(m)
    products = {}
    for name in COMBINATIONS:
        d, v, mp = r.combination(name)
        products[f"combined_{name}"] = (np.asarray(d), np.asarray(v),
                                        np.asarray(mp) < len(data))
    header = {f"FLUXF{i + 1}": float(f) for i, f in enumerate(r.flux_factor)}
    header["MMNCR"] = (int(np.asarray(r.masks["MEDIANCR"]).sum()), "MEDIANCR pixels")
    return CRResult(clean=clean, crmask=crmask, products=products, header=header)


register(Method("median_minimum", "group", PARAMS, detect_group, min_members=3,
                summary="Median-Minimum (numina-crmasks) for 3 or more equivalent exposures"))
