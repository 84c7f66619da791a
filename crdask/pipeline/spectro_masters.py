"""Masters per instrument setup, and spectroscopic flats (layer 4).

A night may mix imaging and long-slit spectroscopy (EFOSC2: ``g#782``
imaging beside ``Gr#3`` + ``slit#1.2``): flats and science of different
setups must never mix. This module holds the decisions that make that so,
used by :mod:`crdask.pipeline.calibration` (masters) and
:mod:`crdask.pipeline.night` (which master a science frame gets):

* **Setup labels** (:func:`setup_labels`): every flat setup of the night
  (the catalogue's ``setup``: filter / grism / slit / binning / window)
  gets a short, file-name-safe label: its non-clear filter, grism and slit
  values joined with ``+`` (``'V'``, ``'g_782'``, ``'Gr_3+slit_1.2'``);
  binning, then window, are appended only where two setups would otherwise
  share a label. Masters are ``flat_<label>`` (``master_flat_<label>.fits``)
  and, for a spectroscopic setup, ``bpm_<label>``; an imaging-only night
  keeps the names it always had (``flat_V``, one ``bpm``).
* **Mode** (:func:`frame_mode`): ``instrument.mode`` (``imaging`` |
  ``spectroscopy``), or per frame from ``instrument.mode_keyword`` (e.g.
  ``ESO DPR TECH`` = ``IMAGE`` / ``SPECTRUM``): a value with a token such
  as ``spectrum``, ``spec``, ``slit``, ``mos`` or ``echelle`` is
  spectroscopy, any other value imaging, no such keyword = ``mode``.
* **Dispersion axis** (:func:`dispersion_axis`): ``instrument.
  dispersion_axis`` (1 = along x / NAXIS1, 2 = along y / NAXIS2), else the
  header's ``DISPAXIS``; neither = the setup's flats are set aside with one
  line naming the keyword.
* **Response flats** (:func:`response_flat`): with ``steps.masters.
  flat_norm: response``, a spectroscopic setup's combined flat is divided by
  its smooth response along the dispersion axis
  (:func:`crdask.calib.response.normalise_response`, settings in
  ``steps.masters.response``); its bad-pixel mask comes from that
  normalised flat (``response.low`` / ``response.high``), not from
  ``low_flat``. Imaging setups are normalised by ``median`` as before.

Example
-------
>>> setup_labels(["V/-/-/1x1/64x64", "R/-/-/1x1/64x64"])
{'R/-/-/1x1/64x64': 'R', 'V/-/-/1x1/64x64': 'V'}
"""

from __future__ import annotations

import inspect
import re

import dask.array as da
import numpy as np

from ..calib.response import normalise_response
from ..io.keywords import SETUP_PARTS, header_value, normalize_value

__all__ = ["MODES", "RESPONSE_DEFAULTS", "SPECTRO_TOKENS", "setup_labels", "frame_mode",
           "dispersion_axis", "response_flat", "frame_masters", "night_labels", "frame_inputs",
           "setup_label", "missing_flat_warnings"]

#: ``instrument.mode`` values.
MODES = ("imaging", "spectroscopy")

#: Words of a ``mode_keyword`` value that mean spectroscopy.
SPECTRO_TOKENS = ("spectrum", "spectra", "spectroscopy", "spectroscopic", "spec", "slit",
                  "longslit", "mos", "echelle", "ifu", "grism")

#: ``steps.masters.response``: the settings of
#: :func:`~crdask.calib.response.normalise_response` (its own defaults).
RESPONSE_DEFAULTS = {name: p.default for name, p in
                     inspect.signature(normalise_response).parameters.items()
                     if name not in ("flat", "dispaxis")}

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_TOKENS = re.compile(r"[\s,;+/|]+")


def _parts(setup, names):
    """The catalogue's setup string back into its parts (``'-'`` = None)."""
    return {n: (None if v == "-" else v) for n, v in zip(names, str(setup).split("/"))}


def _safe(text):
    return _UNSAFE.sub("_", text) or "setup"


