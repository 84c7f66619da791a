"""Amplifier definitions from FITS headers or a workflow list (layer 3).

Turns the header conventions for multi-amplifier readouts into
:class:`crdask.calib.amplifiers.Amplifier` objects, with FITS sections parsed
here, once (DESIGN.md: "convert once, in io"). Three conventions, tried by
:func:`amplifiers_from_header` in this order:

1. **numbered keywords in one HDU** (NOAO/Lick/many observatory headers):
   ``DATASEC1, BIASSEC1, GAIN1, RDNOISE1, DETSEC1``, ``DATASEC2, ...``,
   numbered from 1 without gaps. A missing ``GAINn``/``RDNOISEn`` falls back
   to the unnumbered keyword (``GAIN``, ``RDNOISE``); ``BIASSECn`` may be
   absent (no overscan for that amplifier);
2. **one amplifier per HDU** (mosaic MEF files: each image extension holds one
   amplifier with ``DATASEC``, ``BIASSEC``, ``DETSEC``, ``GAIN``, ``RDNOISE``,
   ``AMPNAME``/``EXTNAME``): :func:`amplifiers_from_extensions` on the list of
   extension headers, assembled by ``DETSEC``. (Each extension is then a
   separate array, so the pipeline either stacks them side by side first or
   calibrates them one by one; see the module of the calib layer.)
3. **a single amplifier**: ``DATASEC``/``BIASSEC``/``GAIN``/``RDNOISE``.

``DETSEC`` is in unbinned detector pixels: it is converted to binned pixels
with ``CCDSUM`` (``"2 2"``) or the ``binning`` argument, keeping reversed
ranges. A workflow can instead list amplifiers explicitly
(:func:`amplifiers_from_config`)::

    instrument:
      amplifiers:
        - {name: L, data: '[1:1024,1:2048]', overscan: '[2049:2080,1:2048]',
           gain: 1.5, readnoise: 4.1}
        - {name: R, data: '[1025:2048,1:2048]', overscan: '[2081:2112,1:2048]',
           gain: 2.1, readnoise: 4.6, detsec: '[2048:1025,1:2048]'}

Errors are one line naming the file, HDU and keyword (or the list entry).
"""

from __future__ import annotations

import re

from ..calib.amplifiers import Amplifier
from .sections import Section, SectionError, parse_section

__all__ = ["amplifiers_from_header", "amplifiers_from_extensions",
           "amplifiers_from_config", "binned_detsec"]

_GAIN_KEYS = ("GAIN", "EGAIN", "CCDGAIN")
_RN_KEYS = ("RDNOISE", "READNOIS", "RON", "ENOISE")


def _where(path, hdu, key):
    if path is None:
        return key
    return f"{path}[{hdu}] {key}" if hdu is not None else f"{path} {key}"


def _number(header, keys, path, hdu, what):
    for k in keys:
        if k in header:
            v = header[k]
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{_where(path, hdu, k)}: {what} must be a number, "
                                 f"got {v!r}") from None
            return v
    raise ValueError(f"{_where(path, hdu, keys[0])}: missing {what} (tried "
                     f"{', '.join(keys)})")


def _binning(header, binning, path, hdu):
    if binning is not None:
        return tuple(int(b) for b in binning)
    text = header.get("CCDSUM")
    if text is None:
        return (1, 1)
    parts = re.split(r"[\sx,]+", str(text).strip())
    try:
        bx, by = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise ValueError(f"{_where(path, hdu, 'CCDSUM')}: expected 'bx by', got "
                         f"{text!r}") from None
    return bx, by


def binned_detsec(section: Section, binning=(1, 1)) -> Section:
    """A ``DETSEC`` in unbinned detector pixels as binned pixels (orientation
    kept): unbinned pixel ``p`` is binned pixel ``(p - 1) // b + 1``."""
    bx, by = binning

    def b(p, n):
        return (p - 1) // n + 1
    return Section(b(section.x1, bx), b(section.x2, bx), b(section.y1, by),
                   b(section.y2, by))


def _sec(header, key, shape, path, hdu):
    if key not in header:
        return None
    return parse_section(header[key], shape=shape, where=_where(path, hdu, key))


def _shape(header):
    z = "Z" if "ZNAXIS1" in header else ""
    if f"{z}NAXIS2" in header:
        return (int(header[f"{z}NAXIS2"]), int(header[f"{z}NAXIS1"]))
    return None


