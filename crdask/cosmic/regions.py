"""Image regions and window sizes as :func:`crdask.cosmic.cr2images` takes them.

cosmic/ may not import io/, so the region forms teareduce accepts are parsed
here, once, into one canonical text: the FITS section ``'[x1:x2,y1:y2]'``
(1-based, inclusive), which also reads well in HISTORY lines and hashes
the same whatever form the user wrote.

Accepted forms of one region:

* ``'[x1:x2,y1:y2]'`` -- as ``teareduce.SliceRegion2D(text, mode='fits')``:
  ``1 <= x1 <= x2`` and ``1 <= y1 <= y2``;
* a teareduce ``SliceRegion2D`` (any object with a ``.python`` attribute
  holding ``(slice_y, slice_x)``);
* a 0-based ``(slice_y, slice_x)`` tuple (``np.s_[y0:y1, x0:x1]``) with
  ``0 <= start < stop`` and step 1.

Example
-------
>>> import numpy as np
>>> check_region(np.s_[10:20, 0:5])
'[1:5,11:20]'
>>> region_slices('[1:5,11:20]')
(slice(10, 20, None), slice(0, 5, None))
>>> check_regions('[1:5,11:20]; [7:9,1:3]')
('[1:5,11:20]', '[7:9,1:3]')
>>> check_median_size('5x3')
(5, 3)
"""

import numbers
import re

__all__ = ["check_region", "check_regions", "region_slices", "check_median_size"]

_SECTION = re.compile(r"\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]")


def _from_section(text):
    m = _SECTION.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a FITS section '[x1:x2,y1:y2]'")
    x1, x2, y1, y2 = map(int, m.groups())
    if not (1 <= x1 <= x2 and 1 <= y1 <= y2):
        raise ValueError(f"{text!r}: need 1 <= x1 <= x2 and 1 <= y1 <= y2")
    return f"[{x1}:{x2},{y1}:{y2}]"


def _from_slices(pair):
    if not (isinstance(pair, tuple) and len(pair) == 2
            and all(isinstance(s, slice) for s in pair)):
        raise ValueError(f"{pair!r} is not a region: expected '[x1:x2,y1:y2]', a "
                         "SliceRegion2D or (slice_y, slice_x)")
    out = []
    for s in pair:
        if s.step not in (None, 1):
            raise ValueError(f"{s!r}: step must be 1")
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                   for v in (s.start, s.stop)):
            raise ValueError(f"{s!r}: start and stop must be integers")
        if not 0 <= s.start < s.stop:
            raise ValueError(f"{s!r}: need 0 <= start < stop")
        out.append((int(s.start) + 1, int(s.stop)))
    (y1, y2), (x1, x2) = out
    return f"[{x1}:{x2},{y1}:{y2}]"


def check_region(value):
    """One region in any accepted form -> its FITS section text."""
    if isinstance(value, str):
        return _from_section(value)
    if hasattr(value, "python"):
        return _from_slices(tuple(value.python))
    return _from_slices(value)


def check_regions(value):
    """A list of regions (or a text of sections, optionally separated by
    ``;``) -> tuple of FITS section texts; an empty list means none."""
    if isinstance(value, str):
        rest = _SECTION.sub("", value).replace(";", "").strip()
        if rest:
            raise ValueError(f"{value!r} is not a list of FITS sections "
                             "'[x1:x2,y1:y2]' separated by ';'")
        items = [m.group(0) for m in _SECTION.finditer(value)]
    elif hasattr(value, "python") or (isinstance(value, tuple) and len(value) == 2
                                      and all(isinstance(s, slice) for s in value)):
        items = [value]       # one region where a list was expected
    elif hasattr(value, "__iter__"):
        items = list(value)
    else:
        raise ValueError(f"{value!r} is not a list of regions")
    out = tuple(check_region(v) for v in items)
    return out or None


def region_slices(section):
    """FITS section text -> 0-based ``(slice_y, slice_x)``."""
    x1, x2, y1, y2 = map(int, _SECTION.fullmatch(section).groups())
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def check_median_size(value):
    """``n``, ``(ny, nx)`` or text ``'n'``, ``'ny,nx'``, ``'nyxnx'`` ->
    ``(ny, nx)`` of integers >= 1 (as ``scipy.ndimage.median_filter(size=)``)."""
    if isinstance(value, str):
        parts = [t for t in re.split(r"[,x\s]+", value.strip().strip("()[]")) if t]
        try:
            value = [int(t) for t in parts]
        except ValueError:
            raise ValueError(f"{value!r} is not n or ny,nx") from None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if hasattr(value, "__len__") and len(value) == 1:
        value = (value[0], value[0])
    if not (hasattr(value, "__len__") and len(value) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                    for v in value) and min(value) >= 1):
        raise ValueError(f"{value!r} is not an integer >= 1 or a pair (ny, nx) of them")
    return (int(value[0]), int(value[1]))