def setup_labels(setups, clear=("clear", "open", "none", "empty", "blank", "air", "free", ""),
                 names=SETUP_PARTS):
    """Short, unique, file-name-safe labels for a night's flat setups.

    Parameters
    ----------
    setups : iterable of str
        Catalogue setups (``FrameInfo.setup``: ``filter/grism/slit/binning/
        window``, ``-`` for a missing value).
    clear : iterable of str
        Values that mean "nothing in the beam" (case-insensitive).
    names : the parts the setups are made of, in order
        (``KeywordMap.setup_keys``).

    Returns
    -------
    dict setup -> label (sorted by setup).

    Example
    -------
    >>> setup_labels(["Free/Gr#3/slit#1.2/2x2/1030x1030", "g#782/Free/Free/2x2/1030x1030"])
    {'Free/Gr#3/slit#1.2/2x2/1030x1030': 'Gr_3+slit_1.2', 'g#782/Free/Free/2x2/1030x1030': 'g_782'}
    """
    clear = {normalize_value(c) for c in clear}
    setups = sorted({str(s) for s in setups if s is not None})
    parts = {s: _parts(s, names) for s in setups}

    def base(s):
        p = parts[s]
        vals = [p.get(k) for k in ("filter", "grism", "slit")]
        real = [v for v in vals if v is not None and normalize_value(v) not in clear]
        if not real:   # all clear: the first value present, as the filter rule does
            real = [next((v for v in vals if v is not None), None)]
        if real == [None]:   # a setup of binning / window only
            real = [v for v in (p.get("binning"), p.get("shape")) if v is not None] or ["none"]
        return "+".join(real)

    labels = {s: base(s) for s in setups}
    for extra in ("binning", "shape"):
        counts = {}
        for v in labels.values():
            counts[v] = counts.get(v, 0) + 1
        for s in setups:
            if counts[labels[s]] > 1 and parts[s].get(extra) is not None:
                labels[s] = f"{labels[s]}_{parts[s][extra]}"
    out = {s: _safe(v) for s, v in labels.items()}
    seen = {}
    for s in setups:   # still equal (e.g. only the unsafe characters differed)
        n = seen.get(out[s], 0)
        seen[out[s]] = n + 1
        if n:
            out[s] = f"{out[s]}_{n + 1}"
    return out


def night_labels(infos, keymap):
    """:func:`setup_labels` of the flats among ``infos`` (catalogue
    :class:`~crdask.io.catalog.FrameInfo`), with the keymap's clear values
    and ``free``: the one rule the masters and the science frames share."""
    return setup_labels([i.setup for i in infos if i.frame_type == "flat" and not i.error],
                        clear=(*keymap.clear_filters, "free"), names=keymap.setup_keys)


def frame_mode(header, setup):
    """``'imaging'`` or ``'spectroscopy'`` for a frame (see the module docstring).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> frame_mode({"ESO DPR TECH": "SPECTRUM"},
    ...            SimpleNamespace(mode="imaging", mode_keyword="ESO DPR TECH"))
    'spectroscopy'
    """
    key = getattr(setup, "mode_keyword", None)
    if key:
        value = header_value((header,), key)
        if value is not None and str(value).strip():
            tokens = set(_TOKENS.split(normalize_value(value)))
            return "spectroscopy" if tokens & set(SPECTRO_TOKENS) else "imaging"
    return getattr(setup, "mode", "imaging") or "imaging"


def dispersion_axis(header, setup, where):
    """1 or 2: ``setup.dispersion_axis``, else the header's ``DISPAXIS``.

    Raises ``ValueError`` (one line starting with ``where``) when neither
    gives 1 or 2.
    """
    axis = getattr(setup, "dispersion_axis", None)
    if axis is not None:
        return int(axis)
    value = header_value((header,), "DISPAXIS")
    try:
        axis = int(value) if value is not None else None
    except (TypeError, ValueError):
        axis = None
    if axis not in (1, 2):
        got = "missing" if value is None else f"{value!r}"
        raise ValueError(f"{where} DISPAXIS: dispersion axis {got} (1 or 2); set "
                         "instrument.dispersion_axis")
    return axis


