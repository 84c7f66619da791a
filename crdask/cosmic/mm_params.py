"""Parameters of the Median-Minimum method, written once (layer 2).

Names, meanings and defaults are numina-crmasks' (``compute_crmasks`` and
its YAML ``requirements:`` block). Where numina has no default (it fails
when the key is missing) the default below is the value numina itself falls
back on or documents, and the doc line says so.

Example
-------
>>> from crdask.cosmic.mm_params import PARAMS
>>> PARAMS.validate({"mm_cr_coincidences": 2})["mm_boundary_fit"]
'spline'
"""

from __future__ import annotations

import numbers

from .params import Param, ParamSet

__all__ = ["PARAMS", "AUX_METHODS", "NUMINA_ONLY_METHODS"]

#: crmethod values crdask runs: L.A.Cosmic alone, M.M. + L.A.Cosmic, M.M. alone.
AUX_METHODS = ("mm_lacosmic", "lacosmic", "mmcosmic")
#: crmethod values numina has that crdask does not (yet).
NUMINA_ONLY_METHODS = ("pycosmic", "mm_pycosmic", "deepcr", "mm_deepcr", "conn", "mm_conn")


def _int_list(v, n, what):
    if not isinstance(v, (list, tuple)) or len(v) != n or not all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in v):
        raise ValueError(f"{v!r} is not {what}")
    return [int(a) for a in v]


def _regions(v):
    if v is None or (isinstance(v, str) and v.lower() == "none"):
        return None
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{v!r} is not a list of [xmin, xmax, ymin, ymax]")
    out = [_int_list(r, 4, "[xmin, xmax, ymin, ymax] (4 integers, FITS, 1-based)") for r in v]
    for r in out:
        if r[0] < 1 or r[2] < 1 or r[1] < r[0] or r[3] < r[2]:
            raise ValueError(f"region {r} is empty or starts below 1")
    return out


def _region(v):
    if v is None or (isinstance(v, str) and v.lower() == "none"):
        return None
    return _regions([v])[0]


def _pixels(k, what):
    def check(v):
        if v is None or (isinstance(v, str) and v.lower() == "none"):
            return None
        if not isinstance(v, (list, tuple)):
            raise ValueError(f"{v!r} is not a list of {what}")
        out = [_int_list(p, k, what) for p in v]
        for p in out:
            if p[0] < 1 or p[1] < 1:
                raise ValueError(f"pixel {p} is below 1 (FITS pixels start at 1)")
            if k == 4 and (p[2] < 1 or p[3] < 1 or p[2] % 2 == 0 or p[3] % 2 == 0
                           or p[2] * p[3] < 3):
                raise ValueError(f"pixel {p}: widths must be odd, >= 1, area >= 3")
        return out
    return check


def _flux_factor(v):
    if v is None or (isinstance(v, str) and v.lower() == "none"):
        return None
    if isinstance(v, str) and v.lower() == "auto":
        return "auto"
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        if not v > 0:
            raise ValueError(f"{v!r} is not > 0")
        return float(v)
    if isinstance(v, (list, tuple)) and all(
            isinstance(a, numbers.Real) and not isinstance(a, bool) and a > 0 for a in v):
        return [float(a) for a in v]
    raise ValueError(f"{v!r} is not none, auto, a number or a list of numbers > 0")


def _offsets(v):
    if v is None or (isinstance(v, str) and v.lower() == "none"):
        return None
    if not isinstance(v, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2
            and all(isinstance(a, numbers.Real) and not isinstance(a, bool) for a in p)
            for p in v):
        raise ValueError(f"{v!r} is not a list of [x_offset, y_offset]")
    return [[float(a), float(b)] for a, b in v]


def _fixed_points(v):
    if v is None or (isinstance(v, str) and v.lower() == "none"):
        return None
    if isinstance(v, str):
        import ast
        v = ast.literal_eval(v)
    from .mm_boundary import parse_fixed_points
    x, y, w = parse_fixed_points(v)
    return [[float(a), float(b), float(c)] for a, b, c in zip(x, y, w)]


def _cleantype(v):
    if v not in ("median", "medmask", "meanmask", "idw"):
        raise ValueError(f"{v!r} is not allowed")
    return v