def amplifiers_from_header(header, *, path=None, hdu=None, binning=None,
                           gain_keys=_GAIN_KEYS, readnoise_keys=_RN_KEYS):
    """Amplifiers described by one header (numbered keywords, else one amplifier).

    Parameters
    ----------
    header : astropy.io.fits.Header or dict-like
        Header of the image HDU.
    path, hdu : optional
        For error messages (``"path[hdu] KEYWORD: problem"``).
    binning : (bx, by), optional
        Overrides ``CCDSUM`` when converting ``DETSEC`` to binned pixels.
    gain_keys, readnoise_keys : sequence of str
        Unnumbered keywords tried in order (numbered ones add the digit).

    Returns
    -------
    list of Amplifier
        Sections parsed and checked against ``NAXIS2 x NAXIS1``; ``detsec``
        binned. Empty list never: no ``DATASEC`` at all gives one amplifier
        covering the whole image without overscan.

    Example
    -------
    >>> amps = amplifiers_from_header({"NAXIS1": 120, "NAXIS2": 100,
    ...     "DATASEC1": "[1:50,1:100]", "BIASSEC1": "[51:60,1:100]", "GAIN1": 1.5,
    ...     "RDNOISE1": 4.0, "DATASEC2": "[71:120,1:100]",
    ...     "BIASSEC2": "[61:70,1:100]", "GAIN2": 2.1, "RDNOISE2": 5.0})
    >>> [a.name for a in amps], amps[1].gain
    (['1', '2'], 2.1)
    """
    shape = _shape(header)
    bins = _binning(header, binning, path, hdu)
    amps = []
    n = 1
    while f"DATASEC{n}" in header:
        data = _sec(header, f"DATASEC{n}", shape, path, hdu)
        bias = _sec(header, f"BIASSEC{n}", shape, path, hdu)
        det = _sec(header, f"DETSEC{n}", None, path, hdu)
        gain = _number(header, [f"{k}{n}" for k in gain_keys] + list(gain_keys),
                       path, hdu, f"gain of amplifier {n}")
        rn = _number(header, [f"{k}{n}" for k in readnoise_keys] + list(readnoise_keys),
                     path, hdu, f"read noise of amplifier {n}")
        amps.append(Amplifier(str(n), data, gain, rn, biassec=bias,
                              detsec=None if det is None else binned_detsec(det, bins)))
        n += 1
    if amps:
        return amps
    data = _sec(header, "DATASEC", shape, path, hdu)
    if data is None:
        if shape is None:
            raise ValueError(f"{_where(path, hdu, 'NAXIS1')}: no image shape and no "
                             "DATASEC")
        data = Section(1, shape[1], 1, shape[0])
    bias = _sec(header, "BIASSEC", shape, path, hdu)
    gain = _number(header, list(gain_keys), path, hdu, "gain")
    rn = _number(header, list(readnoise_keys), path, hdu, "read noise")
    return [Amplifier(str(header.get("AMPNAME", "1")), data, gain, rn, biassec=bias)]


def amplifiers_from_extensions(headers, *, path=None, binning=None,
                               gain_keys=_GAIN_KEYS, readnoise_keys=_RN_KEYS):
    """One amplifier per image extension (mosaic MEF), placed by ``DETSEC``.

    Parameters
    ----------
    headers : sequence of (hdu, header)
        The image extensions, e.g. ``[(1, h1), (2, h2)]``.

    Returns
    -------
    list of Amplifier
        ``datasec``/``biassec`` in that extension's pixels, ``detsec``
        (required, binned) in the assembled frame.
    """
    amps = []
    for hdu, h in headers:
        one = amplifiers_from_header(h, path=path, hdu=hdu, binning=binning,
                                     gain_keys=gain_keys, readnoise_keys=readnoise_keys)
        if len(one) != 1:
            raise ValueError(f"{_where(path, hdu, 'DATASEC1')}: an extension of a "
                             "mosaic must hold one amplifier")
        det = _sec(h, "DETSEC", None, path, hdu)
        if det is None:
            raise ValueError(f"{_where(path, hdu, 'DETSEC')}: missing (needed to place "
                             "the extension's amplifier)")
        bins = _binning(h, binning, path, hdu)
        name = str(h.get("AMPNAME", h.get("EXTNAME", hdu)))
        a = one[0]
        amps.append(Amplifier(name, a.datasec, a.gain, a.readnoise, biassec=a.biassec,
                              detsec=binned_detsec(det, bins)))
    return amps


_CONFIG_KEYS = {"name", "data", "overscan", "gain", "readnoise", "detsec",
                "overscan_axis", "bias_level"}


def amplifiers_from_config(entries, shape, *, where="instrument.amplifiers",
                           binning=(1, 1)):
    """Amplifiers from a workflow list of mappings (see the module docstring).

    Parameters
    ----------
    entries : list of dict
        Keys ``name``, ``data`` (FITS section, required), ``overscan`` (FITS
        section or null), ``gain`` (e-/ADU), ``readnoise`` (e-), ``detsec``
        (unbinned FITS section), ``overscan_axis`` (0/1/null), ``bias_level``.
    shape : (ny, nx)
        Raw image shape the sections are checked against.

    Returns
    -------
    list of Amplifier
    """
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"{where}: expected a non-empty list of amplifiers")
    amps = []
    for i, e in enumerate(entries):
        w = f"{where}[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{w}: expected a mapping, got {e!r}")
        unknown = set(e) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"{w}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                             f"{', '.join(sorted(_CONFIG_KEYS))}")
        for k in ("data", "gain", "readnoise"):
            if e.get(k) is None:
                raise ValueError(f"{w}.{k}: required")
        try:
            data = parse_section(e["data"], shape=shape, where=f"{w}.data")
            bias = (None if e.get("overscan") is None else
                    parse_section(e["overscan"], shape=shape, where=f"{w}.overscan"))
            det = (None if e.get("detsec") is None else
                   binned_detsec(parse_section(e["detsec"], where=f"{w}.detsec"), binning))
        except SectionError:
            raise
        amps.append(Amplifier(str(e.get("name", i + 1)), data, float(e["gain"]),
                              float(e["readnoise"]), biassec=bias, detsec=det,
                              overscan_axis=e.get("overscan_axis"),
                              bias_level=float(e.get("bias_level", 0.0))))
    return amps