def response_flat(combined, count, level, setup, axis):
    """Normalise a combined spectroscopic flat by its response.

    Parameters
    ----------
    combined : dask (ny, nx) float32
        Combined flat, each input scaled to unit level (dimensionless).
    count : dask (ny, nx) int, inputs per pixel.
    level : float, the inputs' median level, e- (for the variance).
    setup : CalibSetup (its ``response`` settings).
    axis : 1 or 2, the dispersion axis (FITS ``DISPAXIS``).

    Returns
    -------
    (flat, variance, bad) : dask float32, float32 (dimensionless^2), bool.
        The variance is Poisson at each pixel's own level in the inputs,
        ``flat^2 / (N * e-)``; ``bad`` is the normalised flat's bad-pixel
        mask (valid pixels outside ``[low, high]`` or not finite).

    Example
    -------
    >>> import dask.array as da, numpy as np
    >>> lamp = da.from_array(np.outer(np.ones(32), np.linspace(0.1, 2, 64)).astype("f4"))
    >>> from types import SimpleNamespace
    >>> s = SimpleNamespace(response={**RESPONSE_DEFAULTS, "order": 3})
    >>> f, v, b = response_flat(lamp, da.full(lamp.shape, 3), 1e4, s, 1)
    >>> bool(abs(float(f.mean().compute()) - 1) < 1e-3), int(b.sum().compute())
    (True, 0)
    """
    kw = {**RESPONSE_DEFAULTS, **(getattr(setup, "response", None) or {})}
    if kw.get("slit") is not None:
        kw["slit"] = tuple(kw["slit"])
    res = normalise_response(combined, dispaxis=int(axis), **kw)
    electrons = da.maximum(combined * np.float32(level), np.float32(1.0))
    var = (res.flat * res.flat / (electrons * da.maximum(count, 1))).astype(np.float32)
    return res.flat.astype(np.float32), var, res.bad


def frame_masters(master_paths, label):
    """The master files a frame of setup label ``label`` is calibrated with:
    ``{'bias', 'dark', 'flat', 'bpm'} -> key`` of ``master_paths`` (only
    those present). A spectroscopic setup's own ``bpm_<label>`` replaces the
    night's ``bpm``.

    Example
    -------
    >>> frame_masters({"bias": "b", "flat_V": "f", "bpm": "m"}, "V")
    {'bias': 'bias', 'flat': 'flat_V', 'bpm': 'bpm'}
    """
    keys = {"bias": "bias", "dark": "dark"}
    if label is not None:
        keys["flat"] = f"flat_{label}"
    own = f"bpm_{label}" if label is not None else None
    keys["bpm"] = own if own in master_paths else "bpm"
    return {role: key for role, key in keys.items() if master_paths.get(key)}


def frame_inputs(ledger, path, label, master_paths):
    """The input closure of a science (or arc) frame's product (what it
    depends on besides the settings): its raw file and the master files it
    is calibrated with (those of its setup ``label``,
    :func:`crdask.pipeline.spectro_masters.frame_masters`), by checksum."""
    import os

    used = {key: master_paths[key] for key in frame_masters(master_paths, label).values()
            if os.path.exists(master_paths[key])}
    return ledger.closure(raw=path, masters=used)


def setup_label(labels, info):
    """The setup label of a frame (its flats' masters), '' if the night has
    no flat of its setup (:func:`crdask.pipeline.spectro_masters.night_labels`)."""
    return labels.get(info.setup, "")


def missing_flat_warnings(wf, labels, master_paths, infos):
    """One line per frame of ``infos`` that gets no master flat while the
    night has flats (of other setups, or of its own that were all set
    aside): it is calibrated without a flat and the night goes on.

    Example
    -------
    >>> from types import SimpleNamespace as NS
    >>> wf = NS(masters={"enabled": True}, calibrate={"enabled": True})
    >>> missing_flat_warnings(wf, {"V/-": "V"}, {"flat_V": "f.fits"},
    ...                       [NS(path="r.fits", setup="R/-")])
    ["r.fits: no master flat of its setup R/-; the night's flats: V; calibrated without a flat"]
    """
    if not (labels and wf.masters["enabled"] and wf.calibrate["enabled"]):
        return []
    have = sorted(k[len("flat_"):] for k in master_paths if k.startswith("flat_"))
    return [f"{i.path}: no master flat of its setup {i.setup}; the night's flats: "
            f"{', '.join(have) or 'none'}; calibrated without a flat"
            for i in infos if "flat" not in frame_masters(master_paths, labels.get(i.setup))]