PARAMS = ParamSet("median_minimum", [
    Param("crmethod", "mm_lacosmic", "choice",
          "mm_lacosmic: M.M. diagram + L.A.Cosmic; lacosmic: L.A.Cosmic only; "
          "mmcosmic: M.M. diagram only", choices=AUX_METHODS),
    Param("use_auxmedian", False, "bool",
          "replace masked median pixels by the L.A.Cosmic-cleaned median, not min2d"),
    Param("flux_factor", None, "any", "none, auto, one number or a list of N numbers",
          none_ok=True, check=_flux_factor),
    Param("flux_factor_regions", None, "any",
          "regions [xmin, xmax, ymin, ymax] (FITS) for flux_factor=auto",
          none_ok=True, check=_regions),
    Param("apply_flux_factor_to", "original", "choice",
          "divide the exposures (original) or scale the simulations (simulated); "
          "numina has no default", choices=("original", "simulated")),
    Param("dilation", 0, "int", "global dilation of every mask", unit="px", minimum=0),
    Param("regions_to_be_skipped", None, "any",
          "regions [xmin, xmax, ymin, ymax] (FITS) never flagged", none_ok=True,
          check=_regions),
    Param("pixels_to_be_flagged_as_cr", None, "any",
          "pixels [x, y] (FITS) cleaned even inside a skipped region", none_ok=True,
          check=_pixels(2, "[x, y] (2 integers, FITS)")),
    Param("pixels_to_be_ignored_as_cr", None, "any", "pixels [x, y] (FITS) never flagged",
          none_ok=True, check=_pixels(2, "[x, y] (2 integers, FITS)")),
    Param("pixels_to_be_replaced_by_local_median", None, "any",
          "pixels [x, y, x_width, y_width] (FITS) replaced by the local median",
          none_ok=True, check=_pixels(4, "[x, y, x_width, y_width] (4 integers)")),
    Param("la_gain_apply", True, "bool",
          "accepted for numina's YAML; numina never uses it, nor does crdask"),
    Param("la_sigclip", 5.0, "float_or_pair",
          "L.A.Cosmic sigclip, or [pass 1, pass 2] (numina falls back on 5)", minimum=0),
    Param("la_sigfrac", 0.3, "float_or_pair", "L.A.Cosmic sigfrac, or a pair", minimum=0),
    Param("la_objlim", 5.0, "float_or_pair", "L.A.Cosmic objlim, or a pair", minimum=0),
    Param("la_satlevel", None, "float",
          "saturation (ADU); null: astroscrappy's 65536 e- as numina", unit="ADU",
          none_ok=True, allow_inf=True),
    Param("la_niter", 4, "int", "L.A.Cosmic iterations", minimum=1),
    Param("la_sepmed", True, "bool", "L.A.Cosmic separable medians"),
    Param("la_cleantype", "meanmask", "any",
          "L.A.Cosmic cleaner: median, medmask, meanmask, idw (numina has no default)",
          check=_cleantype),
    Param("la_fsmode", "median", "choice", "L.A.Cosmic fine structure",
          choices=("median", "convolve")),
    Param("la_psfmodel", "gauss", "choice", "L.A.Cosmic PSF model (fsmode=convolve)",
          choices=("gauss", "moffat", "gaussx", "gaussy", "gaussxy")),
    Param("la_psffwhm_x", 2.5, "float", "PSF FWHM along x", unit="px", minimum=0,
          strict=True),
    Param("la_psffwhm_y", 2.5, "float", "PSF FWHM along y", unit="px", minimum=0,
          strict=True),
    Param("la_psfsize", 7, "int", "PSF kernel side", unit="px", minimum=3, odd=True),
    Param("la_psfbeta", 4.765, "float", "Moffat beta", minimum=0, strict=True),
    Param("la_verbose", False, "bool", "accepted for numina's YAML (no effect)"),
    Param("la_padwidth", 0, "int", "reflect-pad each frame for L.A.Cosmic", unit="px",
          minimum=0),
    Param("mm_cr_coincidences", 2, "int",
          "highest values dropped from min2d (coincident hits looked for)", minimum=2),
    Param("mm_photon_distribution", "poisson", "choice",
          "photon noise of the simulations (numina has no default)",
          choices=("poisson", "nbinom")),
    Param("mm_nbinom_shape", 1000.0, "float",
          "negative-binomial shape (numina requires it even for poisson)",
          minimum=0, strict=True),
    Param("mm_synthetic", "median", "choice",
          "simulate around the pre-cleaned median or each pre-cleaned exposure",
          choices=("median", "single")),
    Param("mm_hist2d_min_neighbors", 0, "int",
          "drop simulated bins with fewer non-empty neighbours", minimum=0, maximum=8),
    Param("mm_ydiag_max", 0.0, "float", "top of the diagram (0: automatic)", unit="ADU",
          minimum=0, none_ok=True),
    Param("mm_dilation", 0, "int", "dilation of the M.M. detections", unit="px", minimum=0),
    Param("mm_xy_offsets", None, "any", "per exposure [x_offset, y_offset] (px)",
          none_ok=True, check=_offsets),
    Param("mm_crosscorr_region", None, "any",
          "region [xmin, xmax, ymin, ymax] (FITS) to measure offsets in", none_ok=True,
          check=_region),
    Param("mm_boundary_fit", "spline", "choice",
          "boundary: spline fit or piecewise through the fixed points (numina: no default)",
          choices=("spline", "piecewise")),
    Param("mm_knots_splfit", 3, "int", "knots of the spline boundary", minimum=2),
    Param("mm_fixed_points_in_boundary", None, "any",
          "boundary points [x, y] or [x, y, weight] (ADU)", none_ok=True,
          check=_fixed_points),
    Param("mm_nsimulations", 10, "int", "simulated stacks for the diagram", minimum=1),
    Param("mm_niter_boundary_extension", 3, "int", "upward refits of the spline", minimum=0),
    Param("mm_weight_boundary_extension", 10.0, "float",
          "weight**k of points above the fit at refit k", minimum=1),
    Param("mm_threshold_rnoise", 0.0, "float",
          "median - min2d must exceed this many rnoise", unit="rnoise", minimum=0),
    Param("mm_minimum_max2d_rnoise", 5.0, "float",
          "max2d must exceed this many rnoise", unit="rnoise", minimum=0),
    Param("mm_seed", None, "int", "seed of the simulations (null: fresh entropy)",
          none_ok=True),
    Param("mm_rng", "blocks", "choice",
          "crdask only: random stream of the simulations: blocks (parallel, the same for "
          "any thread count) or numina (numina-crmasks' own stream, one thread)",
          choices=("blocks", "numina")),
])
