"""Cosmic-ray completeness by injection and recovery (layer 4).

On real frames the true CRs are unknown, so a CR method's quality cannot be
scored directly. Instead (as for source-detection completeness):

1. run the method on the frame as it is (the *base* run);
2. add synthetic CRs of known position and peak S/N to a copy
   (:func:`crdask.cosmic.inject.inject_cosmics`), away from what the base
   run found, bad pixels and each other;
3. run the method on the copy and count, per S/N bin, the injected events it
   recovers (the event's peak pixel is flagged) and the injected truth pixels
   (charge > 3 sigma) it flags; and the *extra false pixels*: flagged in the
   copy, not in the base run, and not touched by any injected charge.

:func:`completeness` works on arrays with any detection callable (so it
measures any method); :func:`qa_file` reads a FITS frame, brings it to
electrons (bias level or overscan strip, trim, gain), models its variance
(``readnoise^2 + max(signal, 0)``) and runs :func:`completeness` with a
named method; :func:`plot_completeness` draws the curve (``plot`` extra).
``crdask qa FILE...`` (:mod:`crdask.cli_qa`) is the command line.

In a night, ``steps.qa.inject: true`` (:func:`qa_section`) makes every
frame task (:mod:`crdask.pipeline.frame_task`) call :func:`qa_calibrated`
on its calibrated frame once it is cleaned: the same ``frame`` method with
the same parameters, bad pixels, variance and read noise as the real
cleaning, on an injected *copy*; the frame's outputs are not touched. The
per-frame reports go into the run report (:mod:`crdask.pipeline.report`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..calib.bits import BAD, COSMIC_RAY, NONFINITE, SATURATED
from ..calib.overscan import subtract_overscan
from ..calib.overscan import trim as calib_trim
from ..cosmic.inject import CR_KINDS, inject_cosmics
from ..cosmic.registry import get_method
from ..io.atomic import atomic_open
from ..io.fits import FitsInputError, header_number, read_image
from ..io.sections import parse_section

__all__ = ["SNR_BINS", "QA_DEFAULTS", "CompletenessReport", "completeness",
           "detector", "qa_file", "qa_section", "qa_calibrated", "frame_seed",
           "plot_completeness", "write_report"]

#: Default S/N bin edges (peak S/N of the injected events).
SNR_BINS = (3.0, 5.0, 10.0, 20.0, 50.0, 100.0)

#: Mask bits that keep an injected event away from a pixel.
AVOID_BITS = BAD | SATURATED | NONFINITE | COSMIC_RAY


def detector(method, readnoise=0.0):
    """The detection callable ``f(frame, **params) -> bool mask`` of a
    registered ``frame`` method, for a frame in e- with read noise
    ``readnoise`` (e-); the method's own defaults fill what ``params``
    leaves out. Raises ``ValueError`` naming the registered methods."""
    m = get_method(method, "frame")

    def detect(frame, **params):
        full = m.params.validate(params)
        return np.asarray(m.detect(frame, full, readnoise=readnoise).crmask, bool)
    return detect


@dataclass
class CompletenessReport:
    """Injection-recovery figures for one frame (JSON-ready via ``to_dict``).

    ``bins`` : S/N bin edges; per bin (``len(bins) - 1``): ``n_events``,
    ``events_found`` (events whose peak pixel was flagged), ``recall``
    (events_found / n_events, NaN for an empty bin), ``n_pixels`` and
    ``pixel_recall`` (injected truth pixels flagged). ``recall_above`` :
    event recall for S/N >= each edge (``{"10": 0.97, ...}``).
    ``extra_false_pixels`` : flagged after injection, not in the base run,
    not touched by injected charge; ``extra_false_pixels_far`` : those of
    them more than 1 px from any injected charge (not the dilation of an
    injected CR); ``border`` : rows/columns kept free of events; ``base_pixels`` : flagged in the base
    run; ``lost_base_pixels`` : base pixels no longer flagged. ``by_kind`` :
    event recall above 10 sigma per CR shape.
    """

    name: str
    shape: tuple
    n_injected: int
    seed: int
    bins: list
    n_events: list
    events_found: list
    recall: list
    n_pixels: list
    pixel_recall: list
    recall_above: dict
    by_kind: dict
    extra_false_pixels: int
    extra_false_pixels_far: int
    border: int
    base_pixels: int
    lost_base_pixels: int
    params: dict = field(default_factory=dict)

    def to_dict(self):
        """Plain dict (NaN written as None, so it is valid JSON)."""
        def clean(v):
            if isinstance(v, float) and math.isnan(v):
                return None
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, tuple):
                return [clean(x) for x in v]
            return v
        return clean(asdict(self))


def _as_mask(result):
    """A detection result as a bool mask (a ``(mask, cleaned)`` tuple or a mask)."""
    if isinstance(result, tuple):
        result = result[0]
    if hasattr(result, "compute"):
        result = result.compute()
    return np.asarray(result).astype(bool)


def completeness(image, var, mask_bits, detect, params=None, seed=0, *, n=None,
                 kinds=CR_KINDS, snr_range=(3.0, 100.0), snr_bins=SNR_BINS,
                 threshold=3.0, border=0, name="frame"):
    """Injection-recovery completeness of a CR detection on one frame.

    Parameters
    ----------
    image : numpy.ndarray (ny, nx)
        The frame (e.g. calibrated, e-).
    var : numpy.ndarray (ny, nx)
        Its variance (image units squared).
    mask_bits : uint8 array (ny, nx) or None
        Mask bits (:mod:`crdask.calib.bits`); events avoid pixels with
        ``BAD``, ``SATURATED``, ``NONFINITE`` or ``COSMIC_RAY`` set.
    detect : callable
        ``detect(frame, **params)`` returning a bool CR mask, or a tuple
        whose first item is one (``crdask.lacosmic`` as it is works).
    params : dict, optional
        Keyword arguments for ``detect``.
    seed : int
        Seed of the injection (events are reproducible from it).
    n, kinds, snr_range, threshold, border
        Passed to :func:`crdask.cosmic.inject.inject_cosmics`.
    snr_bins : sequence of float
        Bin edges in peak S/N for the curve.
    name : str
        Label of the frame in the report.

    Returns
    -------
    CompletenessReport

    Example
    -------
    >>> import numpy as np
    >>> from crdask import lacosmic
    >>> rng = np.random.default_rng(0)
    >>> img = (100 + rng.normal(0, 10, (128, 128))).astype(np.float32)
    >>> rep = completeness(img, np.full(img.shape, 100.0), None, lacosmic,
    ...                    {"gain": 1.0, "readnoise": 10.0}, seed=1, n=20)
    >>> rep.n_injected
    20
    """
    params = dict(params or {})
    image = np.asarray(image, dtype=np.float32)
    base = _as_mask(detect(image, **params))
    avoid = base.copy()
    if mask_bits is not None:
        avoid |= (np.asarray(mask_bits) & AVOID_BITS) != 0
    avoid |= ~np.isfinite(image)
    damaged, truth = inject_cosmics(image, var, seed, n=n, kinds=kinds,
                                    snr_range=snr_range, avoid=avoid, threshold=threshold,
                                    border=border)
    found = _as_mask(detect(damaged, **params))

    edges = np.asarray(snr_bins, dtype=np.float64)
    hit = found[truth.peak_y, truth.peak_x]
    which = np.digitize(truth.snr, edges) - 1          # bin of each event
    pix_found = found.ravel()[truth.pixels]
    pix_bin = which[truth.event]
    nb = edges.size - 1
    n_ev, n_hit, n_pix, rec, prec = [], [], [], [], []
    for b in range(nb):
        sel = which == b
        ps = (pix_bin == b) & truth.above
        n_ev.append(int(sel.sum()))
        n_hit.append(int(hit[sel].sum()))
        n_pix.append(int(ps.sum()))
        rec.append(n_hit[-1] / n_ev[-1] if n_ev[-1] else float("nan"))
        prec.append(float(pix_found[ps].mean()) if ps.any() else float("nan"))
    above = {}
    for e in edges[:-1]:
        sel = truth.snr >= e
        above[f"{e:g}"] = float(hit[sel].mean()) if sel.any() else float("nan")
    by_kind = {}
    for k in kinds:
        sel = (truth.kind == k) & (truth.snr >= 10)
        by_kind[k] = float(hit[sel].mean()) if sel.any() else float("nan")
    touched = truth.touched()
    extra = found & ~base & ~touched
    near = _grow(touched)
    return CompletenessReport(
        name=name, shape=tuple(int(s) for s in image.shape), n_injected=truth.n,
        seed=int(seed), bins=[float(e) for e in edges], n_events=n_ev,
        events_found=n_hit, recall=rec, n_pixels=n_pix, pixel_recall=prec,
        recall_above=above, by_kind=by_kind, extra_false_pixels=int(extra.sum()),
        extra_false_pixels_far=int((extra & ~near).sum()), border=int(border),
        base_pixels=int(base.sum()), lost_base_pixels=int((base & ~found).sum()),
        params={k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))})


#: ``steps.qa`` of a workflow and its defaults (off: a night is not slowed
#: down unless asked). ``n`` = events per frame (null: the injector's own
#: default); ``seed`` is combined with each frame's name (:func:`frame_seed`).
QA_DEFAULTS = {"inject": False, "seed": 0, "n": None, "snr_min": 3.0, "snr_max": 100.0,
               "border": 0}


def qa_section(ctx, raw, path="steps.qa"):
    """``steps.qa``, validated with a :class:`~crdask.pipeline.schema.Checker`.

    Example
    -------
    >>> from pathlib import Path
    >>> from crdask.pipeline.schema import Checker
    >>> qa_section(Checker("n.yaml", Path(".")), {"inject": True})["snr_max"]
    100.0
    """
    from .schema import join_path
    raw = ctx.mapping(raw, path, list(QA_DEFAULTS))
    v = {**QA_DEFAULTS, **raw}
    j = lambda k: join_path(path, k)  # noqa: E731
    out = {"inject": ctx.flag(v["inject"], j("inject")),
           "seed": ctx.number(v["seed"], j("seed"), integer=True, minimum=0),
           "n": ctx.number(v["n"], j("n"), integer=True, minimum=1, none_ok=True),
           "snr_min": ctx.number(v["snr_min"], j("snr_min"), minimum=0, strict=True),
           "snr_max": ctx.number(v["snr_max"], j("snr_max"), minimum=0, strict=True),
           "border": ctx.number(v["border"], j("border"), integer=True, minimum=0)}
    if not out["snr_max"] > out["snr_min"]:
        raise ctx.error(j("snr_max"), f"{out['snr_max']:g} is not above snr_min "
                                      f"{out['snr_min']:g}", "a number > snr_min")
    return out


def frame_seed(seed, name):
    """The injection seed of one frame: the workflow's ``seed`` and the
    frame's name (stable across runs, workers and Python versions)."""
    import zlib
    return (int(seed) * 1_000_003 + zlib.crc32(str(name).encode("utf-8"))) % (2 ** 31)


