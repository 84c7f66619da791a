"""Which header keywords mean what, and what a frame-type value means (layer 3).

:class:`KeywordMap` lists the keywords the night catalogue reads (defaults
cover IRAF/NOAO, ING, LT, MaxIm DL and ESO HIERARCH headers; any entry may be
a HIERARCH name such as ``'ESO DPR TYPE'``). :func:`classify_frame_type`
turns a frame-type value into ``(frame_type, subtype)``:

* the whole value is first matched against the aliases (``'Dome Flat'``,
  ``'twilight'``, ``'zero'``);
* otherwise the value is split into tokens at commas, ``+``, ``;``, ``/``,
  ``|`` and spaces, and the one token that names a type decides, in any
  order: ``'FLAT,LAMP'``, ``'LAMP,FLAT'``, ``'SKY,FLAT'``, ``'FLAT,DOME'``
  are flats; ``'WAVE,LAMP'`` is an arc. Words in ``type_qualifiers``
  (lamp, dome, sky, twilight, ...) never name a type when another token
  does (alone, ``'LAMP'`` is still an arc by its alias);
* the other tokens are kept, lower case and comma-joined, as the subtype
  (``'SKY,FLAT'`` -> ``('flat', 'sky')``); a value whose tokens name two
  different types (``'FLAT,DARK'``) is not classified.

Frame types: ``bias``, ``dark``, ``flat``, ``science``, ``standard`` (a
standard star: reduced like a science frame -- same calibration, same
cosmic-ray step -- but kept apart in groups so it is never combined with
the science target), ``arc`` (wavelength calibration lamps) and ``other``.
A zero-second dark is a bias (EFOSC2 types its biases ``DARK`` with
EXPTIME 0): the catalogue makes that call, see
:func:`crdask.io.catalog.frame_info`.

Example
-------
>>> classify_frame_type("SKY,FLAT")
('flat', 'sky')
>>> classify_frame_type("WAVE,LAMP")
('arc', 'lamp')
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

__all__ = ["FRAME_TYPES", "SCIENCE_LIKE", "SETUP_PARTS", "KeywordMap",
           "classify_frame_type", "normalize_value", "header_value", "first_value",
           "number_value", "text_value", "filter_value", "binning_value"]

#: Every frame type the catalogue assigns.
FRAME_TYPES = ("bias", "dark", "flat", "science", "standard", "arc", "other")

#: Frame types calibrated and cleaned of cosmic rays like science frames.
SCIENCE_LIKE = ("science", "standard")

_DEFAULT_ALIASES = {
    "bias": ("bias", "zero", "bias frame", "zero frame", "biasframe"),
    "dark": ("dark", "dark frame", "darkframe", "dark current"),
    "flat": ("flat", "flat field", "flatfield", "flat frame", "dome flat", "domeflat",
             "dflat", "sky flat", "skyflat", "sflat", "twilight", "twilight flat",
             "twiflat", "lamp flat", "lampflat", "flatfield lamp"),
    "science": ("object", "light", "light frame", "expose", "science", "sci"),
    "standard": ("standard", "std", "standard star", "flux standard", "stdstar"),
    "arc": ("arc", "comp", "comparison", "lamp", "wave", "wavelength", "arc lamp"),
}

#: Words that qualify a frame type rather than name one.
DEFAULT_QUALIFIERS = ("lamp", "dome", "sky", "twilight", "screen", "internal", "dusk",
                      "dawn", "evening", "morning", "on", "off", "spectrum", "image",
                      "imaging", "spectroscopy", "slit", "flux", "telluric", "ifu")

_TOKEN_RE = re.compile(r"[\s,;+/|]+")


def _default_aliases():
    return {alias: ftype for ftype, names in _DEFAULT_ALIASES.items() for alias in names}


@functools.lru_cache(maxsize=4096)
def _normalize_text(text):
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


@functools.lru_cache(maxsize=64)
def _normalized_set(words):
    return frozenset(normalize_value(w) for w in words)


def normalize_value(value):
    """Lower case, ``_``/``-`` as spaces, single spaces: the form aliases use."""
    return _normalize_text(str(value))


@dataclass
class KeywordMap:
    """Which header keywords the catalogue reads, tried in the order given.

    Any keyword may be an ESO HIERARCH name (``'ESO DPR TYPE'``, with or
    without ``HIERARCH``). Keywords are read from the image HDU's header,
    then the primary header (:mod:`crdask.io.headers`).

    type_keys : keywords holding the frame type (first one present decides).
    type_aliases : header value (or one token of it) -> frame type, matched
        case-insensitively with ``_``/``-`` read as spaces; see
        :func:`classify_frame_type`. Unknown values give ``"other"`` and a
        warning. Add site-specific names here, e.g. ``KeywordMap(type_aliases=
        {**KeywordMap().type_aliases, "sky": "flat"})``.
    type_qualifiers : words that qualify a type (``lamp``, ``dome``, ``sky``)
        and become the subtype.
    exptime_keys : exposure time in seconds.
    filter_keys : single filter keywords (first one present wins).
    filter_wheel_keys : used only if no ``filter_keys`` is present: the values
        of all present wheels that are not in ``clear_filters`` are joined
        with ``"+"`` (all clear: the first wheel's value), so SPRAT's
        FILTER1 = '4020longpass', FILTER2 = 'clear' gives '4020longpass'.
    grism_keys, slit_keys : disperser and slit (spectroscopy).
    setup_keys : what makes an instrument *setup* (flats and science of
        different setups never mix): any of ``filter``, ``grism``, ``slit``,
        ``binning``, ``shape`` (the readout window), in this order.
    object_keys, date_keys (ISO start of exposure), time_keys (MJD of the
        start, used when no date is usable), gain_keys (e-/ADU),
        rdnoise_keys (e-).
    binning_keys : one keyword holding both factors, ``'2 2'``, ``'2x2'``.
    binning_pairs : (x, y) keyword pairs, e.g. (XBINNING, YBINNING).
    """

    type_keys: tuple = ("IMAGETYP", "OBSTYPE", "FRAMETYP", "IMGTYPE", "EXPTYPE",
                        "ESO DPR TYPE")
    type_aliases: dict = field(default_factory=_default_aliases)
    type_qualifiers: tuple = DEFAULT_QUALIFIERS
    exptime_keys: tuple = ("EXPTIME", "EXPOSURE", "ITIME", "EXPTIM")
    filter_keys: tuple = ("FILTER", "FILTNAME", "INSFILTE", "FILTERS", "ESO INS FILT1 NAME")
    filter_wheel_keys: tuple = ("FILTER1", "FILTER2", "FILTER3", "FILTER4")
    clear_filters: tuple = ("clear", "open", "none", "empty", "blank", "air", "")
    grism_keys: tuple = ("GRISM", "GRATING", "DISPERSR", "ESO INS GRIS1 NAME",
                         "ESO INS GRAT1 NAME")
    slit_keys: tuple = ("SLIT", "SLITNAME", "ESO INS SLIT1 NAME")
    setup_keys: tuple = ("filter", "grism", "slit", "binning", "shape")
    object_keys: tuple = ("OBJECT", "OBJNAME", "TARGNAME")
    date_keys: tuple = ("DATE-OBS", "DATE_OBS")
    time_keys: tuple = ("MJD-OBS",)
    gain_keys: tuple = ("GAIN", "EGAIN", "CCDGAIN", "ESO DET OUT1 CONAD")
    rdnoise_keys: tuple = ("RDNOISE", "READNOIS", "RON", "ENOISE", "ESO DET OUT1 RON")
    binning_keys: tuple = ("CCDSUM", "BINNING", "CCDBIN")
    binning_pairs: tuple = (("XBINNING", "YBINNING"), ("CCDXBIN", "CCDYBIN"),
                            ("BINX", "BINY"), ("CCDBIN1", "CCDBIN2"),
                            ("ESO DET WIN1 BINX", "ESO DET WIN1 BINY"))

    def __post_init__(self):
        bad = [k for k in self.setup_keys if k not in SETUP_PARTS]
        if bad:
            raise ValueError(f"KeywordMap.setup_keys: {bad[0]!r} is not one of "
                             f"{', '.join(SETUP_PARTS)}")

    def normalized_aliases(self):
        """``type_aliases`` with normalised keys (see :func:`normalize_value`)."""
        return {normalize_value(k): v for k, v in self.type_aliases.items()}

    def frame_type(self, value):
        """The frame type for a header value, or None if it is not known."""
        return classify_frame_type(value, self)[0]


#: What an instrument setup may be made of (``KeywordMap.setup_keys``).
SETUP_PARTS = ("filter", "grism", "slit", "binning", "shape")


def classify_frame_type(value, keymap=None, aliases=None):
    """``(frame_type, subtype)`` for a frame-type header value (see the
    module docstring); ``(None, None)`` if no alias matches or the tokens
    name several types. ``aliases``: ``keymap.normalized_aliases()`` if
    already computed (the catalogue does this once per night)."""
    km = keymap or KeywordMap()
    aliases = km.normalized_aliases() if aliases is None else aliases
    qualifiers = _normalized_set(tuple(km.type_qualifiers))
    whole = normalize_value(value)
    tokens = [t for t in _TOKEN_RE.split(whole) if t]
    if whole in aliases:
        ftype = aliases[whole]
        rest = [t for t in tokens if t in qualifiers]
        return ftype, ",".join(rest) or None
    named = {aliases[t] for t in tokens if t in aliases and t not in qualifiers}
    if len(named) != 1:
        return None, None
    ftype = named.pop()
    rest = [t for t in tokens if not (aliases.get(t) == ftype and t not in qualifiers)]
    return ftype, ",".join(rest) or None


# ---------------------------------------------------------------------------
# reading values (the catalogue's rules)


def header_value(headers, key):
    """Value of ``key`` in the first of ``headers`` holding it (strings
    stripped; undefined -> None), or None. ``headers``: Header-likes, e.g.
    one :class:`~crdask.io.headers.MergedCards`."""
    for h in headers:
        v = h.get(key, _MISSING)
        if v is _MISSING:
            continue
        if v is None or isinstance(v, fits.card.Undefined):
            return None
        return v.strip() if isinstance(v, str) else v
    return None


_MISSING = object()


def first_value(headers, keys):
    """(key, value) of the first keyword present with a non-empty value."""
    for k in keys:
        v = header_value(headers, k)
        if v is not None and v != "":
            return k, v
    return None, None


def number_value(headers, keys, what, notes):
    """The first present keyword of ``keys`` as a float (quoted numbers
    accepted), or None; a value that is not a finite number adds a note
    naming the keyword to ``notes`` and gives None."""
    key, v = first_value(headers, keys)
    if key is None:
        return None
    if isinstance(v, str):   # some writers quote numbers: '120.0'
        try:
            v = float(v)
        except ValueError:
            notes.append(f"{key} = {v!r} is not a number; {what} unknown")
            return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) \
            or not np.isfinite(v):
        notes.append(f"{key} = {v!r} is not a finite number; {what} unknown")
        return None
    return float(v)


def text_value(headers, keys):
    """The first present, non-empty keyword of ``keys`` as text, or None."""
    _, v = first_value(headers, keys)
    return None if v is None else str(v)


def filter_value(headers, km):
    """The filter: ``km.filter_keys``, else the non-clear filter wheels."""
    single = text_value(headers, km.filter_keys)
    if single is not None:
        return single
    wheels = [str(v) for v in (header_value(headers, k) for k in km.filter_wheel_keys)
              if v is not None]
    if not wheels:
        return None
    clear = {normalize_value(c) for c in km.clear_filters}
    real = [w for w in wheels if normalize_value(w) not in clear]
    return "+".join(real) if real else wheels[0]


_BIN_RE = re.compile(r"^\s*(\d+)\s*[x×,\s]\s*(\d+)\s*$", re.IGNORECASE)


def binning_value(headers, km, notes):
    """Binning as ``"XxY"`` from ``km.binning_keys`` or ``km.binning_pairs``."""
    key, v = first_value(headers, km.binning_keys)
    if key is not None:
        m = _BIN_RE.match(str(v))
        if m:
            return f"{int(m.group(1))}x{int(m.group(2))}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v}x{v}"
        notes.append(f"{key} = {v!r} is not a binning like '2 2'")
    for kx, ky in km.binning_pairs:
        bx, by = header_value(headers, kx), header_value(headers, ky)
        if bx is not None and by is not None:
            try:
                return f"{int(bx)}x{int(by)}"
            except (TypeError, ValueError):
                notes.append(f"{kx}, {ky} = {bx!r}, {by!r} are not binning factors")
    return None