def qa_calibrated(sci, var, mask_bits, bad, method, params, readnoise, *, settings,
                  name, threads=1):
    """Injection-recovery on a calibrated frame, as the night cleans it.

    Parameters
    ----------
    sci, var : (ny, nx) float32, e- and e-^2: the calibrated frame before
        cleaning and its variance. Not modified.
    mask_bits : (ny, nx) uint8 mask bits; bad : (ny, nx) bool pixels no
        method may use (as :func:`crdask.pipeline.frame_task.clean_frame`).
    method : str, a registered ``frame`` method; params : its complete
        parameters (those the real cleaning used).
    readnoise : float, e-.
    settings : dict, ``steps.qa`` (:data:`QA_DEFAULTS`).
    name : str, the frame's label (also seeds the injection).

    Returns
    -------
    CompletenessReport. The copy's variance adds the injected charge
    (Poisson), so the method sees an injected CR as it sees a real one.
    """
    m = get_method(method, "frame")
    sci = np.asarray(sci, np.float32)

    def detect(frame, **_):
        v = var + np.maximum(frame - sci, 0).astype(np.float32)
        res = m.detect(frame, params, bad=bad, var=v, readnoise=readnoise,
                       num_threads=threads)
        return np.asarray(res.crmask, bool) & ~bad

    rep = completeness(sci, var, mask_bits, detect, None, frame_seed(settings["seed"], name),
                       n=settings["n"], snr_range=(settings["snr_min"], settings["snr_max"]),
                       border=settings["border"], name=name)
    rep.params.update({k: v for k, v in params.items()
                       if isinstance(v, (int, float, str, bool))}, method=method,
                      readnoise=float(readnoise))
    return rep


def _grow(mask):
    """Bool mask grown by one pixel (8-connected)."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    tmp = out.copy()
    out[:, 1:] |= tmp[:, :-1]
    out[:, :-1] |= tmp[:, 1:]
    return out


def _level_and_trim(data, bias, trim, path):
    """Frame minus a bias level (number or overscan section), trimmed (ADU)."""
    if isinstance(bias, str):
        out = subtract_overscan(data, parse_section(bias, shape=data.shape,
                                                    where=f"{path} bias section"))
    else:
        out = data.astype(np.float64) - (0.0 if bias is None else float(bias))
    if trim is not None:
        out = calib_trim(out, parse_section(trim, shape=data.shape,
                                            where=f"{path} trim section"))
    return out


def qa_file(path, *, method="lacosmic", params=None, seed=0, hdu=None, gain=None,
            readnoise=None, gain_key="GAIN", readnoise_key=("RDNOISE", "READNOIS"),
            bias=None, trim=None, n=None, snr_range=(3.0, 100.0), snr_bins=SNR_BINS,
            border=0):
    """Completeness of a named CR method on one FITS frame.

    Parameters
    ----------
    path : str
        FITS file (raw or calibrated; ``.gz`` fine). Opened read-only.
    method : str
        A registered ``frame`` method (:mod:`crdask.cosmic.registry`).
    params : dict, optional
        The method's parameters (its own defaults otherwise); the frame is
        in e- by then, and the method gets the read noise as every method
        does (registry convention).
    gain, readnoise : float, optional
        e-/ADU and e-; default from the header (``gain_key``, ``readnoise_key``).
    bias : float or str, optional
        Bias level in ADU, or a FITS section of an overscan/prescan strip whose
        per-row (per-column) median is subtracted; ``None`` = none
        (already bias-subtracted frames).
    trim : str, optional
        FITS section kept after the bias step.
    seed, n, snr_range, snr_bins, border
        As :func:`completeness`.

    Returns
    -------
    CompletenessReport

    Raises
    ------
    FitsInputError
        One line naming the file, HDU and keyword (e.g. a missing GAIN).
    """
    img = read_image(path, hdu=hdu)
    if gain is None:
        gain = header_number(img, gain_key)
    if readnoise is None:
        keys = (readnoise_key,) if isinstance(readnoise_key, str) else tuple(readnoise_key)
        for k in keys:
            if k in img.header or k in img.primary_header:
                readnoise = header_number(img, k)
                break
        else:
            raise FitsInputError(img.path, img.hdu, f"keyword {keys[0]} not found (read "
                                 "noise; give --readnoise)", keyword=keys[0])
    if not gain > 0:
        raise FitsInputError(img.path, img.hdu, f"gain must be > 0 e-/ADU, got {gain}")
    frame_e = (_level_and_trim(img.data, bias, trim, img.path) * float(gain))
    frame_e = frame_e.astype(np.float32)
    var = float(readnoise) ** 2 + np.maximum(frame_e.astype(np.float64), 0.0)
    mask_bits = np.where(np.isfinite(frame_e), 0, NONFINITE).astype(np.uint8)
    p = dict(params or {})
    rep = completeness(frame_e, var, mask_bits, detector(method, float(readnoise)), p, seed, n=n,
                       snr_range=snr_range, snr_bins=snr_bins, border=border,
                       name=os.path.basename(os.fspath(path)))
    rep.params.update(method=method, gain=float(gain), readnoise=float(readnoise))
    return rep


def write_report(reports, out_dir, *, overwrite=True):
    """Write ``completeness.json`` (all frames) into ``out_dir``, atomically;
    returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "completeness.json")
    text = json.dumps([r.to_dict() for r in reports], indent=1, sort_keys=True)
    with atomic_open(path, overwrite=overwrite, mode="w") as f:
        f.write(text + "\n")
    return path


def plot_completeness(reports, path, *, overwrite=True):
    """Recall vs peak S/N, one line per frame, as a PNG (``plot`` extra).

    ``reports`` : :class:`CompletenessReport` objects or their ``to_dict()``
    forms. Returns the path, or ``None`` when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    reports = [r if isinstance(r, CompletenessReport) else CompletenessReport(**r)
               for r in reports]   # to_dict() form (a run report) too
    for r in reports:
        e = np.asarray(r.bins)
        centres = np.sqrt(e[:-1] * e[1:])
        recall = [np.nan if v is None else v for v in r.recall]
        ax.plot(centres, np.asarray(recall, dtype=float), "o-", label=r.name)
    ax.set_xscale("log")
    # ticks at the bin edges, written as plain numbers
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter
    edges = sorted({e for r in reports for e in r.bins})
    ax.xaxis.set_major_locator(FixedLocator(edges))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(-0.02, 1.02)
    ax.axhline(0.9, color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("injected peak S/N (sigma)")
    ax.set_ylabel("recall (events)")
    ax.set_title("CR completeness by injection")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_open(os.fspath(path), overwrite=overwrite) as f:
        fig.savefig(f, format="png")
    return os.fspath(path)
